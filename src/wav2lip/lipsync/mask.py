"""The feather mask's shape as users tune it, and the box geometry it is drawn in (`blend` draws it).

No OpenCV or NumPy here: the option table reads the defaults, and `wav2lip --help` shows them, without them.
"""
from __future__ import annotations

from dataclasses import dataclass

# Where the generated lower face sits inside the crop box, as fractions of the box (feather mask).
MOUTH_CENTRE = (0.5, 0.70)  # x, y
MOUTH_RADII = (0.44, 0.27)  # an ellipse from the nose to the chin, clear of the box edges
FEATHER = 0.35  # fraction of the ellipse radius over which the mask fades from 1 to 0
MASK_BOTTOM = MOUTH_CENTRE[1] + MOUTH_RADII[1]  # the ellipse's lowest point, above the box's bottom edge
MASKS = ("ellipse", "landmarks")


@dataclass(frozen=True)
class MaskShape:
    """The feather blend's mask, as users tune it (`wav2lip infer --preview-frame` shows it).

    top: where the mask starts, as a fraction of the box height from its top (0.43: just under the
    nose; smaller reaches higher, up to the generated half at 0.5 and beyond into the repainted
    reference); softness: the fraction of the mask's radius over which it fades out; colour_match:
    shift the generated colours to the surrounding skin; kind: "ellipse" (fixed in the box) or
    "landmarks" (mouth and jaw from RetinaFace's five points: follows a turned or tilted head).
    """

    top: float = MOUTH_CENTRE[1] - MOUTH_RADII[1]
    softness: float = FEATHER
    colour_match: bool = True
    kind: str = "ellipse"

    def check(self) -> None:
        if not 0.0 <= self.top < MASK_BOTTOM:
            raise ValueError(f"mask top must be in [0, {MASK_BOTTOM:.2f}) of the box height, got {self.top}")
        if not 0.0 < self.softness <= 1.0:
            raise ValueError(f"mask softness must be in (0, 1], got {self.softness}")
        if self.kind not in MASKS:
            raise ValueError(f"unknown mask {self.kind!r} ({' or '.join(MASKS)})")
