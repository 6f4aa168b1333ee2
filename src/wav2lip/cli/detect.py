"""`wav2lip detect VIDEO`: see which face box every frame gets (JSON, preview), compare detectors."""
from __future__ import annotations

import argparse
import json

from .. import store
from ..constants import DETECT_EVERY, DETECTORS, MAX_GAP, SMOOTH_MODES
from ..errors import Wav2LipError
from ..io.files import atomic_output, check_distinct, check_output
from ..lipsync.options import TABLE
from .common import add_box, add_detector, add_device, add_quiet, box_to_xyxy, show_progress, xyxy_to_box


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect", help="track the face of a video: per-frame boxes as JSON, a preview, detector comparison",
        description="Run face detection and tracking as lip-sync would, and show the result.",
    )
    parser.add_argument("video", metavar="VIDEO", help="video or image file")
    parser.add_argument("--json", metavar="FILE", help="write per-frame boxes, scores and landmarks here")
    parser.add_argument("--preview", metavar="FILE", help="write a video with the boxes drawn (.mp4, .mov, .mkv)")
    add_detector(parser, help_extra="; with --compare, the weights of the --detector one of the two")
    # Per-detector weights, earlier spellings: still accepted, and the way to give both in --compare.
    parser.add_argument("--retinaface-weights", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--s3fd-weights", metavar="PATH", help=argparse.SUPPRESS)
    add_device(parser, " for detection")
    parser.add_argument("--max-size", type=int, metavar="PIXELS",
                        help="longest side the full-frame detector sees (default: 480 for retinaface, "
                        "full size for s3fd); 0 = full size")
    parser.add_argument("--batch-size", type=int, default=16, help="detection batch (halved on out-of-memory)")
    parser.add_argument("--detect-every", type=int, default=DETECT_EVERY, metavar="N",
                        help="full-frame detection every N frames, tracking in between; 1 = every frame, "
                        "0 = only when the track is lost")
    parser.add_argument("--smooth", choices=SMOOTH_MODES, default="centered",
                        help="centered: lag-free (default); mean5: the reference's 5-box mean")
    parser.add_argument("--pads", type=int, nargs=4, default=list(TABLE["pads"].default),
                        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="widen the box (default: 0 10 0 0)")
    add_box(parser)
    parser.add_argument("--face-index", type=int, metavar="I", help="follow the I-th face from the left")
    parser.add_argument("--face-at", type=float, nargs=2, metavar=("X", "Y"), help="follow the face nearest X Y")
    parser.add_argument("--tracks", action="store_true",
                        help="list every face track per shot and the one lip-sync follows (--speaker auto), with "
                        "each track's sync score against the video's own soundtrack; --json writes them")
    parser.add_argument("--sync-model", metavar="PTH",
                        help="lip-sync expert that scores the tracks (a file or lipsync_expert.pth); without it "
                        "the largest face is chosen")
    parser.add_argument("--max-gap", type=int, default=MAX_GAP, metavar="N",
                        help="bridge up to N frames without a face by interpolation (0: never)")
    parser.add_argument("--calibration", type=float, nargs=4, metavar=("DX", "DY", "SX", "SY"),
                        help="map detector boxes: centre shift and size scale in box units")
    parser.add_argument("--compare", metavar="TARGET,SOURCE",
                        help="fit and print the box map SOURCE -> TARGET, e.g. s3fd,retinaface")
    parser.add_argument("--compare-every", type=int, default=5, metavar="N", help="compare on every N-th frame")
    add_quiet(parser)
    parser.set_defaults(func=run)


def _weights(args: argparse.Namespace, name: str) -> str | None:
    """The weights for detector `name`: its own flag, else --detector-weights when it is the --detector."""
    own = args.s3fd_weights if name == "s3fd" else args.retinaface_weights
    return own or (args.detector_weights if name == args.detector else None)


def _detector(args: argparse.Namespace, name: str):
    from ..device import resolve_device  # torch and the models load only once a command runs
    from ..faces import create_detector

    options = {"batch_size": args.batch_size}
    if args.max_size is not None:
        options["max_size"] = args.max_size or None
    return create_detector(name, device=resolve_device(args.device), weights=_weights(args, name), **options)


def _infer_flags(args: argparse.Namespace, median_box) -> str:
    """The `wav2lip infer` flags that track this face the same way (and a fixed box, for a still camera)."""
    flags = [f"--detector {args.detector}"]
    if _weights(args, args.detector):
        flags.append(f"--detector-weights {_weights(args, args.detector)}")
    flags += [f"--pads {' '.join(map(str, args.pads))}", f"--smooth {args.smooth}",
              f"--detect-every {args.detect_every}"]
    if args.calibration:
        flags.append(f"--calibration {' '.join(f'{v:g}' for v in args.calibration)}")
    lines = [f"same face boxes in infer: {' '.join(flags)}"]
    if args.box:
        lines = [f"same face box in infer: --box {' '.join(map(str, args.box))}"]
    elif median_box is not None:
        lines.append(f"or one fixed box (the median, top bottom left right): --box "
                     f"{' '.join(map(str, xyxy_to_box(median_box)))}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..faces import BoxCalibration, FaceTrackOptions
    from ..faces.report import compare_detectors, detect_video
    from ..io.video import open_source
    from ..lipsync.offline import check_output_path

    reads = [args.video, args.retinaface_weights, args.s3fd_weights, args.detector_weights]
    if args.json:
        check_output(args.json, reads, "JSON output")
    if args.preview:
        check_output_path(args.preview, reads)
    check_distinct(args.json, args.preview)
    source = open_source(args.video)  # a bad video is named before any detector weights are looked for
    if args.box:
        x1, y1, x2, y2 = box_to_xyxy(args.box)
        if not (0 <= x1 < x2 <= source.width and 0 <= y1 < y2 <= source.height):
            raise Wav2LipError(f"--box {' '.join(map(str, args.box))} (top bottom left right) is not inside the "
                               f"{source.width}x{source.height} frame of {args.video}")
    source.close()
    if args.compare:
        names = args.compare.split(",")
        if len(names) != 2 or any(n not in DETECTORS for n in names) or names[0] == names[1]:
            raise Wav2LipError(f"--compare {args.compare}: name two different detectors, e.g. s3fd,retinaface")
        result = compare_detectors(args.video, _detector(args, names[0]), _detector(args, names[1]),
                                   every=args.compare_every)
        c = result.calibration
        print(f"{names[1]} -> {names[0]} on {result.pairs} frames: mean IoU {result.iou_before:.3f} as is, "
              f"{result.iou_after:.3f} mapped")
        print(f"use it in infer or detect: --detector {names[1]} --calibration {c.dx:.4f} {c.dy:.4f} {c.sx:.4f} {c.sy:.4f}")
        if not (args.json or args.preview):
            return 0
    if args.tracks:
        return _tracks(args)
    options = FaceTrackOptions(
        pads=tuple(args.pads), smooth=args.smooth, detect_every=args.detect_every, max_gap=args.max_gap,
        fixed_box=box_to_xyxy(args.box) if args.box else None, face_index=args.face_index,
        face_at=tuple(args.face_at) if args.face_at else None,
        calibration=BoxCalibration(*args.calibration) if args.calibration else None,
    )
    detector = None if args.box else _detector(args, args.detector)
    report = detect_video(args.video, detector, options, json_path=args.json, preview=args.preview,
                          progress=show_progress(args))
    found = report.n_frames - len(report.missing)
    print(f"{args.video}: face in {found} of {report.n_frames} frames ({len(report.interpolated)} interpolated)")
    if report.missing:
        print(f"no face in frames: {_ranges(report.missing)}")
    print(_infer_flags(args, report.median_box))
    return 0


def _tracks(args: argparse.Namespace) -> int:
    """`detect --tracks`: the face tracks of each shot, their sync scores and the one chosen."""
    from ..checkpoints import load_model
    from ..device import resolve_device
    from ..faces.speaker import choose_speakers, soundtrack_mel
    from ..io.video import open_source

    source = open_source(args.video)
    if source.is_still:
        raise Wav2LipError(f"{args.video}: is a still image; speaking faces are told apart in videos")
    detector = _detector(args, args.detector)
    expert = None
    if args.sync_model:
        expert = load_model(store.resolve(args.sync_model), "syncnet", device=resolve_device(args.device)).eval()
    mel = soundtrack_mel(args.video) if expert is not None else None
    choices = choose_speakers(source.frames(), detector, source.fps, mel, expert)
    for choice in choices:
        print(choice.summary())
    if not choices:
        print(f"{args.video}: no face found")
    if args.json:
        doc = {"video": str(args.video), "fps": source.fps, "sync_model": args.sync_model,
               "soundtrack": mel is not None, "shots": [c.as_dict() for c in choices]}
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(doc, indent=1))
    return 0


def _ranges(indices: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)
