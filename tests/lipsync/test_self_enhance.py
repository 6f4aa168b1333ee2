"""The person-specific mouth enhancer (lipsync/self_enhance.py, `wav2lip fit-enhancer`, `--enhance self`): fitted
on a real shared clip with tiny settings, its file read back, cached by the face's content, kept to the painted
lower face, and hostile enhancer files refused in one line."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from wav2lip.errors import Wav2LipError
from wav2lip.faces import create_detector
from wav2lip.lipsync import self_enhance
from wav2lip.lipsync.blend import paste
from wav2lip.lipsync.kernel import crop_face
from wav2lip.lipsync.options import SyncOptions

TINY = {"minutes": 1.0, "steps": 12, "frames": (0, 25), "max_frames": 6}


@pytest.fixture(scope="module")
def detector(models_dir):
    return create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth", device="cpu")


@pytest.fixture(scope="module")
def fitted(media, detector, work):
    """An enhancer fitted on 6 faces of a real clip in 12 steps, and its file."""
    model, record = self_enhance.fit(media / "vr_face5.mp4", detector, **TINY)
    path = self_enhance.save(work / "face5.enhancer.pth", model, record)
    return model, record, path


def test_fit_records_how_it_was_fitted_and_the_file_gives_the_same_network(fitted, media) -> None:
    model, record, path = fitted
    assert record.source == "vr_face5.mp4" and record.source_sha256 == self_enhance.file_sha256(media / "vr_face5.mp4")
    assert (record.frames, record.first, record.last, record.steps) == (5, 0, 25, 12)  # every 5th frame
    assert record.scale in (2, 3, 4) and record.loss > 0 and record.bicubic_loss > 0
    assert 0 <= record.sharpen <= self_enhance.MAX_SHARPEN and 0 < record.sharpness < 1
    assert record.steady in self_enhance.STEADY_CHANGES
    loaded = self_enhance.load(path)
    assert loaded.record == record.__dict__ and (loaded.sharpen, loaded.still_change) == (record.sharpen, record.steady)
    faces = np.random.default_rng(0).integers(0, 256, (3, 96 - self_enhance.TOP, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.upscale(faces), self_enhance.SelfEnhancer(model).upscale(faces))
    assert loaded.upscale(faces).shape == (3, record.scale * (96 - self_enhance.TOP), record.scale * 96, 3)


def test_an_untrained_enhancer_is_the_bicubic_upscale() -> None:
    """The detail branch starts at zero: training only adds to a plain upscale."""
    x = torch.rand(2, 3, 56, 96)
    out = self_enhance.MouthEnhancer(scale=2)(x)
    base = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, base)


def test_enhance_changes_only_the_painted_lower_face(fitted, media) -> None:
    from wav2lip.io.video import open_source

    frame = next(iter(open_source(media / "vr_face5.mp4").frames(1)))
    box = np.array([150, 120, 390, 400])
    enhanced = frame.copy()
    self_enhance.SelfEnhancer(fitted[0]).enhance([enhanced], [box], [None], "paste", 1.0)
    changed = np.argwhere(np.any(enhanced != frame, axis=2))
    assert len(changed) > 1000
    top = 120 + round(280 * self_enhance.TOP / 96)
    assert changed[:, 0].min() >= top and changed[:, 0].max() < 400
    assert changed[:, 1].min() >= 150 and changed[:, 1].max() < 390
    feathered = frame.copy()
    self_enhance.SelfEnhancer(fitted[0]).enhance([feathered], [box], [None], "feather", 0.5)
    assert 0 < np.count_nonzero(np.any(feathered != frame, axis=2)) < len(changed)


@pytest.fixture(scope="module")
def gaining(media, detector):
    """Pairs of 40 frames of a real clip and a fit that gains on paste (some sharpening fits)."""
    pairs = self_enhance.face_pairs(media / "vr_face5.mp4", detector, (0, 40), max_frames=8)
    return pairs, self_enhance.train(pairs, float("inf"), 150)[0]  # by steps alone: the same fit on a busy machine


def test_the_sharpening_is_calibrated_on_the_videos_own_faces(gaining) -> None:
    """Sharper than the plain fit, never sharper than the real faces, never giving back more than half
    of the SSIM the fit gained over today's paste; a face already sharp enough is not sharpened."""
    from wav2lip.evaluation.measures import LowerFaceScore

    pairs, model = gaining
    assert len(pairs.calibration) == 8 and all(c.shape[0] > 96 for _, c, _ in pairs.calibration)
    amount, before = self_enhance.calibrate(model, pairs)
    assert 0 < amount <= self_enhance.MAX_SHARPEN and 0 < before < 1

    def score(sharpen: float | None) -> LowerFaceScore:
        score = LowerFaceScore()
        with torch.inference_mode():
            faces = self_enhance.from_tensor(model(self_enhance.to_tensor(pairs.inputs)))
        for (i, crop, face) in pairs.calibration:
            box = np.array([0, 0, crop.shape[1], crop.shape[0]])
            out = crop.copy()
            if sharpen is None:
                np.testing.assert_array_equal(face, crop_face(crop, box))  # no generator: the real face's own
                paste(out, box, face)
            else:
                self_enhance.put_lower(out, box, faces[i], "paste", 1.0, sharpen)
            score.add(out, crop, box)
        return score

    plain, fitted, sharpened = score(None), score(0.0), score(amount)
    assert fitted.sharpness_ratio == pytest.approx(before)
    assert before < sharpened.sharpness_ratio <= self_enhance.SHARPNESS_TARGET
    assert sharpened.mean_ssim >= (fitted.mean_ssim + plain.mean_ssim) / 2
    assert self_enhance.calibrate(model, pairs, target=before / 2) == (0.0, before)


def test_steady_holds_what_does_not_move_and_follows_what_does(fitted, media) -> None:
    from wav2lip.io.video import open_source

    frame = next(iter(open_source(media / "vr_face5.mp4").frames(1)))
    lower = self_enhance.read_back(frame[120:400, 150:390])[self_enhance.TOP:]
    lower = np.minimum(lower, 150).astype(np.uint8)
    grain = np.clip(lower + np.random.default_rng(1).integers(-2, 3, lower.shape), 0, 255).astype(np.uint8)
    moved = lower + np.uint8(100)  # every pixel far from the held one
    enhancer = self_enhance.SelfEnhancer(fitted[0], still_change=8.0)
    plain = self_enhance.SelfEnhancer(fitted[0]).upscale(np.stack([lower, grain, moved])).astype(np.float32)
    first = enhancer.steady(lower, plain[0].astype(np.uint8))
    np.testing.assert_array_equal(first, plain[0])  # nothing held yet
    second = enhancer.steady(grain, plain[1].astype(np.uint8))
    step, unsteady = np.abs(second - first).mean(), np.abs(plain[1] - plain[0]).mean()
    assert 0 < step <= unsteady * 0.6  # grain mostly held: at most 2/8 blurred, at least the floor's 1/4
    np.testing.assert_array_equal(enhancer.steady(moved, plain[2].astype(np.uint8)), plain[2])
    unsteadied = self_enhance.SelfEnhancer(fitted[0])
    for face, low in zip(plain, (lower, grain, moved)):
        np.testing.assert_array_equal(unsteadied.steady(low, face.astype(np.uint8)), face)


def test_each_kernel_steadies_its_own_stream(fitted) -> None:
    """Two runs or live sessions on one loaded enhancer (a server's, the API's) never mix their frames:
    each kernel holds its own copy of the running state, sharing the network."""
    from wav2lip.lipsync.kernel import FrameKernel

    enhancer = self_enhance.SelfEnhancer(fitted[0], still_change=8.0)
    one, two = (FrameKernel(SyncOptions.from_kwargs({}), torch.nn.Identity(), torch.device("cpu"), enhancer)
                for _ in range(2))
    assert one.enhancer is not two.enhancer and one.enhancer.model is two.enhancer.model is enhancer.model
    assert (one.enhancer.sharpen, one.enhancer.still_change) == (enhancer.sharpen, 8.0)
    lower = np.full((96 - self_enhance.TOP, 96, 3), 90, np.uint8)
    lower[30:40, 20:70] = 40  # a dark mouth
    grain = lower + np.uint8(1)
    face, grain_face = enhancer.upscale(np.stack([lower, grain]))
    one.enhancer.steady(lower, face)
    assert not np.array_equal(one.enhancer.steady(grain, grain_face), grain_face)  # held: one's stream was still
    np.testing.assert_array_equal(two.enhancer.steady(grain, grain_face), grain_face)  # two's first face
    np.testing.assert_array_equal(enhancer.steady(grain, grain_face), grain_face)  # the loaded one: untouched


def test_the_steadying_is_calibrated_on_the_videos_own_stretches(gaining) -> None:
    """The stillest and busiest stretches are consecutive real faces; the chosen steadying keeps a third
    of the enhancer's SSIM gain over the plain face on the busiest stretch, and either makes the stillest
    tremble under the plain face's margin or is the strongest that keeps that share."""
    pairs, model = gaining
    assert (len(pairs.still), len(pairs.busy)) == (self_enhance.STILL_FRAMES, self_enhance.BUSY_FRAMES)
    sharpen = self_enhance.calibrate(model, pairs)[0]
    chosen = self_enhance.calibrate_steady(model, sharpen, pairs)
    assert chosen in self_enhance.STEADY_CHANGES
    plain_flicker = self_enhance.steady_scores(model, sharpen, pairs.still, None)[0]
    plain_ssim = self_enhance.steady_scores(model, sharpen, pairs.busy, None)[1]
    flickers = {c: self_enhance.steady_scores(model, sharpen, pairs.still, c)[0] for c in self_enhance.STEADY_CHANGES}
    ssims = {c: self_enhance.steady_scores(model, sharpen, pairs.busy, c)[1] for c in self_enhance.STEADY_CHANGES}
    assert flickers[32.0] < flickers[0.0]  # steadying calms the still stretch
    floor = plain_ssim + (ssims[0.0] - plain_ssim) / 3
    assert ssims[0.0] > plain_ssim  # the fit gains on this video, so the floor is above the plain face
    milder = [c for c in self_enhance.STEADY_CHANGES if c < chosen]
    assert all(ssims[c] > floor and flickers[c] > plain_flicker * self_enhance.STEADY_MARGIN for c in milder)
    if chosen:
        assert ssims[chosen] > floor
    stronger = [c for c in self_enhance.STEADY_CHANGES if c > chosen]
    assert flickers[chosen] <= plain_flicker * self_enhance.STEADY_MARGIN or not stronger \
        or ssims[stronger[0]] <= floor


def test_training_inputs_are_the_painted_face_read_back_and_degraded(media, detector) -> None:
    from wav2lip.io.video import open_source

    frame = next(iter(open_source(media / "vr_face5.mp4").frames(1)))
    box = np.array([150, 120, 390, 400])
    face = crop_face(frame, box)
    read = self_enhance.painted_input(face, box)
    assert read.shape == (96, 96, 3) and np.abs(read.astype(int) - face).mean() < 3  # the round trip keeps the face
    x = self_enhance.to_tensor(np.stack([read[self_enhance.TOP:]] * 4))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(self_enhance.gaussian_blur(x, torch.zeros(4)), x)
    blurred = self_enhance.gaussian_blur(x, torch.full((4,), 1.0))
    assert (blurred[..., 1:] - blurred[..., :-1]).abs().mean() < 0.8 * (x[..., 1:] - x[..., :-1]).abs().mean()
    degraded = self_enhance.Degradation(chance=1.0)(x, gen)
    assert degraded.shape == x.shape and not torch.equal(degraded, x)
    assert torch.equal(degraded, (degraded * 255).round() / 255)  # 8-bit, as a painted face
    assert torch.equal(self_enhance.Degradation(chance=0.0)(x, gen), x)  # the clean share: as read back


def test_enhance_self_fits_once_and_then_reuses_the_file_of_the_face(media, detector, work, monkeypatch) -> None:
    monkeypatch.setenv("WAV2LIP_HOME", str(work / "home"))
    from wav2lip.io.video import VideoWriter, open_source

    face = work / "face5 start.mkv"  # the clip's first 12 frames: the whole of it is fitted on
    source = open_source(media / "vr_face5.mp4")
    with VideoWriter(face, source.fps, source.width, source.height, lossless=True) as writer:
        for frame in source.frames(12):
            writer.write(frame)
    calls = []

    def counting():
        calls.append(1)
        return detector

    first = self_enhance.fitted_for(face, counting, minutes=1.0, steps=3)
    target = self_enhance.cache_path(face)
    assert calls == [1] and target.parent == work / "home" / "enhancers" and target.is_file()
    assert target.name.startswith(self_enhance.file_sha256(face)) and first.record["steps"] == 3
    again = self_enhance.fitted_for(face, counting, minutes=1.0, steps=3)  # from the cache: no detection
    assert calls == [1] and again.record == first.record
    faces = np.zeros((1, 96 - self_enhance.TOP, 96, 3), np.uint8)
    np.testing.assert_array_equal(again.upscale(faces), first.upscale(faces))
    target.write_bytes(target.read_bytes()[:100])  # a damaged cache entry is fitted again
    self_enhance.fitted_for(face, counting, minutes=1.0, steps=3)
    assert calls == [1, 1] and self_enhance.load(target).record["steps"] == 3
    assert self_enhance.load_enhancer("self", face, lambda: pytest.fail("GFPGAN loaded"), counting).record == \
        self_enhance.load(target).record


def test_the_generator_paints_the_videos_frames_as_infer_does_and_teaches_the_fit(media, work, capfd) -> None:
    """With a generator at hand and the face's own soundtrack, the fit's generated inputs are the faces
    `infer` pastes when the face video is lip-synced to its own sound (fixed box, paste blend), read back
    as the enhancer reads them at run time; the fit records the generator, and `--enhance self` keeps that
    fit apart from one without it; a bar counts the faces painted. A face without sound has no painter."""
    import itertools

    from conftest import cpu_syncer, deterministic_generator
    from wav2lip.faces.cache import file_digest
    from wav2lip.io.video import VideoWriter, open_source

    checkpoint = deterministic_generator(work / "painter.pth", width=0.0625)
    syncer = cpu_syncer(checkpoint)
    face = media / "vr_face5.mp4"
    painter = syncer.painter_for(face)
    assert painter is not None and painter.digest == file_digest(checkpoint)
    x1, y1, x2, y2 = 150, 120, 390, 400
    pairs = self_enhance.face_pairs(face, None, (0, 8), max_frames=8, box=(x1, y1, x2, y2), painter=painter)
    made = syncer.frames(face, face, box=(y1, y2, x1, x2), blend="paste", silence="off", progress=False)
    for generated, real, out in zip(pairs.generated, pairs.inputs, itertools.islice(made, 8)):
        np.testing.assert_array_equal(generated, self_enhance.read_back(out[y1:y2, x1:x2])[self_enhance.TOP:])
        assert np.abs(generated.astype(int) - real).mean() > 5  # not the real face
    assert pairs.run_inputs([0]).tobytes() == pairs.generated[:1].tobytes()
    assert all(not np.array_equal(f, crop_face(c, np.array([0, 0, c.shape[1], c.shape[0]])))
               for _, c, f in pairs.calibration + [(0, *p) for p in pairs.still]) and pairs.still

    capfd.readouterr()
    record = self_enhance.fit(face, None, 1.0, 3, (0, 8), max_frames=4, box=(x1, y1, x2, y2), painter=painter,
                              progress=True)[1]
    assert record.generator_sha256 == painter.digest
    fours = self_enhance.face_pairs(face, None, (0, 8), max_frames=4, box=(x1, y1, x2, y2))
    faces = len(fours.inputs) + len(fours.still) + len(fours.busy)  # the fit's inputs, still and busy stretches
    assert re.search(rf"enhancer: painting: 100%.* {faces}/{faces} ", capfd.readouterr().err)
    unpainted = self_enhance.fit(face, None, 1.0, 3, (0, 8), max_frames=4, box=(x1, y1, x2, y2), progress=True)[1]
    assert unpainted.generator_sha256 == "" and "painting" not in capfd.readouterr().err
    apart = self_enhance.cache_path(face, painter.digest)
    assert apart.name.endswith(f"-{painter.digest[:16]}.enhancer.pth") and apart != self_enhance.cache_path(face)

    silent = work / "face5 silent.mkv"
    with VideoWriter(silent, 25, 96, 96, lossless=True) as writer:
        for frame in open_source(face).frames(3):
            writer.write(np.ascontiguousarray(frame[:96, :96]))
    assert syncer.painter_for(silent) is None and syncer.painter_for(media / "st_art0.png") is None


def test_the_enhance_option_names_none_gfpgan_self_or_a_file(fitted) -> None:
    for value in ("none", "gfpgan", "self", str(fitted[2]), "face.enhancer.pth", "./fitted"):
        assert SyncOptions.from_kwargs({"enhance": value}).enhance == value
    with pytest.raises(Wav2LipError, match=r"unknown enhancer 'gfgpan' \(one of none, gfpgan, self\)"):
        SyncOptions.from_kwargs({"enhance": "gfgpan"})
    gfpgan = object()
    assert self_enhance.load_enhancer("none", "x.mp4", lambda: gfpgan, lambda: None) is None
    assert self_enhance.load_enhancer("gfpgan", "x.mp4", lambda: gfpgan, lambda: None) is gfpgan
    loaded = self_enhance.load_enhancer(str(fitted[2]), "x.mp4", lambda: gfpgan, lambda: None)
    assert loaded.record == fitted[1].__dict__
    with pytest.raises(Wav2LipError, match="gfgpan: no such file"):
        self_enhance.load_enhancer("gfgpan", "x.mp4", lambda: gfpgan, lambda: None)


@pytest.mark.parametrize("kind", ["wrong shape", "wrong config", "sharpening", "steadying", "truncated", "code",
                                  "generator", "not torch", "nan"])
def test_hostile_enhancer_files_are_refused_in_one_line(kind, fitted, work) -> None:
    path = work / f"{kind.replace(' ', '_')}.enhancer.pth"
    payload = torch.load(fitted[2], weights_only=True)
    if kind == "wrong shape":
        payload["state_dict"]["head.weight"] = torch.zeros(5, 3, 3, 3)
        torch.save(payload, path)
    elif kind == "wrong config":
        payload["config"]["scale"] = 7
        torch.save(payload, path)
    elif kind == "sharpening":
        payload["config"]["sharpen"] = 1e9
        torch.save(payload, path)
    elif kind == "steadying":
        payload["config"]["steady"] = -1.0
        torch.save(payload, path)
    elif kind == "truncated":
        path.write_bytes(fitted[2].read_bytes()[: fitted[2].stat().st_size // 2])
    elif kind == "code":
        marker = work / "code ran"

        class Boom:
            def __reduce__(self):
                return os.system, (f"touch '{marker}'",)

        torch.save({"kind": self_enhance.KIND, "state_dict": Boom()}, path)
    elif kind == "generator":
        from conftest import deterministic_generator

        deterministic_generator(path, width=0.0625)
    elif kind == "not torch":
        path.write_text("hello\n")
    else:
        payload["state_dict"]["tail.bias"] = torch.full_like(payload["state_dict"]["tail.bias"], float("nan"))
        torch.save(payload, path)
    with pytest.raises(Wav2LipError) as info:
        self_enhance.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    expected = {"wrong shape": "do not fit its shape", "wrong config": "shape entry", "sharpening": "shape entry",
                "steadying": "shape entry", "truncated": "truncated",
                "code": "refused", "generator": "not a mouth enhancer", "not torch": "not a PyTorch",
                "nan": "NaN"}[kind]
    assert expected in message
    if kind == "code":
        assert not (work / "code ran").exists()


def test_fit_enhancer_command_writes_the_file_and_refuses_bad_input_in_one_line(media, models_dir, work) -> None:
    from conftest import deterministic_generator
    from wav2lip.cli import fit_enhancer
    from wav2lip.faces.cache import file_digest

    assert fit_enhancer.DEFAULT_MINUTES == self_enhance.DEFAULT_MINUTES  # the --help text's copy
    out = work / "cli.enhancer.pth"
    weights = str(models_dir / "retinaface_mobilenet0.25.pth")
    checkpoint = deterministic_generator(work / "cli generator.pth", width=0.0625)
    cmd = [sys.executable, "-m", "wav2lip", "fit-enhancer", str(media / "vr_face3.mp4"), "-o", str(out),
           "--steps", "4", "--frames", ":10", "--detector-weights", weights, "--checkpoint", str(checkpoint), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{out}: fitted on") and "4 steps" in done.stdout and "half painted by" in done.stdout
    record = self_enhance.load(out).record
    assert (record["source"], record["first"], record["last"], record["steps"]) == ("vr_face3.mp4", 0, 10, 4)
    assert record["generator_sha256"] == file_digest(checkpoint)
    for args, words in (([str(work / "missing.mp4")], "missing.mp4"),
                        ([str(media / "vr_face3.mp4"), "--box", "0", "900", "0", "900"], "not inside"),
                        ([str(media / "vr_audio1.wav")], "vr_audio1.wav")):
        bad = work / "bad.enhancer.pth"
        done = subprocess.run([sys.executable, "-m", "wav2lip", "fit-enhancer", *args, "-o", str(bad),
                               "--steps", "2", "--detector-weights", weights, "-q"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not bad.exists()
    before = checkpoint.read_bytes()  # the generator it paints with is an input: never the output
    done = subprocess.run(cmd[:6] + [str(checkpoint)] + cmd[7:], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "cli generator.pth" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert checkpoint.read_bytes() == before
