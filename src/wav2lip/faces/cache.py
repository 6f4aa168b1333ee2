"""Detection cache: boxes per input file, keyed by its content and every setting that moves a box,
so lip-syncing the same video to another audio skips detection. Stores boxes (small .npz), never frames.

The cache can only save time, never change a result: an entry is checked before use (its arrays, their
lengths, the frame size, boxes inside the frame), a damaged one is ignored and replaced, frames an entry
does not cover are detected, and a cache folder that cannot be written costs one warning, not the run.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .. import store
from ..errors import Wav2LipError
from ..io.arrays import load_npz
from ..io.files import atomic_output
from .detectors import Detection, FaceDetector
from .tracking import FaceTrackOptions, TrackedFace, track

# Bump when tracking changes what it returns for the same inputs, or the entry layout changes.
CACHE_VERSION = 3  # 2: frame ranges and validation; 3: smoothed landmarks stored

log = logging.getLogger(__name__)
_warned: set[str] = set()  # cache folders already warned about in this process


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


_ARRAYS = {  # name -> (trailing shape, dtype kind) of each array in an entry, one row per frame
    "boxes": ((4,), "i"), "raw": ((4,), "f"), "det_boxes": ((4,), "f"), "scores": ((), "f"),
    "landmarks": ((5, 2), "f"), "interpolated": ((), "b"), "points": ((5, 2), "f"),
}


def _warn_once(folder: Path, message: str) -> None:
    if str(folder) not in _warned:
        _warned.add(str(folder))
        log.warning("%s", message)


def _save(target: Path, items: list[_Record], frame_size: tuple[int, int]) -> None:
    """Store an entry; a folder that cannot be written gives one warning and the run goes on."""
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, boxes=boxes, raw=raw, det_boxes=det_boxes, scores=scores, landmarks=landmarks,
                         interpolated=interpolated, points=points, frame_size=np.array(frame_size, dtype=np.int64))
    except (OSError, Wav2LipError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        _warn_once(target.parent, f"warning: detection cache {target.parent} cannot be written ({reason}); "
                                  "face boxes are not kept for the next run (--no-cache turns the cache off)")


def _load(target: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a consistent entry, or None for a missing one; a damaged entry is ignored (and
    replaced by the run that follows)."""
    try:
        if not target.is_file():
            return None
        entry = load_npz(target, (*_ARRAYS, "frame_size"))  # sizes checked before anything is allocated
    except (OSError, ValueError, KeyError) as exc:
        log.debug("%s: unusable detection cache entry (%s)", target, exc)
        return None
    n = len(entry["boxes"])
    for name, (shape, kind) in _ARRAYS.items():
        array = entry[name]
        if array.shape != (n, *shape) or array.dtype.kind != kind:
            return None
    if entry["frame_size"].shape != (2,) or entry["frame_size"].dtype.kind != "i":
        return None
    height, width = (int(v) for v in entry["frame_size"])
    boxes = entry["boxes"]
    found = boxes[:, 0] >= 0
    x1, y1, x2, y2 = boxes[found].T
    if not np.all((x1 < x2) & (y1 < y2) & (y1 >= 0) & (x2 <= width) & (y2 <= height)):
        return None
    return entry


def _replay(first: np.ndarray, frames: Iterator[np.ndarray], entry: dict[str, np.ndarray],
            detector: FaceDetector | None, options: FaceTrackOptions) -> Iterator[TrackedFace]:
    """The entry's results for the frames it covers; frames past its end (a longer stream than the
    run that stored it saw) are tracked afresh, so replay never invents a missing face."""
    boxes, raw, det_boxes, scores = entry["boxes"], entry["raw"], entry["det_boxes"], entry["scores"]
    landmarks, interpolated, smoothed = entry["landmarks"], entry["interpolated"], entry["points"]
    n = len(boxes)
    stream = itertools.chain([first], frames)
    for index, frame in enumerate(stream):
        if index >= n:
            for item in track(itertools.chain([frame], stream), detector, options):
                item.index += n
                yield item
            return
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
    tracked with the same settings before; a complete fresh run is stored for next time.

    `source` must name everything that decides which frames arrive (decoding settings, and the range
    of frames when the caller tracks a part of the video), since it is part of the key."""
    options = options or FaceTrackOptions()
    if options.fixed_box is not None:
        yield from track(frames, detector, options)
        return
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return
    target = Path(cache_dir or default_cache_dir()) / f"{cache_key(path, detector, options, source)}.npz"
    entry = _load(target)
    if entry is not None and tuple(entry["frame_size"]) == first.shape[:2]:
        yield from _replay(first, frames, entry, detector, options)
        return
    record = []
    for item in track(itertools.chain([first], frames), detector, options):
        record.append(_Record(item.box, item.raw, item.detection, item.interpolated, item.landmarks))
        yield item
    _save(target, record, first.shape[:2])
