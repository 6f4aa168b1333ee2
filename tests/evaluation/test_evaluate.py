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

from wav2lip.evaluation import sync as ev
from wav2lip.checkpoints import save_checkpoint
from wav2lip.io.audio import load_audio
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.faces import Detection, create_detector
from support.deterministic import fill_deterministic
from wav2lip.models.syncnet import SyncNet
from wav2lip.models.syncnet_v2 import SyncNetV2
from wav2lip.io.video import VideoWriter, open_source


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


def real_clip(source: Path, folder: Path, name: str) -> tuple[Path, Path]:
    """The first 10 frames (0.4 s) of a real talking-head clip at 192 x 192, with its own audio."""
    frames = [cv2.resize(f, (192, 192), interpolation=cv2.INTER_AREA)
              for f in open_source(source, fps=25).frames(10, loop="none")]
    wav = write_wav(folder / f"{name}.wav", load_audio(source)[: 10 * 640])
    return write_video(folder / f"{name}.mp4", frames, audio=wav), wav


@pytest.fixture(scope="module")
def talking_clip(media, tmp_path_factory) -> tuple[Path, Path]:
    return real_clip(media / "vr_face5.mp4", tmp_path_factory.mktemp("clip"), "talking")


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


def test_track_shot_follows_the_reference_rule():
    face, other, small = _det(100, 100, 220, 220), _det(300, 100, 420, 220), _det(10, 10, 40, 40)
    moved = _det(104, 102, 224, 222)
    detections = [[face, other] if i % 2 == 0 else [moved, other] for i in range(30)]
    detections += [[] for _ in range(10)] + [[face] for _ in range(10)]  # a 10-frame loss is bridged
    detections += [[] for _ in range(30)] + [[face, small] for _ in range(20)]  # a 30-frame loss is not
    tracks = ev.track_shot(detections, 0, len(detections), min_track=15, min_face_size=100)
    assert [(t.start, t.end) for t in tracks] == [(0, 50), (0, 30), (80, 100)]
    t = 6 / 11  # frame 35 lies between frame 29 (moved) and frame 40 (face)
    np.testing.assert_allclose(tracks[0].boxes[35], (1 - t) * moved.box + t * face.box)
    assert np.all(tracks[1].boxes[:, 0] == 300)
    # "More than min_track detections": the 30-detection track needs min_track < 30.
    assert [(t.start, t.end) for t in ev.track_shot(detections, 0, 100, min_track=30)] == [(0, 50)]
    # The small face (30 px) makes a track once the size limit is under 30 px.
    small_ok = ev.track_shot(detections, 0, 100, min_track=15, min_face_size=20)
    assert [(t.start, t.end) for t in small_ok] == [(0, 50), (0, 30), (80, 100), (80, 100)]
    assert small_ok[3].boxes[0, 2] == 40


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
    tracks, shots = ev.find_tracks(video, 10, detector, min_track=5, min_face_size=40)
    assert shots == [(0, 10)] and [(t.start, t.end) for t in tracks] == [(0, 10)]
    centre = (tracks[0].boxes[:, :2] + tracks[0].boxes[:, 2:]) / 2
    assert np.all((centre > 48) & (centre < 144))  # the presenter's face is near the middle
    tracked = ev.evaluate_sync(video, model=checkpoint, mode="track", detector=detector, min_track=5,
                               min_face_size=40)
    assert tracked.n_frames == whole_score.n_frames and len(tracked.tracks) == 1
    assert tracked.lse_d == tracked.tracks[0].score.lse_d
    assert not np.allclose(tracked.mean_dists, whole_score.mean_dists)
    # The reference's defaults want 100-frame tracks: a 10-frame clip has none, and the error says what to do.
    with pytest.raises(Wav2LipError, match="no face track of more than 100 frames.*--min-track"):
        ev.evaluate_sync(video, model=checkpoint, mode="track", detector=detector)


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


def test_cli_folder_track_mode_with_an_expert_on_device_auto(media, models_dir, tmp_path):
    """`--dir` with `--mode track` builds its face detector on the device `--device auto` resolves to, and
    scores each video as the one-file path does."""
    folder = tmp_path / "videos"
    folder.mkdir()
    videos = [real_clip(media / name, folder, name.split(".")[0])[0] for name in ("vr_face2.mp4", "vr_face5.mp4")]
    for wav in folder.glob("*.wav"):
        wav.unlink()
    expert = tmp_path / "expert.pth"
    save_checkpoint(expert, fill_deterministic(SyncNet(width=0.25)))
    weights = models_dir / "retinaface_mobilenet0.25.pth"
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--dir", str(folder), "--model", f"expert:{expert}", "--mode", "track",
                 "--device", "auto", "--detector-weights", str(weights), "--min-track", "5",
                 "--min-face-size", "40", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["mode"] == "track" and data["means"]["generated"]["videos"] == 2
    rows = {r["video"]: r for r in data["videos"]}
    detector = create_detector("retinaface", weights=weights)
    for video in videos:
        one = ev.evaluate_sync(video, model=f"expert:{expert}", mode="track", detector=detector, min_track=5,
                               min_face_size=40)
        score = rows[video.name]["score"]
        assert len(score["tracks"]) == 1 and score["n_frames"] == one.n_frames == 10 - 5
        assert score["lse_d"] == pytest.approx(one.lse_d) and score["offset"] == one.offset


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


def _synthetic_video(path: Path, seed: int, shift: int, seconds: float = 2.4) -> Path:
    """A 96 x 96 face-crop video (H.264 + AAC) of a synthetic talker whose lips lag the audio by `shift`."""
    from wav2lip.data import synth

    clip = synth.make_clip(seed, seconds, shift=shift)
    wav = path.with_suffix(".wav")
    synth.write_wav(wav, clip.wav)
    write_video(path, list(clip.frames(96)), audio=wav)
    wav.unlink()
    return path


def test_expert_offsets_follow_the_planted_shift(tmp_path, tiny_expert):
    offsets = {}
    for k in (-4, 0, 3):
        video = _synthetic_video(tmp_path / f"shift{k}.mp4", 4242, k)
        score = ev.evaluate_sync(video, model=f"expert:{tiny_expert}")
        assert score.model.startswith("lip-sync expert") and str(tiny_expert) in score.model
        assert score.n_frames == 60 - 5 and 0 <= score.lse_d <= 2
        offsets[k] = score.offset
    assert {k: offsets[k] - offsets[0] for k in offsets} == {-4: -4, 0: 0, 3: 3}, offsets
    assert offsets[0] == 0


def test_folder_mode_csv_json_plot_reference_and_resume(tmp_path, tiny_expert, capsys):
    pytest.importorskip("matplotlib")
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    (gen / "sub").mkdir(parents=True)
    ref.mkdir()
    for k, name in ((-4, "a.mp4"), (3, "sub/b.mp4")):
        _synthetic_video(gen / name, 99 + k, k)
        (ref / name).parent.mkdir(exist_ok=True)
        _synthetic_video(ref / name, 99 + k, 0)
    (gen / "broken.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    out_json, out_csv, plots = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "plots"
    args = ["evaluate", "--dir", str(gen), "--reference", str(ref), "--model", f"expert:{tiny_expert}",
            "--json", str(out_json), "--csv", str(out_csv), "--plot", str(plots)]
    assert main(args) == 1  # one bad video: reported, the others scored
    printed = capsys.readouterr()
    assert "broken.mp4: error" in printed.err and "generated" in printed.out and "reference" in printed.out
    data = json.loads(out_json.read_text())
    rows = {(r["set"], r["video"]): r for r in data["videos"]}
    assert rows[("generated", "broken.mp4")]["error"] and rows[("generated", "broken.mp4")]["score"] is None
    assert rows[("reference", "broken.mp4")]["error"].startswith("no reference video")
    assert rows[("generated", "a.mp4")]["score"]["offset"] == -4
    assert rows[("generated", "sub/b.mp4")]["score"]["offset"] == 3
    assert all(rows[("reference", v)]["score"]["offset"] == 0 for v in ("a.mp4", "sub/b.mp4"))
    assert len(rows[("generated", "a.mp4")]["score"]["framewise_conf"]) == 55
    assert data["means"]["generated"]["videos"] == 2 and data["means"]["generated"]["failed"] == 1
    assert data["means"]["generated"]["abs_offset"] == 3.5 and data["means"]["reference"]["abs_offset"] == 0
    lines = out_csv.read_text().splitlines()
    assert lines[0] == ",".join(ev.CSV_FIELDS) and len(lines) == 1 + 6 + 2
    assert lines[-2].startswith("generated,MEAN,3.5000,") and lines[-1].startswith("reference,MEAN,0.0000,")
    assert sorted(p.name for p in plots.iterdir()) == ["a.mp4.png", "sub__b.mp4.png"]
    assert cv2.imread(str(plots / "a.mp4.png")) is not None
    # Resumed: scored videos are not scored again (same timings), the bad one is tried again.
    assert main(args) == 1
    again = {(r["set"], r["video"]): r for r in json.loads(out_json.read_text())["videos"]}
    assert again[("generated", "a.mp4")]["seconds"] == rows[("generated", "a.mp4")]["seconds"]
    # Another model's scores are never mixed into the same file.
    with pytest.raises(Wav2LipError, match="another model or mode"):
        ev.evaluate_folder(gen, json_path=out_json, model=f"expert:{tiny_expert}", mode="track")
    out_json.write_bytes(b"\xff\x00 not json")
    with pytest.raises(Wav2LipError, match="not a scores file"):
        ev.evaluate_folder(gen, json_path=out_json, model=f"expert:{tiny_expert}")
    with pytest.raises(Wav2LipError, match="one of the input videos"):
        ev.evaluate_folder(gen, json_path=gen / "a.mp4", model=f"expert:{tiny_expert}")


def test_single_video_reference_plot_and_outputs_that_are_inputs(tmp_path, tiny_expert, capsys):
    pytest.importorskip("matplotlib")
    gen = _synthetic_video(tmp_path / "gen.mp4", 5, 2)
    (tmp_path / "ref").mkdir()
    ref = _synthetic_video(tmp_path / "ref" / "gen.mp4", 5, 0)
    args = ["evaluate", str(gen), "--model", f"expert:{tiny_expert}", "--reference", str(tmp_path / "ref")]
    assert main([*args, "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "generated AV offset: +2 frames" in out and "reference AV offset: +0 frames" in out
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["offset"] == 2 and data["reference"]["offset"] == 0 and data["reference"]["video"] == str(ref)
    assert cv2.imread(str(tmp_path / "c.png")).shape[1] == 1000
    before = gen.read_bytes()
    assert main([*args, "--json", str(gen)]) == 2
    assert gen.read_bytes() == before and "would destroy the input" in capsys.readouterr().err
