"""blend.py: the reference paste to the pixel, a feather whose box edge cannot be seen, its mask options,
the landmark mask, and `infer --preview-frame`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import deterministic_generator
from wav2lip.lipsync.blend import MaskShape, blend_mask, feather, feather_mask, paste, to_uint8


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




# ---------------------------------------------------------------- mask options, landmark mask, preview

LANDMARKS = np.array([[286.8, 375.3], [428.5, 373.1], [362.1, 477.1], [294.6, 525.1], [421.1, 523.4]])
BOX = np.array([196, 187, 507, 649])  # RetinaFace's box and points on st_art0.png, pads (0, 10, 0, 0)


def test_mask_shape_options_move_and_soften_the_mask() -> None:
    base = feather_mask(217, 231)[..., 0]
    higher = feather_mask(217, 231, top=0.30)[..., 0]
    softer = feather_mask(217, 231, softness=0.9)[..., 0]
    rows = lambda m: np.flatnonzero(m.max(axis=1) > 0)  # noqa: E731
    assert rows(higher)[0] < int(0.31 * 217) < rows(base)[0]
    assert (softer == 1).sum() < (base == 1).sum() and (softer > 0).sum() == (base > 0).sum()
    with pytest.raises(ValueError, match="mask top"):
        MaskShape(top=0.99).check()
    with pytest.raises(ValueError, match="softness"):
        MaskShape(softness=0).check()


def test_landmark_mask_covers_mouth_and_jaw_and_follows_a_tilt(frame) -> None:
    mask = blend_mask(BOX, MaskShape(kind="landmarks"), LANDMARKS)[..., 0]
    x1, y1, x2, y2 = BOX
    local = LANDMARKS - [x1, y1]
    mouth = local[3:].mean(axis=0).round().astype(int)
    assert mask[mouth[1], mouth[0]] == 1.0
    for eye in local[:2].round().astype(int):
        assert mask[eye[1], eye[0]] == 0.0
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert edge.max() == 0.0
    # Rolled 20 degrees about the mouth, the points move and the mask turns with them.
    angle = np.deg2rad(20)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = (LANDMARKS - LANDMARKS[3:].mean(axis=0)) @ turn.T + LANDMARKS[3:].mean(axis=0)
    turned = blend_mask(BOX, MaskShape(kind="landmarks"), rolled)[..., 0]
    def tilt(m: np.ndarray) -> float:
        """Degrees of the mask's principal axis from the horizontal (second moments)."""
        mo = cv2.moments((m > 0.5).astype(np.uint8), binaryImage=True)
        return float(np.degrees(0.5 * np.arctan2(2 * mo["mu11"], mo["mu20"] - mo["mu02"])))

    assert abs(tilt(mask)) < 3 and 12 < abs(tilt(turned)) < 28, (tilt(mask), tilt(turned))
    # Without points it is the ellipse; with colour matching off the cast stays.
    np.testing.assert_array_equal(blend_mask(BOX, MaskShape(kind="landmarks"), None), feather_mask(462, 311))
    crop = cv2.resize(frame[y1:y2, x1:x2], (96, 96))
    cast = np.clip(crop.astype(np.int16) + (30, 0, 0), 0, 255).astype(np.uint8)
    kept = feather(frame.copy(), BOX, cast, MaskShape(colour_match=False))[y1:y2, x1:x2].astype(int)
    matched = feather(frame.copy(), BOX, cast)[y1:y2, x1:x2].astype(int)
    centre = (slice(260, 300), slice(120, 190))
    original = frame[y1:y2, x1:x2].astype(int)[centre].mean(axis=(0, 1))
    assert kept[centre].mean(axis=(0, 1))[0] - original[0] > 20
    assert abs(matched[centre].mean(axis=(0, 1))[0] - original[0]) < 5


@pytest.fixture(scope="module")
def small_generator(tmp_path_factory) -> Path:
    return deterministic_generator(tmp_path_factory.mktemp("preview") / "deterministic.pth", width=0.125)


def test_preview_frame_writes_one_png_of_four_panels(small_generator, media, models_dir, tmp_path) -> None:
    out = tmp_path / "preview.png"
    done = subprocess.run(
        [sys.executable, "-m", "wav2lip", "infer", "--face", str(media / "vr_face2.mp4"), "--audio",
         str(media / "vr_audio1.wav"), "--checkpoint", str(small_generator), "--detector-weights",
         str(models_dir / "retinaface_mobilenet0.25.pth"), "--device", "cpu", "--precision", "fp32",
         "--preview-frame", "30", "--blend", "feather", "--mask", "landmarks", "-o", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "frame 30" in done.stderr and str(out) in done.stderr
    image = cv2.imread(str(out))
    assert image.shape[0] == 360 and list(tmp_path.iterdir()) == [out]
    # Four panels of one width split by 4-pixel black bars; the mask panel is black outside the mask.
    width = (image.shape[1] - 3 * 4) // 4
    for k in range(1, 4):
        assert image[:, k * (width + 4) - 4:k * (width + 4)].max() == 0
    mask_panel = image[:, -width:]
    assert mask_panel.max() == 255 and (mask_panel == 0).mean() > 0.5


def test_preview_errors_are_one_line(small_generator, media, models_dir, tmp_path) -> None:
    from wav2lip import LipSyncer, Wav2LipError

    syncer = LipSyncer(small_generator, detector_weights=models_dir / "retinaface_mobilenet0.25.pth",
                       device="cpu", precision="fp32")
    with pytest.raises(Wav2LipError, match="PNG"):
        syncer.preview(media / "vr_face2.mp4", media / "vr_audio1.wav", tmp_path / "p.jpg", frame=0)
    with pytest.raises(Wav2LipError, match="frame 100000 is outside"):
        syncer.preview(media / "vr_face2.mp4", media / "vr_audio1.wav", tmp_path / "p.png", frame=100000)
    with pytest.raises(Wav2LipError, match="mask top"):
        syncer.preview(media / "vr_face2.mp4", media / "vr_audio1.wav", tmp_path / "p.png", mask_top=2.0)
    assert list(tmp_path.iterdir()) == []
