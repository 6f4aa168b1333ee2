"""What `wav2lip detect` does: track a video's face into a JSON report and a preview, and fit the
box calibration between two detectors on the user's own footage."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import Wav2LipError
from ..io.files import atomic_output
from ..io.video import VideoWriter, open_source
from .boxes import box_iou
from .calibration import BoxCalibration, fit_calibration
from .detectors import FaceDetector
from .tracking import FaceTrackOptions, TrackedFace, track


@dataclass
class DetectReport:
    """What a detect run found: frame rate, frame count, frames with no face, bridged frames."""

    fps: float
    n_frames: int
    missing: list[int]
    interpolated: list[int]
    median_box: tuple[int, int, int, int] | None = None  # x1 y1 x2 y2: the middle of the tracked boxes


def draw(item: TrackedFace) -> np.ndarray:
    """The frame with the crop box (green; yellow when interpolated), the raw detection (blue) and
    landmarks, or a red 'no face' label."""
    frame = item.frame.copy()
    if item.detection is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in item.detection.box)
        cv2.rectangle(frame, (x1, y1), (x2, y2), (255, 128, 0), 1)
        for x, y in (item.detection.landmarks if item.detection.landmarks is not None else []):
            cv2.circle(frame, (int(round(x)), int(round(y))), 3, (0, 0, 255), -1)
    if item.box is None:
        cv2.putText(frame, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 255), 2)
    else:
        colour = (0, 255, 255) if item.interpolated else (0, 255, 0)
        x1, y1, x2, y2 = (int(v) for v in item.box)
        cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
    label = f"{item.index}" + (f"  {item.detection.score:.2f}" if item.detection is not None else "")
    cv2.putText(frame, label, (10, frame.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return frame


def _record(item: TrackedFace) -> dict:
    det = item.detection
    return {
        "index": item.index,
        "box": None if item.box is None else [int(v) for v in item.box],
        "score": None if det is None else round(det.score, 5),
        "detection": None if det is None else [round(float(v), 2) for v in det.box],
        "landmarks": None if det is None or det.landmarks is None else np.round(det.landmarks, 2).tolist(),
        "interpolated": item.interpolated,
    }


def detect_video(
    video: str | os.PathLike,
    detector: FaceDetector | None,
    options: FaceTrackOptions | None = None,
    json_path: str | os.PathLike | None = None,
    preview: str | os.PathLike | None = None,
    progress: bool = False,
) -> DetectReport:
    """Track the face through `video`; write the per-frame JSON and/or a preview video; streaming."""
    source = open_source(video)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.n_frames_estimate, unit="frame", dynamic_ncols=True, smoothing=0.1)
    fps = source.fps
    records: list[dict] = []
    with contextlib.ExitStack() as stack:
        writer = None
        if preview is not None:
            writer = stack.enter_context(VideoWriter(preview, source.rate, source.width, source.height))
        if bar is not None:
            stack.callback(bar.close)
        for item in track(source, detector, options):
            records.append(_record(item))
            if writer is not None:
                writer.write(draw(item))
            if bar is not None:
                bar.update(1)
    boxes = [r["box"] for r in records if r["box"] is not None]
    report = DetectReport(
        fps, len(records),
        [r["index"] for r in records if r["box"] is None],
        [r["index"] for r in records if r["interpolated"]],
        tuple(int(v) for v in np.median(boxes, axis=0)) if boxes else None,
    )
    if json_path is not None:
        doc = {
            "video": str(video),
            "fps": fps,
            "box_order": "x1 y1 x2 y2 (pixels; `infer --box` takes them as top bottom left right: y1 y2 x1 x2)",
            "detector": None if detector is None else detector.settings,
            "missing": report.missing,
            "frames": records,
        }
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(doc))
    return report


@dataclass
class Comparison:
    """A fitted calibration, the number of paired frames, and the mean IoU before/after mapping."""

    calibration: BoxCalibration
    pairs: int
    iou_before: float
    iou_after: float


def compare_detectors(
    video: str | os.PathLike, target: FaceDetector, source: FaceDetector, every: int = 5
) -> Comparison:
    """Fit the map from `source` boxes (e.g. RetinaFace) to `target` boxes (e.g. S3FD) on every
    `every`-th frame of `video`, pairing each frame's largest source face with its best-overlapping
    target face; reports the mean IoU to the target boxes before and after the map."""
    src, tgt = [], []
    for index, frame in enumerate(open_source(video)):
        if index % max(every, 1):
            continue
        source_dets, target_dets = source.detect([frame])[0], target.detect([frame])[0]
        if not source_dets or not target_dets:
            continue
        box = max(source_dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])).box
        iou = box_iou(box, np.stack([d.box for d in target_dets]))[0]
        if iou.max() > 0.3:
            src.append(box)
            tgt.append(target_dets[int(iou.argmax())].box)
    if not src:
        raise Wav2LipError(f"{video}: the two detectors found no face in common to fit a calibration")
    src_a, tgt_a = np.stack(src), np.stack(tgt)
    calibration = fit_calibration(src_a, tgt_a)
    before = float(np.mean([box_iou(s, t)[0, 0] for s, t in zip(src_a, tgt_a)]))
    after = float(np.mean([box_iou(calibration.apply(s), t)[0, 0] for s, t in zip(src_a, tgt_a)]))
    return Comparison(calibration, len(src), before, after)
