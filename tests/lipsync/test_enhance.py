"""enhance.py and `--enhance gfpgan`: alignment to the template, the reference's paste-back mask, blending
only where the generator painted, landmarks carried and smoothed by the tracker, and the enhanced pipeline
end to end on a real clip with filled (deterministic) weights."""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import cpu_syncer, cut_wav, deterministic_generator
from wav2lip import LipSyncer, Wav2LipError
from wav2lip.lipsync.blend import feather_mask
from wav2lip.cli import main
from wav2lip.lipsync.enhance import TEMPLATE, align, box_landmarks, paste_back, similarity, soft_mask
from wav2lip.faces import Centered, FaceTrackOptions, cached_track, create_detector, track
from support.deterministic import fill_deterministic
from wav2lip.models.retinaface import RetinaFace
from wav2lip.io.video import open_source, probe


def read_frames(path: Path, n: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in islice(container.decode(video=0), n)]


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.fixture(scope="module")
def detector(models_dir):
    return create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth")


@pytest.fixture(scope="module")
def still(fixtures_dir):
    """st_art0.png with its RetinaFace box and landmarks (fixture)."""
    ref = np.load(fixtures_dir / "retinaface_real_frames.npz")
    return ref["st_art0_bgr"], ref["st_art0_boxes"][0], ref["st_art0_landmarks"][0].astype(np.float64)


# ---------------------------------------------------------------- geometry


def test_similarity_recovers_a_known_transform_and_is_continuous() -> None:
    angle, scale = 0.3, 1.7
    known = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 40.0],
                      [scale * np.sin(angle), scale * np.cos(angle), -25.0]])
    points = np.random.default_rng(0).uniform(100, 300, (5, 2))
    assert np.allclose(similarity(points, apply(known, points)), known)
    assert np.allclose(similarity(TEMPLATE), [[1, 0, 0], [0, 1, 0]])
    # A small move of one landmark moves the warp a little (no jump to another point subset).
    moved = points.copy()
    moved[3] += 0.5
    shift = apply(similarity(moved), points) - apply(similarity(points), points)
    assert np.abs(shift).max() < 1.0


def reference_soft_mask(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """spec/GFPGAN.md section 5 literally, over the whole frame."""
    inverse = cv2.invertAffineTransform(matrix)
    mask = cv2.warpAffine(np.ones((512, 512), np.float32), inverse, (width, height))
    mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
    w = int(np.sqrt(mask.sum())) // 20
    mask = cv2.erode(mask, np.ones((2 * w, 2 * w), np.uint8))
    return cv2.GaussianBlur(mask, (2 * w + 1, 2 * w + 1), 0)


@pytest.mark.parametrize("shift", [(0, 0), (-150, -60), (250, 380)])  # inside, over the top-left, bottom-right edge
def test_soft_mask_is_the_reference_mask_on_the_covered_part(still, shift) -> None:
    frame, _, points = still
    height, width = frame.shape[:2]
    matrix = similarity(points + shift)
    mask, (x0, y0) = soft_mask(matrix, height, width)
    full = reference_soft_mask(matrix, height, width)
    assert 0 < mask.max() <= 1 + 1e-6
    np.testing.assert_allclose(mask, full[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]], atol=1e-5)
    outside = full.copy()
    outside[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = 0
    assert outside.max() == 0


def test_paste_back_touches_only_what_the_generator_painted(still) -> None:
    frame, box, points = still
    box = np.array([int(box[0]), int(box[1]), int(box[2]), int(box[3]) + 10])
    x1, y1, x2, y2 = box
    matrix = similarity(points)
    aligned = align(frame, matrix)
    inverted = 255 - aligned  # a "restorer" whose every pixel differs from its input
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False

    for blend in ("paste", "feather"):
        out = paste_back(frame.copy(), inverted, matrix, box, blend, 1.0)
        np.testing.assert_array_equal(out[outside], frame[outside])
        changed = np.any(out != frame, axis=2)[y1:y2, x1:x2]
        if blend == "feather":
            assert not changed[feather_mask(y2 - y1, x2 - x1)[..., 0] == 0].any()  # eyes and forehead kept
        assert changed[int(0.7 * (y2 - y1)), (x2 - x1) // 2]  # the mouth

    np.testing.assert_array_equal(paste_back(frame.copy(), inverted, matrix, box, "paste", 0.0), frame)
    full = paste_back(frame.copy(), inverted, matrix, box, "paste", 1.0).astype(int)
    half = paste_back(frame.copy(), inverted, matrix, box, "paste", 0.5).astype(int)
    assert np.abs(2 * half - full - frame).max() <= 2  # strength mixes linearly (two roundings)
    # An identity "restorer": the round trip through the template puts every pixel back where it was.
    same = paste_back(frame.copy(), aligned, matrix, box, "paste", 1.0).astype(int)
    assert np.abs(same - frame)[y1:y2, x1:x2].mean() < 4


def test_box_landmarks_fall_inside_the_box_in_face_order(still) -> None:
    _, box, points = still
    guess = box_landmarks(box)
    assert np.all((guess >= box[:2]) & (guess <= box[2:]))
    assert np.abs(guess - points).max() < 0.15 * (box[2] - box[0])  # typical places, near the real ones


# ---------------------------------------------------------------- landmarks through the tracker


@pytest.fixture(scope="module")
def two_shots(media) -> list[np.ndarray]:
    a = read_frames(media / "vr_face3.mp4", 6)
    b = read_frames(media / "hdtf_kh.mp4", 5)
    return [cv2.resize(f, (256, 256)) for f in a + b]


def test_tracker_smooths_landmarks_within_a_shot_and_never_across_a_cut(detector, two_shots) -> None:
    raw = list(track(two_shots, detector, FaceTrackOptions(smooth="none", track_every=1)))
    items = list(track(two_shots, detector, FaceTrackOptions(smooth="centered", track_every=1)))
    assert [i.index for i in items if i.scene_cut] == [6]
    for shot in (slice(0, 6), slice(6, 11)):
        smoother, want = Centered(2), []
        for item in raw[shot]:
            want += smoother.push(item.landmarks.reshape(-1))
        want = np.array(want + smoother.finish()).reshape(-1, 5, 2)
        np.testing.assert_allclose(np.array([i.landmarks for i in items[shot]]), want)
    for item in items:
        assert np.all((item.landmarks >= item.box[:2] - 5) & (item.landmarks <= item.box[2:] + 5))


def test_skipped_frames_get_interpolated_landmarks_and_the_cache_keeps_them(media, detector, work) -> None:
    path = media / "vr_face5.mp4"
    frames = [cv2.resize(f, (256, 256)) for f in read_frames(path, 6)]
    options = FaceTrackOptions(smooth="none", track_every=2)
    items = list(cached_track(path, frames, detector, options, work / "cache"))
    assert [i.interpolated for i in items] == [False, True, False, True, False, False]
    assert np.allclose(items[1].landmarks, (items[0].landmarks + items[2].landmarks) / 2)
    # Same settings, different weights in memory: a real detection would move the points.
    impostor = create_detector("retinaface", model=fill_deterministic(RetinaFace()), weights_id=detector.weights_id)
    replay = list(cached_track(path, frames, impostor, options, work / "cache"))
    for got, want in zip(replay, items):
        np.testing.assert_array_equal(got.landmarks, want.landmarks)


# ---------------------------------------------------------------- the enhanced pipeline


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return deterministic_generator(work / "generator.pth", width=0.25)


@pytest.fixture(scope="module")
def syncer(checkpoint, restorer) -> LipSyncer:
    return cpu_syncer(checkpoint, enhancer_weights=restorer)


@pytest.fixture(scope="module")
def speech(media, work) -> Path:
    return cut_wav(media / "vr_audio1.wav", work / "speech.wav", 0.32)  # 8 frames at 25 fps


def test_enhanced_pipeline_changes_only_the_mouth_and_is_deterministic(syncer, media, speech) -> None:
    face = media / "vr_face5.mp4"
    plain = list(syncer.frames(face, speech, blend="feather", cache=False))
    enhanced = list(syncer.frames(face, speech, blend="feather", cache=False, enhance="gfpgan"))
    again = list(syncer.frames(face, speech, blend="feather", cache=False, enhance="gfpgan"))
    none = list(syncer.frames(face, speech, blend="feather", cache=False, enhance="gfpgan", enhance_strength=0))
    assert len(plain) == len(enhanced) == 8
    for p, e, a, n in zip(plain, enhanced, again, none):
        np.testing.assert_array_equal(e, a)  # stored noise: the same frame twice
        np.testing.assert_array_equal(n, p)
        changed = np.argwhere(np.any(e != p, axis=2))
        assert len(changed) > 1000
        (cy1, cx1), (cy2, cx2) = changed.min(axis=0), changed.max(axis=0)
        # Inside the lower face of vr_face5's face (RetinaFace fixture box x 135-378, y 143-468).
        assert 135 <= cx1 and cx2 <= 380 and 250 <= cy1 and cy2 <= 480


def test_enhanced_run_with_a_fixed_box_writes_the_file_and_profiles_the_stage(syncer, media, speech, work) -> None:
    out = work / "boxed.mkv"
    result = syncer.run(media / "vr_face5.mp4", speech, out, box=(150, 470, 140, 380), lossless=True,
                        enhance="gfpgan", enhance_strength=0.5)
    assert result.frames == probe(out).n_frames == 8
    assert "enhance" in result.profile and "enhance" in result.profile_table()
    source = list(open_source(media / "vr_face5.mp4").frames(8))
    for got, src in zip(open_source(out).frames(), source):
        outside = np.ones(src.shape[:2], bool)
        outside[150:470, 140:380] = False
        np.testing.assert_array_equal(got[outside], src[outside])


def test_cli_enhance_and_its_bad_inputs(checkpoint, restorer, media, speech, work, capsys) -> None:
    def infer(*args: str) -> int:
        return main(["infer", "--checkpoint", str(checkpoint), "--precision", "fp32", "-q", "--face",
                     str(media / "st_art0.png"), "--audio", str(speech), "--no-cache", *args])

    out = work / "cli.mp4"
    assert infer("-o", str(out), "--enhance", "gfpgan", "--enhancer-weights", str(restorer), "--profile",
                 "--detector-weights", str(media.parent / "models" / "retinaface_mobilenet0.25.pth")) == 0
    assert probe(out).n_frames == 8 and "enhance" in capsys.readouterr().err
    zero = work / "zero.pth"
    zero.write_bytes(b"")
    noise = work / "noise.pth"
    noise.write_bytes(np.random.default_rng(1).bytes(10_000))
    cases = {"is empty": zero, "not a PyTorch checkpoint": noise, "no such file": work, "Wav2Lip generator": checkpoint}
    for why, weights in cases.items():
        bad = work / "bad.mp4"
        assert infer("-o", str(bad), "--enhance", "gfpgan", "--enhancer-weights", str(weights)) == 2, why
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(weights) in err and why in err, err
        assert not bad.exists() and not list(work.glob(".bad.mp4*"))
    assert infer("-o", str(work / "strong.mp4"), "--enhance", "gfpgan", "--enhance-strength", "1.5") == 2
    assert "strength" in capsys.readouterr().err
    with pytest.raises(Wav2LipError, match="unknown enhancer"):
        list(LipSyncer(checkpoint, device="cpu").frames(media / "st_art0.png", speech, enhance="codeformer"))
