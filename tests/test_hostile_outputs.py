"""Hostile outputs for every command that writes: an output that is one of the inputs (by any name),
signals in the middle of a run, a full disk, unwritable places, bad option values and manifests.

Each case asserts the promise: one line, the right exit code, no traceback, nothing at the output
path or beside it, a pre-existing file there unchanged, and the inputs unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import cut_wav, deterministic_generator

import wav2lip
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.io.video import probe

BOX_ARGS = ["150", "470", "140", "380"]  # vr_face5.mp4's face: top bottom left right
OLD = b"an earlier result the user keeps"


def cli(args: list[str]) -> int:
    """`wav2lip ARGS` in this process: the exit code (usage errors exit through argparse)."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "terminate called" not in err
    return lines[0]


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Files in `folder` other than `keep` (temporary files start with a dot: listed too)."""
    return sorted(n for n in os.listdir(folder) if n not in keep)


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    """A narrow deterministic generator: loads in a blink, so subprocesses start fast."""
    return deterministic_generator(work / "narrow.pth", width=0.125)


@pytest.fixture(scope="module")
def inputs(media, work, checkpoint) -> dict[str, Path]:
    """Copies of real media (so hard links and symlinks to them can be made in the same folder)."""
    face = work / "face.mp4"
    face.write_bytes((media / "vr_face5.mp4").read_bytes())
    speech = cut_wav(media / "vr_audio1.wav", work / "speech.wav", 0.4)
    return {"face": face, "audio": speech, "checkpoint": checkpoint}


def infer_args(inputs: dict[str, Path], *extra: str) -> list[str]:
    return ["infer", "--checkpoint", str(inputs["checkpoint"]), "--precision", "fp32", "-q",
            "--face", str(inputs["face"]), "--audio", str(inputs["audio"]), "--box", *BOX_ARGS, *extra]


# ---------------------------------------------------------------- outputs that are inputs


def _alias(kind: str, target: Path, folder: Path) -> Path:
    """Another name for `target`: the same path spelled differently, a symlink, or a hard link."""
    if kind == "same path":
        return folder / ".." / folder.name / target.name
    link = folder / f"{kind.replace(' ', '_')}_{target.name}"
    if not link.exists():
        (link.symlink_to if kind == "symlink" else link.hardlink_to)(target)
    return link


@pytest.mark.parametrize("kind", ["same path", "symlink", "hard link"])
@pytest.mark.parametrize("which", ["face", "audio", "checkpoint"])
def test_infer_refuses_an_output_that_is_an_input(inputs, work, capsys, kind, which) -> None:
    before = {k: digest(p) for k, p in inputs.items()}
    out = _alias(kind, inputs[which], work)
    code = main(infer_args(inputs, "-o", str(out)))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "would destroy the input" in line
    assert {k: digest(p) for k, p in inputs.items()} == before
    assert not list(work.glob(".*.part*"))


def test_output_check_comes_before_any_work(inputs, work, capsys) -> None:
    """With a checkpoint that does not exist, the error is still the output's: nothing was loaded."""
    code = main(["infer", "--checkpoint", str(work / "absent.pth"), "--face", str(inputs["face"]),
                 "--audio", str(inputs["audio"]), "-o", str(inputs["face"])])
    assert code == 2 and "would destroy the input" in one_error_line(capsys.readouterr().err)


def test_api_refuses_an_output_that_is_an_input(inputs) -> None:
    before = digest(inputs["audio"])
    with pytest.raises(Wav2LipError, match="would destroy the input"):
        wav2lip.lipsync(inputs["face"], inputs["audio"], inputs["audio"], checkpoint=inputs["checkpoint"])
    assert digest(inputs["audio"]) == before


@pytest.mark.parametrize("command", [
    ["detect", "{face}", "--json", "{face}"],
    ["detect", "{face}", "--preview", "{link}"],
    ["detect", "{face}", "--json", "{work}/twice.mp4", "--preview", "{work}/twice.mp4"],
    ["evaluate", "{face}", "--json", "{face}"],
    ["evaluate", "{face}", "--audio", "{audio}", "--json", "{audio}"],
    ["export", "--onnx", "{checkpoint}", "--checkpoint", "{checkpoint}"],
    ["train-expert", "--data-root", "{work}", "--checkpoint-dir", "{work}/../{name}"],
])
def test_every_writing_command_refuses_its_inputs(inputs, work, capsys, command) -> None:
    link = _alias("symlink", inputs["face"], work)
    args = [a.format(work=work, name=work.name, link=link, **inputs) for a in command]
    before = {k: digest(p) for k, p in inputs.items()}
    names = set(os.listdir(work))
    code = main(args + (["-q"] if args[0] in ("detect", "evaluate", "export") else []))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2, line
    assert "input" in line or "two different outputs" in line
    assert {k: digest(p) for k, p in inputs.items()} == before
    assert set(os.listdir(work)) == names


# ---------------------------------------------------------------- unwritable places and bad values


@pytest.mark.parametrize("command", [
    ["detect", "{face}", "--box", *BOX_ARGS, "--json", "{work}"],
    ["evaluate", "{face}", "--json", "{work}"],
])
def test_json_pointing_at_a_folder_is_one_line(inputs, work, capsys, command) -> None:
    code = main([a.format(work=work, **inputs) for a in command] + ["-q"])
    assert code == 2 and "is a folder" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("extra, message", [
    (["-o", "/proc/x.mp4"], "cannot write"),
    (["-o", "{work}/x.avi"], ".avi"),
    (["-o", "{work}/x.mp4", "--lossless"], ".mkv"),
    (["-o", "{work}/x.mp4", "--fps", "nan"], "finite"),
    (["-o", "{work}/x.mp4", "--fps", "inf"], "finite"),
    (["-o", "{work}/x.mp4", "--resize-factor", "1000"], "resize-factor 1000"),
    (["-o", "{work}/x.mp4", "--preset", "bogus"], "invalid choice"),
    (["-o", "{work}/x.mp4", "--calibration", "0", "0", "0", "1"], "positive"),
    (["-o", "{work}/x.mp4", "--crf", "99"], "crf"),
])
def test_bad_output_or_value_is_one_line(inputs, work, capsys, extra, message) -> None:
    (work / "x.mp4").write_bytes(OLD)
    names = set(os.listdir(work))
    code = cli(infer_args(inputs, *(a.format(work=work) for a in extra)))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and message in line
    assert set(os.listdir(work)) == names and (work / "x.mp4").read_bytes() == OLD


def test_unknown_options_name_the_valid_ones(inputs, work) -> None:
    syncer = wav2lip.LipSyncer(inputs["checkpoint"], precision="fp32")
    with pytest.raises(Wav2LipError, match=r"unknown option bogus \(valid: box, pads"):
        syncer.run(inputs["face"], inputs["audio"], work / "kw.mp4", bogus=1)
    with pytest.raises(Wav2LipError, match=r"unknown options resize, smoth"):
        wav2lip.lipsync(inputs["face"], inputs["audio"], work / "kw.mp4", checkpoint=work / "absent.pth",
                        smoth="none", resize=2)
    with pytest.raises(Wav2LipError, match="unknown loop mode"):
        syncer.run(inputs["face"], inputs["audio"], work / "kw.mp4", loop="sideways")
    assert not list(work.glob("*kw.mp4*"))


def test_unwritable_checkpoint_folder_is_one_line(work, capsys) -> None:
    for folder in ("/proc/wav2lip_checkpoints", str(work / "face.mp4")):
        code = main(["train-expert", "--data-root", str(work), "--checkpoint-dir", folder, "--steps", "1"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and folder in line


# ---------------------------------------------------------------- manifests


def test_manifest_bom_latin1_folders_and_bad_lines(inputs, work, capsys) -> None:
    folder = work / "manifest"
    folder.mkdir()
    (folder / "taken").mkdir()
    face, audio = inputs["face"], inputs["audio"]
    text = ("face,audio,output\n"  # a header after a byte-order mark is still a header
            f"{face},{audio},new/deeper/a.mp4\n"  # output folders are made
            f"{face},{audio}\n"  # malformed: reported, the rest still runs
            f"{face},{audio},taken\n"  # a folder is not a finished output
            f"{face},{audio},{face}\n"  # the output is this line's input
            f"{face},{audio},b.mp4\n")
    (folder / "jobs.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    before = digest(face)
    code = main(infer_args(inputs)[:5] + ["--box", *BOX_ARGS, "--manifest", str(folder / "jobs.csv")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "jobs.csv:1" not in err
    assert "jobs.csv:3: error: expected face,audio,output, got 2 fields" in err
    assert "jobs.csv:4: error:" in err and "is a folder" in err
    assert "jobs.csv:5: error:" in err and "would destroy the input" in err
    assert "2 of 5 lines done (0 skipped: output exists), 3 failed" in err
    assert probe(folder / "new" / "deeper" / "a.mp4").n_frames == 10 and probe(folder / "b.mp4").n_frames == 10
    assert digest(face) == before and not any((folder / "taken").iterdir())

    (folder / "latin1.csv").write_bytes(f"{face},{audio},caf\xe9.mp4\n".encode("utf-8").replace(b"\xc3\xa9", b"\xe9"))
    code = main(infer_args(inputs)[:5] + ["--manifest", str(folder / "latin1.csv")])
    assert code == 2 and "latin1.csv:1: not UTF-8" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- signals and full disks (real subprocesses)


def _long_speech(media: Path, target: Path, seconds: int) -> Path:
    """`seconds` of real speech: vr_audio1.wav again and again."""
    with wave.open(str(media / "vr_audio1.wav")) as w:
        params, data = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(target), "wb") as w:
        w.setparams(params)
        for _ in range(int(np.ceil(seconds / params.nframes * params.framerate))):
            w.writeframes(data)
    return target


def _cli(args: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wav2lip", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_removes_the_partial_file_and_exits_cleanly(inputs, media, work, signum, code) -> None:
    folder = work / f"signal_{signum}"
    folder.mkdir()
    out = folder / "out.mp4"
    out.write_bytes(OLD)
    speech = _long_speech(media, work / "long.wav", 120)
    args = infer_args({**inputs, "audio": speech}, "-o", str(out))
    process = _cli(args)
    deadline = time.monotonic() + 600
    while not any(".part" in n for n in os.listdir(folder)):  # encoding has begun: threads are busy
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert one_error_line(stderr) == f"wav2lip: {'interrupted' if code == 130 else 'terminated'}; no output written"
    assert leftovers(folder, {"out.mp4"}) == [] and out.read_bytes() == OLD


def _full_disk_run(inputs: dict[str, Path], out: Path, *extra: str, **popen) -> subprocess.CompletedProcess:
    process = _cli(infer_args(inputs, "-o", str(out), *extra), **popen)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _limit_file_size() -> None:
    """In the child: files may not grow past 64 kB (writes fail with EFBIG instead of killing it)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))


@pytest.mark.parametrize("lossless", [False, True])
def test_file_size_limit_is_one_line_and_no_partial_file(inputs, work, lossless) -> None:
    folder = work / f"fsize_{lossless}"
    folder.mkdir()
    out = folder / ("out.mkv" if lossless else "out.mp4")
    out.write_bytes(OLD)
    result = _full_disk_run(inputs, out, *(["--lossless"] if lossless else []), preexec_fn=_limit_file_size)
    line = one_error_line(result.stderr)
    assert result.returncode == 2 and str(out) in line and "larger than" in line
    assert leftovers(folder, {out.name}) == [] and out.read_bytes() == OLD


@contextlib.contextmanager
def tmpfs(mount: Path, options: str, what: str):
    """A tmpfs mounted at `mount` for the block (root only); skipped, with the reason, where mounting is
    not permitted."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {what} here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 48 kB tmpfs: a disk that fills up."""
    with tmpfs(tmp_path / "small_disk", "size=48k", "a small tmpfs") as mount:
        yield mount


@pytest.mark.parametrize("lossless", [False, True])
def test_full_disk_is_one_line_and_no_partial_file(inputs, small_disk, lossless) -> None:
    out = small_disk / ("out.mkv" if lossless else "out.mp4")
    out.write_bytes(OLD)
    result = _full_disk_run(inputs, out, *(["--lossless"] if lossless else []))
    line = one_error_line(result.stderr)
    assert result.returncode == 2 and str(out) in line and "disk is full" in line
    assert leftovers(small_disk, {out.name}) == [] and out.read_bytes() == OLD


def test_read_only_disk_is_one_line(inputs, tmp_path, capsys) -> None:
    with tmpfs(tmp_path / "read_only", "ro,size=48k", "a read-only tmpfs") as mount:
        code = main(infer_args(inputs, "-o", str(mount / "out.mp4")))
        assert code == 2 and "Read-only file system" in one_error_line(capsys.readouterr().err)
        code = main(["train-expert", "--data-root", str(tmp_path), "--checkpoint-dir", str(mount / "ckpt")])
        assert code == 2 and "Read-only file system" in one_error_line(capsys.readouterr().err)
        assert os.listdir(mount) == []
