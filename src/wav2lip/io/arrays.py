"""NumPy files (.npy, .npz) that may be damaged or hostile, read without trusting their headers.

`np.load` allocates what a header declares before it reads a byte of data, so a 100-byte file can ask for a
terabyte (or, inside an .npz, hand back raw bytes for a member that is not an array). Here the declared
size must match the bytes actually present, be under a bound, and hold no Python objects, before anything
is allocated; every problem is a ValueError saying what is wrong, for the caller to name its file.
"""
from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from typing import IO, Iterable

import numpy as np

MAX_BYTES = 1 << 30  # no array we store (mels, face boxes) comes near this


def _read_checked(f: IO[bytes], available: int, max_bytes: int) -> np.ndarray:
    """The array in `f` (at a .npy's start), `available` bytes long in all."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
    try:  # the header is a Python literal: a damaged one fails in the parser's own ways
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (SyntaxError, TypeError, KeyError, OverflowError, tokenize.TokenError) as exc:
        raise ValueError(f"unreadable .npy header ({exc})") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects, not numbers")
    if dtype.itemsize == 0 or any(d < 0 for d in shape):
        raise ValueError(f"declares an impossible array ({dtype}, shape {shape})")
    declared = math.prod(shape) * dtype.itemsize
    present = available - f.tell()
    if declared > max_bytes:
        raise ValueError(f"declares {declared} bytes of data, more than the {max_bytes} allowed")
    if declared != present:
        raise ValueError(f"declares {declared} bytes of data but holds {present}")
    data = f.read(declared)
    if len(data) != declared:
        raise ValueError("truncated array data")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def load_npy(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The array of a .npy file (a copy, writable)."""
    with open(path, "rb") as f:
        return _read_checked(f, os.fstat(f.fileno()).st_size, max_bytes).copy()


def load_npz(path: str | os.PathLike, names: Iterable[str], max_bytes: int = MAX_BYTES) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file (`name` is the member `name.npy`); a missing one is a KeyError."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in names:
                info = archive.getinfo(f"{name}.npy")
                if info.file_size > max_bytes + 65536:
                    raise ValueError(f"member {name}.npy declares {info.file_size} bytes")
                with archive.open(info) as member:
                    arrays[name] = _read_checked(member, info.file_size, max_bytes).copy()
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError) as exc:
        raise ValueError(f"not a readable .npz archive ({exc})") from None
    return arrays
