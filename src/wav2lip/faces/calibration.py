"""Box calibration between detectors.

The generator was trained on S3FD crops; RetinaFace boxes sit differently on the face. One explicit
map turns a detector box into the box the generator should get:

    centre_x' = cx + dx * w        width'  = sx * w
    centre_y' = cy + dy * h        height' = sy * h

(cx, cy, w, h: the detector box's centre and size). Identity is the default for RetinaFace, which is
what the popular RetinaFace-based Wav2Lip successors feed the released generators; with S3FD weights
at hand, `fit_calibration` (or `wav2lip detect VIDEO --compare s3fd,retinaface`) fits the four numbers
on the user's own footage by least squares.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BoxCalibration:
    """Affine box map: centre shift in units of the box size, then size scale (see module docstring)."""

    dx: float = 0.0
    dy: float = 0.0
    sx: float = 1.0
    sy: float = 1.0

    def apply(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=np.float64)
        w, h = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
        cx = (box[..., 0] + box[..., 2]) / 2 + self.dx * w
        cy = (box[..., 1] + box[..., 3]) / 2 + self.dy * h
        half_w, half_h = self.sx * w / 2, self.sy * h / 2
        return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in asdict(self).items()}


IDENTITY = BoxCalibration()


def fit_calibration(source: np.ndarray, target: np.ndarray) -> BoxCalibration:
    """Least-squares map from `source` boxes (N, 4, e.g. RetinaFace) to paired `target` boxes (S3FD).

    Minimises the squared error of the target's centre and size, each expressed in units of the
    source box's size, so large and small faces weigh alike.
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[0] == 0:
        raise ValueError("fit_calibration needs two (N, 4) arrays of paired boxes, N >= 1")
    w, h = source[:, 2] - source[:, 0], source[:, 3] - source[:, 1]
    dx = ((target[:, 0] + target[:, 2]) - (source[:, 0] + source[:, 2])) / 2 / w
    dy = ((target[:, 1] + target[:, 3]) - (source[:, 1] + source[:, 3])) / 2 / h
    sx = (target[:, 2] - target[:, 0]) / w
    sy = (target[:, 3] - target[:, 1]) / h
    return BoxCalibration(float(dx.mean()), float(dy.mean()), float(sx.mean()), float(sy.mean()))
