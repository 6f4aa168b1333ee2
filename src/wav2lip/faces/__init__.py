"""Face detection and tracking: detectors behind one interface, one identity followed through the
video, lag-free smoothing, box calibration between detectors, and a per-file detection cache."""
from .boxes import box_iou, nms
from .cache import cached_track, default_cache_dir
from .calibration import IDENTITY, BoxCalibration, fit_calibration
from .detectors import DETECTORS, Detection, FaceDetector, create_detector
from .smoothing import Centered, Mean5
from .tracking import FaceTrackOptions, TrackedFace, pad_and_clip, track, track_faces

__all__ = [
    "DETECTORS",
    "IDENTITY",
    "BoxCalibration",
    "Centered",
    "Detection",
    "FaceDetector",
    "FaceTrackOptions",
    "Mean5",
    "TrackedFace",
    "box_iou",
    "cached_track",
    "create_detector",
    "default_cache_dir",
    "fit_calibration",
    "nms",
    "pad_and_clip",
    "track",
    "track_faces",
]
