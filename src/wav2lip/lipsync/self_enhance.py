"""A mouth enhancer fitted to one person from their own face video (`wav2lip fit-enhancer`, `--enhance self`).

The generator paints a 96-px face that is then stretched to the face box, so a 300-px box shows a
blurry mouth. This module learns, from the face video alone, to turn that 96-px face into the lower
face at 2x to 4x the size, for this person only: training pairs are the video's own frames, the input
made the way the enhance step will see the generator's face (the reference's 96-px crop, stretched to
the box and read back to 96 px) and then degraded as generator output is (blur, noise, colour shifts:
`Degradation`), the target the real lower face at the larger size. Where the generator that will paint
is at hand and the face video has its own soundtrack (`infer --enhance self`, `fit-enhancer --checkpoint`),
half the inputs are that generator's own faces for the video's frames, painted from that soundtrack as
`infer` would (`Painter`): the real degradation, its blur and colour drift, rather than a model of it.
At run time the enhancer reads the painted face back from the blended frame, so it never sees the real
mouth of that frame: it cannot leak the source's mouth into the output, only sharpen the one the
generator painted.

An L1 fit gives the mean of the faces a 96-px face allows, blurrier than the video (a Laplacian
variance 0.2 to 0.4 times the real one's on the shared clips), so after training a fine unsharp mask is
calibrated on the video's own faces put back into their boxes at full size (`calibrate`): towards the
real faces' sharpness by the measure of `wav2lip evaluate --reconstruct`, as far as fidelity allows.
A sharp mouth trembles more than a blurred one where the face barely moves (grain, sub-pixel sway),
so at run time the enhancer holds still what does not move (`SelfEnhancer.steady`), as much as the
video's own stillest stretch needs to tremble less than the plain face (`calibrate_steady`).

An enhancer file (`FILE.enhancer.pth`) is a plain tensor checkpoint (`torch.load(weights_only=True)`
reads it, no code runs) holding the network's weights, its shape and how it was fitted: the face
file's SHA-256, the painting generator's (empty: none), frames, steps, seconds, the final loss, the
sharpening and the steadying. `--enhance self` fits one on first use and keeps it in the model store's
cache folder under the face file's content hash (and the generator's, when it painted).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .. import store
from ..checkpoints import read_checkpoint
from ..errors import Wav2LipError
from ..evaluation.measures import flicker, grey, lower_face, mouth, sharpness, ssim
from ..faces import FaceDetector, FaceTrackOptions, track
from ..faces.cache import file_digest
from ..io import audio as audio_io
from ..io.files import atomic_output
from ..io.video import open_source
from ..models.generator import FACE_SIZE
from ..models.mouth_enhancer import SCALES, MouthEnhancer
from .blend import paste, to_uint8
from .enhance import Enhancer, FaceEnhancer, paint_mask
from .kernel import crop_face, frame_mel_windows, generator_faces, run_generator

KIND = "wav2lip-mouth-enhancer"  # the file's "kind" entry: what `load` accepts
VERSION = 3  # 2: the config holds the unsharp mask's amount ("sharpen"); 3: the steadying ("steady")
TOP = 40  # first row of the 96-px face the enhancer sees: the painted lower half (48..) and 8 rows of context
SEAM = 8  # rows over which the enhanced face fades in at its top edge (TOP .. TOP + SEAM), so no seam shows
CHANNELS, BLOCKS = 24, 3  # the network's size: 150+ faces/s at 96 -> 192 on two cores (bench_self_enhance)
PATCH = 32  # training crops: PATCH x PATCH input pixels
BATCH = 24
LR = 2e-3
WARMUP = 100  # steps over which the learning rate rises to LR
MAX_FRAMES = 400  # frames sampled evenly from the video for training pairs
DEFAULT_MINUTES = 1.5  # training time of `fit-enhancer` and `--enhance self` (detection comes on top)
MAX_STEPS = 6000
RUN_BATCH = 32  # faces per network call at run time
CALIBRATION_FACES = 32  # faces, spread over the video, on which the sharpening is calibrated
SHARPNESS_TARGET = 1.0  # the calibrated output's Laplacian variance over the real face's, at most
MAX_SHARPEN = 4.0  # the unsharp mask's largest amount
SHARPEN_SIGMA = 0.5  # its Gaussian, in the box's pixels: the finest detail, cheapest in fidelity per sharpness
STEADY_FLOOR = 0.25  # the least share of its new output a still pixel takes (the rest: its running output)
STEADY_CHANGES = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0, 32.0)  # candidates, grey levels
STEADY_KEEP = 1 / 3  # the least share of the enhancer's SSIM gain over the plain face a steadying may leave
STEADY_MARGIN = 0.9  # the flicker aimed at, over the plain face's: one stretch predicts another within ~5%
STILL_FRAMES, BUSY_FRAMES = 16, 32  # consecutive faces of the stillest and the busiest stretch it is calibrated on
GENERATED_SHARE = 0.5  # of the training inputs, where a generator painted: its faces (the rest: degraded real ones)


@dataclass(frozen=True)
class Degradation:
    """What makes the video's own faces look like the generator's output: a Gaussian blur of random
    sigma (its L1-trained faces are smoother than real ones), a little Gaussian noise, and a small
    per-channel gain and offset (its colours drift from the source's). A `chance` of the samples are
    degraded, the rest left clean, so that a sharp painted face is not over-sharpened either.
    `bench_self_enhance.py` prints the blur, noise and colour statistics of these pairs beside those of
    real generator output against its truth."""

    chance: float = 0.5
    blur: tuple[float, float] = (0.0, 0.8)  # sigma in 96-px pixels, uniform
    noise: tuple[float, float] = (0.0, 1.5)  # standard deviation in grey levels, uniform
    gain: float = 0.02  # per channel, uniform in 1 +- gain
    offset: float = 2.0  # per channel, grey levels, uniform in +- offset

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> degraded copies, quantised to 8 bits as a painted face is."""
        b = x.shape[0]
        u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
        on = (u(b) < self.chance).float()
        sigma = (self.blur[0] + u(b) * (self.blur[1] - self.blur[0])) * on
        x = gaussian_blur(x, sigma)
        on = on[:, None, None, None]
        x = x * (1 + (2 * u(b, 3, 1, 1) - 1) * self.gain * on) + (2 * u(b, 3, 1, 1) - 1) * self.offset / 255 * on
        noise = (self.noise[0] + u(b, 1, 1, 1) * (self.noise[1] - self.noise[0])) * on
        x = x + torch.randn(x.shape, generator=generator) * noise / 255
        return (x.clamp(0, 1) * 255).round() / 255


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of (B, C, H, W) with its own sigma (B,) (0: unchanged), reflecting at the edges."""
    b, c, h, w = x.shape
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (B, 7); sigma 0 gives the unit impulse
    k = k.repeat_interleave(c, dim=0)  # (B * C, 7)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
    flat = F.conv2d(flat, k[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


# ---------------------------------------------------------------- training pairs


def painted_input(face96: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 96-px face as the enhance step reads it back from a frame: stretched to the box as the paste
    blend does (INTER_LINEAR), then shrunk to 96 px again (INTER_AREA)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    stretched = cv2.resize(face96, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return read_back(stretched)


def read_back(region: np.ndarray) -> np.ndarray:
    """A face box's pixels -> the 96-px face the enhancer takes."""
    return cv2.resize(region, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def target_face(frame: np.ndarray, box: np.ndarray, scale: int) -> np.ndarray:
    """The real face box at scale x 96 px (INTER_AREA: no aliasing), the enhancer's lower rows."""
    x1, y1, x2, y2 = (int(v) for v in box)
    side = FACE_SIZE * scale
    interpolation = cv2.INTER_AREA if min(x2 - x1, y2 - y1) >= side else cv2.INTER_CUBIC
    return cv2.resize(frame[y1:y2, x1:x2], (side, side), interpolation=interpolation)[TOP * scale:]


class Painter:
    """The generator painting the face video's own frames from the video's own soundtrack, as `infer` paints
    (the reference's mel window per frame, the frame's crop as its own reference): training inputs with
    the generator's real degradation. Frames past the soundtrack's end get its last window, as in `infer`."""

    def __init__(self, generator: torch.nn.Module, device: torch.device, mel: np.ndarray, fps: float,
                 mel_offset: int, digest: str) -> None:
        self.generator, self.device, self.mel, self.fps, self.mel_offset = generator, device, mel, fps, mel_offset
        self.digest = digest  # the generator file's SHA-256: fitted files and the cache record it

    def __call__(self, indices: list[int], crops: np.ndarray,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Frame numbers and their (N, 96, 96, 3) BGR crops -> the generator's (N, 96, 96, 3) faces;
        `on_batch(n)` after each batch of n."""
        out = [np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)]
        for start in range(0, len(crops), RUN_BATCH):
            mel = frame_mel_windows(self.mel, indices[start:start + RUN_BATCH], self.fps, self.mel_offset)
            faces = generator_faces(crops[start:start + RUN_BATCH])
            out.append(to_uint8(run_generator(self.generator, mel, faces, self.device)))
            if on_batch is not None:
                on_batch(len(faces))
        return np.concatenate(out)


def soundtrack(face: str | os.PathLike) -> np.ndarray | None:
    """The face file's own sound (16 kHz mono), or None when it has none to paint from: an image, a
    video without audio, or with silence only."""
    try:
        wav = audio_io.load_audio(face)
    except Wav2LipError:
        return None
    return wav if np.any(wav) and wav.size >= audio_io.MEL_STEP * audio_io.HOP else None


class Painting(Protocol):
    """What a Painter needs of a loaded generator (a LipSyncer has it)."""

    generator: torch.nn.Module
    device: torch.device
    mel_offset: int
    checkpoint_digest: str


def painter_for(face: str | os.PathLike, load: Callable[[], Painting]) -> Painter | None:
    """The Painter of `face` with the generator `load` gives, None without a `soundtrack`: `load` runs only
    once sound is found, so a face without any never loads a generator."""
    wav = soundtrack(face)
    if wav is None:
        return None
    syncer = load()
    return Painter(syncer.generator, torch.device(syncer.device), audio_io.melspectrogram(wav),
                   open_source(face).fps, syncer.mel_offset, syncer.checkpoint_digest)


def choose_scale(box_sides: list[float]) -> int:
    """The output scale for the video's typical face box: its side over 96, rounded, within SCALES."""
    side = float(np.median(box_sides)) if box_sides else FACE_SIZE * SCALES[0]
    return int(min(max(round(side / FACE_SIZE), SCALES[0]), SCALES[-1]))


@dataclass
class Pairs:
    """Training pairs of one video: lower faces, BGR uint8. A "painted face" is the 96-px face the plain
    paste would show for a frame: the generator's (with a Painter), else the real face's own."""

    inputs: np.ndarray  # (N, 96 - TOP, 96, 3): what the enhancer sees of the real face
    targets: np.ndarray  # (N, scale * (96 - TOP), scale * 96, 3): the real lower face
    scale: int
    frames: int  # frames read (with or without a face)
    calibration: list[tuple[int, np.ndarray, np.ndarray]]  # (index into inputs, real face box, painted face)
    still: list[tuple[np.ndarray, np.ndarray]]  # (real face box, painted face) of the stillest STILL_FRAMES
    busy: list[tuple[np.ndarray, np.ndarray]]  # consecutive frames, and of the BUSY_FRAMES moving most
    generated: np.ndarray | None = None  # (N, 96 - TOP, 96, 3): what it sees of the generator's, when it painted

    def run_inputs(self, indices: list[int]) -> np.ndarray:
        """What the enhancer sees at run time for these pairs: the generator's faces where it painted."""
        return (self.inputs if self.generated is None else self.generated)[indices]


def face_pairs(video: str | os.PathLike, detector: FaceDetector | None, frames: tuple[int, int] | None = None,
               scale: int | None = None, max_frames: int = MAX_FRAMES, box: tuple[int, int, int, int] | None = None,
               on_frame: Callable[[], None] | None = None, painter: Painter | None = None,
               on_painting: Callable[[int], Callable[[int], None]] | None = None) -> Pairs:
    """The pairs of the frames [start, stop) of `video` (all by default) where a face is found, at most
    `max_frames` of them, spread evenly. Boxes as `infer` makes them (default pads and smoothing), or
    the fixed `box` (x1, y1, x2, y2) without a detector. With a `painter`, the generator paints them too
    (seconds to minutes): `on_painting(faces)` is told how many and gives what to call per batch painted."""
    source = open_source(video)
    start, stop = frames if frames is not None else (0, source.n_frames_estimate)
    every = max(1, math.ceil((stop - start) / max_frames))
    kept: list[tuple[int, np.ndarray, np.ndarray]] = []
    stretches = _Stretches()
    read = 0
    check_box(video, box)
    for item in track(source.frames(stop), detector, FaceTrackOptions(fixed_box=box)):
        read += 1
        if on_frame is not None:
            on_frame()
        if item.index < start:
            continue
        x1, y1, x2, y2 = (int(v) for v in item.box) if item.box is not None else (0, 0, 0, 0)
        if x2 - x1 < 8 or y2 - y1 < 8:
            stretches.add(item.index, None)
            continue
        stretches.add(item.index, item.frame[y1:y2, x1:x2])
        if (item.index - start) % every == 0:
            kept.append((item.index, item.frame, item.box))
    if not kept:
        raise Wav2LipError(f"{video}: no face found in the frames to fit an enhancer on")
    scale = scale or choose_scale([min(b[2] - b[0], b[3] - b[1]) for _, _, b in kept])
    crops = np.stack([crop_face(f, b) for _, f, b in kept])
    inputs = np.stack([painted_input(c, b)[TOP:] for c, (_, _, b) in zip(crops, kept)])
    targets = np.stack([target_face(f, b, scale) for _, f, b in kept])
    painted, generated, on_batch = crops, None, None
    still, busy = stretches.result()
    if painter is not None:
        if on_painting is not None:
            on_batch = on_painting(len(kept) + len(still) + len(busy))
        painted = painter([i for i, _, _ in kept], crops, on_batch)
        generated = np.stack([painted_input(p, b)[TOP:] for p, (_, _, b) in zip(painted, kept)])
    calibration = []
    for i in np.unique(np.linspace(0, len(kept) - 1, min(CALIBRATION_FACES, len(kept))).astype(int)):
        frame, (x1, y1, x2, y2) = kept[i][1], (int(v) for v in kept[i][2])
        calibration.append((int(i), frame[y1:y2, x1:x2].copy(), painted[i]))
    still, busy = (_painted(stretch, painter, on_batch) for stretch in (still, busy))
    return Pairs(inputs, targets, scale, read, calibration, still, busy, generated)


def check_box(video: str | os.PathLike, box: tuple[int, int, int, int] | None) -> None:
    """A fixed face box must lie inside the video's frame: one line naming the file otherwise."""
    if box is None:
        return
    source = open_source(video)
    if not (0 <= box[0] < box[2] <= source.width and 0 <= box[1] < box[3] <= source.height):
        raise Wav2LipError(f"{video}: the face box {box} (x1 y1 x2 y2) is not inside its "
                           f"{source.width}x{source.height} frame")


def _painted(stretch: list[tuple[int, np.ndarray]], painter: Painter | None,
             on_batch: Callable[[int], None] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame number, real face box) -> (real face box, its painted face)."""
    faces = (np.stack([crop_face(c, _whole(c)) for _, c in stretch]) if stretch
             else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8))
    if painter is not None and stretch:
        faces = painter([i for i, _ in stretch], faces, on_batch)
    return [(c, f) for (_, c), f in zip(stretch, faces)]


class _Stretches:
    """The stillest STILL_FRAMES and the busiest BUSY_FRAMES consecutive face boxes of a video, found in
    one pass (by the change of the real mouth, `measures.flicker`); a frame without a face breaks a
    stretch. A video without so many consecutive faces gives its longest run for both."""

    def __init__(self) -> None:
        self.window: list[tuple[int, np.ndarray, np.ndarray]] = []  # (frame number, face box crop, its mouth)
        self.longest: list[tuple[int, np.ndarray]] = []
        self.still: tuple[float, list[tuple[int, np.ndarray]]] = (math.inf, [])
        self.busy: tuple[float, list[tuple[int, np.ndarray]]] = (-math.inf, [])

    def add(self, index: int, crop: np.ndarray | None) -> None:
        if crop is None:
            self.window = []
            return
        crop = crop.copy()  # not a view: the frame it came from is let go
        self.window = self.window[-(BUSY_FRAMES - 1):] + [(index, crop, mouth(crop, _whole(crop)))]
        if len(self.window) > len(self.longest):
            self.longest = [(i, c) for i, c, _ in self.window]
        for frames, best, better in ((STILL_FRAMES, "still", float.__lt__), (BUSY_FRAMES, "busy", float.__gt__)):
            if len(self.window) >= frames:
                change = flicker([m for _, _, m in self.window[-frames:]])
                if better(change, getattr(self, best)[0]):
                    setattr(self, best, (change, [(i, c) for i, c, _ in self.window[-frames:]]))

    def result(self) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, np.ndarray]]]:
        return self.still[1] or self.longest, self.busy[1] or self.longest


def _whole(crop: np.ndarray) -> np.ndarray:
    """The box of a face box crop: all of it."""
    return np.array([0, 0, crop.shape[1], crop.shape[0]])


# ---------------------------------------------------------------- fitting


@dataclass
class FitRecord:
    """How an enhancer was fitted (kept in its file)."""

    source: str  # the face file's name
    source_sha256: str
    generator_sha256: str  # the generator that painted half the inputs (`Painter`); empty: none did
    frames: int  # training pairs (faces)
    first: int  # the frame range they came from
    last: int
    scale: int
    steps: int
    seconds: float
    loss: float  # mean absolute error of the last steps, grey levels, on degraded inputs
    bicubic_loss: float  # the same for the plain bicubic upscale: what the training improved on
    sharpen: float  # the unsharp mask's calibrated amount
    sharpness: float  # the sharpness ratio of the video's own faces without it
    steady: float  # the calibrated steadying (`SelfEnhancer.still_change`, grey levels; 0: none)


def to_tensor(bgr: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) BGR uint8 -> (N, 3, H, W) RGB float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(0, 3, 1, 2).float() / 255


def from_tensor(rgb: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) RGB about [0, 1] -> (N, H, W, 3) BGR uint8, rounded."""
    img = (rgb.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(img.permute(0, 2, 3, 1).numpy()[..., ::-1])


def train(pairs: Pairs, minutes: float = DEFAULT_MINUTES, steps: int = MAX_STEPS, seed: int = 0,
          degradation: Degradation = Degradation(),
          on_step: Callable[[int, float], None] | None = None) -> tuple[MouthEnhancer, int, float, float]:
    """Fit a MouthEnhancer on random crops of the pairs for `minutes` or `steps`, whichever ends first
    (learning rate warming up, then on a cosine to zero over the larger of the two fractions). Where the
    generator painted, GENERATED_SHARE of the inputs are its faces. Returns the network, the steps taken,
    its mean L1 over the last steps and the bicubic upscale's, in grey levels."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model = MouthEnhancer(CHANNELS, BLOCKS, pairs.scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    inputs, targets = to_tensor(pairs.inputs), to_tensor(pairs.targets)
    generated = None if pairs.generated is None else to_tensor(pairs.generated)
    s, (h, w) = pairs.scale, inputs.shape[2:]
    ph, pw = min(PATCH, h), min(PATCH, w)
    budget = max(minutes, 1e-6) * 60
    started = time.perf_counter()
    recent: list[tuple[float, float]] = []
    step = 0
    while step < steps:
        done = max(step / steps, (time.perf_counter() - started) / budget)
        if done >= 1:
            break
        for group in optimizer.param_groups:  # a warm-up: Adam's first steps would throw the zero detail far off
            group["lr"] = LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * done))
        pick = torch.randint(len(inputs), (BATCH,), generator=rng)
        ys = torch.randint(h - ph + 1, (BATCH,), generator=rng)
        xs = torch.randint(w - pw + 1, (BATCH,), generator=rng)
        flip = torch.rand(BATCH, generator=rng) < 0.5
        x = inputs[pick]
        if generated is not None:
            x = torch.where((torch.rand(BATCH, generator=rng) < GENERATED_SHARE)[:, None, None, None],
                            generated[pick], x)
        x = degradation(x, rng)
        x = torch.stack([x[i, :, y:y + ph, c:c + pw] for i, (y, c) in enumerate(zip(ys, xs))])
        t = torch.stack([targets[p, :, y * s:(y + ph) * s, c * s:(c + pw) * s] for p, y, c in zip(pick, ys, xs)])
        x[flip], t[flip] = x[flip].flip(-1), t[flip].flip(-1)
        out = model(x)
        loss = (out - t).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        with torch.no_grad():
            base = (F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False) - t).abs().mean()
        recent = (recent + [(float(loss.detach()) * 255, float(base) * 255)])[-50:]
        if on_step is not None:
            on_step(step, recent[-1][0])
    if not recent:
        raise Wav2LipError("fitting the enhancer took no step (give it more time or steps)")
    return model.eval(), step, float(np.mean([r[0] for r in recent])), float(np.mean([r[1] for r in recent]))


def calibrate(model: MouthEnhancer, pairs: Pairs, target: float = SHARPNESS_TARGET) -> tuple[float, float]:
    """The sharpening for the video's own faces, upscaled and put back into their boxes as
    `SelfEnhancer.enhance` does: the amount that makes them `target` times as sharp as the real ones
    (the summed variance of the Laplacian of the lower face, as `evaluate --reconstruct` measures it),
    but no more than keeps half of the SSIM the fit gained over the plain stretched face. The video's
    finest detail is mostly skin texture and grain that no 96-px face holds, so full sharpness costs
    fidelity on most clips: the guard keeps the output closer to the real face than the plain one.
    Both measures move one way with the amount, so a bisection finds it within [0, MAX_SHARPEN].
    Returns the amount and the sharpness ratio without it."""
    crops = [crop for _, crop, _ in pairs.calibration]
    boxes = [_whole(c) for c in crops]
    inputs = pairs.run_inputs([i for i, _, _ in pairs.calibration])
    with torch.inference_mode():
        faces = from_tensor(model(to_tensor(inputs)))
    real = [grey(lower_face(c, b)) for c, b in zip(crops, boxes)]
    real_sharpness = sum(sharpness(r) for r in real)

    def measure(upscaled: np.ndarray, amount: float) -> tuple[float, float]:
        """Sharpness ratio and mean SSIM of the lower faces, `upscaled` put back with `amount`."""
        sharp, similar = 0.0, 0.0
        for face, crop, box, truth in zip(upscaled, crops, boxes, real):
            canvas = crop.copy()
            put_lower(canvas, box, face, "paste", 1.0, amount)
            out = grey(lower_face(canvas, box))
            sharp += sharpness(out)
            similar += ssim(out, truth)
        return sharp / real_sharpness if real_sharpness else target, similar / len(crops)

    before, fitted = measure(faces, 0.0)
    plain = np.mean([ssim(grey(lower_face(paste(c.copy(), b, face), b)), truth)  # today's paste
                     for (_, c, face), b, truth in zip(pairs.calibration, boxes, real)])
    floor = (fitted + plain) / 2

    def within(amount: float) -> bool:
        sharp, similar = measure(faces, amount)
        return sharp <= target and similar >= floor

    if within(MAX_SHARPEN):
        return MAX_SHARPEN, before
    low, high = 0.0, MAX_SHARPEN
    for _ in range(10):
        middle = (low + high) / 2
        low, high = (middle, high) if within(middle) else (low, middle)
    return math.floor(low * 1000) / 1000, before  # rounded down: still within both bounds


def steady_scores(model: MouthEnhancer, sharpen: float, faces: list[tuple[np.ndarray, np.ndarray]],
                  still_change: float | None) -> tuple[float, float]:
    """Flicker (`measures.flicker`) and mean lower-face SSIM of consecutive (real face box, painted face)
    against the real ones, enhanced in order as at run time from the plain pasted face (`still_change`
    None: the plain pasted face alone)."""
    enhancer = None if still_change is None else SelfEnhancer(model, sharpen=sharpen, still_change=still_change)
    mouths, similar = [], 0.0
    for crop, face in faces:
        box = _whole(crop)
        out = paste(crop.copy(), box, face)
        if enhancer is not None:
            enhancer.enhance([out], [box], [None], "paste", 1.0)
        mouths.append(mouth(out, box))
        similar += ssim(grey(lower_face(out, box)), grey(lower_face(crop, box)))
    return flicker(mouths), similar / len(faces)


def calibrate_steady(model: MouthEnhancer, sharpen: float, pairs: Pairs) -> float:
    """The mildest steadying (STEADY_CHANGES) under which the video's stillest stretch trembles less
    than the plain pasted face does (by STEADY_MARGIN, so that other still stretches do too), but none
    that leaves the busiest stretch less than STEADY_KEEP of the SSIM the enhancer gains there over the
    plain face (holding still lags real motion, and other busy stretches lose a little more than this
    one): there, the strongest that keeps it (0 when the unsteadied enhancer gains nothing)."""
    if len(pairs.still) < 2:
        return 0.0
    target = steady_scores(model, sharpen, pairs.still, None)[0] * STEADY_MARGIN
    _, plain = steady_scores(model, sharpen, pairs.busy, None)
    unsteadied = steady_scores(model, sharpen, pairs.busy, 0.0)[1]
    floor = plain + STEADY_KEEP * max(0.0, unsteadied - plain)
    chosen = 0.0
    for change in STEADY_CHANGES:
        busy = unsteadied if change == 0 else steady_scores(model, sharpen, pairs.busy, change)[1]
        if busy <= floor:
            break
        chosen = change
        if steady_scores(model, sharpen, pairs.still, change)[0] <= target:
            break
    return chosen


def fit(face: str | os.PathLike, detector: FaceDetector | None, minutes: float = DEFAULT_MINUTES,
        steps: int = MAX_STEPS, frames: tuple[int, int] | None = None, scale: int | None = None,
        max_frames: int = MAX_FRAMES, box: tuple[int, int, int, int] | None = None, progress: bool = False,
        seed: int = 0, painter: Painter | None = None) -> tuple[MouthEnhancer, FitRecord]:
    """Fit an enhancer to the face in `face` (a video or an image): pairs, then training. `box`: a fixed
    face box (x1, y1, x2, y2) instead of detection; `painter`: the generator painting the video's frames
    from its soundtrack (`painter_for`). `progress` shows a bar for each phase on stderr."""
    face = Path(face)
    started = time.perf_counter()
    digest = file_sha256(face)
    bars = [_bar(progress, open_source(face).n_frames_estimate if frames is None else frames[1], "frame",
                 f"enhancer: faces of {face.name}")]

    def painting(faces: int) -> Callable[[int], None]:
        bars[-1].close()  # every frame is read
        bars.append(_bar(True, faces, "face", "enhancer: painting"))
        return bars[-1].update

    try:
        pairs = face_pairs(face, detector, frames, scale, max_frames, box, bars[0].update if progress else None,
                           painter, painting if progress else None)
    finally:
        for bar in bars:
            if bar is not None:
                bar.close()
    bar = _bar(progress, steps, "step", "enhancer: fitting")

    def shown(step: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.2f}")

    try:
        model, taken, loss, base = train(pairs, minutes, steps, seed, on_step=shown)
    finally:
        if bar is not None:
            bar.close()
    amount, before = calibrate(model, pairs)
    steady = calibrate_steady(model, amount, pairs)
    first, last = frames if frames is not None else (0, pairs.frames)
    record = FitRecord(face.name, digest, painter.digest if painter else "", len(pairs.inputs), first, last,
                       pairs.scale, taken, round(time.perf_counter() - started, 2), round(loss, 4), round(base, 4),
                       amount, round(before, 4), steady)
    return model, record


def _bar(enabled: bool, total: int, unit: str, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, smoothing=0.1)


def file_sha256(path: Path) -> str:
    """The content hash that names a cached enhancer (and that a fitted file records)."""
    try:
        return file_digest(path)
    except OSError as exc:
        raise Wav2LipError(f"{path}: cannot read the face file ({exc.strerror})") from None


# ---------------------------------------------------------------- the file


def save(path: str | os.PathLike, model: MouthEnhancer, record: FitRecord) -> Path:
    """Write the enhancer file atomically (nothing at `path` if it fails)."""
    path = Path(path)
    payload = {"kind": KIND, "version": VERSION, "state_dict": model.state_dict(),
               "config": {"channels": model.channels, "blocks": model.blocks, "scale": model.scale, "top": TOP,
                          "sharpen": record.sharpen, "steady": record.steady},
               "fit": asdict(record)}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> SelfEnhancer:
    """Read an enhancer file: plain tensors only (a file that would run code is refused), its kind,
    shape and values checked; every problem one line naming the file."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    extra = checkpoint.extra
    if extra.get("kind") != KIND:
        raise Wav2LipError(f"{path}: not a mouth enhancer (fit one with `wav2lip fit-enhancer FACE -o FILE`)")
    if extra.get("version") != VERSION:
        raise Wav2LipError(f"{path}: mouth enhancer format {extra.get('version')!r}, this version reads {VERSION}")
    config, record = extra.get("config"), extra.get("fit")
    ints = ("channels", "blocks", "scale", "top")
    if not isinstance(config, dict) or any(type(config.get(k)) is not int for k in ints) \
            or config["top"] != TOP or config["scale"] not in SCALES or not (1 <= config["channels"] <= 256) \
            or not (0 <= config["blocks"] <= 32) or type(config.get("sharpen")) is not float \
            or not 0 <= config["sharpen"] <= MAX_SHARPEN or type(config.get("steady")) is not float \
            or not 0 <= config["steady"] <= STEADY_CHANGES[-1] or not isinstance(record, dict):
        raise Wav2LipError(f"{path}: damaged mouth enhancer (its shape entry {config!r} is not one this "
                           "version builds)")
    model = MouthEnhancer(config["channels"], config["blocks"], config["scale"])
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise Wav2LipError(f"{path}: damaged mouth enhancer: its weights do not fit its shape ({first})") from None
    if not all(torch.isfinite(t).all() for t in checkpoint.state_dict.values()):
        raise Wav2LipError(f"{path}: damaged mouth enhancer: its weights hold NaN or infinite values")
    return SelfEnhancer(model, device, record, config["sharpen"], config["steady"])


def cache_path(face: str | os.PathLike, generator: str = "") -> Path:
    """Where `--enhance self` keeps the enhancer fitted to this face file (by its content hash), and to
    the generator that painted its inputs (by its file's hash; empty: none)."""
    name = file_sha256(Path(face)) + (f"-{generator[:16]}" if generator else "")
    return store.cache_dir() / "enhancers" / f"{name}.enhancer.pth"


def fitted_for(face: str | os.PathLike, detector: Callable[[], FaceDetector], device: str | torch.device = "cpu",
               progress: bool = False, minutes: float = DEFAULT_MINUTES, steps: int = MAX_STEPS,
               painter: Callable[[], Painter | None] = lambda: None) -> SelfEnhancer:
    """`--enhance self`: the enhancer fitted to `face` (with `painter()`, when it gives one), from the
    cache, or fitted now and cached. A cached file that cannot be read is fitted again."""
    painting = painter()
    target = cache_path(face, painting.digest if painting else "")
    if target.is_file():
        try:
            return load(target, device)
        except Wav2LipError:
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    model, record = fit(face, detector(), minutes, steps, progress=progress, painter=painting)
    save(target, model, record)
    return SelfEnhancer(model, device, asdict(record), record.sharpen, record.steady)


def load_enhancer(spec: str, face: str | os.PathLike, gfpgan: Callable[[], FaceEnhancer],
                  detector: Callable[[], FaceDetector], device: str | torch.device = "cpu",
                  progress: bool = False, painter: Callable[[], Painter | None] = lambda: None) -> Enhancer | None:
    """The enhancer an `enhance` option value names, for a run on `face`: None for "none", GFPGAN
    (`gfpgan()`: the caller loads it once) for "gfpgan", the enhancer fitted to `face` for "self"
    (fitted on first use with `detector()` and `painter()`, then cached), else a `wav2lip fit-enhancer` file."""
    if spec == "none":
        return None
    if spec == "gfpgan":
        return gfpgan()
    if spec == "self":
        return fitted_for(face, detector, device, progress, painter=painter)
    return load(spec, device)


# ---------------------------------------------------------------- at run time


class SelfEnhancer:
    """A loaded mouth enhancer, used as the kernel uses GFPGAN's `FaceEnhancer` (the same `enhance`).

    It keeps a running input and output, so that a still mouth stays still instead of following the
    grain of each frame (`steady`): one per stream of frames in order (`for_stream`, which each
    `FrameKernel` calls)."""

    def __init__(self, model: MouthEnhancer, device: str | torch.device = "cpu", record: dict | None = None,
                 sharpen: float = 0.0, still_change: float = 0.0) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.scale = model.scale
        self.record = record or {}
        self.sharpen = sharpen
        self.still_change = still_change
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # the running input and output

    def for_stream(self) -> SelfEnhancer:
        """A copy that shares the network and holds its own running input and output."""
        return SelfEnhancer(self.model, self.device, self.record, self.sharpen, self.still_change)

    def upscale(self, lower: np.ndarray) -> np.ndarray:
        """(B, 96 - TOP, 96, 3) BGR uint8 lower faces -> (B, scale x that, 3) BGR uint8."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(lower), RUN_BATCH):
                x = to_tensor(lower[start:start + RUN_BATCH]).to(self.device)
                out.append(from_tensor(self.model(x).cpu()))
        return np.concatenate(out) if out else np.zeros((0, *(self.scale * np.array(lower.shape[1:3])), 3), np.uint8)

    def steady(self, lower: np.ndarray, face: np.ndarray) -> np.ndarray:
        """The upscaled `face` of input `lower`, held where the input holds still: a temporal filter
        whose rate follows the input's change per pixel. The filter keeps a running input and output;
        a pixel whose input differs from the running input by less than `still_change` grey levels
        takes only that fraction of its new output (at least STEADY_FLOOR), so grain and sub-pixel
        sway, which a sharp face turns into flicker, average out; motion (a mouth opening, another
        face) differs by far more and is taken at once, and a slow drift at most lags by about the
        square root of `still_change`. Returns float32 (no state is kept when `still_change` is 0)."""
        if self.still_change <= 0:
            return face.astype(np.float32)
        current, out = lower.astype(np.float32), face.astype(np.float32)
        if self._previous is not None:
            held_in, held_out = self._previous
            change = cv2.GaussianBlur(np.abs(current - held_in).max(axis=2), (0, 0), 1.0)
            share = np.clip(change / np.float32(self.still_change), STEADY_FLOOR, 1.0)
            current = held_in + share[..., None] * (current - held_in)
            size = (face.shape[1], face.shape[0])
            out = held_out + cv2.resize(share, size, interpolation=cv2.INTER_LINEAR)[..., None] * (out - held_out)
        self._previous = (current, out)
        return out

    def enhance(self, frames: list[np.ndarray], boxes: list[np.ndarray], landmarks: list[np.ndarray | None],
                blend: str, strength: float) -> None:
        """Sharpen the painted lower face of each frame in place, in stream order: read the box back to
        96 px, upscale its lower rows, hold them still where nothing moved (`steady`), put them back,
        sharpened, under the generator's paint mask times `strength` (landmarks unused: the face box
        places it)."""
        boxes = [np.asarray(b).astype(int) for b in boxes]
        lower = np.stack([read_back(f[b[1]:b[3], b[0]:b[2]])[TOP:] for f, b in zip(frames, boxes)])
        for frame, box, low, face in zip(frames, boxes, lower, self.upscale(lower)):
            put_lower(frame, box, self.steady(low, face), blend, strength, self.sharpen)


def put_lower(frame: np.ndarray, box: np.ndarray, face: np.ndarray, blend: str, strength: float,
              sharpen: float = 0.0) -> None:
    """Blend an upscaled lower face (rows TOP.. of the 96-px face, at any scale) into the box of `frame`
    in place, under the paint mask, fading in over its top SEAM rows. `sharpen`: the amount of an unsharp
    mask at the box's resolution, where the video's finest detail lies (at the enhancer's own, the
    resize to the box would smooth it again)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = y2 - y1, x2 - x1
    top = round(h * TOP / FACE_SIZE)
    if h - top <= 0 or w <= 0:
        return
    resized = cv2.resize(face, (w, h - top), interpolation=cv2.INTER_AREA if face.shape[1] > w else cv2.INTER_CUBIC)
    resized = resized.astype(np.float32)
    if sharpen:
        resized += np.float32(sharpen) * (resized - cv2.GaussianBlur(resized, (0, 0), SHARPEN_SIGMA))
    weight = paint_mask(blend, h, w)[top:] * np.float32(strength)
    seam = max(1, round(h * SEAM / FACE_SIZE))
    weight[:seam] *= ((np.arange(seam, dtype=np.float32) + 0.5) / seam)[:, None]
    region = frame[y1 + top:y2, x1:x2]
    plain = region.astype(np.float32)
    region[:] = np.clip(plain + (resized - plain) * weight[..., None] + 0.5, 0, 255).astype(np.uint8)
