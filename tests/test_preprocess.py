"""Preprocessing synthetic videos with the real RetinaFace weights; sync filtering with a trained expert."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from wav2lip import audio, preprocess, synth
from wav2lip.checkpoints import load_model
from wav2lip.errors import Wav2LipError
from wav2lip.train import latest_checkpoint, make_config, train


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    synth.write_dataset(root, 3, layout="videos", seconds=1.2, clips_per_speaker=2)
    return root


@pytest.fixture(scope="module")
def weights(models_dir) -> str:
    return str(models_dir / "retinaface_mobilenet0.25.pth")


def test_videos_become_the_training_layout_and_reruns_skip(videos, weights, tmp_path):
    out = tmp_path / "prep"
    results = preprocess.preprocess(videos, out, weights=weights, workers=2, val_fraction=0.0,
                                    test_fraction=0.0, progress=False)
    assert sorted(r.name for r in results) == ["spk000/00000", "spk000/00001", "spk001/00000"]
    assert all(r.error is None and r.frames == 30 and r.faces >= 27 for r in results)
    clip = out / "spk000" / "00001"
    crops = sorted(clip.glob("*.jpg"), key=lambda p: int(p.stem))
    face = cv2.imread(str(crops[0]))
    assert 60 < face.shape[0] < 120 and 50 < face.shape[1] < 120  # the raw box around a ~96 px face
    assert abs(len(audio.load_audio(clip / "audio.wav")) - 1.2 * 16000) < 400
    assert np.allclose(np.load(clip / "mel.npy"), audio.melspectrogram(audio.load_audio(clip / "audio.wav")),
                       atol=1e-4)
    assert json.loads((clip / ".done").read_text())["frames"] == 30
    assert (out / "train.txt").read_text().split() == [r.name for r in sorted(results, key=lambda r: r.name)]

    # An interrupted clip (no marker) is redone; complete ones are skipped.
    (clip / ".done").unlink()
    (clip / "0.jpg").unlink()
    again = {r.name: r for r in preprocess.preprocess(videos, out, weights=weights, progress=False)}
    assert again["spk000/00000"].skipped and not again["spk000/00001"].skipped
    assert (clip / "0.jpg").is_file() and (clip / ".done").is_file()


def test_machines_share_the_videos(videos, weights, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    names = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        names.append([r.name for r in preprocess.preprocess(videos, tmp_path, weights=weights, progress=False)])
    assert names == [["spk000/00000", "spk001/00000"], ["spk000/00001"]]
    assert len(preprocess.complete_clips(tmp_path)) == 3


def test_errors(tmp_path, weights):
    with pytest.raises(Wav2LipError, match="does not exist"):
        preprocess.preprocess(tmp_path / "none", tmp_path / "out")
    (tmp_path / "raw").mkdir()
    with pytest.raises(Wav2LipError, match="no video files"):
        preprocess.preprocess(tmp_path / "raw", tmp_path / "out")
    silent = tmp_path / "raw" / "spk" / "mute.mp4"
    silent.parent.mkdir()
    from wav2lip.video_io import VideoWriter
    with VideoWriter(silent, 25, 64, 64) as writer:
        writer.write_many(np.zeros((64, 64, 3), np.uint8) for _ in range(5))
    [result] = preprocess.preprocess(tmp_path / "raw", tmp_path / "out", weights=weights, progress=False)
    assert result.error and "audio" in result.error


def test_sync_filter_drops_shifted_clips_and_finds_their_offset(tmp_path):
    synth.write_dataset(tmp_path / "data", 12, seed=5, seconds=2.0, consonants=False)  # vowels: quick to learn
    train(make_config("expert", data_root=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "expert"),
                      steps=400, batch_size=16, lr=1e-3, eval_interval=400, checkpoint_interval=400,
                      log_interval=50, width=0.125, workers=0, threads=1, progress=False, eval_batches=2))
    expert_path = latest_checkpoint(tmp_path / "expert")
    # Unseen faces and audio: in sync, and with the lips 6 frames late.
    synth.write_dataset(tmp_path / "good", 4, seed=9, seconds=2.0, consonants=False)
    synth.write_dataset(tmp_path / "late", 4, seed=9, seconds=2.0, shift=6, consonants=False)
    expert = load_model(expert_path, "syncnet")
    for kind, shift in (("good", 0), ("late", 6)):
        for clip in sorted((tmp_path / kind).glob("spk*/*")):
            assert preprocess.clip_sync(expert, clip, max_offset=8).offset == shift, (kind, clip)
    kept = preprocess.filter_sync(tmp_path / "good", expert_path, 0.53, max_offset=8)
    assert kept == {"train": [], "val": [], "test": []}
    dropped = preprocess.filter_sync(tmp_path / "late", expert_path, 0.53, max_offset=8)
    assert sum(len(v) for v in dropped.values()) == 4
    assert (tmp_path / "late" / "train.txt").read_text() == ""
    assert (tmp_path / "late" / "train.all.txt").read_text().split() == ["spk000/00000", "spk000/00001"]
    scores = json.loads((tmp_path / "late" / "sync_scores.json").read_text())["clips"]
    assert all(s["offset"] == 6 for s in scores.values())
