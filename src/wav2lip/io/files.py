"""Output files: never one of the inputs, complete or absent at their final path, gone when a run is stopped.

`check_output` is called by every command before any work, with every file the command reads;
`atomic_output` writes through a temporary file beside the target and renames it at the end.
A full disk (or a file-size limit) while writing becomes one `Wav2LipError` naming the output.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import Wav2LipError

# Write errors a user fixes by freeing space or choosing another disk; reported as one line.
_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
         errno.EFBIG: "the file is larger than the file system or a limit allows"}

# Temporary files of `atomic_output` blocks in progress, so a signal handler can remove them.
_PARTIAL: set[Path] = set()


class WriteError(Wav2LipError, OSError):
    """Writing an output failed for a reason of the disk (full, quota, size limit); still an OSError,
    so code that tolerates failed writes (caches) keeps tolerating it."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file: the same inode, however reached (another spelling,
    a symlink, a hard link)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                    what: str = "output") -> Path:
    """Fail when `path` is one of `inputs` by inode (another spelling, a symlink, a hard link)."""
    out = Path(path)
    for source in inputs:
        if source is not None and same_file(out, source):
            raise Wav2LipError(f"{out}: the {what} is the input file {source}; writing it would destroy "
                               "the input (choose another output path)")
    return out


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                 what: str = "output") -> Path:
    """Fail before any work when `path` cannot be written: it is one of `inputs` (by inode), a folder,
    or its folder is missing or refuses a new file (read-only, /proc, no permission)."""
    out = check_not_input(path, inputs, what)
    if out.is_dir():
        raise Wav2LipError(f"{out}: is a folder, not an {what} file")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise Wav2LipError(f"{out}: {what} folder {folder} does not exist")
    try:  # os.access says yes to root everywhere; only creating a file tells the truth
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise Wav2LipError(f"{out}: cannot write in {what} folder {folder} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return out


def check_distinct(*outputs: str | os.PathLike | None) -> None:
    """Fail when two outputs of one command are the same path (the second would replace the first)."""
    seen: dict[Path, str | os.PathLike] = {}
    for out in outputs:
        if out is None:
            continue
        key = Path(os.path.realpath(out))
        if key in seen or any(same_file(out, other) for other in seen.values()):
            raise Wav2LipError(f"{out}: given as two different outputs of one command (choose two paths)")
        seen[key] = out


def check_folder(path: str | os.PathLike, what: str = "output folder",
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Fail before any work when files cannot be created in the folder `path` (made if missing),
    or when it is one of the input folders `inputs`."""
    folder = Path(path)
    for source in inputs:
        if source is not None and same_file(folder, source):
            raise Wav2LipError(f"{folder}: the {what} is the input folder {source} (choose another)")
    if folder.exists() and not folder.is_dir():
        raise Wav2LipError(f"{folder}: the {what} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".", suffix=".probe", dir=folder)
    except OSError as exc:
        raise Wav2LipError(f"{folder}: cannot write in the {what} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def remove_partial_outputs() -> None:
    """Remove the temporary files of every `atomic_output` in progress (for a signal handler)."""
    for tmp in list(_PARTIAL):
        with contextlib.suppress(OSError):
            tmp.unlink()
        _PARTIAL.discard(tmp)


def _write_error(final: Path, exc: OSError) -> WriteError | None:
    reason = _FULL.get(exc.errno or 0)
    if reason is None:
        return None
    error = WriteError(f"{final}: {reason} ({exc.strerror}); nothing was written")
    error.errno = exc.errno
    return error


def _create_partial(final: Path, folder: Path, ext: str) -> Path:
    """Create a new private temporary file beside `final`, registered in _PARTIAL *before* it exists,
    so a signal at any point leaves no file that neither the caller nor the signal handler knows of."""
    for _ in range(100):
        tmp = folder / f".{final.name}.{secrets.token_hex(4)}.part{ext}"
        _PARTIAL.add(tmp)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return tmp
        except FileExistsError:
            _PARTIAL.discard(tmp)
        except BaseException as exc:
            _PARTIAL.discard(tmp)
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not isinstance(exc, OSError):
                raise
            raise _write_error(final, exc) or Wav2LipError(
                f"{final}: cannot write in output folder {folder} ({exc.strerror})") from None
    raise Wav2LipError(f"{final}: cannot find a free temporary name in {folder}")


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
    tmp = _create_partial(final, folder, ext)
    try:
        yield tmp
        # The temporary file is private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except OSError as exc:
        error = _write_error(final, exc)
        if error is None or isinstance(exc, WriteError):
            raise
        raise error from None
    finally:
        _PARTIAL.discard(tmp)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
