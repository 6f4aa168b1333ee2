"""The `wav2lip` command: argparse subcommands that only parse arguments and call the API.

Each subcommand lives in its own module of this package with a `register(subparsers)` function
that adds its parser and sets `func`; `main` turns a `Wav2LipError` into one line and exit code 2,
and an interrupt (Ctrl-C, SIGTERM) into one line, no partial output and exit code 130 or 143.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
import time
import warnings
from typing import Iterator

from ..errors import Wav2LipError

# Subcommand modules, in the order `wav2lip --help` lists them.
SUBCOMMANDS: list[str] = ["weights", "export", "detect", "synth_data", "infer", "evaluate", "train", "preprocess", "serve", "live",
                          "fit_enhancer"]

# OS errors about the user's files and disks (not bugs): reported as one line like a Wav2LipError.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
               errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EIO, errno.ENXIO}
THREAD_WAIT_S = 5.0  # after an interrupt, how long worker threads get to leave torch/PyAV before exit


def _one_line(exc: Wav2LipError) -> str:
    """The user's message. An error raised in a DataLoader worker is re-raised by torch with the worker's
    traceback in its text; its last line is the original message."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Wav2LipError") else last
    return text


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that every `finally` (temporary files) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _version() -> str:
    from .. import __version__

    return __version__


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too (the usage itself is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wav2lip", description="Lip-sync videos and photos to speech (Wav2Lip, reimplemented)."
    )
    parser.add_argument("--version", action="version", version=f"wav2lip {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` once (a second signal during cleanup is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_threads() -> bool:
    """Wait (bounded) for the pipeline's stage threads to end; True when none is left running."""
    deadline = time.monotonic() + THREAD_WAIT_S
    stages = [t for t in threading.enumerate() if t.name.startswith("wav2lip-") and t is not threading.current_thread()]
    for thread in stages:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in stages)


def _interrupted(signum: int) -> int:
    from ..io.files import remove_partial_outputs

    remove_partial_outputs()
    name = "interrupted" if signum == signal.SIGINT else "terminated"
    print(f"wav2lip: {name}; no output written", file=sys.stderr)
    code = 128 + signum
    if not _stop_threads():
        # A thread still inside torch or PyAV would abort the interpreter's exit: leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    # Library UserWarnings (torch's deprecations and read-only NumPy buffers, ...) say nothing a user can
    # act on and break the promise of one line per error; our own warnings go through logging. The
    # Python API leaves warnings to the caller.
    warnings.filterwarnings("ignore", category=UserWarning)
    with _signals_raise():
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
            return int(args.func(args) or 0)
        except Wav2LipError as exc:
            print(f"wav2lip: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except OSError as exc:
            if exc.errno not in USER_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"wav2lip: error: {where}{exc.strerror or exc}", file=sys.stderr)
            return 2
        except Interrupted as exc:
            return _interrupted(exc.signum)
        except KeyboardInterrupt:
            return _interrupted(signal.SIGINT)
