"""Atomic output: a file appears at its final path complete, or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import Wav2LipError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The temporary file lives in the same folder (so the rename is atomic) and keeps the
    extension of `path` (or `suffix`) so that format guessing by extension still works.
    Nothing is left behind on failure, and an existing file at `path` survives a failure.
    """
    final = Path(path)
    folder = final.parent if str(final.parent) else Path(".")
    if not folder.is_dir():
        raise Wav2LipError(f"{final}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise Wav2LipError(f"{final}: output folder {folder} is not writable")
    ext = suffix if suffix is not None else "".join(final.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{ext}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
