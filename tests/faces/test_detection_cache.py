"""The detection cache never makes a result worse than no cache: longer audio, loops, damaged entries and
an unwritable cache folder, on real RetinaFace weights and a real clip."""
from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import cut_wav, deterministic_generator

from wav2lip.faces import cached_track, create_detector, track
from wav2lip.lipsync.offline import LipSyncer
from wav2lip.io.video import open_source


@pytest.fixture(scope="module")
def detector(models_dir):
    return create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth", batch_size=4)


@pytest.fixture(scope="module")
def small_clip(media, tmp_path_factory) -> Path:
    """vr_face5.mp4's first 16 frames at 128x128: a plainly visible face, cheap to detect."""
    path = tmp_path_factory.mktemp("cache_clip") / "face.mkv"
    from wav2lip.io.video import VideoWriter

    with VideoWriter(path, 25, 128, 128, lossless=True) as writer:
        for image in open_source(media / "vr_face5.mp4").frames(16, loop="none"):
            writer.write(cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
    return path


@pytest.fixture(scope="module")
def frames(small_clip) -> list[np.ndarray]:
    return list(open_source(small_clip).frames())


def _boxes(items) -> list:
    return [None if i.box is None else tuple(int(v) for v in i.box) for i in items]


def test_longer_stream_than_the_entry_is_detected_not_replayed_as_missing(small_clip, frames, detector, tmp_path):
    list(cached_track(small_clip, frames[:6], detector, cache_dir=tmp_path))
    longer = _boxes(cached_track(small_clip, frames, detector, cache_dir=tmp_path))
    assert len(longer) == len(frames) and all(box is not None for box in longer)
    fresh = _boxes(track(frames, detector))
    assert longer[:4] == fresh[:4]  # the covered frames away from the stored run's end are the same boxes


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "wrong arrays", "box outside frame",
                                    "member not an array"])
def test_damaged_entry_is_ignored_and_replaced(small_clip, frames, detector, tmp_path, damage):
    fresh = _boxes(cached_track(small_clip, frames[:6], detector, cache_dir=tmp_path))
    (entry,) = tmp_path.iterdir()
    good = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "random bytes":
        entry.write_bytes(np.random.default_rng(0).bytes(len(good)))
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "member not an array":  # numpy hands out such a member's bytes (found by fuzzing)
        with zipfile.ZipFile(io.BytesIO(good)) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        with zipfile.ZipFile(entry, "w") as archive:
            for name, body in members.items():
                archive.writestr(name, b"not an array" if name == "boxes.npy" else body)
    elif damage == "wrong arrays":
        with open(entry, "wb") as f:
            np.savez(f, boxes=np.zeros((3, 2)))
    else:
        with np.load(entry) as data:
            arrays = dict(data)
        arrays["boxes"][0] = (0, 0, 10_000, 10_000)
        with open(entry, "wb") as f:
            np.savez(f, **arrays)
    again = _boxes(cached_track(small_clip, frames[:6], detector, cache_dir=tmp_path))
    assert again == fresh
    assert entry.read_bytes() == good  # replaced by the fresh run's entry


def test_unwritable_cache_folder_warns_once_and_the_run_goes_on(small_clip, frames, detector, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cache = blocker / "cache"  # mkdir fails here even for root
    with caplog.at_level(logging.WARNING, logger="wav2lip.faces.cache"):
        first = _boxes(cached_track(small_clip, frames[:4], detector, cache_dir=cache))
        second = _boxes(cached_track(small_clip, frames[:4], detector, cache_dir=cache, source={"segment": 1}))
    assert first == second == _boxes(track(frames[:4], detector))
    warnings = [r for r in caplog.records if r.name == "wav2lip.faces.cache"]
    assert len(warnings) == 1 and str(cache) in warnings[0].getMessage()


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    return deterministic_generator(tmp_path_factory.mktemp("cache_gen") / "generator.pth", width=0.125)


@pytest.mark.parametrize("loop", ["repeat", "pingpong"])
def test_lipsync_after_an_earlier_shorter_run_misses_no_face(small_clip, generator_file, models_dir, media,
                                                             tmp_path, loop):
    """The issue's case: a short run, then a run with longer audio (and looping past the clip's 16 frames)
    on the same video: every frame has a face, as with --no-cache."""
    syncer = LipSyncer(generator_file, device="cpu", precision="fp32", cache_dir=tmp_path / "cache",
                       detector_weights=models_dir / "retinaface_mobilenet0.25.pth", face_det_batch_size=8)
    short = cut_wav(media / "vr_audio1.wav", tmp_path / "short.wav", 0.3)
    long = cut_wav(media / "vr_audio1.wav", tmp_path / "long.wav", 1.0)  # 25 frames: loops the 16-frame clip
    assert syncer.run(small_clip, short, tmp_path / "a.mkv", loop=loop, lossless=True).faces_missed == 0
    assert syncer.run(small_clip, long, tmp_path / "b.mkv", loop=loop, lossless=True).faces_missed == 0
    assert syncer.run(small_clip, long, tmp_path / "c.mkv", loop=loop, lossless=True).faces_missed == 0  # replayed
    uncached = syncer.run(small_clip, long, tmp_path / "d.mkv", loop=loop, lossless=True, cache=False)
    assert uncached.faces_missed == 0
    for cached in ("b.mkv", "c.mkv"):
        for got, want in zip(open_source(tmp_path / cached).frames(), open_source(tmp_path / "d.mkv").frames()):
            assert np.array_equal(got, want)
