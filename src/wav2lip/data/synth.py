"""Synthetic talking faces whose true mouth opening is known: the data that proves training learns.

No real lip-sync data exists where this project is tested, so this module draws one. Speech is made
of words of syllables separated by pauses: vowels (a harmonic source with a gliding pitch, shaped by
formants) and consonants (bilabial closures with a burst or a nasal hum, /f/ and /s/ hiss, /l/ and
/w/). The mouth is more than an opening: jaw height sets the first formant, spread and rounded lips the
second, bilabials close the lips while sound goes on, /f/ rests the teeth on the lower lip, /l/ shows the
tongue, and neighbouring sounds blend (co-articulation). Loudness alone does not tell the mouth, so
an expert that sees the shape has something to teach. Heads move, eyes blink, faces, skin, lips and
background gradients vary and the light changes, so a model must find the mouth rather than memorise pixels.
Everything is a function of the seed.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import Wav2LipError
from ..io.audio import SAMPLE_RATE, write_wav
from ..io.files import atomic_output
from ..lipsync.options import SYNTH_LAYOUTS
from .layout import FPS  # training data is 25 fps video with 16 kHz audio (spec section 8)

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
    lip_h: float  # lip thickness
    mouth_dy: float  # mouth height offset from _MOUTH_Y
    face_h: float
    background2: tuple[float, float, float]  # the background is a gradient to this colour
    gradient_angle: float

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
            lip_h=float(rng.uniform(0.016, 0.03)),
            mouth_dy=float(rng.uniform(-0.015, 0.015)),
            face_h=float(rng.uniform(0.43, 0.5)),
            background2=tuple(float(v) for v in rng.uniform(30, 230, 3)),
            gradient_angle=float(rng.uniform(0, 2 * np.pi)),
        )


# Mouth state channels, each in [0, 1]: jaw opening, lip spreading (0.5 relaxed), lip rounding,
# upper-teeth visibility, tongue-tip visibility.
MOUTH = ("opening", "width", "round", "teeth", "tongue")
_REST = (0.0, 0.5, 0.0, 0.0, 0.0)
# Consonants: (mouth target, duration range in s, sound). Bilabials close the lips entirely, which no
# loudness curve predicts; /f/ rests the upper teeth on the lower lip; /s/ spreads with teeth showing;
# /l/ shows the tongue tip; /w/ rounds the lips.
_CONSONANTS = {
    "p": ((0.0, 0.45, 0.1, 0.0, 0.0), (0.05, 0.09), "burst"),
    "m": ((0.0, 0.45, 0.1, 0.0, 0.0), (0.06, 0.11), "nasal"),
    "f": ((0.07, 0.55, 0.0, 1.0, 0.0), (0.08, 0.14), "hiss_low"),
    "s": ((0.12, 0.8, 0.0, 1.0, 0.0), (0.08, 0.14), "hiss_high"),
    "l": ((0.4, 0.5, 0.0, 0.5, 1.0), (0.06, 0.1), "voiced_l"),
    "w": ((0.12, 0.15, 1.0, 0.0, 0.0), (0.06, 0.1), "voiced_w"),
}
# Lips anticipate and carry over neighbouring sounds: every channel is smoothed over this many seconds.
_COARTICULATION_S = 0.018


@dataclass
class Speech:
    """A waveform and, per sample, the state of the mouth saying it: (n, 5) in MOUTH's order."""

    wav: np.ndarray
    mouth: np.ndarray

    @property
    def opening(self) -> np.ndarray:
        return self.mouth[:, 0]

    @property
    def width(self) -> np.ndarray:
        return self.mouth[:, 1]


def speech(rng: np.random.Generator, seconds: float, pitch: float = 1.0, sr: int = SAMPLE_RATE,
           consonants: bool = True) -> Speech:
    """Words of 1-3 syllables (optional consonant, vowel, optional consonant) separated by pauses.

    Each sound sets a mouth target held over its span; vowels open with their loudness envelope.
    The targets are then smoothed (co-articulation), so neighbouring sounds shape each other.
    `consonants` False gives vowels only: a mouth that loudness and formants predict (an easy task).
    """
    n = int(round(seconds * sr))
    wav = np.zeros(n, np.float64)
    mouth = np.tile(np.array(_REST, np.float64), (n, 1))
    t = int(rng.uniform(0.05, 0.3) * sr)
    while t < n:
        for _ in range(rng.integers(1, 4)):
            if consonants and rng.random() < 0.6:
                t = _consonant(rng, wav, mouth, t, str(rng.choice(list(_CONSONANTS))), pitch, sr)
            length = int(rng.uniform(0.12, 0.3) * sr)
            stop = min(n, t + length)
            if stop - t < 16:
                break
            _vowel(rng, wav, mouth, t, stop, length, pitch, sr)
            t = stop
            if consonants and rng.random() < 0.25:
                t = _consonant(rng, wav, mouth, t, str(rng.choice(["p", "m", "f", "s"])), pitch, sr)
            t += int(rng.uniform(0.0, 0.04) * sr)
        t += int((rng.uniform(0.5, 0.9) if rng.random() < 0.05 else rng.uniform(0.12, 0.45)) * sr)
    wav += rng.normal(0, 0.002, n)
    sigma = _COARTICULATION_S * sr
    x = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.tile(mouth[:1], (len(x) // 2, 1)), mouth, np.tile(mouth[-1:], (len(x) // 2, 1))])
    smooth = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(len(MOUTH))], axis=1)
    return Speech(wav=np.clip(wav, -1, 1).astype(np.float32), mouth=np.clip(smooth, 0, 1).astype(np.float32))


def _voiced(rng: np.random.Generator, length: int, formants: tuple, pitch: float, sr: int) -> np.ndarray:
    """Harmonics of a gliding f0 weighted by formant resonances ((freq, bandwidth, gain), ...), peak 1."""
    u = np.arange(length) / max(1, length)
    f0 = 120 * pitch * np.exp(np.log(rng.uniform(0.8, 1.25)) + np.log(rng.uniform(0.8, 1.25)) * u)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    harmonics = np.arange(1, int(4000 / f0.min()) + 1)[:, None]
    freq = harmonics * f0[None, :]
    gain = sum(g * np.exp(-0.5 * ((freq - f) / bw) ** 2) for f, bw, g in formants) + 0.03 / harmonics
    gain = np.where(freq < 4000, gain, 0.0)
    voiced = (gain * np.sin(harmonics * phase[None, :])).sum(axis=0)
    return voiced / max(1e-6, np.abs(voiced).max())


def _noise(rng: np.random.Generator, length: int, low: float, high: float, sr: int) -> np.ndarray:
    """White noise band-limited to [low, high] Hz, peak 1."""
    spectrum = np.fft.rfft(rng.normal(0, 1, length))
    freq = np.fft.rfftfreq(length, 1 / sr)
    spectrum[(freq < low) | (freq > high)] = 0
    noise = np.fft.irfft(spectrum, length)
    return noise / max(1e-6, np.abs(noise).max())


def _vowel(rng: np.random.Generator, wav: np.ndarray, mouth: np.ndarray, start: int, stop: int, length: int,
           pitch: float, sr: int) -> None:
    """Add one vowel in place. Jaw height sets F1; front (spread) vowels raise F2, rounded back ones lower it."""
    jaw = rng.uniform(0.2, 1.0)
    front = rng.uniform(0, 1)
    rounded = float(np.clip(rng.uniform(-0.3, 1.0) * (1 - front) * 1.6, 0, 1))
    scale = 1 - 0.12 * rounded  # protruded lips lengthen the tract: every formant falls
    f1 = (280 + 570 * jaw) * scale
    f2 = (850 + 1550 * front) * scale
    formants = ((f1, 90.0, 1.0), (f2, 140.0, 0.6), (rng.uniform(2500, 3200) * scale, 200.0, 0.3))
    k = np.arange(stop - start)
    envelope = np.sin(np.pi * np.clip(k / length, 0, 1)) ** 0.7  # smooth onset and release
    wav[start:stop] += rng.uniform(0.25, 0.8) * envelope * _voiced(rng, length, formants, pitch, sr)[:stop - start]
    mouth[start:stop, 0] = envelope * jaw
    mouth[start:stop, 1] = np.clip(0.5 + 0.5 * (front - 0.5) - 0.4 * rounded, 0, 1)
    mouth[start:stop, 2] = rounded
    mouth[start:stop, 3] = float(np.clip(front * jaw * 1.5, 0, 1))
    mouth[start:stop, 4] = 0.0


def _consonant(rng: np.random.Generator, wav: np.ndarray, mouth: np.ndarray, start: int, kind: str,
               pitch: float, sr: int) -> int:
    """Add one consonant at `start` in place; return where it ends."""
    target, (low, high), sound = _CONSONANTS[kind]
    length = int(rng.uniform(low, high) * sr)
    stop = min(len(wav), start + length)
    span = stop - start
    if span < 16:
        return stop
    mouth[start:stop] = target
    ramp = np.minimum(1, np.minimum(np.arange(span), np.arange(span)[::-1]) / (0.01 * sr))
    if sound == "burst":  # silence while the lips are closed, then their release
        burst = min(span, int(0.012 * sr))
        wav[stop - burst:stop] += rng.uniform(0.2, 0.5) * _noise(rng, burst, 500, 7000, sr) * np.linspace(1, 0.2, burst)
    elif sound == "nasal":
        wav[start:stop] += rng.uniform(0.1, 0.25) * ramp * _voiced(rng, span, ((250, 100.0, 1.0),), pitch, sr)
    elif sound == "hiss_low":
        wav[start:stop] += rng.uniform(0.05, 0.12) * ramp * _noise(rng, span, 2500, 7000, sr)
    elif sound == "hiss_high":
        wav[start:stop] += rng.uniform(0.08, 0.2) * ramp * _noise(rng, span, 4500, 7800, sr)
    else:
        formants = ((350, 90.0, 1.0), (1100, 140.0, 0.5)) if kind == "l" else ((300, 90.0, 1.0), (700, 140.0, 0.5))
        wav[start:stop] += rng.uniform(0.15, 0.35) * ramp * _voiced(rng, span, formants, pitch, sr)
    return stop


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
    mouth: np.ndarray  # (n_frames, 5) per video frame in MOUTH's order, what is drawn (after `shift`)
    shift: int
    seed: int

    @property
    def opening(self) -> np.ndarray:
        return self.mouth[:, 0]

    @property
    def n_frames(self) -> int:
        return len(self.mouth)

    def frames(self, size: int = 96, zoom: float = 1.0) -> Iterator[np.ndarray]:
        """BGR uint8 `size` x `size` frames: a face crop (zoom 1), or a face in a wider view (zoom < 1)."""
        rng = np.random.default_rng([self.seed, 1])
        motion = _Motion(rng, self.n_frames)
        for i in range(self.n_frames):
            yield _draw_face(self.identity, self.mouth[i], motion, i, size, zoom)


def make_clip(seed: int, seconds: float = 3.0, shift: int = 0, identity: Identity | None = None,
              consonants: bool = True) -> Clip:
    """A clip fully determined by `seed` (and the speaker `identity`, random from the seed if None).

    `shift` > 0 makes the face lag the audio by that many frames: an out-of-sync clip.
    """
    rng = np.random.default_rng([seed, 0])
    identity = identity or Identity.random(rng)
    sound = speech(rng, seconds, identity.pitch, consonants=consonants)
    n_frames = int(round(seconds * FPS))
    mouth = np.stack([per_frame(sound.mouth[:, c], n_frames) for c in range(len(MOUTH))], axis=1)
    return Clip(identity=identity, wav=sound.wav, mouth=_shifted(mouth, shift), shift=shift, seed=seed)


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


@functools.lru_cache(maxsize=8)
def _background(identity: Identity, big: int) -> np.ndarray:
    """A linear gradient between the identity's two background colours."""
    yy, xx = np.mgrid[0:big, 0:big] / big - 0.5
    u = np.clip(0.5 + xx * np.cos(identity.gradient_angle) + yy * np.sin(identity.gradient_angle), 0, 1)
    a, b = np.array(identity.background), np.array(identity.background2)
    return (a + (b - a) * u[..., None]).astype(np.uint8)


def _draw_face(identity: Identity, mouth: np.ndarray, motion: _Motion, i: int, size: int,
               zoom: float = 1.0) -> np.ndarray:
    """The face crop of frame i: draw large, move the head, light it, downsample."""
    big = size * _SUPERSAMPLE
    s = float(big)
    img = _background(identity, big).copy()
    idy = identity
    _ellipse(img, s, 0.5, 0.36, idy.face_w * 1.08, 0.36, _bgr(idy.hair))  # hair behind the head
    _ellipse(img, s, 0.5, 0.53, idy.face_w, idy.face_h, _bgr(idy.skin))
    _ellipse(img, s, 0.5, 0.49, idy.face_w * 0.85, idy.face_h - 0.07, _bgr(idy.skin, 1.04))  # soft highlight
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
    _draw_mouth(img, s, idy, *(float(v) for v in mouth))

    centre = (big / 2, big * 0.55)
    matrix = cv2.getRotationMatrix2D(centre, float(motion.angle[i]), float(motion.scale[i]) * zoom)
    matrix[:, 2] += (motion.dx[i] * big, motion.dy[i] * big)
    img = cv2.warpAffine(img, matrix, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    ramp = 1 + motion.slope[i] * np.linspace(-0.5, 0.5, size, dtype=np.float32)[None, :, None]
    img *= motion.light[i] * ramp
    img += np.random.default_rng([motion.noise_seed, i]).normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_mouth(img: np.ndarray, s: float, identity: Identity, opening: float, width: float,
                rounded: float, teeth: float, tongue: float) -> None:
    """Lips whose gap follows `opening`, corners `width`, pursing `rounded`; teeth and tongue as given."""
    half_w = identity.mouth_w * (0.8 + 0.45 * width) * (1 - 0.3 * rounded)
    lip_h = identity.lip_h * (1 + 0.5 * rounded)  # protruded lips look fuller
    gap = 0.085 * opening
    cy = _MOUTH_Y + identity.mouth_dy
    _ellipse(img, s, 0.5, cy, half_w, lip_h + gap * 0.6, _bgr(identity.lips))
    if gap > 0.002:
        inner_w = half_w * 0.82 * (1 - 0.35 * rounded)  # a rounded mouth opens as an O
        _ellipse(img, s, 0.5, cy, inner_w, gap, (20, 15, 35))  # the dark inside
        if teeth > 0.05:
            _ellipse(img, s, 0.5, cy - gap * 0.9, inner_w * 0.75, min(gap * 0.35, 0.012) * teeth, (225, 225, 230))
        if tongue > 0.05:
            _ellipse(img, s, 0.5, cy + gap * 0.85, inner_w * 0.55, gap * 0.2 * tongue, _bgr(identity.lips, 0.7))
    else:
        _ellipse(img, s, 0.5, cy, half_w * 0.85, 0.003, _bgr(identity.lips, 0.5))  # closed lips' line
    if teeth > 0.5 and gap < 0.012:  # upper teeth resting on the lower lip (/f/)
        _ellipse(img, s, 0.5, cy + 0.004, half_w * 0.5, 0.007 * teeth, (225, 225, 230))


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


def _clip_name(k: int, clips_per_speaker: int) -> tuple[str, str]:
    return f"spk{k // clips_per_speaker:03d}", f"{k % clips_per_speaker:05d}"


def write_dataset(
    out: str | Path, clips: int, layout: str = "prepared", seed: int = 0, seconds: float = 3.0,
    clips_per_speaker: int = 4, size: int = 96, val_fraction: float = 0.1, test_fraction: float = 0.1,
    shift: int = 0, consonants: bool = True,
) -> list[Path]:
    """Write `clips` synthetic clips under `out`; return their folders (prepared) or files (videos).

    layout "prepared": spec section 9's training layout, `<spk>/<clip>/{0..}.jpg` face crops,
    `audio.wav`, `mouth.npy` (true opening per frame) and train/val/test.txt (the last speakers'
    clips are held out, so validation and test use unseen faces and unseen audio).
    layout "videos": `<spk>/<clip>.mp4` (25 fps, the face in a 224 x 160 frame, AAC audio) and
    `<spk>/<clip>.mouth.npy`, input for `wav2lip preprocess`.
    """
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
        clip = make_clip(seed * 1_000_003 + k, seconds, shift=shift, identity=identities[speaker],
                         consonants=consonants)
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
    from ..io.video import VideoWriter

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
