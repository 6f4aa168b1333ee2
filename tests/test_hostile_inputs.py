"""Generated hostile inputs through the real command line (`python -m wav2lip` in a subprocess): each gives
one line, exit code 2, no traceback, nothing at or beside the output, an existing output unchanged and the
inputs untouched."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cut_wav, deterministic_generator

from wav2lip.io.video import VideoWriter, open_source


@pytest.fixture(scope="module")
def generator(work) -> Path:
    return deterministic_generator(work / "generator.pth", width=0.125)


@pytest.fixture(scope="module")
def speech(media, work) -> Path:
    return cut_wav(media / "vr_audio1.wav", work / "speech.wav", 1.0)


@pytest.fixture(scope="module")
def faststart(media, work, speech) -> Path:
    """1 s of vr_face5.mp4 at 96x96 with its audio, moov first (as our writer makes it)."""
    import cv2

    path = work / "faststart.mp4"
    with VideoWriter(path, 25, 96, 96, audio=speech) as writer:
        for image in open_source(media / "vr_face5.mp4").frames(25, loop="none"):
            writer.write(cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA))
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" + bytes(width * 3))) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def hostile(work, faststart, media) -> dict[str, Path]:
    """Name -> a generated hostile media file (or folder, or FIFO)."""
    import cv2

    data = faststart.read_bytes()
    mdat = data.find(b"mdat")
    files = {
        "zero bytes": b"",
        "random bytes": np.random.default_rng(1).bytes(20_000),
        "header only": data[: mdat + 8],
        "truncated faststart 40%": data[: mdat + (len(data) - mdat) * 4 // 10],
        "truncated faststart 75%": data[: mdat + (len(data) - mdat) * 3 // 4],
        "truncated index-last": (media / "vr_face5.mp4").read_bytes()[:60_000],
        "unknown codec": data.replace(b"avc1", b"zzzz"),  # no decoder: PyAV gives the stream no codec context
    }
    paths = {}
    for name, content in files.items():
        path = work / (name.replace(" ", "_").replace("%", "") + ".mp4")
        path.write_bytes(content)
        paths[name] = path
    paths["huge png"] = _png_header(work / "huge.png", 16000, 16000)
    paths["huger png"] = _png_header(work / "huger.png", 20000, 20000)
    paths["tall png"] = work / "tall.png"  # 2 megapixels, but taller than H.264 allows (fuzzing: a tall GIF)
    cv2.imwrite(str(paths["tall png"]), np.full((20000, 100, 3), 128, np.uint8))
    paths["folder"] = work / "a_folder.mp4"
    paths["folder"].mkdir()
    paths["fifo"] = work / "pipe.mp4"
    os.mkfifo(paths["fifo"])
    return paths


def _digest(path: Path) -> str:
    if not path.is_file():
        return path.stat().st_mode.__repr__()  # a FIFO or folder: must not change kind
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WAV2LIP_OFFLINE="1", WAV2LIP_HOME=str(cwd / "home"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "wav2lip", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *names: Path) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("wav2lip: error: ") and any(str(n) in lines[0] for n in names), lines[0]
    return lines[0]


def assert_nothing_beside(output: Path, before: set[str]) -> None:
    assert set(os.listdir(output.parent)) == before, sorted(set(os.listdir(output.parent)) - before)


FACE_CASES = ["zero bytes", "random bytes", "header only", "truncated faststart 40%", "truncated faststart 75%",
              "truncated index-last", "unknown codec", "huge png", "huger png", "folder", "fifo"]


@pytest.mark.parametrize("case", FACE_CASES)
def test_infer_face(case, hostile, generator, speech, work):
    face = hostile[case]
    out_dir = work / f"out_{case.replace(' ', '_').replace('%', '')}"
    out_dir.mkdir()
    output = out_dir / "result.mp4"
    output.write_bytes(b"an earlier result")
    before, inputs = set(os.listdir(out_dir)), {p: _digest(p) for p in (face, speech, generator)}
    result = run_cli("infer", "--face", str(face), "--audio", str(speech), "-o", str(output), "--checkpoint",
                     str(generator), "--box", "10", "90", "10", "90", "--precision", "fp32", "-q", cwd=work)
    line = assert_one_line_error(result, face)
    if "png" in case:
        assert "too large" in line and "corrupt" not in line
    if "truncated faststart" in case:
        assert "truncated" in line
    assert output.read_bytes() == b"an earlier result"
    assert_nothing_beside(output, before)
    assert {p: _digest(p) for p in inputs} == inputs


AUDIO_CASES = ["zero bytes", "random bytes", "truncated faststart 40%", "truncated faststart 75%", "folder", "fifo"]


@pytest.mark.parametrize("case", AUDIO_CASES)
def test_infer_audio(case, hostile, generator, faststart, work):
    audio = hostile[case]
    out_dir = work / f"aout_{case.replace(' ', '_').replace('%', '')}"
    out_dir.mkdir()
    output = out_dir / "result.mp4"
    result = run_cli("infer", "--face", str(faststart), "--audio", str(audio), "-o", str(output), "--checkpoint",
                     str(generator), "--box", "10", "90", "10", "90", "--precision", "fp32", "-q", cwd=work)
    line = assert_one_line_error(result, audio)
    if "truncated" in case:
        assert "truncated" in line
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("case", ["zero bytes", "truncated faststart 40%", "huge png", "fifo", "folder"])
def test_detect(case, hostile, work, models_dir):
    video = hostile[case]
    output = work / f"boxes_{case.replace(' ', '_').replace('%', '')}.json"
    result = run_cli("detect", str(video), "--json", str(output),
                     "--retinaface-weights", str(models_dir / "retinaface_mobilenet0.25.pth"), cwd=work)
    assert_one_line_error(result, video)
    assert not output.exists()


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch ran-a-command",))


@pytest.fixture(scope="module")
def bad_checkpoints(work, generator) -> dict[str, Path]:
    import torch

    data = generator.read_bytes()
    paths = {name: work / f"ckpt_{name.replace(' ', '_')}.pth"
             for name in ("zero bytes", "random bytes", "truncated", "runs a command")}
    paths["zero bytes"].write_bytes(b"")
    paths["random bytes"].write_bytes(np.random.default_rng(2).bytes(5000))
    paths["truncated"].write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": RunsACommand()}, paths["runs a command"])
    return paths


@pytest.mark.parametrize("case", ["zero bytes", "random bytes", "truncated", "runs a command"])
def test_checkpoints_for_weights_inspect_and_infer(case, bad_checkpoints, faststart, speech, work):
    checkpoint = bad_checkpoints[case]
    line = assert_one_line_error(run_cli("weights", "inspect", str(checkpoint), cwd=work), checkpoint)
    if case == "runs a command":
        assert "would run code" in line and not (work / "ran-a-command").exists()
    output = work / f"ck_{case.replace(' ', '_')}.mp4"
    result = run_cli("infer", "--face", str(faststart), "--audio", str(speech), "-o", str(output), "--checkpoint",
                     str(checkpoint), "--box", "10", "90", "10", "90", "-q", cwd=work)
    assert assert_one_line_error(result, checkpoint) == line
    assert not output.exists() and not (work / "ran-a-command").exists()


def test_training_inputs_name_the_file(tmp_path):
    """A random or object-array mel.npy and a config value of the wrong type are one line naming the file."""
    import json

    from wav2lip.errors import Wav2LipError
    from wav2lip.train.config import make_config
    from wav2lip.data.layout import clip_mel

    clip = tmp_path / "clip"
    clip.mkdir()
    mel = clip / "mel.npy"
    for content in (np.random.default_rng(3).bytes(500), None, np.zeros((3, 4), np.float32)):
        if content is None:
            np.save(mel, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        elif isinstance(content, bytes):
            mel.write_bytes(content)
        else:
            np.save(mel, content)
        with pytest.raises(Wav2LipError, match=f"^{mel}: ") as caught:
            clip_mel(clip)
        assert "\n" not in str(caught.value)
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"lr": "fast"}))
    with pytest.raises(Wav2LipError, match=f"^{config}: setting lr must be float, got 'fast'$"):
        make_config("expert", config)


def test_corrupt_face_images_in_training_data_are_one_line_naming_a_file(tmp_path):
    """Every face JPEG of a prepared set damaged: train-expert (a DataLoader worker process draws the
    samples) fails in one line naming an unreadable image, not a worker traceback or a wrong hint."""
    from wav2lip.data import synth

    root = tmp_path / "prep"
    synth.write_dataset(root, 4, seed=2, seconds=1.2, clips_per_speaker=2, val_fraction=0.25, test_fraction=0.0)
    images = sorted(root.rglob("*.jpg"))
    assert images
    for image in images:
        image.write_bytes(image.read_bytes()[:20])
    before = {p: p.stat().st_size for p in images}
    result = run_cli("train-expert", "--data-root", str(root), "--checkpoint-dir", str(tmp_path / "ckpt"),
                     "--steps", "2", "--batch-size", "2", "--width", "0.125", "--workers", "1", "--no-progress",
                     cwd=tmp_path)
    line = assert_one_line_error(result, *images)
    assert "not a readable face image" in line
    assert {p: p.stat().st_size for p in images} == before


def test_cut_audio_in_training_data_is_one_line_naming_the_clip(tmp_path):
    """Every clip's audio.wav cut to 0.1 s (a damaged copy, found by fuzzing): no window of any clip has its
    audio, and the one line names an audio.wav that is too short, not only the data folder."""
    from wav2lip.data import synth
    from wav2lip.io.audio import load_audio, write_wav

    root = tmp_path / "prep"
    synth.write_dataset(root, 4, seed=2, seconds=1.2, clips_per_speaker=2, val_fraction=0.25, test_fraction=0.0)
    sounds = sorted(root.rglob("audio.wav"))
    for sound in sounds:
        write_wav(sound, load_audio(sound)[:1600])
        (sound.parent / "mel.npy").unlink(missing_ok=True)
    result = run_cli("train-expert", "--data-root", str(root), "--checkpoint-dir", str(tmp_path / "ckpt"),
                     "--steps", "2", "--batch-size", "2", "--width", "0.125", "--workers", "0", "--no-progress",
                     cwd=tmp_path)
    line = assert_one_line_error(result, *sounds)
    assert re.search(r"audio\.wav: 0\.1\d s of audio for frames that need [\d.]+ s, and no usable training", line)


@pytest.mark.parametrize("case", ["zero bytes", "random bytes", "truncated faststart 40%", "huge png", "fifo",
                                  "folder"])
def test_evaluate(case, hostile, faststart, bad_checkpoints, work):
    """evaluate reads a video, an audio file and a model: each hostile one is one line naming it, no JSON."""
    bad = hostile[case]
    expert = bad_checkpoints["truncated"]
    output = work / f"scores_{case.replace(' ', '_').replace('%', '')}.json"
    before = {p: _digest(p) for p in (bad, faststart, expert)}
    for args, named in ((["evaluate", str(bad)], bad), (["evaluate", str(faststart), "--audio", str(bad)], bad),
                        (["evaluate", str(faststart), "--model", f"expert:{expert}"], expert)):
        assert_one_line_error(run_cli(*args, "--json", str(output), "-q", cwd=work), named)
        assert not output.exists()
    assert {p: _digest(p) for p in before} == before


@pytest.mark.parametrize("case", ["zero bytes", "random bytes", "truncated", "runs a command"])
def test_export(case, bad_checkpoints, work):
    pytest.importorskip("onnx")
    checkpoint = bad_checkpoints[case]
    output = work / f"export_{case.replace(' ', '_')}.onnx"
    line = assert_one_line_error(run_cli("export", "--onnx", str(output), "--checkpoint", str(checkpoint), cwd=work),
                                 checkpoint)
    assert not output.exists() and not (work / "ran-a-command").exists()
    if case == "runs a command":
        assert "would run code" in line


def test_manifest_with_a_field_past_the_csv_limit(generator, work):
    """A manifest line of 200 kB (past csv's 128 kB field limit; found by benchmarks/fuzz.py) is one line
    naming the manifest, not csv's traceback."""
    manifest = work / "huge_field.csv"
    manifest.write_text("face,audio,output\n" + "a" * 200_000 + ",b.wav,c.mp4\n", encoding="utf-8")
    result = run_cli("infer", "--manifest", str(manifest), "--checkpoint", str(generator), "--box", "10", "90", "10",
                     "90", "-q", cwd=work)
    assert "field limit" in assert_one_line_error(result, manifest)


def test_manifest_path_with_a_nul_byte_is_a_failed_line(generator, faststart, speech, work):
    """A NUL byte in a manifest path (found by benchmarks/fuzz.py; the OS refuses such names with a
    ValueError) fails its line in one line; the other lines still run."""
    folder = work / "nul_manifest"
    folder.mkdir()
    manifest = folder / "pairs.csv"
    manifest.write_text(f"{faststart},{speech},a.mp4\n{faststart},{speech},sub\0dir/b.mp4\n", encoding="utf-8")
    result = run_cli("infer", "--manifest", str(manifest), "--checkpoint", str(generator), "--box", "10", "90", "10",
                     "90", "-q", cwd=work)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{manifest}:2: error: a path holds a NUL byte" in result.stderr
    assert sorted(os.listdir(folder)) == ["a.mp4", "pairs.csv"]


def test_refused_training_leaves_no_checkpoint_folder(tmp_path):
    """A damaged mel.npy refuses training in one line naming it, and the checkpoint folder the run made
    (with a parent) is gone again (found by benchmarks/fuzz.py: an empty folder was left behind)."""
    from wav2lip.data import synth

    root = tmp_path / "prep"
    synth.write_dataset(root, 3, seed=2, seconds=1.2, clips_per_speaker=3, val_fraction=0.34, test_fraction=0.0)
    mels = []
    for wav in sorted(root.rglob("audio.wav")):
        mels.append(wav.with_name("mel.npy"))
        mels[-1].write_bytes(b"\x00\x00\x80\xc0" * 40)  # newer than audio.wav, so training reads it
    result = run_cli("train-expert", "--data-root", str(root), "--checkpoint-dir", str(tmp_path / "runs" / "ckpt"),
                     "--steps", "1", "--batch-size", "2", "--width", "0.125", "--workers", "0", "--no-progress",
                     cwd=tmp_path)
    assert "not a saved mel spectrogram" in assert_one_line_error(result, *mels)
    assert not (tmp_path / "runs").exists()


def test_manifest_outputs_thousands_of_folders_deep(generator, faststart, speech, work):
    """Output paths 1,900 folders deep (found by benchmarks/fuzz.py: pathlib's mkdir(parents=True) recursed
    past Python's limit) are written; 3,000 deep, past the OS's 4096-byte path limit, fail their line in one
    line and leave no folder; the other lines run."""
    folder = work / "deep_manifest"
    folder.mkdir()
    manifest = folder / "pairs.csv"
    manifest.write_text(f"{faststart},{speech},a.mp4\n{faststart},{speech},{'d/' * 1900}b.mp4\n"
                        f"{faststart},{speech},{'e/' * 3000}c.mp4\n", encoding="utf-8")
    result = run_cli("infer", "--manifest", str(manifest), "--checkpoint", str(generator), "--box", "10", "90", "10",
                     "90", "-q", cwd=work)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{manifest}:3: error:" in result.stderr and "2 of 3 lines done" in result.stderr
    assert (folder / ("d/" * 1900 + "b.mp4")).is_file()
    assert sorted(os.listdir(folder)) == ["a.mp4", "d", "pairs.csv"]
    subprocess.run(["rm", "-rf", str(folder / "d")], check=True)  # pytest's own clean-up recurses once per level


def test_face_taller_than_h264_allows(hostile, generator, speech, work):
    """A face 20,000 pixels tall (2 megapixels; found by benchmarks/fuzz.py as a GIF whose height field was
    set to 65535: x264 failed to open, a traceback) is refused before any work, naming the output and why."""
    output = work / "tall_out" / "result.mp4"
    output.parent.mkdir()
    result = run_cli("infer", "--face", str(hostile["tall png"]), "--audio", str(speech), "-o", str(output),
                     "--checkpoint", str(generator), "--box", "10", "90", "10", "90", "-q", cwd=work)
    assert "too large for H.264" in assert_one_line_error(result, output)
    assert os.listdir(output.parent) == []
