"""`wav2lip preprocess`: videos -> the training layout (face crops, audio, file lists); sync correction and filtering."""
from __future__ import annotations

import argparse
import sys

from ..errors import Wav2LipError
from ..io.files import check_folder
from .common import add_detector, add_device, add_quiet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess", help="turn videos into training data (face crops, audio, file lists)",
        description="Resample videos to 25 fps, crop the detected face of every frame, split clips at scene cuts "
        "and long face losses, write 16 kHz audio and train/val/test lists. Resumable; shards by RANK/WORLD_SIZE "
        "for several machines. With --sync-fix, measure each clip's audio-video offset, shift the audio of clips "
        "confidently out of sync and drop clips whose sync cannot be seen; with --filter-sync, drop clips a "
        "trained expert scores as out of sync. A clip either step drops leaves the lists; running a step again "
        "replaces only that step's decisions.",
    )
    parser.add_argument("--input-dir", metavar="RAW", help="folder of videos (searched recursively)")
    parser.add_argument("--output-dir", required=True, metavar="PREP", help="prepared data folder")
    add_detector(parser, "--weights")
    add_device(parser)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per detector batch")
    parser.add_argument("--sync-fix", metavar="MODEL",
                        help="correct sync with this model: syncnet_v2.model (a file or store name) or "
                        "expert:PATH (a trained lip-sync expert); starts from the original audio and lists")
    parser.add_argument("--min-confidence", type=float,
                        help="--sync-fix: clips at or above this confidence are corrected and kept, the rest "
                        "leave the lists (default 3.0 for SyncNet v2, 0.1 for an expert)")
    parser.add_argument("--filter-sync", metavar="EXPERT", help="trained lip-sync expert for sync filtering")
    parser.add_argument("--min-sync", type=float, default=0.5,
                        help="clips whose mean in-sync probability is below this leave the lists")
    add_quiet(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.input_dir and not args.filter_sync and not args.sync_fix:
        raise Wav2LipError("nothing to do: give --input-dir (preprocess), --sync-fix and/or --filter-sync")
    check_folder(args.output_dir, "--output-dir", inputs=[args.input_dir])
    from ..data import preprocess  # torch and the models load only for good arguments
    from ..device import resolve_device

    device = str(resolve_device(args.device))
    failed = []
    if args.input_dir:
        results = preprocess.preprocess(
            args.input_dir, args.output_dir, detector=args.detector, weights=args.detector_weights,
            device=device, workers=args.workers, batch_size=args.batch_size, progress=not args.quiet,
        )
        failed = [r for r in results if r.error]
        t = preprocess.totals(results)
        print(f"{t['videos'] - t['failed']} videos ready, {t['failed']} failed; {t['split']} split, "
              f"{t['dropped']} without a usable stretch; {t['clips']} clips, {t['frames']} frames, "
              f"{t['hours']:.3f} hours (details in {args.output_dir}/report.json)")
    if args.sync_fix:
        from ..data.syncfix import sync_fix

        def report(r) -> None:
            state = r.error or (f"shifted {r.offset:+d}, now {r.offset_after:+d}" if r.shifted else
                                "kept" if r.kept else "dropped: confidence too low")
            print(f"{r.name}: offset {r.offset:+d}, confidence {r.confidence:.3f}: {state}", file=sys.stderr)

        records = sync_fix(args.output_dir, args.sync_fix, args.min_confidence, device=device, report=report)
        print(f"sync-fix: {len(records)} clips, {sum(r.shifted for r in records)} shifted, "
              f"{sum(not r.kept for r in records)} dropped, {sum(bool(r.error) for r in records)} unscorable")
    if args.filter_sync:
        dropped = preprocess.filter_sync(args.output_dir, args.filter_sync, args.min_sync, device=device)
        print("dropped: " + ", ".join(f"{split} {len(names)}" for split, names in dropped.items()))
    if failed:
        print(f"wav2lip: {len(failed)} videos failed: " + "; ".join(f"{r.name}: {r.error}" for r in failed[:3])
              + (" ..." if len(failed) > 3 else ""), file=sys.stderr)
        return 1
    return 0
