"""io.arrays: .npy/.npz read without trusting their headers (real files written by numpy, then damaged)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from wav2lip.io.arrays import load_npy, load_npz


def _with_shape(path, shape: str) -> None:
    """Rewrite the header's shape in place, padded so the header keeps its length."""
    data = path.read_bytes()
    end = data.index(b"\n")
    header = data[:end].decode("latin-1")
    start = header.index("'shape': (")
    stop = header.index(")", start) + 1
    new = (header[:start] + f"'shape': {shape}" + header[stop:]).rstrip().ljust(end)
    assert len(new) == end
    path.write_bytes(new.encode("latin-1") + data[end:])


@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_matches_numpy(tmp_path, order):
    array = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(4, 6)) if order == "F" \
        else np.arange(24, dtype=np.int64).reshape(4, 6)
    np.save(tmp_path / "a.npy", array)
    out = load_npy(tmp_path / "a.npy")
    assert out.dtype == array.dtype and np.array_equal(out, np.load(tmp_path / "a.npy")) and out.flags.writeable
    with open(tmp_path / "b.npz", "wb") as f:
        np.savez(f, x=array, y=np.zeros(3))
    arrays = load_npz(tmp_path / "b.npz", ["x", "y"])
    assert np.array_equal(arrays["x"], array) and arrays["y"].shape == (3,)


@pytest.mark.parametrize("shape", ["(1000000000000,)", "(4294967296, 4294967296)", "(80, 1000)", "(2,)"])
def test_declared_size_must_match_the_data(tmp_path, shape):
    """A header asking for a terabyte (found by benchmarks/fuzz.py: np.load allocates it first) or for more or
    fewer bytes than the file holds is refused before anything is allocated."""
    path = tmp_path / "mel.npy"
    np.save(path, np.zeros((80, 16), np.float32))
    _with_shape(path, shape)
    with pytest.raises(ValueError, match="declares"):
        load_npy(path)


def test_objects_and_foreign_members_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        load_npy(tmp_path / "o.npy")
    buffer = io.BytesIO()
    np.savez(buffer, boxes=np.zeros((2, 4)))
    with zipfile.ZipFile(buffer) as archive, zipfile.ZipFile(tmp_path / "e.npz", "w") as out:
        out.writestr("boxes.npy", b"not an array")
        out.writestr("other.npy", archive.read("boxes.npy"))
    with pytest.raises(ValueError, match="magic"):
        load_npz(tmp_path / "e.npz", ["boxes"])
    with pytest.raises(KeyError):
        load_npz(tmp_path / "e.npz", ["missing"])
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="npz"):
        load_npz(tmp_path / "z.npz", ["boxes"])


@pytest.mark.parametrize("header", ["{'descr': '<f4', 'fortran_order': False, 'shape': (80,", "{'descr': 'V0', "
                                    "'fortran_order': False, 'shape': (3,), }", "{'descr': '<f4', 'fortran_order': "
                                    "False, 'shape': (-3,), }", "['not', 'a', 'dict']"])
def test_damaged_headers_are_value_errors(tmp_path, header):
    """Headers the literal parser chokes on (an unclosed bracket raised tokenize.TokenError: fuzzing) or that
    declare impossible arrays are ValueErrors."""
    text = (header + " ").ljust(118) + "\n"
    path = tmp_path / "h.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + bytes(12))
    with pytest.raises(ValueError):
        load_npy(path)
