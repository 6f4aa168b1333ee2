"""`wav2lip infer`: lip-sync a video or photo to speech (one pair, or many with --manifest).

Every option of the authors' inference script exists; their spellings are accepted as aliases.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from .. import store
from ..errors import Wav2LipError
from ..lipsync.blend import MASKS
from ..faces.detectors import WEIGHT_NAMES
from ..io.files import check_not_input
from ..lipsync.options import BACKENDS, BLEND_MODES, ENHANCERS, LOOP_MODES, PRECISIONS, SMOOTH_MODES, X264_PRESETS
from ..lipsync.offline import SILENCE, SPEAKERS, LipSyncer, SyncOptions, check_output_path
from ..shards import rank_and_world, shard
from ..io.video import DEFAULT_CRF, DEFAULT_PRESET
from .common import add_box, add_detector, add_device, add_quiet, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer", help="lip-sync a video or photo to an audio file",
        description="Lip-sync FACE (a video or a still image) to AUDIO (any audio or video file) and write a "
        "video with that audio. The output covers the whole audio: a shorter video loops, a longer one is cut.",
    )
    p.add_argument("--face", metavar="FACE", help="video or image with the face to animate")
    p.add_argument("--audio", metavar="AUDIO", help="speech: any audio file, or a video's audio track")
    p.add_argument("-o", "--output", "--outfile", dest="output", metavar="OUT",
                   help="output video, .mp4, .mov or .mkv (default: results/result_voice.mp4; .mkv with "
                   "--lossless, which needs .mkv)")
    p.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint", default="wav2lip_gan.pth",
                   metavar="CKPT", help="generator weights: a file or a model-store name (default: wav2lip_gan.pth)")
    p.add_argument("--manifest", metavar="CSV",
                   help="batch mode: UTF-8 lines of face,audio,output (paths relative to the CSV's folder); "
                   "finished outputs are skipped, failures reported without stopping the rest; with RANK / "
                   "WORLD_SIZE set (torchrun, SLURM arrays) each machine takes every WORLD_SIZE-th line")

    g = p.add_argument_group("face")
    add_detector(g)
    g.add_argument("--face-det-batch-size", "--face_det_batch_size", dest="face_det_batch_size", type=int,
                   default=16, metavar="N", help="face detection batch size (default: 16)")
    g.add_argument("--detect-every", type=int, default=SyncOptions.detect_every, metavar="N",
                   help=f"full-frame detection every N frames, tracking in between; 1 = every frame "
                   f"(default: {SyncOptions.detect_every})")
    g.add_argument("--pads", type=int, nargs=4, default=list(SyncOptions.pads),
                   metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="widen the detected box (default: 0 10 0 0)")
    add_box(g)
    g.add_argument("--calibration", type=float, nargs=4, metavar=("DX", "DY", "SX", "SY"),
                   help="map detector boxes: centre shift and size scale in box units (what `wav2lip detect "
                   "--compare` prints)")
    g.add_argument("--smooth", choices=SMOOTH_MODES, default=None,
                   help="box smoothing: centered (lag-free, default), mean5 (the reference's), none")
    g.add_argument("--nosmooth", action="store_true", help="no box smoothing (same as --smooth none)")
    g.add_argument("--no-cache", action="store_true", help="do not reuse or store face boxes of this video")
    g.add_argument("--speaker", choices=SPEAKERS, default=SyncOptions.speaker,
                   help="several faces: auto follows, shot by shot, the one whose lips agree with the video's own "
                   "soundtrack (needs --speaker-model), else the largest (default: auto)")
    g.add_argument("--speaker-model", metavar="PTH",
                   help="lip-sync expert that judges which face speaks (a file or lipsync_expert.pth)")
    g.add_argument("--face-index", type=int, metavar="I", help="follow the I-th face from the left (0: leftmost)")
    g.add_argument("--face-at", type=float, nargs=2, metavar=("X", "Y"), help="follow the face nearest X Y (pixels)")

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
    g.add_argument("--loop", choices=LOOP_MODES, default="repeat",
                   help="a video shorter than the audio: repeat it, or play it back and forth (no jump)")

    g = p.add_argument_group("generation and output")
    g.add_argument("--blend", choices=BLEND_MODES, default="paste",
                   help="paste: the reference's hard rectangle (default); feather: soft, colour-matched mouth")
    g.add_argument("--mask", choices=MASKS, default=SyncOptions.mask,
                   help="feather mask: ellipse (fixed in the box, default) or landmarks (mouth and jaw from "
                   "RetinaFace's five points; follows a tilted head)")
    g.add_argument("--mask-top", type=float, default=SyncOptions.mask_top, metavar="F",
                   help=f"feather mask: where it starts, as a fraction of the box height from its top; smaller "
                   f"reaches higher (default: {SyncOptions.mask_top:.2f})")
    g.add_argument("--mask-softness", type=float, default=SyncOptions.mask_softness, metavar="F",
                   help=f"feather mask: fraction of its radius over which it fades (default: {SyncOptions.mask_softness})")
    g.add_argument("--no-colour-match", "--no-color-match", dest="colour_match", action="store_false",
                   help="feather: keep the generated colours (default: matched to the surrounding skin)")
    g.add_argument("--silence", choices=SILENCE, default=SyncOptions.silence,
                   help="where nobody speaks: still (closed, still mouth; default), original (the source "
                   "frames), off (lip-sync to whatever sound is there, as the reference)")
    g.add_argument("--crossfade", type=int, default=SyncOptions.crossfade, metavar="N",
                   help=f"frames of crossfade at each edge of a pause (default: {SyncOptions.crossfade})")
    g.add_argument("--preview-frame", type=int, metavar="N",
                   help="write only a PNG of output frame N (source | generated | blended | mask) to OUT "
                   "(default: results/preview.png), to tune the blend in a second")
    g.add_argument("--batch-size", "--wav2lip_batch_size", dest="batch_size", type=int, default=SyncOptions.batch_size,
                   metavar="N", help=f"generator batch size (default: {SyncOptions.batch_size}; lowered for big frames)")
    add_device(g)
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
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
    g.add_argument("--preset", choices=X264_PRESETS, default=DEFAULT_PRESET, metavar="PRESET",
                   help=f"x264 preset, {X264_PRESETS[0]} .. {X264_PRESETS[-1]} (default: {DEFAULT_PRESET})")
    g.add_argument("--profile", action="store_true", help="print time per stage and end-to-end frames/s")
    add_quiet(g)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict:
    smooth = "none" if args.nosmooth else (args.smooth or "centered")
    return dict(
        box=tuple(args.box) if args.box else None, pads=tuple(args.pads), smooth=smooth,
        detect_every=args.detect_every, static=args.static, fps=args.fps, resize_factor=args.resize_factor,
        crop=tuple(args.crop), rotate=args.rotate, loop=args.loop, blend=args.blend, batch_size=args.batch_size,
        lossless=args.lossless, crf=args.crf, preset=args.preset, cache=not args.no_cache,
        progress=show_progress(args), calibration=tuple(args.calibration) if args.calibration else None,
        silence=args.silence, crossfade=args.crossfade,
        speaker=args.speaker, face_index=args.face_index, face_at=tuple(args.face_at) if args.face_at else None,
        mask=args.mask, mask_top=args.mask_top, mask_softness=args.mask_softness, colour_match=args.colour_match,
        enhance=args.enhance, enhance_strength=args.enhance_strength,
    )


def _output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    out = Path("results") / ("result_voice.mkv" if args.lossless else "result_voice.mp4")
    out.parent.mkdir(exist_ok=True)
    return out


def _read_manifest(path: Path) -> tuple[list[tuple[int, Path, Path, Path]], list[tuple[int, str]]]:
    """The manifest's jobs (line number, face, audio, output) and its malformed lines (number, problem)."""
    if not path.is_file():
        raise Wav2LipError(f"{path}: manifest not found" if not path.exists() else f"{path}: manifest is not a file")
    try:  # utf-8-sig: a byte-order mark (Excel, Notepad) is not part of the first cell
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise Wav2LipError(f"{path}:{line}: not UTF-8 text (save the manifest as UTF-8)") from None
    rows, bad = [], []
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells] == ["face", "audio", "output"]:
            continue
        if len(cells) != 3 or not all(cells):
            bad.append((number, f"expected face,audio,output, got {len(cells)} fields"
                        + ("" if len(cells) != 3 else " with an empty one")))
            continue
        face, audio, output = (path.parent / c for c in cells)
        rows.append((number, face, audio, output))
    return rows, bad


def _my_lines(rows: list, bad: list) -> tuple[list, list]:
    """This machine's share of the manifest's lines (good and malformed alike, by line number)."""
    mine = set(shard(sorted([row[0] for row in rows] + [number for number, _ in bad])))
    return [row for row in rows if row[0] in mine], [item for item in bad if item[0] in mine]


def _report(result, profile: bool) -> None:
    print(result.summary(), file=sys.stderr)
    if profile:
        print(result.profile_table(), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.manifest is None and (args.face is None or args.audio is None):
        raise Wav2LipError("give --face and --audio (or --manifest)")
    options = _options(args)
    SyncOptions.from_kwargs(options)  # bad options fail before the models load
    weights = [args.checkpoint, args.detector_weights, args.enhancer_weights]
    if args.preview_frame is not None:
        if args.manifest is not None:
            raise Wav2LipError("--preview-frame previews one face and audio: give --face and --audio, not --manifest")
        options.pop("progress")
        output = Path(args.output) if args.output else _output_path(args).with_name("preview.png")
        check_not_input(output, [args.face, args.audio, *weights])
        syncer = LipSyncer(args.checkpoint, detector=args.detector, device=args.device, precision=args.precision,
                           backend=args.backend, detector_weights=args.detector_weights,
                           face_det_batch_size=args.face_det_batch_size, enhancer_weights=args.enhancer_weights)
        print(syncer.preview(args.face, args.audio, output, args.preview_frame, **options).summary(), file=sys.stderr)
        return 0
    if args.manifest is None:
        output = check_output_path(_output_path(args), [args.face, args.audio, *weights], args.lossless)
    else:
        rows, bad = _my_lines(*_read_manifest(Path(args.manifest)))
    try:
        store.resolve(args.checkpoint)
    except Wav2LipError:  # name every weight file this run lacks, not one per run (the detector's too)
        store.resolve_all([args.checkpoint] + ([] if args.box else [args.detector_weights or WEIGHT_NAMES[args.detector]]))
        raise
    syncer = LipSyncer(args.checkpoint, detector=args.detector, device=args.device, precision=args.precision,
                       backend=args.backend, detector_weights=args.detector_weights,
                       face_det_batch_size=args.face_det_batch_size, speaker_model=args.speaker_model,
                       enhancer_weights=args.enhancer_weights)
    if args.manifest is None:
        _report(syncer.run(args.face, args.audio, output, **options), args.profile)
        return 0
    return _run_manifest(syncer, Path(args.manifest), rows, bad, options, args.profile)


def _run_manifest(syncer: LipSyncer, manifest: Path, rows: list, bad: list, options: dict, profile: bool) -> int:
    """Every line runs whatever the others do; the summary counts done, skipped and failed lines."""
    failed = skipped = 0
    for number, problem in bad:
        failed += 1
        print(f"{manifest}:{number}: error: {problem}", file=sys.stderr)
    for number, face, audio, output in rows:
        try:
            check_not_input(output, [face, audio, manifest, *syncer.weights])
        except Wav2LipError as exc:
            failed += 1
            print(f"{manifest}:{number}: error: {exc}", file=sys.stderr)
            continue
        if output.is_file():
            skipped += 1
            print(f"{manifest}:{number}: {output} exists, skipped", file=sys.stderr)
            continue
        made = [p for p in reversed(output.parents) if not p.exists()]
        try:
            if output.exists():
                kind = "a folder" if output.is_dir() else "not a regular file"
                raise Wav2LipError(f"{output}: is {kind}, not an output file")
            output.parent.mkdir(parents=True, exist_ok=True)
            check_output_path(output, [manifest], options["lossless"])
            _report(syncer.run(face, audio, output, **options), profile)
        except (Wav2LipError, OSError) as exc:
            failed += 1
            print(f"{manifest}:{number}: error: {exc}", file=sys.stderr)
            for folder in reversed(made):  # folders made for this line, if it left them empty
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    total = len(rows) + len(bad)
    rank, world = rank_and_world()
    share = f"machine {rank + 1} of {world}: " if world > 1 else ""
    print(f"{share}{total - failed} of {total} lines done ({skipped} skipped: output exists), {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0
