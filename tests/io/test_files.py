"""Atomic output: all or nothing at the final path, with ordinary permissions."""
import os
import stat

import pytest

from wav2lip.errors import Wav2LipError
from wav2lip.io.files import atomic_output


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


def test_same_file_sees_every_name_of_a_file(tmp_path):
    from wav2lip.io.files import same_file

    source = tmp_path / "talk.mp4"
    source.write_bytes(b"video")
    (tmp_path / "soft.mp4").symlink_to(source)
    os.link(source, tmp_path / "hard.mp4")
    (tmp_path / "sub").mkdir()
    for name in ("soft.mp4", "hard.mp4", "sub/../talk.mp4"):
        assert same_file(tmp_path / name, source)
    (tmp_path / "copy.mp4").write_bytes(b"video")
    assert not same_file(tmp_path / "copy.mp4", source) and not same_file(tmp_path / "absent.mp4", source)


def test_check_output_refuses_inputs_folders_and_unwritable_places(tmp_path):
    from wav2lip.io.files import check_output

    source = tmp_path / "talk.mp4"
    source.write_bytes(b"video")
    os.link(source, tmp_path / "hard.mp4")
    with pytest.raises(Wav2LipError, match="would destroy the input"):
        check_output(tmp_path / "hard.mp4", [None, tmp_path / "other.wav", source])
    with pytest.raises(Wav2LipError, match="is a folder"):
        check_output(tmp_path, [source])
    with pytest.raises(Wav2LipError, match="cannot write"):
        check_output("/proc/out.mp4")
    assert check_output(tmp_path / "new.mp4", [source]) == tmp_path / "new.mp4"
    assert sorted(os.listdir(tmp_path)) == ["hard.mp4", "talk.mp4"]  # the write probe is gone


def test_check_distinct_and_check_folder(tmp_path):
    from wav2lip.io.files import check_distinct, check_folder

    check_distinct(tmp_path / "a.json", None, tmp_path / "b.mp4")
    with pytest.raises(Wav2LipError, match="two different outputs"):
        check_distinct(tmp_path / "a.json", tmp_path / "." / "a.json")
    assert check_folder(tmp_path / "made" / "deep").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(Wav2LipError, match="is a file"):
        check_folder(tmp_path / "file")
    with pytest.raises(Wav2LipError, match="input folder"):
        check_folder(tmp_path / "made" / ".." / "made", inputs=[tmp_path / "made"])


def test_partial_outputs_are_known_until_the_block_ends(tmp_path):
    """What a signal handler removes: the temporary file of a block still running, nothing else."""
    from wav2lip.io.files import remove_partial_outputs

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileNotFoundError):
        with atomic_output(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            remove_partial_outputs()
            assert not tmp.exists()
            tmp.read_text()
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_write_errors_of_the_disk_are_one_error_and_still_os_errors(tmp_path):
    import errno

    from wav2lip.io.files import WriteError

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(WriteError, match="disk is full") as caught:
        with atomic_output(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
