"""Face restoration after lip-sync: GFPGAN v1.4 sharpens the generated mouth, stable from frame to frame.

Per face: the five landmarks map the frame onto the 512 x 512 template (spec/GFPGAN.md section 5), the
network restores the aligned face, and the result goes back through the inverse warp under the soft
mask of the reference's helper. Unlike that helper, the restored pixels are then blended in only where
the generator painted (the feather mask, or the paste box), so the eyes and the rest of the face stay
the source's, and `strength` mixes restored and plain pixels.

Temporal stability comes from three choices: the network's stored noise maps (never fresh noise),
landmarks smoothed within each shot by the tracker, and a least-squares similarity fit, which moves
continuously with the landmarks (the reference's least-median fit can jump between point subsets).
"""
from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import torch
from torch import nn

from .blend import feather_mask

FACE_SIZE = 512  # GFPGAN's aligned face side (spec/GFPGAN.md section 2)
# The five landmarks' places in the aligned face (spec/GFPGAN.md section 5): eyes, nose tip, mouth corners.
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)
BORDER = (135, 133, 132)  # the aligned crop's constant border (spec/GFPGAN.md section 5)
MASK_EDGE = 2  # the warped mask's first erosion, in pixels (spec/GFPGAN.md section 5)
# Landmarks as fractions of a face box, for boxes without landmarks (--box, S3FD): the mean of the 13
# RetinaFace faces of ../shared/fixtures/retinaface_real_frames.npz, made left-right symmetric.
BOX_LANDMARKS = np.array([[0.276, 0.39], [0.724, 0.39], [0.5, 0.56], [0.317, 0.75], [0.683, 0.75]])
ENHANCE_BATCH = 4  # faces per network call


class Enhancer(Protocol):
    """What the kernel's enhance step calls: GFPGAN's `FaceEnhancer` or a fitted `SelfEnhancer`."""

    def for_stream(self) -> Enhancer:
        """The enhancer for one stream of frames in order (a kernel's): itself when it keeps no state
        from frame to frame, else a copy with state of its own, sharing the network."""
        ...

    def enhance(self, frames: list[np.ndarray], boxes: list[np.ndarray], landmarks: list[np.ndarray | None],
                blend: str, strength: float) -> None: ...


def similarity(points: np.ndarray, target: np.ndarray = TEMPLATE) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) that maps `points` onto `target` with
    the least squared error: continuous in the points, so smoothed landmarks give a smooth warp."""
    p = points[:, 0] + 1j * points[:, 1]
    q = target[:, 0] + 1j * target[:, 1]
    pc, qc = p - p.mean(), q - q.mean()
    a = np.vdot(pc, qc) / max(np.vdot(pc, pc).real, 1e-12)  # s * exp(i theta)
    t = q.mean() - a * p.mean()
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


def box_landmarks(box: np.ndarray) -> np.ndarray:
    """Typical landmark places inside a face box (x1, y1, x2, y2), when no detector gave them."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.stack([x1 + BOX_LANDMARKS[:, 0] * (x2 - x1), y1 + BOX_LANDMARKS[:, 1] * (y2 - y1)], axis=1)


def align(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 512 x 512 aligned face (BGR uint8) of `frame` under `matrix`."""
    return cv2.warpAffine(frame, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER)


def soft_mask(matrix: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The reference's paste-back mask (spec/GFPGAN.md section 5) over the part of the frame the
    aligned square covers: (mask (h, w) float32, (x0, y0) of its top-left corner in the frame)."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [FACE_SIZE, 0, 1], [0, FACE_SIZE, 1], [FACE_SIZE, FACE_SIZE, 1]], np.float64)
    mapped = corners @ inverse.T
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in mapped.min(axis=0))
    x1, y1 = min(width, int(np.ceil(mapped[:, 0].max())) + 2), min(height, int(np.ceil(mapped[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (0, 0)
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    ones = np.ones((FACE_SIZE, FACE_SIZE), np.float32)
    mask = cv2.warpAffine(ones, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    mask = cv2.erode(mask, np.ones((MASK_EDGE, MASK_EDGE), np.uint8))
    edge = int(np.sqrt(float(mask.sum()))) // 20
    if edge > 0:
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)
    return mask, (x0, y0)


def paint_mask(blend: str, height: int, width: int) -> np.ndarray:
    """(h, w) weights of where the generator painted inside its box: the feather mask, or all of it."""
    if blend == "feather":
        return feather_mask(height, width)[..., 0]
    return np.ones((height, width), np.float32)


def paste_back(frame: np.ndarray, restored: np.ndarray, matrix: np.ndarray, box: np.ndarray, blend: str,
               strength: float) -> np.ndarray:
    """Blend the restored 512 face (BGR uint8) into `frame` in place, inside `box` only, under the soft
    mask times the generator's paint mask times `strength`."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    mask, (mx, my) = soft_mask(matrix, height, width)
    weight = np.zeros((y2 - y1, x2 - x1), np.float32)
    # The soft mask's overlap with the box.
    ox1, oy1 = max(x1, mx), max(y1, my)
    ox2, oy2 = min(x2, mx + mask.shape[1]), min(y2, my + mask.shape[0])
    if ox2 <= ox1 or oy2 <= oy1:
        return frame
    weight[oy1 - y1:oy2 - y1, ox1 - x1:ox2 - x1] = mask[oy1 - my:oy2 - my, ox1 - mx:ox2 - mx]
    weight *= paint_mask(blend, y2 - y1, x2 - x1) * np.float32(strength)
    inverse = cv2.invertAffineTransform(matrix)
    inverse[:, 2] -= (x1, y1)
    back = cv2.warpAffine(restored, inverse, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR)
    region = frame[y1:y2, x1:x2]
    plain = region.astype(np.float32)
    out = plain + (back.astype(np.float32) - plain) * weight[..., None]
    region[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return frame


def to_network(faces_bgr: np.ndarray) -> torch.Tensor:
    """(B, 512, 512, 3) BGR uint8 -> (B, 3, 512, 512) RGB float32 in [-1, 1] (spec/GFPGAN.md section 2)."""
    rgb = torch.from_numpy(np.ascontiguousarray(faces_bgr[..., ::-1])).permute(0, 3, 1, 2).float()
    return (rgb / 255.0 - 0.5) / 0.5


def from_network(out: torch.Tensor) -> np.ndarray:
    """(B, 3, 512, 512) RGB about [-1, 1] -> (B, 512, 512, 3) BGR uint8: clamp, map, round (section 2)."""
    img = ((out.float().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return np.ascontiguousarray(img.permute(0, 2, 3, 1).cpu().numpy()[..., ::-1])


class FaceEnhancer:
    """A loaded restorer: `model` maps (B, 3, 512, 512) [-1, 1] RGB to the same (fp32, or a bf16 copy)."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()

    def restore(self, faces_bgr: np.ndarray) -> np.ndarray:
        """Aligned faces (B, 512, 512, 3) BGR uint8 -> restored, same layout."""
        with torch.inference_mode():
            out = self.model(to_network(faces_bgr).to(self.device, self.dtype))
        return from_network(out)

    def for_stream(self) -> FaceEnhancer:
        """Itself: each face is restored on its own."""
        return self

    def enhance(self, frames: list[np.ndarray], boxes: list[np.ndarray], landmarks: list[np.ndarray | None],
                blend: str, strength: float) -> None:
        """Restore the face of each frame (in place, one network call per ENHANCE_BATCH faces)."""
        matrices = [similarity(p if p is not None else box_landmarks(b)) for p, b in zip(landmarks, boxes)]
        for start in range(0, len(frames), ENHANCE_BATCH):
            end = min(start + ENHANCE_BATCH, len(frames))
            aligned = np.stack([align(frames[i], matrices[i]) for i in range(start, end)])
            for i, face in zip(range(start, end), self.restore(aligned)):
                paste_back(frames[i], face, matrices[i], boxes[i], blend, strength)
