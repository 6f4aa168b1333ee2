"""`wav2lip infer`: lip-sync a video or photo to speech (one pair, or many with --manifest).

Every option of the authors' inference script exists; their spellings are accepted as aliases.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..enhance import ENHANCERS
from ..errors import Wav2LipError
from ..faces import DETECTORS
from ..pipeline import BACKENDS, LipSyncer, SyncOptions
from ..video_io import DEFAULT_CRF, DEFAULT_PRESET


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer", help="lip-sync a video or photo to an audio file",
        description="Lip-sync FACE (a video or a still image) to AUDIO (any audio or video file) and write a "
        "video with that audio. The output covers the whole audio: a shorter video loops, a longer one is cut.",
    )
    p.add_argument("--face", metavar="FACE", help="video or image with the face to animate")
    p.add_argument("--audio", metavar="AUDIO", help="speech: any audio file, or a video's audio track")
    p.add_argument("-o", "--output", "--outfile", dest="output", metavar="OUT",
                   help="output video (default: results/result_voice.mp4; .mkv with --lossless)")
    p.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint", default="wav2lip_gan.pth",
                   metavar="CKPT", help="generator weights: a file or a model-store name (default: wav2lip_gan.pth)")
    p.add_argument("--manifest", metavar="CSV",
                   help="batch mode: lines of face,audio,output (paths relative to the CSV's folder); finished "
                   "outputs are skipped, failures reported without stopping the rest")

    g = p.add_argument_group("face")
    g.add_argument("--detector", choices=DETECTORS, default="retinaface",
                   help="retinaface: fast (default); s3fd: the reference's detector, slow on a CPU")
    g.add_argument("--detector-weights", metavar="PATH", help="detector weights (default: the model store's)")
    g.add_argument("--face-det-batch-size", "--face_det_batch_size", dest="face_det_batch_size", type=int,
                   default=16, metavar="N", help="face detection batch size (default: 16)")
    g.add_argument("--detect-every", type=int, default=SyncOptions.detect_every, metavar="N",
                   help=f"full-frame detection every N frames, tracking in between; 1 = every frame "
                   f"(default: {SyncOptions.detect_every})")
    g.add_argument("--pads", type=int, nargs=4, default=list(SyncOptions.pads),
                   metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="widen the detected box (default: 0 10 0 0)")
    g.add_argument("--box", type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="fixed face box for every frame: no detection, pads or smoothing")
    g.add_argument("--smooth", choices=("centered", "mean5", "none"), default=None,
                   help="box smoothing: centered (lag-free, default), mean5 (the reference's), none")
    g.add_argument("--nosmooth", action="store_true", help="no box smoothing (same as --smooth none)")
    g.add_argument("--no-cache", action="store_true", help="do not reuse or store face boxes of this video")

    g = p.add_argument_group("frames")
    g.add_argument("--static", action="store_true", help="use only the first frame of the video")
    g.add_argument("--fps", type=float, metavar="FPS",
                   help="frame rate for a still image (default: 25); for a video, resample to this rate")
    g.add_argument("--resize-factor", "--resize_factor", dest="resize_factor", type=int, default=1, metavar="N",
                   help="divide the video's width and height by N first (default: 1)")
    g.add_argument("--crop", type=int, nargs=4, default=[0, -1, 0, -1], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="crop the video after resizing; -1 = to the edge (default: 0 -1 0 -1)")
    g.add_argument("--rotate", action="store_true", help="turn video frames 90 degrees clockwise "
                   "(rotation metadata of phone videos is honoured anyway)")
    g.add_argument("--loop", choices=("repeat", "pingpong"), default="repeat",
                   help="a video shorter than the audio: repeat it, or play it back and forth (no jump)")

    g = p.add_argument_group("generation and output")
    g.add_argument("--blend", choices=("paste", "feather"), default="paste",
                   help="paste: the reference's hard rectangle (default); feather: soft, colour-matched mouth")
    g.add_argument("--batch-size", "--wav2lip_batch_size", dest="batch_size", type=int, default=SyncOptions.batch_size,
                   metavar="N", help=f"generator batch size (default: {SyncOptions.batch_size}; lowered for big frames)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: auto")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="generator arithmetic; auto: bf16 on CPUs with native bf16, fp16 on CUDA, else fp32")
    g.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="generator runtime: torch (default), or onnxruntime (CPU, fp32; needs wav2lip[onnx])")
    g.add_argument("--enhance", choices=ENHANCERS, default="none",
                   help="gfpgan: restore the painted mouth with GFPGAN v1.4 (sharper, slow on a CPU); default: none")
    g.add_argument("--enhancer-weights", metavar="PATH",
                   help="GFPGAN v1.4 weights (default: the model store's GFPGANv1.4.pth)")
    g.add_argument("--enhance-strength", type=float, default=SyncOptions.enhance_strength, metavar="S",
                   help="0..1: mix of restored and plain mouth (default: 1)")
    g.add_argument("--lossless", action="store_true", help="FFV1 RGB in Matroska: bit-exact frames")
    g.add_argument("--crf", type=int, default=DEFAULT_CRF, help=f"x264 quality (default: {DEFAULT_CRF})")
    g.add_argument("--preset", default=DEFAULT_PRESET, help=f"x264 preset (default: {DEFAULT_PRESET})")
    g.add_argument("--profile", action="store_true", help="print time per stage and end-to-end frames/s")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict:
    smooth = "none" if args.nosmooth else (args.smooth or "centered")
    return dict(
        box=tuple(args.box) if args.box else None, pads=tuple(args.pads), smooth=smooth,
        detect_every=args.detect_every, static=args.static, fps=args.fps, resize_factor=args.resize_factor,
        crop=tuple(args.crop), rotate=args.rotate, loop=args.loop, blend=args.blend, batch_size=args.batch_size,
        lossless=args.lossless, crf=args.crf, preset=args.preset, cache=not args.no_cache,
        progress=not args.quiet and sys.stderr.isatty(), enhance=args.enhance,
        enhance_strength=args.enhance_strength,
    )


def _output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    out = Path("results") / ("result_voice.mkv" if args.lossless else "result_voice.mp4")
    out.parent.mkdir(exist_ok=True)
    return out


def _read_manifest(path: Path) -> list[tuple[int, Path, Path, Path]]:
    if not path.is_file():
        raise Wav2LipError(f"{path}: manifest not found")
    rows = []
    with open(path, newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if number == 1 and [c.lower() for c in cells] == ["face", "audio", "output"]:
                continue
            if len(cells) != 3:
                raise Wav2LipError(f"{path}:{number}: expected face,audio,output, got {len(cells)} fields")
            face, audio, output = (path.parent / c for c in cells)
            rows.append((number, face, audio, output))
    return rows


def _report(result, profile: bool) -> None:
    print(result.summary(), file=sys.stderr)
    if profile:
        print(result.profile_table(), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.manifest is None and (args.face is None or args.audio is None):
        raise Wav2LipError("give --face and --audio (or --manifest)")
    options = _options(args)
    syncer = LipSyncer(args.checkpoint, detector=args.detector, device=args.device, precision=args.precision, backend=args.backend,
                       detector_weights=args.detector_weights, face_det_batch_size=args.face_det_batch_size,
                       enhancer_weights=args.enhancer_weights)
    if args.manifest is None:
        _report(syncer.run(args.face, args.audio, _output_path(args), **options), args.profile)
        return 0
    failed = 0
    rows = _read_manifest(Path(args.manifest))
    for number, face, audio, output in rows:
        if output.exists():
            print(f"{args.manifest}:{number}: {output} exists, skipped", file=sys.stderr)
            continue
        try:
            _report(syncer.run(face, audio, output, **options), args.profile)
        except Wav2LipError as exc:
            failed += 1
            print(f"{args.manifest}:{number}: error: {exc}", file=sys.stderr)
    print(f"{len(rows) - failed} of {len(rows)} lines done, {failed} failed", file=sys.stderr)
    return 1 if failed else 0
