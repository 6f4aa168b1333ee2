"""Arguments every subcommand spells the same way (detector, its weights, device, face box: from the option
table), progress."""
from __future__ import annotations

import argparse
import sys

from ..lipsync.options import TABLE, add_option


def add_detector(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *old_weights: str,
                 help_extra: str = "") -> None:
    """--detector and --detector-weights; `old_weights` are earlier spellings, accepted but not shown."""
    add_option(parser, "detector")
    add_option(parser, "detector_weights", help=TABLE["detector_weights"].help + help_extra)
    for spelling in old_weights:
        parser.add_argument(spelling, dest="detector_weights", help=argparse.SUPPRESS)


def add_device(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "") -> None:
    add_option(parser, "device", help=TABLE["device"].help.replace("torch device", f"torch device{what}"))


def add_box(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    add_option(parser, "box")


def box_to_xyxy(box: list[int] | tuple[int, ...]) -> tuple[int, int, int, int]:
    """--box (top, bottom, left, right) -> (x1, y1, x2, y2)."""
    top, bottom, left, right = box
    return left, top, right, bottom


def xyxy_to_box(box) -> list[int]:
    """(x1, y1, x2, y2) -> --box numbers (top, bottom, left, right)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return [y1, y2, x1, x2]


def add_quiet(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on stderr when it is a terminal and -q was not given."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def progress_bar(total: int | None, enabled: bool, unit: str = "frame", desc: str | None = None):
    """A tqdm bar (or None when disabled)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, smoothing=0.1)
