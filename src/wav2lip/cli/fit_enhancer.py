"""`wav2lip fit-enhancer FACE -o FACE.enhancer.pth`: learn this person's mouth at 2x to 4x the generator's size."""
from __future__ import annotations

import argparse

from ..io.files import check_output
from ..lipsync.options import TABLE, add_option
from .common import add_box, add_detector, add_quiet, box_to_xyxy, show_progress

DEFAULT_MINUTES = 1.5  # lipsync.self_enhance.DEFAULT_MINUTES, repeated so that --help needs no torch


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-enhancer", help="fit a mouth enhancer to one face video (for infer --enhance PATH)",
        description="Learn, from the face video alone, to turn the 96-px face the generator paints into the "
        "lower face at 2x to 4x that size for this person; use the file with infer --enhance PATH "
        "(--enhance self fits one on first use and caches it). Where the face video has its own soundtrack, "
        "half the training inputs are the --checkpoint generator's faces painted from it, as infer paints "
        "them. Runs on the CPU.",
    )
    parser.add_argument("face", metavar="FACE", help="the face video (or image) that will be lip-synced")
    parser.add_argument("-o", "--outfile", required=True, metavar="FILE", help="where to write the enhancer (.pth)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, metavar="M",
                        help=f"training time, after the faces are found (default: {DEFAULT_MINUTES:g})")
    parser.add_argument("--steps", type=int, metavar="N", help="stop after N training steps (default: time only)")
    parser.add_argument("--frames", metavar="START:STOP",
                        help="fit on these frames only: numbers or percentages of the clip, e.g. :80%% (default: all)")
    add_box(parser)
    add_option(parser, "checkpoint", help=TABLE["checkpoint"].help + "; its faces for the video's own soundtrack "
               "teach the enhancer that generator's blur and colours (none: a model of them only; default: "
               f"{TABLE['checkpoint'].default})")
    add_detector(parser)
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import Wav2LipError  # torch and the models load only once a command runs
    from ..evaluation.reconstruct import frame_range
    from ..faces import create_detector
    from ..io.video import open_source
    from ..lipsync import self_enhance

    check_output(args.outfile, [args.face] + ([args.checkpoint] if args.checkpoint != "none" else []), "enhancer")
    if not args.minutes > 0 or args.steps is not None and args.steps < 1:
        raise Wav2LipError(f"--minutes must be above 0 and --steps at least 1 (got {args.minutes:g}, {args.steps})")
    source = open_source(args.face)  # a face file that is no video or image is refused before any model loads
    frames = frame_range(args.frames, source.n_frames_estimate) if args.frames else None
    box = box_to_xyxy(args.box) if args.box else None
    self_enhance.check_box(args.face, box)  # before any model loads
    detector = None if box else create_detector(args.detector, weights=args.detector_weights)
    painter = None
    if args.checkpoint != "none":
        from ..lipsync.offline import LipSyncer

        painter = self_enhance.painter_for(  # the generator loads only for a face with sound
            args.face, lambda: LipSyncer(args.checkpoint, detector or "retinaface", device="cpu"))
    model, record = self_enhance.fit(args.face, detector, args.minutes, args.steps or self_enhance.MAX_STEPS,
                                     frames, box=box, progress=show_progress(args), painter=painter)
    self_enhance.save(args.outfile, model, record)
    painted = f", half painted by {args.checkpoint}" if painter else ""
    print(f"{args.outfile}: fitted on {record.frames} faces of {args.face}{painted} "
          f"(frames {record.first}-{record.last}), "
          f"{record.scale}x, {record.steps} steps in {record.seconds:.0f} s, loss {record.loss:.2f} "
          f"(bicubic {record.bicubic_loss:.2f}) grey levels, sharpening {record.sharpen:.2f} (sharpness "
          f"{record.sharpness:.2f} of the video's before it), steadying {record.steady:g}")
    return 0
