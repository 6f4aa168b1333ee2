"""`wav2lip evaluate`: the AV offset, LSE-D and LSE-C of a video (or a folder of them, beside their ground truth)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import MIN_FACE_SIZE, MIN_TRACK
from ..errors import Wav2LipError
from ..io.files import atomic_output, check_distinct, check_output
from ..lipsync.options import EVALUATE_MODES, ModelOptions, SyncOptions, add_option, from_namespace
from .common import add_detector, add_device, add_quiet, show_progress

if TYPE_CHECKING:
    from ..evaluation.sync import VideoResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score lip sync: AV offset, LSE-D (lower is better), LSE-C (higher is better)",
        description="Score lip sync with the SyncNet v2 evaluator (LSE-D / LSE-C of the Wav2Lip paper) or a "
        "trained lip-sync expert: one video, or every video of a folder (--dir) beside its ground truth.",
    )
    parser.add_argument("video", metavar="VIDEO", nargs="?", help="video to score (or give --dir)")
    parser.add_argument("--dir", metavar="FOLDER", help="score every video under FOLDER (resumable with --json)")
    parser.add_argument("--reference", metavar="FOLDER_OR_FILE",
                        help="ground-truth videos (same relative names) scored beside the generated ones")
    parser.add_argument("--audio", metavar="FILE", help="score against this audio instead of the video's own track")
    parser.add_argument("--mode", choices=EVALUATE_MODES, default="whole",
                        help="whole: each whole frame (face crops, the paper's LRS2 way; default); "
                        "track: the reference evaluator's pipeline (shots, face tracks, each track scored)")
    parser.add_argument("--model", "--syncnet", dest="model", metavar="PATH_OR_NAME", default="syncnet_v2.model",
                        help="SyncNet v2 weights (a file or store name; default syncnet_v2.model), or "
                        "expert:PATH for a lip-sync expert trained with `wav2lip train-expert`")
    add_detector(parser, help_extra="; --mode track only")
    parser.add_argument("--min-track", type=int, default=MIN_TRACK,
                        help=f"--mode track: frames a shot and a face track need (the reference's {MIN_TRACK})")
    parser.add_argument("--min-face-size", type=float, default=MIN_FACE_SIZE,
                        help=f"--mode track: mean face size in pixels a track needs (the reference's {MIN_FACE_SIZE})")
    add_device(parser)
    parser.add_argument("--batch-size", type=int, default=20, help="5-frame clips per forward pass")
    parser.add_argument("--json", metavar="OUT", help="write the scores and per-frame confidence here")
    parser.add_argument("--csv", metavar="OUT", help="write one row per video and the means here (with --dir)")
    parser.add_argument("--plot", metavar="PNG",
                        help="plot the per-frame confidence (a folder of PNGs with --dir); needs the plot extra")
    add_quiet(parser)
    group = parser.add_argument_group(
        "reconstruction", "--reconstruct: lip-sync each video to its own soundtrack and measure the output's "
        "lower face against the real one (PSNR, SSIM, sharpness ratio), plus the sync scores above; "
        "--detector and --device as above, the rest as for `wav2lip infer`")
    group.add_argument("--reconstruct", action="store_true", help="run the self-reenactment test")
    group.add_argument("--frames", metavar="START:STOP",
                       help="score only these output frames: numbers or percentages of the clip, e.g. 80%%: for "
                       "the last fifth (frames a model fitted on the rest never saw); default: all")
    group.add_argument("--no-sync", dest="sync", action="store_false",
                       help="skip the sync scores (no sync model needed)")
    for name in RECONSTRUCT_OPTIONS:
        add_option(group, name)
    parser.set_defaults(func=run)


# The options of `infer` a reconstruction takes (evaluate's own --detector, --device and --batch-size keep
# their meaning; the generator runs at infer's default batch).
RECONSTRUCT_OPTIONS = ("checkpoint", "precision", "backend", "enhancer_weights", "speaker_model", "pads", "box",
                       "smooth", "static", "silence", "crossfade", "blend", "mask", "mask_top", "mask_softness",
                       "colour_match", "enhance", "enhance_strength")


def _options(args: argparse.Namespace) -> dict:
    if args.batch_size < 1 or args.min_track < 1 or not args.min_face_size >= 0:
        raise Wav2LipError("--batch-size and --min-track must be at least 1, --min-face-size at least 0")
    return dict(model=args.model, mode=args.mode, detector=args.detector, detector_weights=args.detector_weights,
                device=args.device, batch_size=args.batch_size, min_track=args.min_track,
                min_face_size=args.min_face_size)


def run(args: argparse.Namespace) -> int:
    if (args.video is None) == (args.dir is None):
        raise Wav2LipError("give one VIDEO or --dir FOLDER")
    if args.reconstruct:
        return _run_reconstruct(args)
    if args.frames is not None:
        raise Wav2LipError("--frames is for --reconstruct")
    if args.dir is not None:
        return _run_folder(args)
    if args.csv:
        raise Wav2LipError("--csv is for --dir (one row per video); use --json for one video")
    inputs = [args.video, args.audio, args.reference, args.model, args.detector_weights]
    for out, what in ((args.json, "JSON output"), (args.plot, "plot")):
        if out:
            check_output(out, inputs, what)
    check_distinct(args.json, args.plot)
    options = _options(args)
    from ..evaluation.sync import evaluate_sync, plot_confidence  # torch loads only for good arguments

    rows = [("generated", args.video, args.audio)]
    if args.reference:
        reference = Path(args.reference)
        if reference.is_dir():
            reference = reference / Path(args.video).name
        rows.append(("reference", str(reference), None))
    scores = []
    for label, video, audio in rows:
        started = time.perf_counter()
        score = evaluate_sync(video, audio_path=audio, progress=show_progress(args), **options)
        seconds = time.perf_counter() - started
        scores.append((label, score))
        print(f"{video}: {score.n_frames} frames scored by {score.model} in {seconds:.1f} s "
              f"({score.n_frames / seconds:.1f} frames/s)" + (f", {len(score.tracks)} face tracks" if score.tracks else ""))
        print(f"{label + ' ' if args.reference else ''}AV offset: {score.offset:+d} frames")
        print(f"{label + ' ' if args.reference else ''}LSE-D: {score.lse_d:.3f}")
        print(f"{label + ' ' if args.reference else ''}LSE-C: {score.lse_c:.3f}")
    if args.json:
        data = {"video": str(args.video), "audio": args.audio, "mode": args.mode, **scores[0][1].as_dict()}
        if len(scores) > 1:
            data["reference"] = {"video": rows[1][1], **scores[1][1].as_dict()}
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
    if args.plot:
        plot_confidence(scores, args.plot, title=str(args.video))
    return 0


def _run_folder(args: argparse.Namespace) -> int:
    if args.audio:
        raise Wav2LipError("--audio is for one VIDEO; with --dir each video is scored against its own audio")
    options = _options(args)
    from ..evaluation.sync import evaluate_folder, means  # torch loads only for good arguments

    started = time.perf_counter()

    def report(result: VideoResult) -> None:
        if result.error:
            print(f"{result.set} {result.video}: error: {result.error}", file=sys.stderr)
        else:
            s = result.score
            print(f"{result.set} {result.video}: offset {s['offset']:+d}, LSE-D {s['lse_d']:.3f}, "
                  f"LSE-C {s['lse_c']:.3f}, {s['n_frames']} frames in {result.seconds:.1f} s", file=sys.stderr)

    results = evaluate_folder(args.dir, reference=args.reference, json_path=args.json, csv_path=args.csv,
                              plot_dir=args.plot, report=report, **options)
    print(f"{'':10} {'videos':>6} {'failed':>6} {'|offset|':>8} {'LSE-D':>7} {'LSE-C':>7}")
    for name in ("generated", "reference"):
        if any(r.set == name for r in results):
            m = means(results, name)
            print(f"{name:10} {m['videos']:6d} {m['failed']:6d} {m.get('abs_offset', float('nan')):8.2f} "
                  f"{m.get('lse_d', float('nan')):7.3f} {m.get('lse_c', float('nan')):7.3f}")
    frames = sum(r.score["n_frames"] for r in results if r.score)
    seconds = time.perf_counter() - started
    print(f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} frames/s, resumed videos included)")
    return 1 if any(r.error for r in results) else 0


def _run_reconstruct(args: argparse.Namespace) -> int:
    for flag, given in (("--reference", args.reference), ("--audio", args.audio), ("--plot", args.plot),
                        ("--mode track", args.mode == "track")):
        if given:
            raise Wav2LipError(f"{flag} does not go with --reconstruct (each video is its own truth)")
    if args.csv and args.dir is None:
        raise Wav2LipError("--csv is for --dir (one row per video); use --json for one video")
    names = set(RECONSTRUCT_OPTIONS)
    options = {k: v for k, v in from_namespace(args, SyncOptions).items() if k in names}
    SyncOptions.from_kwargs(options)  # bad options fail before the models load
    models = {k: v for k, v in from_namespace(args, ModelOptions).items() if k in names | {"detector", "device"}}
    models["detector_weights"] = args.detector_weights
    inputs = [args.video, args.dir, args.model, *(v for v in models.values() if isinstance(v, str))]
    for out, what in ((args.json, "JSON output"), (args.csv, "CSV output")):
        if out:
            check_output(out, inputs, what)
    check_distinct(args.json, args.csv)
    from ..evaluation.reconstruct import (MEAN_FIELDS, frame_range, means, reconstruct,  # torch loads only now
                                          reconstruct_folder)
    from ..io.video import find_videos, open_source
    from ..lipsync.offline import LipSyncer

    frame_range(args.frames, 10**9)  # the range's spelling is checked before anything runs
    if args.dir is None:
        open_source(args.video)  # a broken video is named before the models load
    else:
        find_videos(args.dir)
    syncer = LipSyncer(**models)
    sync = dict(sync_model=args.model if args.sync else None, sync_device=args.device)
    if args.dir is None:
        score = reconstruct(args.video, syncer, args.frames, **sync, progress=show_progress(args), **options)
        print(_describe(args.video, score))
        if args.json:
            with atomic_output(args.json) as tmp:
                tmp.write_text(json.dumps({**score.as_dict(), "options": options}, indent=1))
        return 0

    def report(name: str, score, error: str | None) -> None:
        print(f"{name}: error: {error}" if error else _describe(name, score), file=sys.stderr)

    rows = reconstruct_folder(args.dir, syncer, args.frames, **sync, json_path=args.json, csv_path=args.csv,
                              report=report, **options)
    summary = means(rows)
    print(f"{summary['videos']} videos, {summary['failed']} failed")
    for key, label in zip(MEAN_FIELDS, ("PSNR dB", "SSIM", "sharpness ratio", "LSE-D", "LSE-C")):
        if summary[key] is not None:
            print(f"mean {label}: {summary[key]:.3f}")
    return 1 if summary["failed"] else 0


def _describe(video: str, score) -> str:
    sync = "" if score.lse_c is None else (f", AV offset {score.offset:+d}, LSE-D {score.lse_d:.3f}, "
                                           f"LSE-C {score.lse_c:.3f}")
    return (f"{video}: frames {score.first}-{score.last - 1} of {score.frames}, {score.scored} scored "
            f"({score.no_face} without a face): PSNR {score.psnr:.2f} dB, SSIM {score.ssim:.4f}, "
            f"sharpness ratio {score.sharpness_ratio:.3f}{sync} ({score.seconds:.1f} s)")
