"""blend.py: the reference paste to the pixel, and a feather whose box edge cannot be seen."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from wav2lip.blend import feather, feather_mask, paste, to_uint8


@pytest.fixture(scope="module")
def frame(media) -> np.ndarray:
    return cv2.imread(str(media / "st_art0.png"))


def test_to_uint8_truncates_like_the_reference() -> None:
    out = np.array([0.0, 0.2, 0.999, 1.0, 0.5039], dtype=np.float32).reshape(1, 1, 1, 5).repeat(3, axis=1)
    got = to_uint8(out)
    assert got.shape == (1, 1, 5, 3)
    assert got[0, 0, :, 0].tolist() == [0, 51, 254, 255, 128]  # 0.2*255 = 51.0000008 -> 51, 0.999 -> 254


def test_paste_is_the_reference_resize_and_hard_rectangle(frame) -> None:
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    box = np.array([200, 300, 431, 517])  # x1, y1, x2, y2
    out = paste(frame.copy(), box, face)
    expected = frame.copy()
    expected[300:517, 200:431] = cv2.resize(face, (231, 217))  # the reference: default INTER_LINEAR
    np.testing.assert_array_equal(out, expected)


def test_feather_mask_is_zero_on_the_box_edge_and_one_over_the_mouth() -> None:
    mask = feather_mask(217, 231)[..., 0]
    assert mask.shape == (217, 231)
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert edge.max() == 0.0
    assert mask[int(0.70 * 217), 115] == 1.0  # the mouth
    assert mask[: int(0.40 * 217)].max() == 0.0  # eyes and upper face are never touched
    assert np.abs(np.diff(mask, axis=0)).max() < 0.1  # soft: the fade spans over 15 rows


def test_feather_hides_a_colour_shift_and_keeps_the_rest(frame) -> None:
    box = np.array([200, 300, 431, 517])
    x1, y1, x2, y2 = box
    # A generated face that is the true crop with a strong colour cast: matching must remove the cast.
    crop = cv2.resize(frame[y1:y2, x1:x2], (96, 96))
    cast = np.clip(crop.astype(np.int16) + (30, -30, -25), 0, 255).astype(np.uint8)
    out = feather(frame.copy(), box, cast)
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    region = out[y1:y2, x1:x2].astype(np.int16)
    original = frame[y1:y2, x1:x2].astype(np.int16)
    # Hard paste of the cast face shows a jump at the box edge; feather shows none.
    pasted = paste(frame.copy(), box, cast)[y1:y2, x1:x2].astype(np.int16)
    assert np.abs(pasted[:, 0] - original[:, 0]).mean() > 15
    assert np.abs(region[:, 0] - original[:, 0]).max() == 0
    # Inside, the cast is gone: the mean colour over the mouth equals the original's within 3 levels.
    mouth = (slice(int(0.6 * (y2 - y1)), int(0.8 * (y2 - y1))), slice(int(0.3 * (x2 - x1)), int(0.7 * (x2 - x1))))
    assert np.abs(region[mouth].mean(axis=(0, 1)) - original[mouth].mean(axis=(0, 1))).max() < 3


