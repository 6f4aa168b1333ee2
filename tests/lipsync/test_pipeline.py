"""pipeline.py on real clips with a deterministic generator: the reference's inputs and paste, whole-audio
coverage, looping, frames without a face, stills, and the precision bound."""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wav2lip import LipSyncer, Wav2LipError, lipsync
from wav2lip.io.audio import load_audio, melspectrogram
from conftest import cpu_syncer, cut_wav, deterministic_generator

from wav2lip.device import cpu_has_native_bf16, inference_model, resolve_device
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.lipsync.kernel import crop_face, generator_faces, run_generator
from wav2lip.io.video import VideoWriter, open_source, probe

# vr_face5.mp4's face (RetinaFace fixture box x 135-378, y 143-468) in the reference's --box order:
# top, bottom, left, right.
BOX = (150, 470, 140, 380)
FPS = 25.0


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    with VideoWriter(path, FPS, frames[0].shape[1], frames[0].shape[0], lossless=True) as writer:
        writer.write_many(frames)
    return path


def read_all(path: Path) -> list[np.ndarray]:
    return list(open_source(path).frames())


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return deterministic_generator(work / "deterministic.pth")


@pytest.fixture(scope="module")
def syncer(checkpoint) -> LipSyncer:
    return cpu_syncer(checkpoint)


@pytest.fixture(scope="module")
def speech(media, work) -> Path:
    """1.03 s of 44.1 kHz stereo speech: 25.75 frames at 25 fps, so the last frame is a partial one."""
    return cut_wav(media / "vr_audio1.wav", work / "speech.wav", 1.03)


@pytest.fixture(scope="module")
def face_frames(media) -> list[np.ndarray]:
    return list(open_source(media / "vr_face5.mp4").frames(30))


def reference_inference(frames: list[np.ndarray], wav_path: Path, model: torch.nn.Module, box, batch: int = 128):
    """The authors' inference with a fixed box, written from spec sections 3-5 literally: the generator
    inputs of every batch and the final frames."""
    mel = melspectrogram(load_audio(wav_path))
    chunks, i = [], 0
    while True:
        start = int(i * 80.0 / FPS)
        if start + 16 > mel.shape[1]:
            chunks.append(mel[:, mel.shape[1] - 16:])
            break
        chunks.append(mel[:, start:start + 16])
        i += 1
    y1, y2, x1, x2 = box
    inputs, outputs = [], []
    for b in range(0, len(chunks), batch):
        idx = range(b, min(b + batch, len(chunks)))
        img = np.asarray([cv2.resize(frames[i % len(frames)][y1:y2, x1:x2], (96, 96)) for i in idx])
        masked = img.copy()
        masked[:, 96 // 2:] = 0
        img = np.concatenate((masked, img), axis=3) / 255.0
        mels = np.reshape(np.asarray([chunks[i] for i in idx]), [len(idx), 80, 16, 1])
        img_t = torch.FloatTensor(np.transpose(img, (0, 3, 1, 2)))
        mel_t = torch.FloatTensor(np.transpose(mels, (0, 3, 1, 2)))
        inputs.append((mel_t, img_t))
        with torch.no_grad():
            pred = model(mel_t, img_t).numpy().transpose(0, 2, 3, 1) * 255.0
        for p, i in zip(pred, idx):
            frame = frames[i % len(frames)].copy()
            frame[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
            outputs.append(frame)
    return inputs, outputs


def test_generator_gets_the_reference_inputs_and_frames_match(syncer, media, speech, face_frames) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = syncer.generator.register_forward_pre_hook(lambda m, args: seen.append((args[0].clone(), args[1].clone())))
    try:
        ours = list(syncer.frames(media / "vr_face5.mp4", speech, box=BOX))
    finally:
        hook.remove()
    ref_inputs, ref_frames = reference_inference(face_frames, speech, syncer.generator, BOX)
    # The reference stops at its last full window; we cover the whole 1.03 s (26 frames).
    n = len(ref_frames)
    assert n < len(ours) == math.ceil(1.03 * FPS)
    mel = torch.cat([s[0] for s in seen])
    faces = torch.cat([s[1] for s in seen])
    ref_mel, ref_faces = ref_inputs[0]
    assert torch.equal(mel[:n], ref_mel) and torch.equal(faces[:n], ref_faces)
    for extra in mel[n:]:
        assert torch.equal(extra, ref_mel[-1])  # frames beyond the reference's use the final window
    for got, want in zip(ours, ref_frames):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2  # batch-size rounding at most


def test_lossless_output_covers_the_audio_and_leaves_the_rest_unchanged(syncer, media, speech, work,
                                                                        face_frames) -> None:
    out = work / "lossless.mkv"
    result = syncer.run(media / "vr_face5.mp4", speech, out, box=BOX, lossless=True)
    info = probe(out)
    assert result.frames == info.n_frames == 26 and result.faces_missed == 0
    assert info.has_audio and abs(info.duration - 1.03) <= 1 / FPS
    import av

    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
    assert samples == round(1.03 * stream.rate)  # the whole audio, to the sample
    y1, y2, x1, x2 = BOX
    outside = np.ones(face_frames[0].shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    for got, src in zip(read_all(out), face_frames):
        np.testing.assert_array_equal(got[outside], src[outside])
        assert not np.array_equal(got[y1:y2, x1:x2], src[y1:y2, x1:x2])


@pytest.mark.parametrize("loop", ["repeat", "pingpong"])
def test_short_video_loops(syncer, speech, work, face_frames, loop) -> None:
    clip = write_clip(work / f"short_{loop}.mkv", face_frames[:8])
    frames = list(syncer.frames(clip, speech, box=BOX, loop=loop))
    assert len(frames) == 26
    order = [k % 8 for k in range(26)] if loop == "repeat" else [
        (k % 14 if k % 14 < 8 else 14 - k % 14) for k in range(26)]
    top = BOX[0]
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame[:top], face_frames[order[k]][:top])


def test_frames_without_a_face_pass_through(syncer, media, work, face_frames) -> None:
    blank = np.full_like(face_frames[0], 90)
    clip = write_clip(work / "gaps.mkv", [blank] * 4 + face_frames[4:10])
    audio = cut_wav(media / "vr_audio1.wav", work / "gaps.wav", 0.4)
    result = syncer.run(clip, audio, work / "gaps_out.mkv", lossless=True, cache=False)
    assert result.frames == 10 and result.faces_missed == 4
    out = read_all(work / "gaps_out.mkv")
    for k in range(4):
        np.testing.assert_array_equal(out[k], blank)
    # Detected frames change only around the face that RetinaFace finds (fixture box of frame 0).
    changed = np.argwhere(np.any(out[5] != face_frames[5], axis=2))
    (y1, x1), (y2, x2) = changed.min(axis=0), changed.max(axis=0)
    assert 120 <= x1 and x2 <= 400 and 120 <= y1 and y2 <= 500


def test_no_face_at_all_is_an_error_and_writes_nothing(syncer, speech, work, face_frames) -> None:
    clip = write_clip(work / "empty.mkv", [np.full_like(face_frames[0], 200)] * 5)
    out = work / "noface.mp4"
    with pytest.raises(Wav2LipError, match="no face"):
        syncer.run(clip, speech, out, cache=False)
    assert not out.exists()
    assert not list(work.glob(".noface.mp4*"))


def test_still_image_streams_with_detection(syncer, media, work) -> None:
    audio = cut_wav(media / "vr_audio1.wav", work / "still.wav", 0.5)
    still = cv2.imread(str(media / "st_art0.png"))
    frames = syncer.frames(media / "st_art0.png", audio, fps=20, cache=False)
    first = next(frames)
    assert first.shape == still.shape
    changed = np.argwhere(np.any(first != still, axis=2))
    (y1, x1), (y2, x2) = changed.min(axis=0), changed.max(axis=0)
    assert 180 <= x1 and x2 <= 540 and 170 <= y1 and y2 <= 660  # inside RetinaFace's box, padded
    assert 1 + sum(1 for _ in frames) == 10  # 0.5 s at 20 fps


def test_bf16_matches_fp32_within_40_db(checkpoint, media, speech, face_frames) -> None:
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16 (AVX-512 BF16 / AMX): bf16 is never chosen here")
    model = LipSyncer(checkpoint, device="cpu", precision="fp32").generator
    mel = np.repeat(melspectrogram(load_audio(speech))[None, None, :, :16], 4, axis=0)
    y1, y2, x1, x2 = BOX
    crops = np.stack([crop_face(f, np.array([x1, y1, x2, y2])) for f in face_frames[:4]])
    faces = generator_faces(crops)
    cpu = resolve_device("cpu")
    fp32 = run_generator(model, mel, faces, cpu)
    bf16 = run_generator(inference_model(model, "bf16", cpu), mel, faces, cpu)
    mse = np.mean((np.floor(fp32 * 255) - np.floor(bf16 * 255)) ** 2)
    assert 10 * np.log10(255**2 / max(mse, 1e-12)) >= 40


def test_onnxruntime_backend_gives_the_fp32_frames(syncer, checkpoint, media, speech, work, monkeypatch) -> None:
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs pip install 'wav2lip[onnx]'")
    monkeypatch.setenv("WAV2LIP_HOME", str(work / "store"))  # the export is cached beside the weights
    onnx = LipSyncer(checkpoint, backend="onnxruntime")
    assert onnx.device.type == "cpu" and onnx.precision == "fp32"
    want = list(syncer.frames(media / "vr_face5.mp4", speech, box=BOX))
    got = list(onnx.frames(media / "vr_face5.mp4", speech, box=BOX))
    assert len(got) == len(want)
    assert max(np.abs(g.astype(int) - w.astype(int)).max() for g, w in zip(got, want)) <= 2
    with pytest.raises(Wav2LipError, match="onnxruntime backend"):
        LipSyncer(checkpoint, backend="onnxruntime", precision="bf16")


def test_explicit_missing_device_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(Wav2LipError, match="cuda"):
        resolve_device("cuda")


def test_preprocessing_order_is_resize_rotate_crop(syncer, media, work, face_frames) -> None:
    audio = cut_wav(media / "vr_audio1.wav", work / "pre.wav", 0.2)
    # 524x524 -> 262x262 -> rotated -> rows 10.., columns 20..: a 252x242 frame.
    frames = list(syncer.frames(media / "vr_face5.mp4", audio, resize_factor=2, rotate=True, crop=(10, -1, 20, -1),
                                static=True, box=(60, 200, 40, 200)))
    expected = cv2.rotate(cv2.resize(face_frames[0], (262, 262)), cv2.ROTATE_90_CLOCKWISE)[10:, 20:]
    assert len(frames) == 5
    for frame in frames:
        assert frame.shape == expected.shape == (252, 242, 3)
        np.testing.assert_array_equal(frame[:60], expected[:60])
        np.testing.assert_array_equal(frame[200:], expected[200:])
        assert not np.array_equal(frame[60:200, 40:200], expected[60:200, 40:200])


def test_stopping_early_stops_every_stage(syncer, media, work) -> None:
    audio = cut_wav(media / "vr_audio1.wav", work / "early.wav", 0.6)
    frames = syncer.frames(media / "vr_face5.mp4", audio, box=BOX, batch_size=4)
    next(frames)
    frames.close()
    deadline = time.monotonic() + 30
    while any(t.name.startswith("wav2lip-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("wav2lip-")]


def test_lipsync_one_call(checkpoint, media, work) -> None:
    audio = cut_wav(media / "vr_audio1.wav", work / "one.wav", 0.2)
    result = lipsync(media / "vr_face5.mp4", audio, work / "one.mp4", checkpoint=checkpoint, device="cpu",
                     precision="fp32", box=BOX)
    assert result.frames == 5 and probe(work / "one.mp4").n_frames == 5
    assert "5 frames" in result.summary() and "generate" in result.profile_table()


def test_batchnorm_folding_in_place_equals_the_copy_and_the_network() -> None:
    """The folded generator computes what the network does; folding a copy leaves the network as it was,
    folding in place (LipSyncer's own network) gives the same weights without the copy."""
    from wav2lip.device import fold_batchnorm

    model = fill_deterministic(Wav2Lip(width=0.125)).eval()
    rng = np.random.default_rng(0)
    mel = torch.from_numpy(rng.normal(0, 1, (2, 1, 80, 16)).astype(np.float32))
    faces = torch.from_numpy(rng.random((2, 6, 96, 96)).astype(np.float32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        want = model(mel, faces)
        copied = fold_batchnorm(model)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        folded = fold_batchnorm(model, inplace=True)
        assert folded is model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert torch.equal(copied(mel, faces), folded(mel, faces))
        torch.testing.assert_close(folded(mel, faces), want, atol=1e-5, rtol=0)



def test_fused_conv_units_compute_what_the_folded_network_does() -> None:
    """Each conv unit as one oneDNN call (bias, residual add and ReLU fused): in fp32 the same numbers as
    the folded network within rounding, every unit replaced, the encoder's residual units included."""
    from wav2lip.device import cpu_fusion_available, fold_batchnorm, fuse_pointwise
    from wav2lip.models.blocks import ConvBlock, ConvTransposeBlock, FusedConvUnit

    if not cpu_fusion_available():
        pytest.skip("this PyTorch has no oneDNN fused convolutions")
    folded = fold_batchnorm(fill_deterministic(Wav2Lip(width=0.125)).eval())
    rng = np.random.default_rng(1)
    mel = torch.from_numpy(rng.normal(0, 1, (3, 1, 80, 16)).astype(np.float32))
    faces = torch.from_numpy(rng.random((3, 6, 96, 96)).astype(np.float32))
    with torch.inference_mode():
        want = folded(mel, faces)
        fused = fuse_pointwise(folded)
        units = [m for m in fused.modules() if isinstance(m, FusedConvUnit)]
        assert not any(isinstance(m, (ConvBlock, ConvTransposeBlock)) for m in fused.modules())
        assert sum(u.residual for u in units) >= 10 and sum(u.transpose for u in units) == 6
        got = fused(mel, faces)
    assert not torch.equal(got, torch.zeros_like(got))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


class _ForwardOnly(torch.nn.Module):
    """The same network seen only through `forward`: the pipeline then encodes the face on every frame."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return self.model(audio, face)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_still_image_runs_the_face_encoder_once(checkpoint, media, work, precision) -> None:
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16: bf16 is never chosen here")
    syncer = cpu_syncer(checkpoint, precision=precision)
    audio = cut_wav(media / "vr_audio1.wav", work / "still_once.wav", 0.8)
    network = syncer.generator if precision == "fp32" else syncer.generator.model
    calls = []
    hook = network.face_encoder_blocks[0].register_forward_hook(lambda m, i, o: calls.append(len(o)))
    try:
        once = list(syncer.frames(media / "st_art0.png", audio, fps=25, cache=False, batch_size=8))
        assert calls == [1], calls  # 20 frames in 3 batches, one face-encoder pass of one face
        syncer.generator = _ForwardOnly(syncer.generator)
        every = list(syncer.frames(media / "st_art0.png", audio, fps=25, cache=False, batch_size=8))
        assert calls[1:] == [8, 8, 4]
    finally:
        hook.remove()
    assert len(once) == len(every) == 20
    # The same frames up to the float rounding of batch-size-dependent convolution kernels (the encoder ran
    # on 1 face instead of 8): at most one grey level, on a handful of pixel values.
    diff = np.stack([np.abs(a.astype(int) - b.astype(int)) for a, b in zip(once, every)])
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-4 * diff.size
