"""Export the generator to ONNX, for users who deploy Wav2Lip through ONNX runtimes.

The graph is the per-frame call form, inputs `mel` (N,1,80,16) and `face` (N,6,96,96), output
`out` (N,3,96,96), with N dynamic. Needs the optional packages `onnx` and `onnxscript`
(`pip install 'wav2lip[onnx]'`); running the result needs `onnxruntime` or another ONNX runtime.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoints import load_model
from .errors import Wav2LipError
from .io.files import atomic_output
from .models.generator import FACE_SIZE, MEL_SHAPE

INPUT_NAMES = ("mel", "face")
OUTPUT_NAME = "out"


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Wav2LipError(
            f"ONNX export needs the optional package(s) {', '.join(missing)}: pip install 'wav2lip[onnx]'"
        )


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Write `model` (a Wav2Lip generator) as an ONNX graph with a dynamic batch dimension, atomically."""
    _require("onnx", "onnxscript")
    example = (torch.zeros(2, *MEL_SHAPE), torch.zeros(2, 6, FACE_SIZE, FACE_SIZE))
    batch = torch.export.Dim("batch")
    path = Path(path)
    # The exporter narrates each pass on stdout and logs warnings about its own internals (e.g. a
    # missing torchvision); a user needs neither.
    exporter_log = logging.getLogger("torch.onnx")
    level, was_training = exporter_log.level, model.training
    try:
        model.eval()
        exporter_log.setLevel(logging.ERROR)
        with atomic_output(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, example, tmp,
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_shapes={"audio": {0: batch}, "face": {0: batch}},
                opset_version=opset, dynamo=True, verbose=False,
                external_data=False,  # one self-contained file: ~145 MB of weights, far below protobuf's 2 GB
            )
    finally:
        exporter_log.setLevel(level)
        model.train(was_training)
    return path


def export_generator(
    out: str | os.PathLike, checkpoint: str | os.PathLike = "wav2lip_gan.pth", opset: int | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> Path:
    """Export a generator checkpoint (a path, or a known name fetched through the model store)."""
    from .store import resolve

    _require("onnx", "onnxscript")
    path = resolve(checkpoint, root=weights_dir)
    return export_onnx(load_model(path, "wav2lip"), out, opset=opset)


class OnnxGenerator:
    """An exported generator run by ONNX Runtime, called like `Wav2Lip`'s per-frame form.

    On the 2-core CPU this project targets, ONNX Runtime runs the fp32 generator faster than
    PyTorch (benchmarks/bench_onnx.py), so a pipeline may use it where fp32 is required.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        _require("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: ORT's warnings are about its own graph rewrites
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT reports unreadable models as its own Fail/InvalidProtobuf types
            raise Wav2LipError(f"{path}: not a usable ONNX model ({str(exc).splitlines()[0]})") from None
        if [i.name for i in self.session.get_inputs()] != list(INPUT_NAMES):
            raise Wav2LipError(f"{path}: not an exported Wav2Lip generator (inputs must be mel, face)")
        self.path = Path(path)

    def __call__(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """(N,1,80,16) + (N,6,96,96) float32 -> (N,3,96,96), on the CPU."""
        feeds = {
            "mel": mel.detach().cpu().float().contiguous().numpy(),
            "face": face.detach().cpu().float().contiguous().numpy(),
        }
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feeds)[0])


def onnx_generator(
    checkpoint: str | os.PathLike = "wav2lip_gan.pth", weights_dir: str | os.PathLike | None = None,
    threads: int | None = None,
) -> OnnxGenerator:
    """`OnnxGenerator` for a checkpoint, exported once into the weight cache (keyed by its SHA-256)."""
    from .store import cache_dir, resolve, sha256_of

    _require("onnxruntime")
    path = resolve(checkpoint, root=weights_dir)
    target = cache_dir(weights_dir) / "onnx" / f"{path.stem}-{sha256_of(path)[:16]}.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(load_model(path, "wav2lip"), target)
    return OnnxGenerator(target, threads=threads)
