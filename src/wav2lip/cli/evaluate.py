"""`wav2lip evaluate VIDEO`: the AV offset, LSE-D and LSE-C of a video, as the SyncNet v2 evaluator scores it."""
from __future__ import annotations

import argparse
import json

from ..evaluate import evaluate_sync
from ..files import atomic_output, check_output
from ..options import EVALUATE_MODES
from .common import add_detector, add_device, add_quiet, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score lip sync: AV offset, LSE-D (lower is better), LSE-C (higher is better)",
        description="Score a video's lip sync with the SyncNet v2 evaluator (LSE-D / LSE-C of the Wav2Lip paper).",
    )
    parser.add_argument("video", metavar="VIDEO", help="video to score")
    parser.add_argument("--audio", metavar="FILE", help="score against this audio instead of the video's own track")
    parser.add_argument("--mode", choices=EVALUATE_MODES, default="whole",
                        help="whole: each whole frame (face crops, the paper's LRS2 way; default); "
                        "track: follow the face and crop it as the evaluator does (videos in the wild)")
    parser.add_argument("--syncnet", metavar="PATH_OR_NAME", default="syncnet_v2.model",
                        help="SyncNet v2 weights: a file or a model store name (default: syncnet_v2.model)")
    add_detector(parser, help_extra="; --mode track only")
    add_device(parser)
    parser.add_argument("--batch-size", type=int, default=20, help="5-frame clips per forward pass")
    parser.add_argument("--json", metavar="OUT", help="also write the scores and per-frame confidence here")
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.json:
        check_output(args.json, [args.video, args.audio, args.syncnet, args.detector_weights], "JSON output")
    score = evaluate_sync(args.video, audio_path=args.audio, model=args.syncnet, mode=args.mode,
                          detector=args.detector, device=args.device, batch_size=args.batch_size,
                          detector_weights=args.detector_weights, progress=show_progress(args))
    print(f"{args.video}: {score.n_frames} frames scored")
    print(f"AV offset: {score.offset:+d} frames")
    print(f"LSE-D: {score.lse_d:.3f}")
    print(f"LSE-C: {score.lse_c:.3f}")
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps({"video": str(args.video), "audio": args.audio, "mode": args.mode,
                                       **score.as_dict()}, indent=1))
    return 0
