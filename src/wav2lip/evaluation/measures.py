"""How close an output's lower face is to the real one: PSNR, SSIM and the sharpness ratio; and how
much its mouth trembles from frame to frame (flicker).

Plain NumPy/OpenCV, so that the self-reenactment test (`reconstruct`), the mouth enhancer's fitting
(which calibrates its sharpening and its steadying with the same measures) and the benchmarks share
one definition of each number.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

MOUTH = (0.25, 0.62, 0.75, 0.92)  # x1, y1, x2, y2 of the mouth inside a face box, as fractions
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey images of the same shape (uint8 range), as Wang et al. 2004 define it: an
    11-px Gaussian window of sigma 1.5."""
    x, y = a.astype(np.float64), b.astype(np.float64)

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    num = (2 * mx * my + _SSIM_C1) * (2 * cxy + _SSIM_C2)
    den = (mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2)
    return float(np.mean(num / den))


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: how much fine detail (teeth, lip edges) an image holds."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def grey(image: np.ndarray) -> np.ndarray:
    """BGR uint8 -> grey uint8 (any view: made contiguous first)."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)


def lower_face(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The lower half of the face box (x1, y1, x2, y2): the part the generator paints."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return image[(y1 + y2) // 2:y2, x1:x2]


def mouth(image: np.ndarray, box: np.ndarray, size: int = 64) -> np.ndarray:
    """The mouth region of a face box, grey, resized to size x size/2 (boxes move by a pixel or two
    from frame to frame, so regions are compared at one size)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    w, h = x2 - x1, y2 - y1
    region = image[y1 + int(MOUTH[1] * h):y1 + int(MOUTH[3] * h), x1 + int(MOUTH[0] * w):x1 + int(MOUTH[2] * w)]
    return cv2.resize(grey(region), (size, size // 2), interpolation=cv2.INTER_AREA)


def changes(mouths: list[np.ndarray]) -> list[float]:
    """The mean absolute change from each mouth (`mouth`) to the next, grey levels."""
    return [float(np.abs(a.astype(np.float64) - b).mean()) for a, b in zip(mouths, mouths[1:])]


def flicker(mouths: list[np.ndarray]) -> float:
    """The mean of `changes`: on a still stretch, how much an output trembles where the face does not move."""
    return float(np.mean(changes(mouths)))


class LowerFaceScore:
    """Output frames against the real ones, over the lower half of each face box: PSNR pooled over the
    pixels of all frames, SSIM the mean over frames, sharpness ratio the sum of the output's Laplacian
    variances over the real ones' (1: as sharp as the video; below: blurrier; above: over-sharpened)."""

    def __init__(self) -> None:
        self.sse, self.pixels = 0.0, 0
        self.ssims: list[float] = []
        self.sharp_out = self.sharp_real = 0.0

    def add(self, out: np.ndarray, real: np.ndarray, box: np.ndarray) -> bool:
        """Score one frame; False (nothing added) when the box holds no pixel."""
        a, b = lower_face(out, box), lower_face(real, box)
        if a.size == 0:
            return False
        diff = a.astype(np.float64) - b
        self.sse += float(np.sum(diff * diff))
        self.pixels += diff.size
        grey_out, grey_real = grey(a), grey(b)
        self.ssims.append(ssim(grey_out, grey_real))
        self.sharp_out += sharpness(grey_out)
        self.sharp_real += sharpness(grey_real)
        return True

    @property
    def psnr(self) -> float:
        """inf when every scored pixel is equal, NaN before any frame."""
        if not self.pixels:
            return float("nan")
        mse = self.sse / self.pixels
        return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssims)) if self.ssims else float("nan")

    @property
    def sharpness_ratio(self) -> float:
        return self.sharp_out / self.sharp_real if self.sharp_real else float("nan")
