"""`wav2lip export --onnx OUT.onnx`: the generator as an ONNX graph with a dynamic batch dimension."""
from __future__ import annotations

import argparse

from ..io.files import check_output
from .common import add_quiet, progress_bar, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export the generator to ONNX",
        description="Export the Wav2Lip generator (per-frame form: mel (N,1,80,16) + face (N,6,96,96) -> "
        "(N,3,96,96), N dynamic) for ONNX runtimes. Needs: pip install 'wav2lip[onnx]'.",
    )
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX file")
    parser.add_argument(
        "--checkpoint", default="wav2lip_gan.pth", metavar="CKPT",
        help="generator checkpoint: a path or a known name such as wav2lip.pth (default: wav2lip_gan.pth)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--weights-dir", metavar="DIR", default=None,
        help="weight cache folder (default: $WAV2LIP_HOME or the platform cache, e.g. ~/.cache/wav2lip)",
    )
    add_quiet(parser)
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model  # torch is imported only when the command runs
    from ..export import _require, export_onnx
    from ..store import resolve

    check_output(args.onnx, [args.checkpoint], "ONNX output")
    _require("onnx", "onnxscript")
    bar = progress_bar(3, show_progress(args), unit="step", desc="checkpoint")
    try:
        checkpoint = resolve(args.checkpoint, root=args.weights_dir)
        check_output(args.onnx, [checkpoint], "ONNX output")
        if bar is not None:
            bar.update(1)
            bar.set_description("load")
        model = load_model(checkpoint, "wav2lip")
        if bar is not None:
            bar.update(1)
            bar.set_description("export")
        path = export_onnx(model, args.onnx, opset=args.opset)
        if bar is not None:
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {path}")
    return 0
