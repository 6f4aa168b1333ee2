"""`wav2lip synth-data`: write synthetic talking faces with known mouth opening (training tests)."""
from __future__ import annotations

import argparse

from ..lipsync.options import SYNTH_LAYOUTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth-data", help="write synthetic talking-face clips whose true mouth opening is known",
        description="Drawn faces whose mouths follow synthetic speech, deterministic by seed: either "
        "videos with audio (input for `wav2lip preprocess`) or the prepared training layout.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder")
    parser.add_argument("--clips", type=int, required=True, help="number of clips")
    parser.add_argument("--layout", choices=SYNTH_LAYOUTS, default="prepared",
                        help="prepared: face crops + audio.wav + file lists; videos: 25 fps mp4 with audio")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--clips-per-speaker", type=int, default=4, help="clips sharing one drawn face")
    parser.add_argument("--shift", type=int, default=0,
                        help="frames by which faces lag their audio (out-of-sync data for sync filtering)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..data import synth  # NumPy, OpenCV and PyAV load only once the command runs

    written = synth.write_dataset(
        args.out, args.clips, layout=args.layout, seed=args.seed, seconds=args.seconds,
        clips_per_speaker=args.clips_per_speaker, shift=args.shift,
    )
    print(f"wrote {len(written)} clips under {args.out}")
    return 0
