"""Face detectors behind one small interface: `create_detector(name).detect(frames)`.

Both backends detect on a downscaled copy of the frame when asked (`max_size`) and map the boxes
back, run in batches, and halve the batch when the device runs out of memory (as the reference does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .. import store
from ..checkpoints import load_model
from ..constants import DETECTORS
from ..errors import Wav2LipError
from ..models.retinaface import RETINAFACE_MEAN_BGR
from ..models.s3fd import S3FD_MEAN_RGB
from .boxes import retinaface_detections, s3fd_candidates, s3fd_postprocess

# Weight files the model store knows, per backend.
WEIGHT_NAMES = {"retinaface": "retinaface_mobilenet0.25.pth", "s3fd": "s3fd.pth"}
# Longest side RetinaFace sees by default, chosen by measurement on the real clips: per-frame boxes
# at 480 keep a mean IoU of 0.95 with full-resolution boxes (the detector's own frame-to-frame IoU is
# 0.97), at 320 it falls to 0.93 (min 0.86); 480 costs a quarter of full size on 844-line video.
DEFAULT_RETINAFACE_MAX_SIZE = 480


@dataclass
class Detection:
    """One face: corner box in frame pixels, confidence, and 5 landmarks when the backend has them."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))
    )


class FaceDetector:
    """Batched detection with OOM back-off and optional downscaling; subclasses run the network."""

    name = ""

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        max_size: int | None = None,
        threshold: float = 0.5,
        weights_id: str = "",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, batch_size)
        self.max_size = max_size
        self.threshold = threshold
        self.weights_id = weights_id

    @property
    def settings(self) -> dict:
        """Everything that changes the boxes: part of the detection cache key."""
        return {"detector": self.name, "weights": self.weights_id, "max_size": self.max_size,
                "threshold": self.threshold}

    def detect(self, frames_bgr: list[np.ndarray]) -> list[list[Detection]]:
        """Faces in each BGR uint8 frame, best score first; frames of different sizes are allowed."""
        results: list[list[Detection]] = []
        start = 0
        while start < len(frames_bgr):
            shape = frames_bgr[start].shape
            end = start + 1
            while end < len(frames_bgr) and end - start < self.batch_size and frames_bgr[end].shape == shape:
                end += 1
            try:
                results.extend(self._detect_same_size(frames_bgr[start:end]))
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                if self.batch_size == 1:
                    raise Wav2LipError(
                        f"{shape[1]}x{shape[0]} frames are too big for face detection on {self.device}: "
                        "lower the detection size (max_size) or use the CPU"
                    ) from exc
                self.batch_size //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start = end
        return results

    def _detect_same_size(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        height, width = frames[0].shape[:2]
        scale = 1.0
        if self.max_size and max(height, width) > self.max_size:
            scale = self.max_size / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        batch = torch.from_numpy(np.stack(frames)).to(self.device)
        with torch.inference_mode():
            dets = self._run(batch)
        # Damaged weights can give inf/NaN boxes: a detection that is not a finite box is not a face.
        dets = [[d for d in frame_dets if np.isfinite(d.box).all() and np.isfinite(d.score)
                 and (d.landmarks is None or np.isfinite(d.landmarks).all())] for frame_dets in dets]
        if scale != 1.0:
            sx, sy = width / frames[0].shape[1], height / frames[0].shape[0]
            for frame_dets in dets:
                for d in frame_dets:
                    d.box = d.box * np.array([sx, sy, sx, sy])
                    if d.landmarks is not None:
                        d.landmarks = d.landmarks * np.array([sx, sy])
        return dets

    def _run(self, batch_bgr: torch.Tensor) -> list[list[Detection]]:
        raise NotImplementedError


class RetinaFaceDetector(FaceDetector):
    """RetinaFace mobilenet0.25 on the BGR frame: fast, with 5 landmarks."""

    name = "retinaface"

    def _run(self, batch_bgr: torch.Tensor) -> list[list[Detection]]:
        x = (batch_bgr.float() - torch.tensor(RETINAFACE_MEAN_BGR, device=self.device)).permute(0, 3, 1, 2)
        loc, conf, landmarks = self.model(x.contiguous())
        out = retinaface_detections(loc, conf, landmarks, x.shape[2], x.shape[3], self.threshold)
        return [
            [Detection(b.astype(np.float64), float(s), p.astype(np.float64)) for b, p, s in zip(*dets)]
            for dets in out
        ]


class S3FDDetector(FaceDetector):
    """The reference's S3FD on the RGB frame (spec section 6): exact reference boxes."""

    name = "s3fd"

    def _run(self, batch_bgr: torch.Tensor) -> list[list[Detection]]:
        x = batch_bgr.flip(-1).float() - torch.tensor(S3FD_MEAN_RGB, device=self.device)
        outputs = self.model(x.permute(0, 3, 1, 2).contiguous())
        return [
            [Detection(d[:4].astype(np.float64), float(d[4])) for d in s3fd_postprocess(c, self.threshold)]
            for c in s3fd_candidates(outputs)
        ]


# One backend per name in DETECTORS.
_BACKENDS: dict[str, type[FaceDetector]] = {"retinaface": RetinaFaceDetector, "s3fd": S3FDDetector}


def _load_weights(name: str, weights: str | Path | None) -> tuple[nn.Module, str]:
    """The backend's network with its weights: an explicit path, or the model store's file."""
    path = store.resolve(weights if weights is not None else WEIGHT_NAMES[name])
    return load_model(path, name), f"{path.name}:{path.stat().st_size}"


def create_detector(
    name: str = "retinaface",
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    **options,
) -> FaceDetector:
    """A ready detector. Options: batch_size (16), max_size (longest side detection sees; RetinaFace
    default DEFAULT_RETINAFACE_MAX_SIZE, S3FD default full size like the reference), threshold (0.5),
    model (an already built nn.Module, e.g. deterministic weights for benchmarks and tests)."""
    if name not in _BACKENDS:
        raise Wav2LipError(f"unknown face detector {name!r}: choose from {', '.join(DETECTORS)}")
    detector_cls = _BACKENDS[name]
    model = options.pop("model", None)
    if model is None:
        model, weights_id = _load_weights(name, weights)
    else:
        weights_id = options.pop("weights_id", f"{type(model).__name__}:in-memory")
    options.setdefault("max_size", DEFAULT_RETINAFACE_MAX_SIZE if name == "retinaface" else None)
    return detector_cls(model, device=device, weights_id=weights_id, **options)
