"""Atomic output: all or nothing at the final path, with ordinary permissions."""
import os
import stat

import pytest

from wav2lip.errors import Wav2LipError
from wav2lip.files import atomic_output


def test_success_renames_with_umask_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt"
        tmp.write_text("done")
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert list(tmp_path.iterdir()) == [target]


def test_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(Wav2LipError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "out.mp4"):
            pass
