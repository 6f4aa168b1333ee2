"""faces/speaker.py: on a synthetic video of two drawn faces side by side, only one talking with the
soundtrack, an expert trained here picks that one wherever it sits; the pipeline and `detect --tracks`
follow it; a single-face clip is lip-synced exactly as before."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cpu_syncer, deterministic_generator
from wav2lip.data import synth
from wav2lip.io.audio import load_audio, melspectrogram
from wav2lip.checkpoints import load_model
from wav2lip.faces import create_detector
from wav2lip.faces.speaker import choose_speakers
from wav2lip.train import latest_checkpoint, make_config, train
from wav2lip.io.video import VideoWriter, open_source

SIDE = 160  # each face's square


def two_faces(talker: synth.Clip, other: synth.Clip, talker_left: bool) -> list[np.ndarray]:
    """Frames of both faces side by side; the other face talks too, but to words we do not hear."""
    pairs = zip(talker.frames(SIDE, zoom=0.6), other.frames(SIDE, zoom=0.6))
    return [np.hstack([a, b] if talker_left else [b, a]) for a, b in pairs]


@pytest.fixture(scope="module")
def expert_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("speaker")
    synth.write_dataset(root / "data", 12, seed=5, seconds=2.0)
    train(make_config("expert", data_root=str(root / "data"), checkpoint_dir=str(root / "expert"),
                      steps=150, batch_size=16, lr=1e-3, eval_interval=150, checkpoint_interval=150,
                      log_interval=50, width=0.125, workers=0, threads=1, progress=False, eval_batches=2))
    return latest_checkpoint(root / "expert")


@pytest.fixture(scope="module")
def detector(models_dir):
    return create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth")


@pytest.fixture(scope="module")
def clips():
    """Unseen faces and speech (seeds the expert never saw)."""
    return synth.make_clip(21, seconds=3.0), synth.make_clip(22, seconds=3.0)


@pytest.mark.parametrize("talker_left", [True, False])
def test_the_face_that_talks_with_the_soundtrack_is_chosen(expert_path, detector, clips, talker_left) -> None:
    talker, other = clips
    frames = two_faces(talker, other, talker_left)
    expert = load_model(expert_path, "syncnet")
    [shot] = choose_speakers(frames, detector, synth.FPS, melspectrogram(talker.wav), expert)
    assert shot.reason == "sync" and len(shot.tracks) >= 2
    assert (shot.point[0] < SIDE) == talker_left, shot
    chosen = next(t for t in shot.tracks if t.track == shot.chosen)
    assert all(chosen.confidence > t.confidence for t in shot.tracks if t is not chosen and t.confidence is not None)
    # Without an expert (or a soundtrack) the largest face is followed, and the summary says so.
    [plain] = choose_speakers(frames, detector, synth.FPS)
    assert plain.reason == "largest" and all(t.confidence is None for t in plain.tracks)


@pytest.fixture(scope="module")
def two_face_video(tmp_path_factory, clips):
    """The talker on the right (the left face is the larger-looking default's first pick by position)."""
    root = tmp_path_factory.mktemp("two_faces")
    talker, other = clips
    wav = root / "talker.wav"
    synth.write_wav(wav, talker.wav)
    video = root / "two.mkv"
    with VideoWriter(video, synth.FPS, 2 * SIDE, SIDE, audio=wav, lossless=True) as writer:
        writer.write_many(two_faces(talker, other, talker_left=False))
    return video, wav


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    return deterministic_generator(tmp_path_factory.mktemp("gen") / "deterministic.pth", width=0.125)


def test_lipsync_follows_the_speaker_and_says_so(expert_path, generator, two_face_video, tmp_path) -> None:
    video, wav = two_face_video
    syncer = cpu_syncer(generator, speaker_model=expert_path, cache_dir=tmp_path / "cache")
    out = tmp_path / "out.mkv"
    result = syncer.run(video, wav, out, lossless=True, silence="off")
    [shot] = result.speakers
    assert shot.reason == "sync" and shot.point[0] > SIDE
    assert "speaker: shot at frame 0: track" in result.summary()
    changed = np.zeros(2, int)
    for got, src in zip(open_source(out).frames(), open_source(video).frames()):
        diff = np.abs(got.astype(int) - src.astype(int)).sum(axis=(0, 2))
        changed += [diff[:SIDE].sum() > 0, diff[SIDE:].sum() > 0]
    # Only the right face is lip-synced: in every frame where it was found (RetinaFace misses these drawn
    # faces now and then; a frame without the speaker's face passes through, never the other face).
    assert changed[0] == 0 and changed[1] == result.frames - result.faces_missed
    assert result.faces_missed <= 0.1 * result.frames
    # --face-index overrides the choice.
    left = tmp_path / "left.mkv"
    forced = syncer.run(video, wav, left, lossless=True, silence="off", face_index=0)
    assert forced.speakers == []
    first = next(iter(open_source(left).frames()))
    source = next(iter(open_source(video).frames()))
    assert np.abs(first[:, SIDE:].astype(int) - source[:, SIDE:]).max() == 0
    assert np.abs(first[:, :SIDE].astype(int) - source[:, :SIDE]).max() > 0


def test_detect_tracks_json(expert_path, models_dir, two_face_video, tmp_path) -> None:
    video, _ = two_face_video
    report = tmp_path / "tracks.json"
    done = subprocess.run([sys.executable, "-m", "wav2lip", "detect", str(video), "--tracks", "--json", str(report),
                           "--sync-model", str(expert_path),
                           "--retinaface-weights", str(models_dir / "retinaface_mobilenet0.25.pth")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads(report.read_text())
    [shot] = doc["shots"]
    assert doc["soundtrack"] and shot["reason"] == "sync" and len(shot["tracks"]) >= 2
    chosen = next(t for t in shot["tracks"] if t["track"] == shot["chosen"])
    assert chosen["centre"][0] > SIDE
    assert f"track {shot['chosen']} (sync" in done.stdout


def test_single_face_clip_is_unchanged(generator, media, tmp_path, expert_path) -> None:
    """One face: speaker="auto" with an expert gives the very frames that "largest" gives."""
    clip = tmp_path / "face.mkv"
    frames = list(open_source(media / "vr_face2.mp4").frames(20))
    with VideoWriter(clip, 25, frames[0].shape[1], frames[0].shape[0], lossless=True) as writer:
        writer.write_many(frames)
    audio = tmp_path / "speech.wav"
    synth.write_wav(audio, synth.make_clip(3, seconds=0.8).wav)
    syncer = cpu_syncer(generator, speaker_model=expert_path, cache_dir=tmp_path / "cache")
    auto = syncer.run(clip, audio, tmp_path / "auto.mkv", lossless=True, cache=False)
    syncer.run(clip, audio, tmp_path / "plain.mkv", lossless=True, cache=False, speaker="largest")
    assert auto.speakers == []
    for a, b in zip(open_source(tmp_path / "auto.mkv").frames(), open_source(tmp_path / "plain.mkv").frames()):
        np.testing.assert_array_equal(a, b)


def test_server_jobs_and_live_sessions_follow_the_speaker(expert_path, generator, models_dir, two_face_video,
                                                           tmp_path) -> None:
    """The server's models take --speaker-model, so its default speaker="auto" follows the face that
    talks (it used to load no expert and so always took the largest), and a live avatar with several
    faces is lip-synced on the face offline chooses."""
    from wav2lip.lipsync.live import LiveSyncer
    from wav2lip.serve import Models

    video, wav = two_face_video
    models = Models(generator, detector_weights=models_dir / "retinaface_mobilenet0.25.pth", device="cpu",
                    precision="fp32", speaker_model=expert_path)
    syncer = models.get(None, None)
    assert syncer.speaker_model is not None
    result = syncer.run(video, wav, tmp_path / "job.mkv", lossless=True, silence="off")
    [shot] = result.speakers
    assert shot.reason == "sync" and shot.point[0] > SIDE
    live = LiveSyncer(video, syncer=syncer, silence="off")
    assert [s.point for s in live.speakers] == [shot.point]
    source = open_source(video)
    for k, frame in enumerate(live.stream([load_audio(wav)[:8000]])):
        diff = np.abs(frame.image.astype(int) - source.frame_at(k).astype(int)).sum(axis=(0, 2))
        assert diff[:SIDE].sum() == 0  # never the silent face
