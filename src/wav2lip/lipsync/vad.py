"""Voice activity: where the audio holds speech, so the mouth can stay still where it does not.

Our own rule, chosen by measurement against the WebRTC and Silero detectors (benchmarks/bench_vad.py:
on the shared speech with planted pauses it has the lowest frame error clean, in white noise and in
music, with no dependency). Per 10 ms frame:

1. band SNR: each FFT bin of the speech band (200-4000 Hz) in dB above that bin's own noise, its 20th
   percentile over the whole recording, averaged over the band. Speech lights up its harmonics and
   formants far above any steady or slowly varying background (noise, hum, music's sustained notes);
2. threshold: 40% of the way from the recording's pause level (10th percentile) to its loud speech
   (95th), so the rule adapts to each recording's noise without a fixed dB figure;
3. hold: bursts shorter than `min_speech` count as silence, then gaps shorter than `min_pause` inside
   speech as speech, and speech is widened by `pad` on both sides (lips move before the sound).

Everything runs on the whole waveform at once (vectorised), a few ms per second of audio.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..io.audio import SAMPLE_RATE

HOP = 160  # samples per decision (10 ms)
WIN = 400  # analysis window (25 ms)
N_FFT = 512
BAND = (200.0, 4000.0)  # Hz: where speech energy lives
FRAME_RATE = SAMPLE_RATE // HOP  # decisions per second
CHUNK = 6000  # frames of spectrum made at once (one minute)
_WINDOW = np.hanning(WIN).astype(np.float32)


@dataclass(frozen=True)
class VadOptions:
    """Thresholds of the rule; the defaults were tuned on the shared speech (benchmarks/bench_vad.py)."""

    noise_percentile: float = 20.0  # per frequency bin, this percentile of its power is the noise
    threshold: float = 0.4  # speech: band SNR above this fraction of the way from pause to loud speech
    min_snr: float = 5.5  # dB: steady noise measured against itself sits at 4.9 (median), 5.4 (95th percentile)
    min_pause: float = 0.20  # s: shorter gaps inside speech are speech
    min_speech: float = 0.05  # s: shorter bursts are not speech
    pad: float = 0.08  # s: speech stretches widened by this much on each side


def _frames(wav: np.ndarray) -> np.ndarray:
    """(T, WIN) Hann-windowed frames every HOP samples, T = ceil(len / HOP); a strided view, the
    window applied per chunk by the caller."""
    n = max(1, -(-wav.size // HOP))
    padded = np.concatenate([np.zeros(WIN // 2, np.float32), wav.astype(np.float32),
                             np.zeros(WIN // 2 + n * HOP - wav.size + WIN, np.float32)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP][:n]
    return frames


def run_lengths(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, stop, value) runs of a boolean array."""
    if mask.size == 0:
        return []
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [mask.size]])
    return [(int(a), int(b), bool(mask[a])) for a, b in zip(starts, stops)]


def _fill_runs(mask: np.ndarray, value: bool, shorter_than: int) -> np.ndarray:
    """Runs of `value` shorter than `shorter_than` frames flipped (runs touching an end are kept)."""
    out = mask.copy()
    for start, stop, v in run_lengths(mask):
        if v == value and stop - start < shorter_than and start > 0 and stop < mask.size:
            out[start:stop] = not value
    return out


def _band_power(wav: np.ndarray, every: int = 1) -> Iterator[np.ndarray]:
    """(t, bins) float32 power of the speech band, `CHUNK` frames at a time (every `every`-th frame)."""
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    band = (freqs >= BAND[0]) & (freqs <= BAND[1])
    frames = _frames(wav)
    for start in range(0, frames.shape[0], CHUNK):
        chunk = frames[start:start + CHUNK:every] * _WINDOW
        yield (np.abs(np.fft.rfft(chunk, N_FFT, axis=1)[:, band]) ** 2 + 1e-12).astype(np.float32)


def band_snr(wav: np.ndarray, options: VadOptions | None = None) -> np.ndarray:
    """(T,) per 10 ms: the mean over the speech band's FFT bins of each bin's level in dB above that
    bin's noise (its `noise_percentile` over the whole recording), negatives counted as 0.

    The noise is estimated on every 4th frame and the spectrum is made a minute at a time, so an
    hour of audio needs tens of MB, not the gigabyte of its whole spectrogram."""
    opts = options or VadOptions()
    noise = np.percentile(np.concatenate(list(_band_power(wav, every=4))), opts.noise_percentile, axis=0)
    snr = np.concatenate([np.clip(10 * np.log10(p / noise[None, :]), 0.0, None).mean(axis=1)
                          for p in _band_power(wav)])
    return np.convolve(snr, np.ones(3) / 3, mode="same")  # 30 ms: less frame-to-frame variance


def speech_activity(wav: np.ndarray, options: VadOptions | None = None) -> np.ndarray:
    """(T,) bool per 10 ms of 16 kHz mono audio: True where someone speaks."""
    opts = options or VadOptions()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size == 0:
        return np.zeros(0, bool)
    snr = band_snr(wav, opts)
    floor, top = np.percentile(snr, 10), np.percentile(snr, 95)
    return hold((snr > floor + opts.threshold * (top - floor)) & (snr > opts.min_snr), opts)


def hold(raw: np.ndarray, options: VadOptions | None = None) -> np.ndarray:
    """Raw per-frame decisions made to hold: short bursts dropped (clicks, noise peaks), then short gaps
    bridged (between syllables), then speech padded."""
    opts = options or VadOptions()
    speech = _fill_runs(np.asarray(raw, bool), True, int(round(opts.min_speech * FRAME_RATE)))
    speech = _fill_runs(speech, False, int(round(opts.min_pause * FRAME_RATE)))
    pad = int(round(opts.pad * FRAME_RATE))
    if pad:
        speech = np.convolve(speech.astype(np.int32), np.ones(2 * pad + 1, np.int32), mode="same") > 0
    return speech


def activity_per_window(activity: np.ndarray, starts: np.ndarray, length: float) -> np.ndarray:
    """(N,) bool: does any 10 ms decision in [start, start + length) seconds say speech?"""
    starts = np.asarray(starts, dtype=np.float64)
    a = np.clip(np.floor(starts * FRAME_RATE).astype(np.int64), 0, activity.size)
    b = np.clip(np.ceil((starts + length) * FRAME_RATE).astype(np.int64), 0, activity.size)
    sums = np.concatenate([[0], np.cumsum(activity, dtype=np.int64)])
    return sums[b] - sums[a] > 0
