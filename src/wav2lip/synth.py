"""Synthetic talking faces whose true mouth opening is known: the data that proves training learns.

No real lip-sync data exists where this project is tested, so this module draws one. Speech is made
of voiced syllables (a harmonic source with a gliding pitch, shaped by formants) separated by pauses;
the drawn mouth opens with each syllable's loudness envelope scaled by its first formant (jaw
opening) and widens with its second (lip spreading), as real mouths roughly do. Heads move, eyes
blink and the light changes, so a model must find the mouth rather than memorise pixels.
Everything is a function of the seed.
"""
from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import Wav2LipError
from .files import atomic_output

# Training data is 25 fps video with 16 kHz audio (spec section 8).
FPS = 25
SAMPLE_RATE = 16000
# Drawing happens at this multiple of the output size, then area-downsampled: sub-pixel mouth motion.
_SUPERSAMPLE = 3
# Mouth centre height as a fraction of the crop: inside the lower half the generator repaints.
_MOUTH_Y = 0.74
# Frame (width, height) of the "videos" layout: the face fills 60% of the height.
_VIDEO_SIZE = (224, 160)


@dataclass(frozen=True)
class Identity:
    """What stays fixed for a speaker: colours, proportions and voice pitch."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    background: tuple[float, float, float]
    iris: tuple[float, float, float]
    face_w: float
    eye_dx: float
    eye_y: float
    mouth_w: float
    pitch: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Identity:
        skin_tone = rng.uniform(0.35, 1.0)
        skin = (60 + 110 * skin_tone, 90 + 110 * skin_tone, 120 + 110 * skin_tone)  # BGR, warm
        return cls(
            skin=tuple(float(v) for v in np.array(skin) * rng.uniform(0.9, 1.05, 3)),
            hair=tuple(float(v) for v in rng.uniform(10, 90, 3)),
            lips=(float(rng.uniform(80, 110)), float(rng.uniform(75, 100)), float(rng.uniform(170, 215))),
            background=tuple(float(v) for v in rng.uniform(30, 230, 3)),
            iris=tuple(float(v) for v in rng.uniform(20, 120, 3)),
            face_w=float(rng.uniform(0.36, 0.44)),
            eye_dx=float(rng.uniform(0.14, 0.19)),
            eye_y=float(rng.uniform(0.36, 0.42)),
            mouth_w=float(rng.uniform(0.11, 0.15)),
            pitch=float(rng.uniform(0.7, 1.6)),
        )


@dataclass
class Speech:
    """A waveform and, per sample, how open and how wide the mouth saying it is (both in [0, 1])."""

    wav: np.ndarray
    opening: np.ndarray
    width: np.ndarray


def speech(rng: np.random.Generator, seconds: float, pitch: float = 1.0, sr: int = SAMPLE_RATE) -> Speech:
    """Words of 1-3 voiced syllables with varying pitch and formants, separated by pauses."""
    n = int(round(seconds * sr))
    wav = np.zeros(n, np.float64)
    opening = np.zeros(n, np.float64)
    spread = np.zeros(n, np.float64)
    t = int(rng.uniform(0.05, 0.3) * sr)
    while t < n:
        for _ in range(rng.integers(1, 4)):
            length = int(rng.uniform(0.12, 0.32) * sr)
            stop = min(n, t + length)
            if stop - t < 16:
                break
            _syllable(rng, wav, opening, spread, t, stop, length, pitch, sr)
            t = stop + int(rng.uniform(0.0, 0.05) * sr)
        t += int(rng.uniform(0.12, 0.6) * sr)
    wav += rng.normal(0, 0.002, n)
    return Speech(
        wav=np.clip(wav, -1, 1).astype(np.float32),
        opening=opening.astype(np.float32),
        width=np.clip(0.5 + spread, 0, 1).astype(np.float32),
    )


def _syllable(
    rng: np.random.Generator, wav: np.ndarray, opening: np.ndarray, spread: np.ndarray,
    start: int, stop: int, length: int, pitch: float, sr: int,
) -> None:
    """Add one syllable in place: harmonics of a gliding f0 weighted by three formant resonances."""
    k = np.arange(stop - start)
    u = k / length
    envelope = np.sin(np.pi * np.clip(u, 0, 1)) ** 0.7  # smooth onset and release
    f0 = 120 * pitch * np.exp(np.log(rng.uniform(0.8, 1.25)) + np.log(rng.uniform(0.8, 1.25)) * u)
    f1 = rng.uniform(280, 850)
    f2 = rng.uniform(850, 2400)
    formants = ((f1, 90.0, 1.0), (f2, 140.0, 0.6), (rng.uniform(2500, 3200), 200.0, 0.3))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    harmonics = np.arange(1, int(4000 / f0.min()) + 1)[:, None]
    freq = harmonics * f0[None, :]
    gain = sum(g * np.exp(-0.5 * ((freq - f) / bw) ** 2) for f, bw, g in formants) + 0.03 / harmonics
    gain = np.where(freq < 4000, gain, 0.0)
    voiced = (gain * np.sin(harmonics * phase[None, :])).sum(axis=0)
    voiced /= max(1e-6, np.abs(voiced).max())
    loudness = rng.uniform(0.25, 0.8)
    wav[start:stop] += loudness * envelope * voiced
    jaw = 0.3 + 0.7 * (f1 - 280) / (850 - 280)  # a high F1 is an open jaw
    opening[start:stop] = np.maximum(opening[start:stop], envelope * jaw)
    spread[start:stop] += envelope * 0.5 * ((f2 - 850) / (2400 - 850) - 0.5)  # high F2 spreads the lips


def per_frame(curve: np.ndarray, n_frames: int, fps: float = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mean of a per-sample curve over each frame's interval (what a camera integrates)."""
    edges = np.minimum((np.arange(n_frames + 1) * sr / fps).astype(int), len(curve))
    sums = np.concatenate([[0.0], np.cumsum(curve, dtype=np.float64)])
    counts = np.maximum(1, np.diff(edges))
    return ((sums[edges[1:]] - sums[edges[:-1]]) / counts).astype(np.float32)


def _shifted(values: np.ndarray, shift: int) -> np.ndarray:
    """values[i - shift] with the edges held: a face that lags its audio by `shift` frames."""
    index = np.clip(np.arange(len(values)) - shift, 0, len(values) - 1)
    return values[index]


@dataclass
class Clip:
    """One synthetic clip: audio, the per-frame true mouth state, and everything needed to draw it."""

    identity: Identity
    wav: np.ndarray
    opening: np.ndarray  # per video frame, what is drawn (after `shift`)
    width: np.ndarray
    shift: int
    seed: int

    @property
    def n_frames(self) -> int:
        return len(self.opening)

    def frames(self, size: int = 96, zoom: float = 1.0) -> Iterator[np.ndarray]:
        """BGR uint8 `size` x `size` frames: a face crop (zoom 1), or a face in a wider view (zoom < 1)."""
        rng = np.random.default_rng([self.seed, 1])
        motion = _Motion(rng, self.n_frames)
        for i in range(self.n_frames):
            yield _draw_face(self.identity, self.opening[i], self.width[i], motion, i, size, zoom)


def make_clip(seed: int, seconds: float = 3.0, shift: int = 0, identity: Identity | None = None) -> Clip:
    """A clip fully determined by `seed` (and the speaker `identity`, random from the seed if None).

    `shift` > 0 makes the face lag the audio by that many frames: an out-of-sync clip.
    """
    rng = np.random.default_rng([seed, 0])
    identity = identity or Identity.random(rng)
    sound = speech(rng, seconds, identity.pitch)
    n_frames = int(round(seconds * FPS))
    opening = per_frame(sound.opening, n_frames)
    width = per_frame(sound.width, n_frames)
    return Clip(
        identity=identity, wav=sound.wav, opening=_shifted(opening, shift), width=_shifted(width, shift),
        shift=shift, seed=seed,
    )


class _Motion:
    """Slow head motion, blinks and lighting drift: smooth random curves over the clip."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        t = np.arange(n) / FPS

        def wobble(amplitude: float) -> np.ndarray:
            freqs = rng.uniform(0.1, 0.6, 2)
            phases = rng.uniform(0, 2 * np.pi, 2)
            return amplitude * (np.sin(2 * np.pi * freqs[0] * t + phases[0])
                                + 0.5 * np.sin(2 * np.pi * freqs[1] * t + phases[1])) / 1.5

        self.angle = wobble(rng.uniform(0, 6))  # degrees
        self.dx = wobble(rng.uniform(0, 0.04))  # fraction of the crop
        self.dy = wobble(rng.uniform(0, 0.03))
        self.scale = 1 + wobble(rng.uniform(0, 0.04))
        self.light = rng.uniform(0.75, 1.15) + wobble(rng.uniform(0, 0.15))
        self.slope = wobble(rng.uniform(0, 0.3)) + rng.uniform(-0.15, 0.15)  # light from one side
        self.blink = np.zeros(n, bool)
        for start in np.flatnonzero(rng.random(n) < 1 / 60):
            self.blink[start:start + 3] = True
        self.noise_seed = int(rng.integers(1 << 31))


def _bgr(color: tuple[float, float, float], factor: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)


def _ellipse(img: np.ndarray, scale: float, cx: float, cy: float, ax: float, ay: float,
             color: tuple[int, int, int], angle: float = 0.0, arc: tuple[int, int] = (0, 360)) -> None:
    """Filled anti-aliased ellipse in crop-fraction coordinates, with sub-pixel precision."""
    shift = 4
    k = scale * (1 << shift)
    centre = (int(round(cx * k)), int(round(cy * k)))
    axes = (max(1, int(round(ax * k))), max(1, int(round(ay * k))))
    cv2.ellipse(img, centre, axes, angle, arc[0], arc[1], color, -1, cv2.LINE_AA, shift)


def _draw_face(identity: Identity, opening: float, width: float, motion: _Motion, i: int, size: int,
               zoom: float = 1.0) -> np.ndarray:
    """The face crop of frame i: draw large, move the head, light it, downsample."""
    big = size * _SUPERSAMPLE
    s = float(big)
    img = np.empty((big, big, 3), np.uint8)
    img[:] = _bgr(identity.background)
    idy = identity
    _ellipse(img, s, 0.5, 0.36, idy.face_w * 1.08, 0.36, _bgr(idy.hair))  # hair behind the head
    _ellipse(img, s, 0.5, 0.53, idy.face_w, 0.47, _bgr(idy.skin))
    _ellipse(img, s, 0.5, 0.49, idy.face_w * 0.85, 0.40, _bgr(idy.skin, 1.04))  # soft highlight
    for side in (-1, 1):
        ex = 0.5 + side * idy.eye_dx
        if motion.blink[i]:
            _ellipse(img, s, ex, idy.eye_y, 0.055, 0.007, _bgr(idy.skin, 0.6))
        else:
            _ellipse(img, s, ex, idy.eye_y, 0.055, 0.028, (235, 235, 235))
            _ellipse(img, s, ex, idy.eye_y, 0.022, 0.022, _bgr(idy.iris))
            _ellipse(img, s, ex, idy.eye_y, 0.009, 0.009, (15, 15, 15))
        _ellipse(img, s, ex, idy.eye_y - 0.065, 0.06, 0.012, _bgr(idy.hair), angle=-side * 6)
    nose = np.array([[0.5, 0.47], [0.46, 0.60], [0.54, 0.60]]) * s * 16
    cv2.fillPoly(img, [nose.astype(np.int32)], _bgr(idy.skin, 0.82), cv2.LINE_AA, 4)
    _ellipse(img, s, 0.5, 0.60, 0.04, 0.012, _bgr(idy.skin, 0.7))  # nostrils' shadow
    _draw_mouth(img, s, idy, opening, width)

    centre = (big / 2, big * 0.55)
    matrix = cv2.getRotationMatrix2D(centre, float(motion.angle[i]), float(motion.scale[i]) * zoom)
    matrix[:, 2] += (motion.dx[i] * big, motion.dy[i] * big)
    img = cv2.warpAffine(img, matrix, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    ramp = 1 + motion.slope[i] * np.linspace(-0.5, 0.5, size, dtype=np.float32)[None, :, None]
    img *= motion.light[i] * ramp
    img += np.random.default_rng([motion.noise_seed, i]).normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_mouth(img: np.ndarray, s: float, identity: Identity, opening: float, width: float) -> None:
    """Lips whose gap follows `opening` and whose corners follow `width`; teeth show when open."""
    half_w = identity.mouth_w * (0.8 + 0.45 * width)
    gap = 0.085 * opening
    cy = _MOUTH_Y
    _ellipse(img, s, 0.5, cy, half_w, 0.022 + gap * 0.6, _bgr(identity.lips))
    if gap > 0.002:
        _ellipse(img, s, 0.5, cy, half_w * 0.82, gap, (20, 15, 35))  # the dark inside
        _ellipse(img, s, 0.5, cy - gap * 0.9, half_w * 0.6, min(gap * 0.35, 0.012), (225, 225, 230))
    else:
        _ellipse(img, s, 0.5, cy, half_w * 0.85, 0.003, _bgr(identity.lips, 0.5))  # closed lips' line


def mouth_opening(face_bgr: np.ndarray) -> float:
    """Measure how open the mouth of a synthetic face crop is, from its pixels alone.

    The inside of the mouth is far darker than skin, lips and teeth (relative to the skin, so the
    lighting cancels): the tallest column of dark pixels around the mouth, in crop heights, with
    partly dark pixels counted in part. Used to judge generated frames against the truth.
    """
    h, w = face_bgr.shape[:2]
    region = face_bgr[int(h * 0.55):int(h * 0.95), int(w * 0.25):int(w * 0.75)].astype(np.float32)
    gray = region @ np.array([0.114, 0.587, 0.299], np.float32)
    ratio = gray / max(1.0, float(np.median(gray)))
    darkness = np.clip((0.45 - ratio) / 0.15, 0, 1)
    heights = darkness.sum(axis=0)
    return float(np.sort(heights)[-3:].mean()) / h


def write_wav(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """16-bit mono WAV, written atomically."""
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    with atomic_output(path) as tmp:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(sr)
            f.writeframes(pcm.tobytes())


def _clip_name(k: int, clips_per_speaker: int) -> tuple[str, str]:
    return f"spk{k // clips_per_speaker:03d}", f"{k % clips_per_speaker:05d}"


def write_dataset(
    out: str | Path, clips: int, layout: str = "prepared", seed: int = 0, seconds: float = 3.0,
    clips_per_speaker: int = 4, size: int = 96, val_fraction: float = 0.1, test_fraction: float = 0.1,
    shift: int = 0,
) -> list[Path]:
    """Write `clips` synthetic clips under `out`; return their folders (prepared) or files (videos).

    layout "prepared": spec section 9's training layout, `<spk>/<clip>/{0..}.jpg` face crops,
    `audio.wav`, `mouth.npy` (true opening per frame) and train/val/test.txt (the last speakers'
    clips are held out, so validation and test use unseen faces and unseen audio).
    layout "videos": `<spk>/<clip>.mp4` (25 fps, the face in a 224 x 160 frame, AAC audio) and
    `<spk>/<clip>.mouth.npy`, input for `wav2lip preprocess`.
    """
    from .options import SYNTH_LAYOUTS  # the option tables import torch; synth-data alone need not

    if layout not in SYNTH_LAYOUTS:
        raise Wav2LipError(f"{out}: unknown layout {layout!r} (one of {', '.join(SYNTH_LAYOUTS)})")
    if clips < 1:
        raise Wav2LipError(f"{out}: --clips must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identities: dict[str, Identity] = {}
    written, names = [], []
    for k in range(clips):
        speaker, name = _clip_name(k, clips_per_speaker)
        if speaker not in identities:
            identities[speaker] = Identity.random(np.random.default_rng([seed, 7, k // clips_per_speaker]))
        clip = make_clip(seed * 1_000_003 + k, seconds, shift=shift, identity=identities[speaker])
        (out / speaker).mkdir(exist_ok=True)
        if layout == "prepared":
            written.append(_write_prepared(out / speaker / name, clip, size))
        else:
            written.append(_write_video(out / speaker / f"{name}.mp4", clip))
        names.append(f"{speaker}/{name}")
    if layout == "prepared":
        write_file_lists(out, names, val_fraction, test_fraction)
    return written


def _write_prepared(folder: Path, clip: Clip, size: int) -> Path:
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(clip.frames(size)):
        cv2.imwrite(str(folder / f"{i}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    write_wav(folder / "audio.wav", clip.wav)
    np.save(folder / "mouth.npy", clip.opening)
    (folder / "synth.json").write_text(json.dumps({"seed": clip.seed, "shift": clip.shift}))
    return folder


def _write_video(path: Path, clip: Clip) -> Path:
    from .video_io import VideoWriter

    wav_path = path.with_suffix(".wav")
    write_wav(wav_path, clip.wav)
    try:
        with VideoWriter(path, FPS, _VIDEO_SIZE[0], _VIDEO_SIZE[1], audio=wav_path) as writer:
            for frame in clip.frames(_VIDEO_SIZE[1], zoom=0.6):
                side = (_VIDEO_SIZE[0] - _VIDEO_SIZE[1]) // 2
                writer.write(cv2.copyMakeBorder(frame, 0, 0, side, side, cv2.BORDER_REPLICATE))
    finally:
        wav_path.unlink()
    np.save(path.with_suffix(".mouth.npy"), clip.opening)
    return path


def write_file_lists(root: str | Path, names: list[str], val_fraction: float = 0.1,
                     test_fraction: float = 0.1) -> dict[str, list[str]]:
    """train.txt / val.txt / test.txt under `root`: the last clips in `names` order are held out.

    Names are sorted first, so speakers stay together and held-out faces are unseen in training.
    Each held-out split gets at least one clip when there are three or more.
    """
    names = sorted(names)
    n = len(names)
    n_val = max(1 if n >= 3 else 0, int(round(n * val_fraction)))
    n_test = max(1 if n >= 3 else 0, int(round(n * test_fraction)))
    n_train = n - n_val - n_test
    splits = {
        "train": names[:n_train],
        "val": names[n_train:n_train + n_val],
        "test": names[n_train + n_val:],
    }
    for split, items in splits.items():
        with atomic_output(Path(root) / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{item}\n" for item in items))
    return splits
