"""The `wav2lip` command: argparse subcommands that only parse arguments and call the API.

Each subcommand lives in its own module of this package with a `register(subparsers)` function
that adds its parser and sets `func`; `main` turns a `Wav2LipError` into one line and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import Wav2LipError

# Subcommand modules, in the order `wav2lip --help` lists them.
SUBCOMMANDS: list[str] = ["weights", "export", "detect", "synth_data", "infer", "evaluate", "train", "preprocess", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wav2lip", description="Lip-sync videos and photos to speech (Wav2Lip, reimplemented)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Wav2LipError as exc:
        print(f"wav2lip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wav2lip: interrupted", file=sys.stderr)
        return 130
