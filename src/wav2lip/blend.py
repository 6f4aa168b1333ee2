"""Put generated 96x96 faces back into frames: `paste` (the reference) and `feather` (seamless).

Both take one generated face as 96x96x3 uint8 BGR (see `to_uint8` for the generator's float output) and
write into the frames in place; the per-frame work is one OpenCV resize plus array arithmetic.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

# Where the generated lower face sits inside the crop box, as fractions of the box (feather mask).
MOUTH_CENTRE = (0.5, 0.70)  # x, y
MOUTH_RADII = (0.44, 0.27)  # an ellipse from the nose to the chin, clear of the box edges
FEATHER = 0.35  # fraction of the ellipse radius over which the mask fades from 1 to 0


def to_uint8(generated: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] -> (B, H, W, 3) uint8 by truncation, as the reference does
    (`(out * 255).astype(uint8)`, spec section 5), so pasted pixels match it exactly."""
    return np.ascontiguousarray((np.asarray(generated, dtype=np.float32) * 255).astype(np.uint8).transpose(0, 2, 3, 1))


def _resize_to_box(face: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)


def paste(frame: np.ndarray, box: np.ndarray, face: np.ndarray) -> np.ndarray:
    """The reference's blend: the uint8 face resized to the box (INTER_LINEAR) as a hard rectangle."""
    x1, y1, x2, y2 = (int(v) for v in box)
    frame[y1:y2, x1:x2] = _resize_to_box(face, box)
    return frame


@functools.lru_cache(maxsize=64)
def feather_mask(height: int, width: int) -> np.ndarray:
    """(H, W, 1) float32 weights: 1 over the mouth and chin, fading smoothly to exactly 0 well inside
    the box, so the box edge never shows. Cached per box size (boxes change size rarely)."""
    v = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    u = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    r = np.sqrt(((u - MOUTH_CENTRE[0]) / MOUTH_RADII[0]) ** 2 + ((v - MOUTH_CENTRE[1]) / MOUTH_RADII[1]) ** 2)
    t = np.clip((1.0 - r) / FEATHER, 0.0, 1.0)
    mask = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible ring where the fade starts or ends
    mask.setflags(write=False)
    return mask[..., None]


def feather(frame: np.ndarray, box: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Blend only the generated lower face through a soft elliptical mask, after shifting its colour
    so that, on the fading ring where it meets the original skin, the two have the same mean.

    The generator's colours drift from the frame's (low-resolution, sigmoid output); matching on the
    ring, not the whole box, keeps the mouth's own shading while hiding the seam.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    region = frame[y1:y2, x1:x2]
    generated = _resize_to_box(face, box).astype(np.float32)
    original = region.astype(np.float32)
    mask = feather_mask(y2 - y1, x2 - x1)
    ring = mask * (1.0 - mask)
    weight = float(ring.sum())
    if weight > 0:
        shift = ((original - generated) * ring).reshape(-1, 3).sum(axis=0) / weight
        generated += shift
    out = original + (generated - original) * mask
    region[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return frame


BLENDS = {"paste": paste, "feather": feather}

