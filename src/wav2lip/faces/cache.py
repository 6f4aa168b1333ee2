"""Detection cache: boxes per input file, keyed by its content and every setting that moves a box,
so lip-syncing the same video to another audio skips detection. Stores boxes (small .npz), never frames.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .. import store
from ..files import atomic_output
from .detectors import Detection, FaceDetector
from .tracking import FaceTrackOptions, TrackedFace, track

# Bump when tracking changes what it returns for the same inputs.
CACHE_VERSION = 2  # 2: smoothed landmarks stored


def default_cache_dir() -> Path:
    """Beside the weights, in the model store's cache folder (overridable there)."""
    return store.cache_dir() / "detections"


def file_digest(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def cache_key(path: str | os.PathLike, detector: FaceDetector | None, options: FaceTrackOptions,
              source: dict | None = None) -> str:
    """SHA-256 over the file's content, the detector settings, the tracking options and `source`
    (how frames were decoded: fps, rotation, resizing), so any change gives a new entry."""
    settings = {
        "version": CACHE_VERSION,
        "file": file_digest(path),
        "detector": detector.settings if detector is not None else None,
        "options": asdict(options),
        "source": source or {},
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class _Record(NamedTuple):
    """What the cache keeps of a TrackedFace: everything but the frame."""

    box: np.ndarray | None
    raw: np.ndarray | None
    detection: Detection | None
    interpolated: bool
    points: np.ndarray | None = None  # smoothed landmarks (TrackedFace.landmarks)


def _save(target: Path, items: list[_Record]) -> None:
    n = len(items)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    raw = np.full((n, 4), np.nan)
    det_boxes = np.full((n, 4), np.nan)
    scores = np.full(n, np.nan)
    landmarks = np.full((n, 5, 2), np.nan)
    interpolated = np.zeros(n, dtype=bool)
    points = np.full((n, 5, 2), np.nan)
    for i, item in enumerate(items):
        det = item.detection
        if item.box is not None:
            boxes[i] = item.box
        if item.raw is not None:
            raw[i] = item.raw
        if det is not None:
            det_boxes[i], scores[i] = det.box, det.score
            if det.landmarks is not None:
                landmarks[i] = det.landmarks
        interpolated[i] = item.interpolated
        if item.points is not None:
            points[i] = item.points
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, boxes=boxes, raw=raw, det_boxes=det_boxes, scores=scores, landmarks=landmarks,
                     interpolated=interpolated, points=points)


def _replay(frames: Iterable[np.ndarray], data: np.lib.npyio.NpzFile) -> Iterator[TrackedFace]:
    boxes, raw, det_boxes, scores = data["boxes"], data["raw"], data["det_boxes"], data["scores"]
    landmarks, interpolated = data["landmarks"], data["interpolated"]
    smoothed = data["points"]
    for index, frame in enumerate(frames):
        if index >= len(boxes):
            yield TrackedFace(index, frame, None)
            continue
        box = boxes[index] if boxes[index, 0] >= 0 else None
        det = None
        if not np.isnan(scores[index]):
            points = None if np.isnan(landmarks[index]).any() else landmarks[index]
            det = Detection(det_boxes[index], float(scores[index]), points)
        raw_box = None if np.isnan(raw[index, 0]) else raw[index]
        points = None if np.isnan(smoothed[index]).any() else smoothed[index]
        yield TrackedFace(index, frame, box, det, bool(interpolated[index]), raw=raw_box, landmarks=points)


def cached_track(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    detector: FaceDetector | None,
    options: FaceTrackOptions | None = None,
    cache_dir: str | os.PathLike | None = None,
    source: dict | None = None,
) -> Iterator[TrackedFace]:
    """`track` for the frames decoded from `path`, replayed from the cache when this exact file was
    tracked with the same settings before; a complete fresh run is stored for next time."""
    options = options or FaceTrackOptions()
    if options.fixed_box is not None:
        yield from track(frames, detector, options)
        return
    target = Path(cache_dir or default_cache_dir()) / f"{cache_key(path, detector, options, source)}.npz"
    if target.is_file():
        with np.load(target) as data:
            yield from _replay(frames, data)
        return
    record = []
    for item in track(frames, detector, options):
        record.append(_Record(item.box, item.raw, item.detection, item.interpolated, item.landmarks))
        yield item
    _save(target, record)
