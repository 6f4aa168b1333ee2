"""Synthetic talking faces: deterministic by seed, mouths that follow the audio, both layouts."""
from __future__ import annotations

import numpy as np
import pytest

from wav2lip.io import audio

from wav2lip.data import synth
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.io.video import open_source, probe


def test_same_seed_same_clip_and_different_seeds_differ():
    a, b, c = synth.make_clip(3, 1.0), synth.make_clip(3, 1.0), synth.make_clip(4, 1.0)
    assert np.array_equal(a.wav, b.wav) and np.array_equal(a.opening, b.opening)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames(), b.frames()))
    assert not np.array_equal(a.wav, c.wav)
    assert a.n_frames == 25 and len(a.wav) == synth.SAMPLE_RATE


def test_drawn_mouth_follows_the_known_opening_and_the_audio():
    clip = synth.make_clip(11, 3.0)
    measured = np.array([synth.mouth_opening(f) for f in clip.frames()])
    assert np.corrcoef(measured, clip.opening)[0, 1] > 0.95
    assert clip.opening.min() == 0.0 and clip.opening.max() > 0.4  # pauses close the mouth
    # The mouth opens when there is sound: loudness per frame tracks the opening.
    loudness = synth.per_frame(np.abs(clip.wav), clip.n_frames)
    assert np.corrcoef(loudness, clip.opening)[0, 1] > 0.5


def test_shift_makes_the_face_lag_the_audio():
    clip, late = synth.make_clip(2, 2.0), synth.make_clip(2, 2.0, shift=4)
    assert np.array_equal(clip.wav, late.wav)
    assert np.array_equal(late.opening[4:], clip.opening[:-4])


def test_prepared_layout(tmp_path):
    assert main(["synth-data", str(tmp_path), "--clips", "5", "--seconds", "1", "--seed", "2"]) == 0
    lists = {s: (tmp_path / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert lists == {"train": ["spk000/00000", "spk000/00001", "spk000/00002"],
                     "val": ["spk000/00003"], "test": ["spk001/00000"]}
    clip = tmp_path / "spk000" / "00001"
    assert sorted(int(p.stem) for p in clip.glob("*.jpg")) == list(range(25))
    assert np.load(clip / "mouth.npy").shape == (25,)
    wav = audio.load_audio(clip / "audio.wav")
    assert abs(len(wav) - synth.SAMPLE_RATE) <= 1


def test_videos_layout(tmp_path):
    paths = synth.write_dataset(tmp_path, 1, layout="videos", seconds=1.0)
    info = probe(paths[0])
    assert info.fps == 25 and info.has_audio and info.n_frames == 25
    with open_source(paths[0]) as source:
        first = next(iter(source))
    assert first.shape == (160, 224, 3)
    assert np.load(paths[0].with_suffix(".mouth.npy")).shape == (25,)
    with pytest.raises(Wav2LipError, match="unknown layout"):
        synth.write_dataset(tmp_path, 1, layout="frames")


def test_mouth_shapes_go_beyond_opening():
    clip = synth.make_clip(11, 6.0)
    assert clip.mouth.shape == (150, len(synth.MOUTH))
    assert (clip.mouth.std(axis=0) > 0.05).all()  # opening, width, rounding, teeth and tongue all move
    loudness = synth.per_frame(np.abs(clip.wav), clip.n_frames)
    assert np.any((clip.opening < 0.02) & (loudness > 0.02))  # lips closed while sound goes on (/m/)
    assert np.corrcoef(loudness, clip.opening)[0, 1] < 0.95  # loudness alone does not tell the mouth

    def frame(state: list[float]) -> np.ndarray:
        still = synth.Clip(clip.identity, clip.wav, np.array([state], np.float32), shift=0, seed=1)
        return next(still.frames()).astype(np.int16)

    plain = frame([0.5, 0.5, 0.0, 0.0, 0.0])
    for other in ([0.5, 0.5, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0, 1.0],
                  [0.5, 1.0, 0.0, 0.0, 0.0]):
        changed = np.abs(frame(other) - plain).max(axis=2) > 30
        assert changed.sum() > 10 and changed[:48].sum() == 0, other  # the mouth changes, the upper half not
