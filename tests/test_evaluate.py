"""evaluate.py: the evaluator's MFCC and offset arithmetic against the fixture, and LSE scoring of real clips."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from wav2lip import evaluate as ev
from wav2lip.audio import load_audio
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.faces import Detection, create_detector
from wav2lip.models.deterministic import fill_deterministic
from wav2lip.models.syncnet_v2 import SyncNetV2
from wav2lip.video_io import VideoWriter, open_source


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """16 kHz mono int16 wav of float samples in [-1, 1]."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2").tobytes())
    return path


def write_video(path: Path, frames: list[np.ndarray], audio: Path | None = None) -> Path:
    height, width = frames[0].shape[:2]
    with VideoWriter(path, 25, width, height, audio=audio, crf=12) as writer:
        writer.write_many(frames)
    return path


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return np.load(fixtures_dir / "syncnet_v2_evaluator.npz")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The deterministic SyncNet v2 as a bare state dict, the released file's format."""
    path = tmp_path_factory.mktemp("weights") / "syncnet_v2.model"
    torch.save(fill_deterministic(SyncNetV2()).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def talking_clip(media, tmp_path_factory) -> tuple[Path, Path]:
    """The first 10 frames (0.4 s) of a real talking-head clip at 192 x 192, with its own audio."""
    folder = tmp_path_factory.mktemp("clip")
    source = open_source(media / "vr_face5.mp4", fps=25)
    frames = [cv2.resize(f, (192, 192), interpolation=cv2.INTER_AREA) for f in source.frames(10, loop="none")]
    wav = write_wav(folder / "speech.wav", load_audio(media / "vr_face5.mp4")[: 10 * 640])
    return write_video(folder / "talking.mp4", frames, audio=wav), wav


def test_mfcc_matches_evaluator(fixtures_dir, fixture):
    samples = ev.evaluator_audio(fixtures_dir / "speech_16k.wav")
    assert samples.max() > 1000  # int16 values, not [-1, 1]
    assert_mfcc = ev.mfcc(samples)
    assert assert_mfcc.shape == fixture["mfcc"].shape == (13, 445)
    np.testing.assert_allclose(assert_mfcc, fixture["mfcc"], rtol=1e-6, atol=1e-6)


def test_offset_search_matches_fixture(fixture):
    result = ev.offset_search(torch.from_numpy(fixture["im_feat"]), torch.from_numpy(fixture["cc_feat"]),
                              vshift=int(fixture["vshift"]))
    np.testing.assert_allclose(result.mean_dists, fixture["mean_dists"], rtol=1e-5, atol=1e-4)
    assert result.offset == int(fixture["offset"])
    assert result.min_dist == pytest.approx(float(fixture["min_dist"]), rel=1e-5)
    assert result.confidence == pytest.approx(float(fixture["confidence"]), rel=1e-5)
    assert result.framewise_conf.shape == (fixture["im_feat"].shape[0],)


@pytest.mark.parametrize("lag", [-4, 0, 3, 15])
def test_offset_search_finds_planted_lag(lag):
    """Audio clip j carries video clip j - lag's embedding: video i matches audio i + lag -> offset -lag."""
    rng = np.random.default_rng(lag + 100)
    video = torch.from_numpy(rng.normal(size=(60, 32)).astype(np.float32))
    audio = torch.from_numpy(rng.normal(size=(60, 32)).astype(np.float32))
    for j in range(60):
        if 0 <= j - lag < 60:
            audio[j] = video[j - lag]
    result = ev.offset_search(video, audio)
    assert result.offset == -lag
    assert result.min_dist == result.mean_dists.min()
    assert result.confidence == pytest.approx(float(np.sort(result.mean_dists)[15] - result.min_dist), rel=1e-5)


def test_median_filter_pads_with_zeros():
    np.testing.assert_array_equal(ev.median_filter(np.array([1.0, 5, 2, 8, 3]), 3), [1, 2, 5, 3, 3])
    np.testing.assert_array_equal(ev.median_filter(np.array([4.0, 4, 4]), 5), [4, 4, 4])
    with pytest.raises(ValueError):
        ev.median_filter(np.ones(4), 4)


def test_crop_track_follows_the_evaluator_rule():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (300, 320, 3), dtype=np.uint8)
    boxes = np.tile([100.0, 100.0, 160.0, 160.0], (20, 1))  # s = 30, centre (130, 130)
    s, cx, cy = ev.smooth_track(boxes)[10]
    assert (s, cx, cy) == (30, 130, 130)
    expected = cv2.resize(frame[100:184, 88:172], (224, 224))
    np.testing.assert_array_equal(ev.crop_track(frame, s, cx, cy), expected)
    # Near the bottom edge the crop runs into the grey padding.
    crop = ev.crop_track(frame, 30, 130, 280)
    assert np.all(crop[-40:] == 110)


def test_smooth_track_removes_a_one_frame_jump():
    boxes = np.tile([100.0, 100.0, 160.0, 160.0], (30, 1))
    boxes[15] += 50
    smoothed = ev.smooth_track(boxes)
    np.testing.assert_array_equal(smoothed[15], [30, 130, 130])
    short = ev.smooth_track(np.tile([0.0, 0.0, 40.0, 20.0], (6, 1)))  # kernel shrinks: no zeros win
    assert np.all(short[:, 0] == 20)


def _det(x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(box=np.array([x1, y1, x2, y2], dtype=np.float32), score=0.9)


def test_link_face_track_follows_one_face():
    small, big, moved = _det(10, 10, 50, 50), _det(100, 100, 200, 200), _det(14, 12, 54, 52)
    picked = ev.link_face_track([[small], [big, moved], [], [big], [big]] + [[]] * 26 + [[small, big]])
    np.testing.assert_array_equal(picked[0], small.box)
    np.testing.assert_array_equal(picked[1], moved.box)  # continuity beats size
    assert picked[2] is None and picked[3] is None  # the big face never overlaps the track
    np.testing.assert_array_equal(picked[-1], big.box)  # lost for over 25 frames: the largest face restarts


def test_fill_track_interpolates_short_gaps_and_holds_the_rest():
    a, b = np.array([0.0, 0, 40, 40]), np.array([40.0, 0, 80, 40])
    boxes = ev.fill_track([None, a, None, None, None, b] + [None] * 30 + [a])
    np.testing.assert_array_equal(boxes[0], a)  # before the first face: held
    np.testing.assert_allclose(boxes[3], [20, 0, 60, 40])  # halfway between a and b
    np.testing.assert_array_equal(boxes[10], b)  # a 30-frame gap is not bridged: nearest box
    np.testing.assert_array_equal(boxes[34], a)
    with pytest.raises(ValueError):
        ev.fill_track([None, None])


class Planted(nn.Module):
    """Features both towers can agree on: per-frame brightness vs per-frame loudness (bright = loud).

    Stands in for trained SyncNet weights (none exist here) so that frame/audio alignment, clip slicing
    and the offset sign are checked on real decoded media.
    """

    def __init__(self, log_energy_threshold: float) -> None:
        super().__init__()
        self.threshold = log_energy_threshold

    def forward_lip(self, lips: torch.Tensor) -> torch.Tensor:
        return (lips.mean(dim=(1, 3, 4)) > 128).float()  # (B, 5)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        # MFCC frames 4v and 4v + 1 lie wholly inside video frame v's 640 samples (4v + 2 and 4v + 3 overlap v + 1).
        energy = mfcc[:, 0, 0, :].reshape(-1, 5, 4)[:, :, :2].mean(dim=2)
        return (energy > self.threshold).float()


@pytest.fixture(scope="module")
def planted_clip(tmp_path_factory) -> tuple[Path, np.ndarray, list[np.ndarray]]:
    """80 frames whose brightness follows a random loud/quiet pattern of the audio, frame by frame."""
    folder = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(7)
    loud = rng.random(80) < 0.5
    noise = rng.uniform(-1, 1, 80 * 640)
    samples = noise * np.repeat(np.where(loud, 0.5, 0.002), 640)
    frames = [np.full((64, 64, 3), 220 if on else 20, np.uint8) for on in loud]
    return folder, samples, frames


def _planted_model(samples: np.ndarray) -> Planted:
    energy = ev.mfcc(np.round(samples * 32767))[0]
    return Planted((np.percentile(energy, 10) + np.percentile(energy, 90)) / 2)


@pytest.mark.parametrize("delay", [0, 2, 5])
def test_evaluate_finds_audio_delay(planted_clip, delay):
    folder, samples, frames = planted_clip
    video = folder / "bright.mp4"
    if not video.exists():
        write_video(video, frames)
    delayed = np.concatenate([np.zeros(delay * 640), samples])
    wav = write_wav(folder / f"delay{delay}.wav", delayed)
    score = ev.evaluate_sync(video, audio_path=wav, model=_planted_model(samples))
    assert score.offset == -delay
    assert score.n_frames == 80 - 5
    # Exact match except the last `delay` clips, whose audio lies beyond the scored range (zero vectors).
    loud = np.array([f.mean() > 128 for f in frames], dtype=np.float64)
    beyond = [np.sqrt(loud[v:v + 5].sum()) for v in range(75 - delay, 75)]
    assert score.lse_d == pytest.approx(sum(beyond) / 75, abs=1e-4)


def test_evaluate_muxed_aac_track_stays_in_sync(planted_clip):
    folder, samples, frames = planted_clip
    video = write_video(folder / "muxed.mp4", frames, audio=write_wav(folder / "own.wav", samples))
    score = ev.evaluate_sync(video, model=_planted_model(samples))
    assert score.offset == 0
    assert score.n_frames == min(80, load_audio(video).size // 640) - 5


@pytest.fixture(scope="module")
def whole_score(talking_clip, checkpoint) -> ev.SyncScore:
    return ev.evaluate_sync(talking_clip[0], model=checkpoint)


def test_evaluate_real_clip_with_syncnet_v2(talking_clip, whole_score):
    video, _ = talking_clip
    score = whole_score
    assert score.n_frames == 10 - 5
    assert score.mean_dists.shape == (31,)
    assert score.lse_d == pytest.approx(float(score.mean_dists.min()))
    assert score.lse_c == pytest.approx(float(np.median(score.mean_dists) - score.mean_dists.min()), rel=1e-5)
    assert score.offset == 15 - int(np.argmin(score.mean_dists))
    assert score.framewise_conf.shape == (score.n_frames,) and np.all(np.isfinite(score.framewise_conf))
    # Streaming in batches changes nothing.
    again = ev.evaluate_sync(video, model=fill_deterministic(SyncNetV2()), batch_size=4)
    np.testing.assert_allclose(again.mean_dists, score.mean_dists, rtol=1e-5)


def test_evaluate_track_mode_crops_the_face(talking_clip, checkpoint, whole_score, models_dir):
    video, _ = talking_clip
    detector = create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth")
    boxes = ev._face_boxes(video, 10, detector, torch.device("cpu"))
    assert boxes.shape == (10, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.all((centre > 48) & (centre < 144))  # the presenter's face is near the middle
    tracked = ev.evaluate_sync(video, model=checkpoint, mode="track", detector=detector)
    assert tracked.n_frames == whole_score.n_frames
    assert not np.allclose(tracked.mean_dists, whole_score.mean_dists)


def test_cli_prints_scores_and_writes_json(talking_clip, checkpoint, tmp_path, capsys):
    video, wav = talking_clip
    out = tmp_path / "scores.json"
    code = main(["evaluate", str(video), "--audio", str(wav), "--syncnet", str(checkpoint), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert f"LSE-D: {data['lse_d']:.3f}" in printed and f"LSE-C: {data['lse_c']:.3f}" in printed
    assert f"AV offset: {data['offset']:+d} frames" in printed
    assert data["n_frames"] == 5 and len(data["framewise_conf"]) == 5 and len(data["mean_dists"]) == 31


def test_too_short_and_wrong_inputs(tmp_path, planted_clip, media, checkpoint, models_dir):
    folder, samples, frames = planted_clip
    model = _planted_model(samples)
    five = write_video(tmp_path / "five.mp4", frames[:5])
    with pytest.raises(Wav2LipError, match="too few video frames"):
        ev.evaluate_sync(five, audio_path=write_wav(tmp_path / "a.wav", samples), model=model)
    six = write_video(tmp_path / "six.mp4", frames[:6])
    assert ev.evaluate_sync(six, audio_path=tmp_path / "a.wav", model=model).n_frames == 1
    short_audio = write_wav(tmp_path / "short.wav", samples[:5 * 640 + 100])
    with pytest.raises(Wav2LipError, match="too short"):
        ev.evaluate_sync(six, audio_path=short_audio, model=model)
    with pytest.raises(Wav2LipError, match="no audio stream"):
        ev.evaluate_sync(six, model=model)
    with pytest.raises(Wav2LipError, match="still image"):
        ev.evaluate_sync(media / "st_art0.png", audio_path=tmp_path / "a.wav", model=model)
    detector = create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth")
    with pytest.raises(Wav2LipError, match="no face"):
        ev.evaluate_sync(six, audio_path=tmp_path / "a.wav", model=model, mode="track", detector=detector)
    with pytest.raises(Wav2LipError, match="expected the SyncNet v2 evaluator"):
        wrong = tmp_path / "wrong.pth"
        torch.save({"face_encoder.0.weight": torch.zeros(1)}, wrong)
        ev.evaluate_sync(six, audio_path=tmp_path / "a.wav", model=wrong)
