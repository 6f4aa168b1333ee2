"""Put generated 96x96 faces back into frames: `paste` (the reference) and `feather` (seamless).

Both take one generated face as 96x96x3 uint8 BGR (see `to_uint8` for the generator's float output) and
write into the frames in place; the per-frame work is one OpenCV resize plus array arithmetic.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from .mask import FEATHER, MASK_BOTTOM, MOUTH_CENTRE, MOUTH_RADII, MaskShape


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


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """No visible ring where the fade starts or ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@functools.lru_cache(maxsize=64)
def feather_mask(height: int, width: int, top: float = MOUTH_CENTRE[1] - MOUTH_RADII[1],
                 softness: float = FEATHER) -> np.ndarray:
    """(H, W, 1) float32 weights: 1 over the mouth and chin, fading smoothly to exactly 0 well inside
    the box, so the box edge never shows; an ellipse from `top` to MASK_BOTTOM of the box height.
    Cached per box size and shape (boxes change size rarely)."""
    centre_y, radius_y = (top + MASK_BOTTOM) / 2, (MASK_BOTTOM - top) / 2
    v = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    u = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    r = np.sqrt(((u - MOUTH_CENTRE[0]) / MOUTH_RADII[0]) ** 2 + ((v - centre_y) / radius_y) ** 2)
    mask = _smoothstep((1.0 - r) / softness).astype(np.float32)
    mask.setflags(write=False)
    return mask[..., None]


def landmark_mask(height: int, width: int, landmarks: np.ndarray, top: float = MOUTH_CENTRE[1] - MOUTH_RADII[1],
                  softness: float = FEATHER) -> np.ndarray:
    """(H, W, 1) float32 weights over the mouth and jaw, placed by RetinaFace's five points given in box
    pixels (eyes, nose tip, mouth corners): out from the mouth corners to the cheeks, from the height
    `top` of the box (kept 30-70% of the way up to the nose tip) down to the chin, fading over
    `softness` of its inner depth. The eye-to-mouth axis sets the tilt, so a rolled head keeps the mask
    on its mouth and jaw."""
    eyes, nose, corners = landmarks[:2].mean(axis=0), landmarks[2], landmarks[3:5]
    mouth = corners.mean(axis=0)
    down = mouth - eyes
    length = float(np.hypot(*down)) or 1.0
    down = down / length
    across = np.array([down[1], -down[0]])  # perpendicular: toward the face's left in the image
    half_mouth = max(float(np.hypot(*(corners[1] - corners[0]))) / 2, 0.15 * width)
    # The mask's upper edge sits where `top` of the box height falls along the face's axis.
    upper = float(np.dot(np.array([mouth[0], top * height]) - mouth, down))
    to_nose = float(np.dot(nose - mouth, down))  # negative: the nose is above the mouth
    upper = float(np.clip(upper, 0.7 * to_nose, 0.3 * to_nose))
    lower = float(np.dot(np.array([mouth[0], MASK_BOTTOM * height]) - mouth, down))
    points = []
    for along, side in ((upper, 1.2), (0.0, 1.6), (lower * 0.55, 1.3), (lower, 0.6)):
        for sign in (-1, 1):
            points.append(mouth + along * down + sign * side * half_mouth * across)
    outline = np.array(points[0::2] + points[1::2][::-1], dtype=np.float32)
    filled = np.zeros((height, width), np.uint8)
    cv2.fillPoly(filled, [np.round(outline * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    filled[[0, -1], :] = 0  # the mask never reaches the box edge
    filled[:, [0, -1]] = 0
    distance = cv2.distanceTransform(filled, cv2.DIST_L2, 3)
    reach = max(1.0, softness * float(distance.max()))
    return _smoothstep(distance / reach).astype(np.float32)[..., None]


def blend_mask(box: np.ndarray, shape: MaskShape = MaskShape(), landmarks: np.ndarray | None = None) -> np.ndarray:
    """The (H, W, 1) mask `feather` uses for this box; `landmarks` (5, 2) in frame pixels for the
    landmark mask (without them it falls back to the ellipse)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if shape.kind == "landmarks" and landmarks is not None:
        return landmark_mask(y2 - y1, x2 - x1, np.asarray(landmarks, np.float64) - [x1, y1], shape.top, shape.softness)
    return feather_mask(y2 - y1, x2 - x1, shape.top, shape.softness)


def feather(frame: np.ndarray, box: np.ndarray, face: np.ndarray, shape: MaskShape = MaskShape(),
            landmarks: np.ndarray | None = None) -> np.ndarray:
    """Blend only the generated lower face through a soft mask (`shape`), after shifting its colour
    so that, on the fading ring where it meets the original skin, the two have the same mean.

    The generator's colours drift from the frame's (low-resolution, sigmoid output); matching on the
    ring, not the whole box, keeps the mouth's own shading while hiding the seam.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    region = frame[y1:y2, x1:x2]
    generated = _resize_to_box(face, box).astype(np.float32)
    original = region.astype(np.float32)
    mask = blend_mask(box, shape, landmarks)
    ring = mask * (1.0 - mask)
    weight = float(ring.sum())
    if shape.colour_match and weight > 0:
        shift = ((original - generated) * ring).reshape(-1, 3).sum(axis=0) / weight
        generated += shift
    out = original + (generated - original) * mask
    region[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return frame


BLENDS = {"paste": paste, "feather": feather}

