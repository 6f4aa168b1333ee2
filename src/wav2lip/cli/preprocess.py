"""`wav2lip preprocess`: videos -> the training layout (face crops, audio, file lists); sync filtering."""
from __future__ import annotations

import argparse

from .. import preprocess
from ..device import resolve_device
from ..errors import Wav2LipError
from .common import add_detector, add_device, add_quiet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess", help="turn videos into training data (face crops, audio, file lists)",
        description="Resample videos to 25 fps, crop the detected face of every frame, write 16 kHz audio "
        "and train/val/test lists. Resumable; shards by RANK/WORLD_SIZE for several machines. With "
        "--filter-sync, score the clips with a trained expert and drop those out of sync.",
    )
    parser.add_argument("--input-dir", metavar="RAW", help="folder of videos (searched recursively)")
    parser.add_argument("--output-dir", required=True, metavar="PREP", help="prepared data folder")
    add_detector(parser, "--weights")
    add_device(parser)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per detector batch")
    parser.add_argument("--filter-sync", metavar="EXPERT", help="trained lip-sync expert for sync filtering")
    parser.add_argument("--min-sync", type=float, default=0.5,
                        help="clips whose mean in-sync probability is below this leave the lists")
    add_quiet(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.input_dir and not args.filter_sync:
        raise Wav2LipError("nothing to do: give --input-dir (preprocess) and/or --filter-sync (filter)")
    device = str(resolve_device(args.device))
    if args.input_dir:
        results = preprocess.preprocess(
            args.input_dir, args.output_dir, detector=args.detector, weights=args.detector_weights,
            device=device, workers=args.workers, batch_size=args.batch_size, progress=not args.quiet,
        )
        failed = [r for r in results if r.error]
        print(f"{len(results) - len(failed)} clips ready, {len(failed)} failed")
    if args.filter_sync:
        dropped = preprocess.filter_sync(args.output_dir, args.filter_sync, args.min_sync, device=device)
        print("dropped: " + ", ".join(f"{split} {len(names)}" for split, names in dropped.items()))
    return 0
