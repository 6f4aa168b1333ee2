"""evaluation.reconstruct: the self-reenactment test (a clip lip-synced to its own soundtrack, measured
against itself)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cpu_syncer, deterministic_generator
from wav2lip import LipSyncer, Wav2LipError
from wav2lip.evaluation.measures import sharpness, ssim
from wav2lip.evaluation.reconstruct import _Meter, frame_range, reconstruct, reconstruct_folder
from wav2lip.io.audio import SAMPLE_RATE, load_audio, write_wav
from wav2lip.io.video import VideoWriter, open_source
from wav2lip.lipsync.kernel import Frame
from wav2lip.lipsync.options import SyncOptions

BOX = np.array([140, 150, 380, 470])  # vr_face5's face: x1, y1, x2, y2


@pytest.fixture(scope="module")
def clip(media, work) -> Path:
    """30 frames of a real talking head with its own soundtrack (1.2 s)."""
    frames = list(open_source(media / "vr_face5.mp4").frames(30))
    audio = work / "own.wav"
    write_wav(audio, load_audio(media / "vr_face5.mp4")[:int(1.2 * SAMPLE_RATE)])
    path = work / "talk.mkv"
    with VideoWriter(path, 25, frames[0].shape[1], frames[0].shape[0], audio=audio, lossless=True) as writer:
        writer.write_many(frames)
    return path


@pytest.fixture(scope="module")
def syncer(work) -> LipSyncer:
    checkpoint = deterministic_generator(work / "g.pth", width=0.125)
    return cpu_syncer(checkpoint)


def test_frame_ranges() -> None:
    assert frame_range(None, 50) == (0, 50)
    assert frame_range("80%:", 50) == (40, 50)
    assert frame_range(":-10", 50) == (0, 40)
    assert frame_range("5:20", 50) == (5, 20)
    assert frame_range("10:1000", 50) == (10, 50)
    for bad in ("5", "a:b", "20:10", "100%:", "1:2:3"):
        with pytest.raises(Wav2LipError, match="--frames"):
            frame_range(bad, 50)


def test_the_real_frames_score_perfectly_and_a_shifted_copy_lower(clip) -> None:
    """The meter on frames equal to the real ones: PSNR inf, SSIM 1, sharpness ratio 1; shifted by two
    pixels: finite PSNR, SSIM below 1."""
    real = list(open_source(clip).frames(30))
    same, shifted = (_Meter(clip, SyncOptions(), 0, 30) for _ in range(2))
    for k, image in enumerate(real):
        same(Frame(k, k, True, image.copy(), BOX))
        shifted(Frame(k, k, True, np.roll(image, 2, axis=1), BOX))
    assert same.psnr == math.inf and same.mean_ssim == pytest.approx(1.0)
    assert same.sharp_out == same.sharp_real > 0 and same.sharpness_ratio == 1
    assert math.isfinite(shifted.psnr) and 15 < shifted.psnr < 60
    assert shifted.mean_ssim < 0.99
    grey = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint8)
    assert ssim(grey, grey) == pytest.approx(1.0) and sharpness(np.full((40, 40), 7, np.uint8)) == 0


def test_reconstruction_of_a_clip_scores_the_range_it_is_given(syncer, clip) -> None:
    whole = reconstruct(clip, syncer, silence="off")
    assert whole.frames == 30 and (whole.first, whole.last) == (0, 30) and whole.scored + whole.no_face == 30
    assert whole.scored >= 25
    assert 5 < whole.psnr < 60 and 0 < whole.ssim < 1 and whole.sharpness_ratio > 0
    assert whole.lse_c is None
    tail = reconstruct(clip, syncer, frames="80%:", silence="off")
    assert (tail.first, tail.last) == (24, 30) and tail.scored + tail.no_face == 6
    # The same frames measured alone: the whole run's last six, not a different score.
    assert tail.psnr != whole.psnr


def test_a_folder_gives_rows_means_json_and_csv(syncer, clip, work, tiny_expert) -> None:
    folder = work / "clips"
    folder.mkdir()
    (folder / "a.mkv").write_bytes(clip.read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    rows = reconstruct_folder(folder, syncer, frames="50%:", sync_model=f"expert:{tiny_expert}", sync_device="cpu",
                              json_path=work / "r.json", csv_path=work / "r.csv", silence="off")
    assert [(name, error is None) for name, _, error in rows] == [("a.mkv", True), ("broken.mp4", False)]
    data = json.loads((work / "r.json").read_text())
    assert data["means"]["videos"] == 2 and data["means"]["failed"] == 1
    good = data["videos"][0]
    assert good["first"] == 15 and good["lse_c"] is not None and isinstance(good["offset"], int)
    with open(work / "r.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["video"] for r in table] == ["a.mkv", "broken.mp4"] and table[1]["error"]
    assert float(table[0]["psnr"]) == pytest.approx(good["psnr"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wav2lip", "evaluate", *args], capture_output=True, text=True,
                          timeout=600)


def test_the_command_scores_a_clip_against_itself(clip, work, models_dir, tiny_expert) -> None:
    checkpoint = deterministic_generator(work / "g_cli.pth", width=0.125)
    out = work / "cli.json"
    done = _cli(str(clip), "--reconstruct", "--checkpoint", str(checkpoint), "--detector-weights",
                str(models_dir / "retinaface_mobilenet0.25.pth"), "--device", "cpu", "--precision", "fp32",
                "--frames", "80%:", "--model", f"expert:{tiny_expert}", "--silence", "off", "--json", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert "frames 24-29 of 30" in done.stdout and "PSNR" in done.stdout and "LSE-C" in done.stdout
    data = json.loads(out.read_text())
    assert (data["first"], data["last"]) == (24, 30) and data["options"]["silence"] == "off"
    assert data["lse_c"] is not None and 0 < data["ssim"] < 1


def test_the_command_scores_a_folder_and_prints_the_means(clip, work, models_dir) -> None:
    checkpoint = deterministic_generator(work / "g_dir.pth", width=0.125)
    folder = work / "dir_clips"
    folder.mkdir()
    (folder / "a.mkv").write_bytes(clip.read_bytes())
    (folder / "empty.mp4").write_bytes(b"")
    done = _cli("--dir", str(folder), "--reconstruct", "--no-sync", "--checkpoint", str(checkpoint),
                "--detector-weights", str(models_dir / "retinaface_mobilenet0.25.pth"), "--device", "cpu",
                "--precision", "fp32", "--frames", "80%:", "--silence", "off", "--csv", str(work / "dir.csv"), "-q")
    assert done.returncode == 1, done.stderr  # one video failed, the other was scored
    assert "2 videos, 1 failed" in done.stdout and "mean PSNR dB: " in done.stdout and "LSE-C" not in done.stdout
    assert "empty.mp4: error:" in done.stderr and "a.mkv: frames 24-29 of 30" in done.stderr
    with open(work / "dir.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert f"mean PSNR dB: {float(table[0]['psnr']):.3f}" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--reference", "x"], "--reference does not go with --reconstruct"),
    (["--mode", "track"], "--mode track does not go with --reconstruct"),
    (["--csv", "x.csv"], "--csv is for --dir"),
    (["--mask-top", "2"], "mask top must be between 0 and 0.96"),
    (["--frames", "10"], "expected START:STOP"),
])
def test_the_command_refuses_what_a_reconstruction_cannot_take(clip, args, message) -> None:
    done = _cli(str(clip), "--reconstruct", "--no-sync", *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_frames_without_reconstruct_is_refused(clip) -> None:
    done = _cli(str(clip), "--frames", "80%:")
    assert done.returncode == 2 and "--frames is for --reconstruct" in done.stderr


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 100])
def test_a_broken_video_is_one_line(syncer, work, content) -> None:
    bad = work / f"bad{len(content)}.mp4"
    bad.write_bytes(content)
    with pytest.raises(Wav2LipError, match=str(bad.name)):
        reconstruct(bad, syncer)
    done = _cli(str(bad), "--reconstruct", "--no-sync", "--device", "cpu")
    assert done.returncode == 2 and bad.name in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
