"""Face detection, tracking, smoothing, calibration and the detection cache, on real frames."""
from __future__ import annotations

import json
from itertools import islice

import av
import cv2
import numpy as np
import pytest
import torch

from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.faces import (
    BoxCalibration,
    FaceTrackOptions,
    Mean5,
    box_iou,
    cached_track,
    create_detector,
    fit_calibration,
    pad_and_clip,
    track,
)
from wav2lip.faces.detectors import RetinaFaceDetector
from wav2lip.faces.report import compare_detectors
from wav2lip.faces.smoothing import Centered
from support.deterministic import fill_deterministic
from wav2lip.models.retinaface import RetinaFace
from wav2lip.models.s3fd import S3FD


def read_frames(path, n: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in islice(container.decode(video=0), n)]


def reference_mean5(boxes: np.ndarray) -> np.ndarray:
    """Direct transcription of spec section 5: in-place mean of 5 on an integer array."""
    boxes = boxes.copy()
    for i in range(len(boxes)):
        window = boxes[len(boxes) - 5:] if i + 5 > len(boxes) else boxes[i:i + 5]
        boxes[i] = np.mean(window, axis=0)
    return boxes


def run_mean5(boxes: np.ndarray) -> np.ndarray:
    smoother, out = Mean5(), []
    for box in boxes:
        out += smoother.push(box)
    return np.array(out + smoother.finish())


@pytest.fixture(scope="module")
def weights(models_dir):
    return models_dir / "retinaface_mobilenet0.25.pth"


@pytest.fixture(scope="module")
def detector(weights):
    return create_detector("retinaface", weights=weights)


@pytest.fixture(scope="module")
def clip(media):
    return read_frames(media / "vr_face3.mp4", 24)


@pytest.fixture(scope="module")
def other_clip(media):
    return read_frames(media / "hdtf_kh.mp4", 8)


def test_mean5_matches_reference_transcription_for_every_length():
    rng = np.random.default_rng(5)
    for n in range(1, 24):
        boxes = rng.integers(0, 2000, (n, 4))
        assert np.array_equal(run_mean5(boxes), reference_mean5(boxes)), n


def test_centered_smoothing_has_no_lag_and_removes_jitter():
    t = np.arange(40, dtype=np.float64)[:, None]
    ramp = np.hstack([100 + 7 * t, 50 + 3 * t, 300 + 7 * t, 350 + 3 * t])
    smoother, out = Centered(2), []
    for box in ramp:
        out += smoother.push(box)
    out = np.array(out + smoother.finish())
    assert np.allclose(out, ramp)  # constant-velocity motion is followed exactly
    noisy = ramp + np.random.default_rng(0).normal(0, 3, ramp.shape)
    smoother, out = Centered(2), []
    for box in noisy:
        out += smoother.push(box)
    out = np.array(out + smoother.finish())
    assert np.abs(out - ramp).std() < 0.75 * np.abs(noisy - ramp).std()


def test_pad_and_clip_follows_the_reference():
    assert pad_and_clip(np.array([-5.7, 3.9, 100.9, 475.0]), (0, 10, 0, 0), 480, 640).tolist() == [0, 3, 100, 480]
    assert pad_and_clip(np.array([10.2, 20.8, 30.5, 40.1]), (1, 2, 3, 4), 480, 640).tolist() == [7, 19, 34, 42]


def test_s3fd_detector_gives_the_reference_boxes(fixtures_dir):
    ref = np.load(fixtures_dir / "s3fd.npz")
    s3fd = create_detector("s3fd", model=fill_deterministic(S3FD()))
    results = s3fd.detect(list(np.ascontiguousarray(ref["images_rgb"][..., ::-1])))
    for i, dets in enumerate(results):
        boxes = np.array([np.r_[d.box, d.score] for d in dets])
        assert boxes.shape == ref[f"boxes_{i}"].shape
        assert np.abs(boxes - ref[f"boxes_{i}"]).max() < 1e-3


def test_bad_detector_requests_give_one_clear_error(tmp_path, weights):
    with pytest.raises(Wav2LipError, match="unknown face detector"):
        create_detector("dlib")
    with pytest.raises(Wav2LipError, match="missing.pth"):
        create_detector("retinaface", weights=tmp_path / "missing.pth")
    with pytest.raises(Wav2LipError, match="S3FD"):
        create_detector("s3fd", weights=weights)


def test_downscaled_detection_maps_back_to_frame_pixels(weights, clip):
    full = create_detector("retinaface", weights=weights, max_size=None).detect(clip[:1])[0][0]
    small = create_detector("retinaface", weights=weights, max_size=200).detect(clip[:1])[0][0]
    assert box_iou(full.box, small.box)[0, 0] > 0.85
    assert np.abs(full.landmarks - small.landmarks).max() < 0.05 * (full.box[2] - full.box[0])


class _SmallMemoryDetector(RetinaFaceDetector):
    """A device that only fits two frames per batch (a real OOM cannot be provoked on demand)."""

    def _run(self, batch_bgr):
        if batch_bgr.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._run(batch_bgr)


def test_batches_are_halved_on_out_of_memory(detector, clip):
    frames = [cv2.resize(f, (160, 160)) for f in clip[:5]]
    small = _SmallMemoryDetector(detector.model, batch_size=8, max_size=None)
    got = small.detect(frames)
    assert small.batch_size == 2
    want = create_detector("retinaface", model=detector.model, max_size=None).detect(frames)
    assert [len(f) for f in got] == [len(f) for f in want] == [1] * 5
    assert np.allclose([f[0].box for f in got], [f[0].box for f in want], atol=1e-3)


def test_tracking_finds_the_face_in_every_frame_close_to_full_detection(weights, detector, clip):
    full = create_detector("retinaface", weights=weights, max_size=None)
    frames = clip[:12]
    reference = [max(d, key=lambda x: x.score).box for d in full.detect(frames)]
    items = list(track(frames, detector, FaceTrackOptions(detect_every=5)))
    assert all(item.box is not None for item in items)
    ious = [box_iou(item.raw, ref)[0, 0] for item, ref in zip(items, reference)]
    assert np.mean(ious) > 0.88 and np.min(ious) > 0.8, ious


def test_mean5_mode_smooths_padded_integer_boxes_like_the_reference(detector, clip):
    frames = [cv2.resize(f, (192, 192)) for f in clip[:6]]
    plain = np.array([b for _, b in _boxes(frames, detector, smooth="none", detect_every=1)])
    smoothed = np.array([b for _, b in _boxes(frames, detector, smooth="mean5", detect_every=1)])
    assert np.array_equal(smoothed, reference_mean5(plain))


def _boxes(frames, detector, **options):
    return [(item.index, item.box) for item in track(frames, detector, FaceTrackOptions(**options))]


def test_scene_cut_redetects_and_is_never_smoothed_across(detector, clip, other_clip):
    frames = [cv2.resize(f, (256, 256)) for f in clip[:5] + other_clip[:5]]
    items = list(track(frames, detector, FaceTrackOptions(smooth="centered")))
    assert [i.index for i in items if i.scene_cut] == [5]
    raw = np.array([i.raw for i in items])
    for shot in (slice(0, 5), slice(5, 10)):
        smoother, want = Centered(2), []
        for box in raw[shot]:
            want += smoother.push(box)
        want = [pad_and_clip(b, (0, 10, 0, 0), *frames[0].shape[:2]) for b in want + smoother.finish()]
        assert np.array_equal(np.array([i.box for i in items[shot]]), np.array(want))


def test_short_gaps_are_bridged_and_long_ones_marked(detector, clip):
    box = detector.detect(clip[:1])[0][0].box.astype(int)
    frames = [f.copy() for f in clip[:8]]
    for f in frames[3:5]:
        f[max(0, box[1] - 40):box[3] + 40, max(0, box[0] - 40):box[2] + 40] = 0
    bridged = list(track(frames, detector, FaceTrackOptions(smooth="none", max_gap=3, track_every=1)))
    assert [i.interpolated for i in bridged] == [False] * 3 + [True] * 2 + [False] * 3
    raw = [i.raw for i in bridged]
    assert np.allclose(raw[3], raw[2] + (raw[5] - raw[2]) / 3)
    marked = list(track(frames, detector, FaceTrackOptions(smooth="none", max_gap=0, track_every=1)))
    assert [i.box is None for i in marked] == [False] * 3 + [True] * 2 + [False] * 3


def test_track_every_interpolates_between_region_detections_but_never_the_last_frame(detector, clip, other_clip):
    frames = [cv2.resize(f, (256, 256)) for f in clip[:6] + other_clip[:3]]
    items = list(track(frames, detector, FaceTrackOptions(smooth="none", track_every=2)))
    # Frame 0 and 5 (before the cut at 6) and the last frame are detected; 1 and 3 skipped, then bridged.
    assert [i.interpolated for i in items] == [False, True, False, True, False, False, False, True, False]
    assert all(i.box is not None for i in items)
    raw = [i.raw for i in items]
    assert np.allclose(raw[1], (raw[0] + raw[2]) / 2)
    with pytest.raises(ValueError, match="track_every"):
        FaceTrackOptions(track_every=3, max_gap=1)


def test_follows_one_identity_among_several_faces(detector, clip, other_clip):
    height = clip[0].shape[0]
    small = height // 2
    frames = [np.hstack([cv2.resize(b, (height, height)),
                         np.pad(cv2.resize(a, (small, small)), ((0, height - small), (0, 0), (0, 0)))])
              for a, b in zip(clip[:6], other_clip[:6])]
    def sides(**options):
        items = list(track(frames, detector, FaceTrackOptions(smooth="none", **options)))
        return {bool((i.raw[0] + i.raw[2]) / 2 > height) for i in items}
    assert sides() == {False}  # the largest face, on the left
    assert sides(face_index=1) == {True}
    assert sides(face_at=(height * 1.25, height * 0.25)) == {True}


def test_fixed_box_bypasses_detection():
    frames = [np.zeros((50, 60, 3), np.uint8)] * 3
    items = list(track(frames, None, FaceTrackOptions(fixed_box=(1, 2, 30, 40))))
    assert [i.box.tolist() for i in items] == [[1, 2, 30, 40]] * 3


def test_fit_calibration_recovers_a_known_map():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, (20, 2))
    source = np.hstack([xy, xy + rng.uniform(80, 300, (20, 2))])
    known = BoxCalibration(dx=0.02, dy=0.08, sx=1.1, sy=0.95)
    fitted = fit_calibration(source, known.apply(source))
    assert np.allclose([fitted.dx, fitted.dy, fitted.sx, fitted.sy], [0.02, 0.08, 1.1, 0.95])
    assert np.allclose(BoxCalibration().apply(source), source)


def test_compare_fits_a_map_between_two_detectors(media, detector):
    s3fd = create_detector("s3fd", model=fill_deterministic(S3FD()), max_size=160)
    result = compare_detectors(media / "st_art0.png", s3fd, detector)
    assert result.pairs == 1
    assert result.iou_before < 1.0 and result.iou_after == pytest.approx(1.0)


def test_detection_cache_replays_boxes_without_detecting(media, weights, detector, tmp_path):
    path = media / "vr_face5.mp4"
    frames = read_frames(path, 6)
    def boxes_and_scores(items):
        items = list(items)
        scores = [i.detection.score if i.detection else np.nan for i in items]  # nan: interpolated frames
        return np.array([i.box for i in items], dtype=float), np.array(scores)

    first = boxes_and_scores(cached_track(path, frames, detector, cache_dir=tmp_path))
    assert len(list(tmp_path.iterdir())) == 1
    # Same settings but different weights in memory: any real detection would move the boxes.
    impostor = create_detector("retinaface", model=fill_deterministic(RetinaFace()), weights_id=detector.weights_id)
    replay = boxes_and_scores(cached_track(path, frames, impostor, cache_dir=tmp_path))
    for got, want in zip(replay, first):
        assert np.allclose(got, want, equal_nan=True)
    other = create_detector("retinaface", weights=weights, max_size=320)
    list(cached_track(path, frames, other, cache_dir=tmp_path))
    assert len(list(tmp_path.iterdir())) == 2


def test_detect_cli_writes_json_and_preview(media, weights, tmp_path):
    out, preview = tmp_path / "boxes.json", tmp_path / "preview.mp4"
    code = main(["detect", str(media / "st_art0.png"), "--json", str(out), "--preview", str(preview),
                 "--retinaface-weights", str(weights)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["fps"] == 25.0 and doc["missing"] == []
    frame = doc["frames"][0]
    assert frame["index"] == 0 and len(frame["box"]) == 4 and frame["score"] > 0.9 and len(frame["landmarks"]) == 5
    with av.open(str(preview)) as container:
        assert container.streams.video[0].width == 640
        assert sum(1 for _ in container.decode(video=0)) == 1
