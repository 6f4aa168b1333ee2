"""Voice activity: where the audio holds speech, so the mouth can stay still where it does not.

One detector for files and live streams. It is causal: the decision for a 10 ms step depends only on
the audio up to that step's analysis window, so pushing a recording whole or in 20 ms chunks gives the
same decisions, and live lip-sync needs no more look-ahead than the generator's own mel window.

Our own rule, chosen by measurement against the WebRTC and Silero detectors (benchmarks/bench_vad.py:
on the shared speech with planted pauses, clean, in white noise and in music, no dependency). Per step:

1. band SNR: each FFT bin of the speech band (200-4000 Hz) in dB above that bin's own noise, averaged
   over the band. Speech lights up its harmonics and formants far above any steady or slowly varying
   background (noise, hum, music's sustained notes). A bin's noise is the 20th percentile of its power
   over the last 30 s heard (renewed once a second; every step, over the steps so far, in the first),
   digital silence (below -80 dBFS) left out;
2. threshold: 40% of the way from the pause level (10th percentile of the SNR over the last 30 s) to
   loud speech (95th), so the rule adapts to each recording's noise without a fixed dB figure (in the
   first second, only the fixed `min_snr`);
3. hold: a burst counts once it has lasted `min_speech`, and speech goes on `hangover` after the last
   one (short gaps between words stay speech). The onset needs no padding: a video frame's mel window
   looks 0.2 s ahead, so its decision (`window_activity`) sees speech before it is heard.

Vectorised per second of audio: a few ms per second.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..io.audio import SAMPLE_RATE

HOP = 160  # samples per decision (10 ms)
WIN = 400  # analysis window (25 ms)
N_FFT = 512
BAND = (200.0, 4000.0)  # Hz: where speech energy lives
FRAME_RATE = SAMPLE_RATE // HOP  # decisions per second
BLOCK = FRAME_RATE  # decisions per renewal of the noise and level statistics (1 s)
HISTORY = 30 * FRAME_RATE  # decisions the statistics look back over (30 s)
CHUNK = 6000  # steps of spectrum made at once (a minute)
NOISE_EVERY = 4  # the noise percentile is taken over every 4th step's spectrum
NOISE_FLOOR_DB = -80.0  # dBFS: quieter steps are digital silence, and no bin's noise is taken as quieter
_WINDOW = np.hanning(WIN).astype(np.float32)
_FLOOR = np.float32(10 ** (NOISE_FLOOR_DB / 10) * float((_WINDOW.astype(np.float64) ** 2).sum()))  # white noise's bin power
_FREQS = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
_BINS = (_FREQS >= BAND[0]) & (_FREQS <= BAND[1])


@dataclass(frozen=True)
class VadOptions:
    """Thresholds of the rule; the defaults were tuned on the shared speech (benchmarks/bench_vad.py)."""

    noise_percentile: float = 20.0  # per frequency bin, this percentile of its power is the noise
    threshold: float = 0.4  # speech: band SNR above this fraction of the way from pause to loud speech
    min_snr: float = 5.5  # dB: steady noise measured against itself sits at 4.9 (median), 5.4 (95th percentile)
    min_speech: float = 0.05  # s: a burst counts as speech once it has lasted this long
    hangover: float = 0.28  # s: speech goes on this long after its last burst (gaps between words)


def _power(frames: np.ndarray) -> np.ndarray:
    """(t, WIN) frames -> (t, bins) float32 power of the speech band."""
    spectrum = np.fft.rfft(frames * _WINDOW, N_FFT, axis=1)[:, _BINS]
    return (np.abs(spectrum) ** 2 + 1e-12).astype(np.float32)


def _band_power(wav: np.ndarray) -> Iterator[np.ndarray]:
    """(t, bins) power of the speech band of a whole recording, a minute at a time (the detector's
    steps: frame i centred on sample i * HOP)."""
    n = max(1, -(-wav.size // HOP))
    padded = np.concatenate([np.zeros(WIN // 2, np.float32), wav.astype(np.float32),
                             np.zeros(WIN // 2 + n * HOP - wav.size + WIN, np.float32)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP][:n]
    for start in range(0, n, CHUNK):
        yield _power(frames[start:start + CHUNK])


class _Hold:
    """Raw decisions -> held ones, causally: a run of raw speech counts once it is `min_speech` long,
    and speech lasts `hangover` after the last step of such a run."""

    def __init__(self, options: VadOptions) -> None:
        self.min_run = max(1, int(round(options.min_speech * FRAME_RATE)))
        self.hangover = int(round(options.hangover * FRAME_RATE))
        self.run = 0  # raw speech steps in a row so far
        self.since = self.hangover + 1  # steps since the last counted burst step

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        out = np.empty(raw.size, bool)
        for i, value in enumerate(raw.tolist()):
            self.run = self.run + 1 if value else 0
            self.since = 0 if self.run >= self.min_run else self.since + 1
            out[i] = self.since <= self.hangover
        return out


def hold(raw: np.ndarray, options: VadOptions | None = None) -> np.ndarray:
    """Raw per-step decisions (any detector's) made to hold by the detector's own causal rule."""
    return _Hold(options or VadOptions())(np.asarray(raw, bool))


class SpeechDetector:
    """Push audio (16 kHz mono float) in any pieces, read the held decisions, one per 10 ms step, True
    where someone speaks: `activity` (all of them) or `decisions(a, b)`. `finish()` ends the recording
    (zeros after it, as a file's last steps see). `copy()` lets a caller ask what silence from now on
    would give without changing this one; `forget(step)` lets a stream that runs for hours drop the
    decisions it no longer asks about."""

    def __init__(self, options: VadOptions | None = None) -> None:
        self.options = options or VadOptions()
        self._hold = _Hold(self.options)
        self._pending = np.zeros(WIN // 2, np.float32)  # samples from step `count`'s first on (left pad first)
        self._heard = 0  # samples pushed
        self._finished = False
        self._rows = np.zeros((0, int(_BINS.sum())), np.float32)  # the power of the last HISTORY steps
        self._rows_first = 0  # step of the first kept row
        self._snr_tail = np.zeros(2, np.float32)  # raw SNR of the two steps before `count` (smoothing)
        self._warm = np.zeros((0, int(_BINS.sum())), np.float32)  # every step's power in the first second
        self._noise = np.full(int(_BINS.sum()), _FLOOR, np.float32)
        self._levels = (0.0, 0.0)  # pause level, loud speech level (SNR dB)
        self._decided = np.zeros(0, bool)  # held decisions from step `_first` on
        self._first = 0

    @property
    def count(self) -> int:
        """Steps decided so far."""
        return self._first + self._decided.size

    @property
    def activity(self) -> np.ndarray:
        """Every decision so far (from step 0: only while nothing was forgotten)."""
        if self._first:
            raise ValueError(f"decisions before step {self._first} were forgotten")
        return self._decided

    def decisions(self, a: int, b: int) -> np.ndarray:
        """The decisions of steps [a, b) made so far (a must not be forgotten)."""
        if a < self._first:
            raise ValueError(f"step {a} was forgotten (kept from {self._first})")
        return self._decided[a - self._first:max(a, b) - self._first]

    def forget(self, step: int) -> None:
        """Drop the decisions before `step`."""
        drop = min(step, self.count) - self._first
        if drop > 0:
            self._decided = self._decided[drop:]
            self._first += drop

    def copy(self) -> SpeechDetector:
        other = copy.copy(self)  # the arrays are replaced, never changed in place: sharing them is safe
        other._hold = copy.copy(self._hold)
        return other

    def push(self, samples: np.ndarray) -> None:
        if self._finished:
            raise ValueError("the recording has finished")
        samples = np.asarray(samples, np.float32).ravel()
        self._heard += samples.size
        self._pending = np.concatenate((self._pending, samples))
        self._decide(max(0, (self._pending.size - WIN) // HOP + 1))

    def finish(self) -> None:
        """No more audio: decide the last steps, ceil(samples / HOP) in all, with zeros after the end."""
        if self._finished:
            return
        self._finished = True
        total = -(-self._heard // HOP)
        missing = total - self.count
        if missing > 0:
            need = (missing - 1) * HOP + WIN
            self._pending = np.concatenate((self._pending, np.zeros(max(0, need - self._pending.size), np.float32)))
            self._decide(missing)

    def _decide(self, steps: int) -> None:
        """The next `steps` decisions, a minute of spectrum at a time (an hour pushed at once needs tens
        of MB, not the gigabytes of its whole spectrogram)."""
        while steps > 0:
            chunk = min(steps, CHUNK)
            frames = np.lib.stride_tricks.sliding_window_view(self._pending[:(chunk - 1) * HOP + WIN], WIN)[::HOP]
            power = _power(frames)
            self._pending = self._pending[chunk * HOP:]
            raw, done = [], 0
            while done < chunk:
                step = self.count + done
                if step < BLOCK:  # the first second: the noise renewed every step, from the steps so far
                    length = 1
                    self._warm = np.concatenate((self._warm, power[done:done + 1]))
                    self._noise = self._noise_of(self._warm)
                else:
                    length = min(chunk - done, BLOCK - step % BLOCK)
                    if step % BLOCK == 0:
                        self._renew()
                raw.append(self._segment(step, power[done:done + length]))
                done += length
            self._decided = np.concatenate((self._decided, self._hold(np.concatenate(raw))))
            steps -= chunk

    def _renew(self) -> None:
        """Noise and levels from the steps before this one (the last HISTORY of them), the levels from
        their SNR against the new noise so that both measure the same thing."""
        self._warm = self._warm[:0]
        self._noise = self._noise_of(self._rows[(self._rows_first + np.arange(len(self._rows))) % NOISE_EVERY == 0])
        snr = self._smooth(np.zeros(2, np.float32), self._band_snr(self._rows))
        self._levels = (float(np.percentile(snr, 10)), float(np.percentile(snr, 95)))
        self._snr_tail = self._band_snr(self._rows[-2:])

    def _noise_of(self, power: np.ndarray) -> np.ndarray:
        """Each bin's noise: its percentile over the steps that are not digital silence (an edit, not the
        recording's background: a silent lead-in must not make the room noise after it speech)."""
        heard = power[power.mean(axis=1) > _FLOOR]
        if not heard.shape[0]:
            return np.full(power.shape[1], _FLOOR, np.float32)
        return np.maximum(np.percentile(heard, self.options.noise_percentile, axis=0), _FLOOR).astype(np.float32)

    def _band_snr(self, power: np.ndarray) -> np.ndarray:
        return np.clip(10 * np.log10(power / self._noise[None, :]), 0.0, None).mean(axis=1).astype(np.float32)

    @staticmethod
    def _smooth(tail: np.ndarray, snr: np.ndarray) -> np.ndarray:
        """Each step's SNR averaged with the two before it (30 ms: less step-to-step variance)."""
        joined = np.concatenate((tail, snr))
        return (joined[2:] + joined[1:-1] + joined[:-2]) / np.float32(3)

    def _segment(self, step: int, power: np.ndarray) -> np.ndarray:
        """Raw decisions for the steps from `step` on, under the current statistics; the history grows."""
        opts = self.options
        raw_snr = self._band_snr(power)
        snr = self._smooth(self._snr_tail, raw_snr)
        self._snr_tail = np.concatenate((self._snr_tail, raw_snr))[-2:]
        if step < BLOCK:
            decided = snr > opts.min_snr
        else:
            floor, top = self._levels
            decided = (snr > floor + opts.threshold * (top - floor)) & (snr > opts.min_snr)
        self._rows = np.concatenate((self._rows, power))
        drop = len(self._rows) - HISTORY
        if drop > 0:
            self._rows = self._rows[drop:]
            self._rows_first += drop
        return decided


def speech_activity(wav: np.ndarray, options: VadOptions | None = None) -> np.ndarray:
    """(T,) bool per 10 ms of a whole 16 kHz mono recording, T = ceil(samples / HOP): True where
    someone speaks (the streaming detector, pushed the whole recording at once)."""
    detector = SpeechDetector(options)
    detector.push(np.asarray(wav, dtype=np.float32))
    detector.finish()
    return detector.activity


def window_steps(start: int, mel_hop: int, mel_step: int) -> tuple[int, int]:
    """The detector's steps [a, b) that overlap a mel window of `mel_step` frames starting at mel frame
    `start` (hop `mel_hop` samples): the audio the generator hears for that video frame."""
    return start * mel_hop // HOP, -(-(start + mel_step) * mel_hop // HOP)
