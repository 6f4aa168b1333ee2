"""Audio front end: any media file -> 16 kHz mono float -> the log-mel the Wav2Lip networks were trained on.

The released checkpoints only work with the exact features the authors computed (librosa <= 0.9 with
their hparams), so the mel is rebuilt here in numpy from the spec's numbers instead of depending on a
librosa version whose defaults have since changed (centre padding switched from reflect to zeros).
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import av
import numpy as np

from ..constants import MIN_SAMPLE_RATE, SAMPLE_RATE  # Hz: everything is decoded and resampled to SAMPLE_RATE
from ..errors import Wav2LipError
from .files import atomic_output
from .video import decode_stream

# Audio front end of the published Wav2Lip (spec section 2).
N_FFT = 800  # STFT size (50 ms)
HOP = 200  # STFT hop (12.5 ms) -> 80 mel frames per second
WIN = 800  # periodic Hann window length
N_MELS = 80  # mel bands
FMIN = 55  # Hz, lowest mel filter edge
FMAX = 7600  # Hz, highest mel filter edge
PREEMPHASIS = 0.97  # y[n] = x[n] - 0.97 x[n-1]
REF_LEVEL_DB = 20  # dB subtracted after the amplitude -> dB conversion
MIN_LEVEL_DB = -100  # dB floor (amplitude 1e-5)
MAX_ABS_VALUE = 4.0  # the mel is normalised symmetrically to [-4, 4]

# Which audio goes with which video frame (spec section 3).
MEL_STEP = 16  # mel frames per window (0.2 s)
MEL_FPS = SAMPLE_RATE // HOP  # 80 mel frames per second of audio


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any FFmpeg-readable file to mono float32 at `sr` Hz.

    Channels are averaged after resampling (as librosa's `to_mono` does) rather than left to
    FFmpeg's down-mix matrix, which scales stereo by 1/sqrt(2) per channel and can leave [-1, 1].
    Packets FFmpeg cannot decode are skipped, as the ffmpeg tool does; a file yielding no samples
    at all, or whose data ends before the duration it declares (a truncated MP4), is an error.
    """
    path = Path(path)
    container, stream = _open_audio(path)
    with container:
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
        chunks: list[np.ndarray] = []
        for frame in decode_stream(container, stream):
            chunks.extend(_mono(f) for f in resampler.resample(frame))
        chunks.extend(_mono(f) for f in resampler.resample(None))
        exact = _exact_length(container, stream, sr)
    wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if wav.size == 0:
        raise Wav2LipError(f"{path}: audio stream is empty (no samples decoded)")
    if exact is not None and exact < wav.size:
        wav = wav[:exact]
    return np.clip(wav, -1.0, 1.0, out=wav)


def _open_audio(path: Path) -> tuple[av.container.InputContainer, av.AudioStream]:
    """The file opened and its first audio stream; one line for what is not a readable file with audio."""
    if not path.exists():
        raise Wav2LipError(f"{path}: no such file")
    if not path.is_file():
        raise Wav2LipError(f"{path}: not a regular file (a folder, pipe or device); give an audio or video file")
    if path.stat().st_size == 0:
        raise Wav2LipError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")  # damaged tags must not stop the sound
    except av.error.FFmpegError as exc:
        raise Wav2LipError(f"{path}: not a readable media file ({exc.strerror or exc})") from None
    if not container.streams.audio:
        container.close()
        raise Wav2LipError(f"{path}: has no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # no decoder for its codec tag (or it is damaged)
        container.close()
        raise Wav2LipError(f"{path}: its audio stream is in an unknown or damaged format that cannot be decoded")
    check_sample_rate(path, stream.codec_context.sample_rate, container)
    return container, stream


def check_sample_rate(path: Path, rate: int | None, container: av.container.InputContainer) -> None:
    """Refuse (closing `container`) a stream declaring a rate below MIN_SAMPLE_RATE."""
    if rate and rate < MIN_SAMPLE_RATE:
        container.close()
        raise Wav2LipError(f"{path}: audio at {rate} Hz; speech needs at least {MIN_SAMPLE_RATE} Hz (a damaged "
                           "header?)")


def audio_seconds(path: str | os.PathLike) -> float:
    """The length of a file's first audio stream: from its header, else counted from its packets (read,
    not decoded), so a server can bound a job before decoding it; load_audio's one line for a bad file."""
    path = Path(path)
    container, stream = _open_audio(path)
    try:
        with container:
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None and container.duration > 0:
                return container.duration / av.time_base
            end = 0.0
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + packet.duration) * packet.time_base))
            return end
    except av.error.FFmpegError as exc:
        raise Wav2LipError(f"{path}: cannot read the audio ({exc.strerror or exc})") from None


def _exact_length(container: av.container.InputContainer, stream: av.AudioStream, sr: int) -> int | None:
    """Samples at `sr` that an MP4/MOV audio track really holds, or None where the duration is a guess.

    AAC encoders pad the last frame (up to 1024 samples); MP4's sample table and edit list record the
    true length, and the padding would otherwise add silent frames at the end of a lip-synced video.
    """
    if "mp4" not in container.format.name or not stream.duration or stream.time_base is None:
        return None
    return round(stream.duration * stream.time_base * sr)


def _mono(frame: av.AudioFrame) -> np.ndarray:
    planes = frame.to_ndarray()  # (channels, samples) for planar float
    return planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0].astype(np.float32)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default, not HTK)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular Slaney filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL_BASIS = mel_filters()


def _stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, frames): periodic Hann, centred frames with REFLECT padding (librosa <= 0.9).

    A waveform shorter than the padding is reflected back and forth, as np.pad (and so librosa) does, so
    even a few samples give their 1 + len // HOP frames and callers can say the audio is too short."""
    pad = N_FFT // 2
    y = np.pad(y, pad, mode="reflect")
    n_frames = 1 + (y.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        y, shape=(n_frames, N_FFT), strides=(y.strides[0] * HOP, y.strides[0]), writeable=False
    )
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)).astype(y.dtype)
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """The normalised log-mel (80, T) of a 16 kHz mono waveform, T = 1 + len(wav) // 200 (spec section 2)."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"melspectrogram expects a mono 1-D waveform, got shape {wav.shape}")
    if wav.size == 0:
        raise ValueError("melspectrogram of an empty waveform")
    emphasised = np.empty_like(wav)
    emphasised[0] = wav[0]
    emphasised[1:] = wav[1:] - PREEMPHASIS * wav[:-1]
    return _normalised_log_mel(_stft_magnitude(emphasised))


def _normalised_log_mel(magnitude: np.ndarray) -> np.ndarray:
    """|STFT| columns -> the normalised float32 log-mel (one definition for the whole-signal and streaming paths)."""
    mel = _MEL_BASIS.astype(np.float64) @ magnitude
    db = 20 * np.log10(np.maximum(10 ** (MIN_LEVEL_DB / 20), mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def _check_mel_length(n_mel: int) -> None:
    if n_mel < MEL_STEP:
        raise ValueError(f"{n_mel} mel frames are fewer than one {MEL_STEP}-frame window (0.2 s of audio)")


def reference_chunk_starts(n_mel: int, fps: float) -> list[int]:
    """Mel window starts of the reference inference: frames i = 0, 1, ... until a window would run
    past the end, which gets the last 16 mel frames instead and ends the video (spec section 3)."""
    _check_mel_length(n_mel)
    step = 80.0 / fps
    starts = []
    i = 0
    while True:
        start = int(i * step)
        if start + MEL_STEP > n_mel:
            starts.append(n_mel - MEL_STEP)
            return starts
        starts.append(start)
        i += 1


def frame_count_for_audio(n_samples: int, fps: float, sr: int = SAMPLE_RATE) -> int:
    """Video frames that cover the WHOLE audio, ceil(duration * fps); never fewer than the reference makes.

    The reference stops at the last full mel window and so drops up to 0.2 s of speech under a
    muxed track that keeps playing; covering the whole audio keeps the lips moving to the end.
    """
    n_mel = 1 + n_samples // HOP
    exact = n_samples * fps / sr
    count = int(np.ceil(exact - 1e-9))
    return max(count, len(reference_chunk_starts(n_mel, fps)))


def mel_start(frame: int, fps: float = 25) -> int:
    """First mel frame of the 0.2 s window that goes with video frame `frame` (spec section 3), not
    clamped to the audio: training and sync scoring skip the windows that run outside it. The default
    rate is the training and evaluation video's (spec section 8)."""
    return int(MEL_FPS * frame / fps)


def mel_window_start(i: int, fps: float, n_mel: int) -> int:
    """The mel window of video frame `i`: the reference start where the reference makes the frame, the
    final window (as the reference's last frame) for frames beyond it."""
    _check_mel_length(n_mel)
    return min(int(i * (80.0 / fps)), n_mel - MEL_STEP)


def mel_windows(mel: np.ndarray, starts: list[int] | np.ndarray) -> np.ndarray:
    """Stack the (80, 16) windows at `starts` into the generator's (N, 1, 80, 16) float32 input."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size and (starts.min() < 0 or starts.max() + MEL_STEP > mel.shape[1]):
        raise ValueError(f"mel window starts must lie in [0, {mel.shape[1] - MEL_STEP}]")
    index = starts[:, None] + np.arange(MEL_STEP)[None, :]
    return np.ascontiguousarray(mel[:, index].transpose(1, 0, 2)[:, None], dtype=np.float32)


class MelStream:
    """`melspectrogram` of a waveform that arrives in pieces: `push` returns the columns that no later
    sample can change, `finish` the rest, and all of them together equal `melspectrogram` of the whole.

    Column c is the STFT frame centred on sample c * HOP (samples c * HOP - 400 .. c * HOP + 399 of the
    pre-emphasised signal, reflected at the start), so it is final once sample c * HOP + 399 has arrived;
    only the ends need the reflection, so only the last N_FFT samples are kept. Nothing is recomputed.
    """

    def __init__(self) -> None:
        self.samples = 0  # samples pushed so far
        self.columns = 0  # columns returned so far
        self._previous = 0.0  # the last raw sample, for the pre-emphasis of the next piece
        self._kept = np.zeros(0, np.float64)  # pre-emphasised samples from index self._base on
        self._base = 0

    def copy(self) -> MelStream:
        """An independent copy: push a hypothetical continuation (silence) without touching this one."""
        other = MelStream.__new__(MelStream)
        other.__dict__.update(self.__dict__)
        other._kept = self._kept.copy()
        return other

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono samples; return the (80, k) columns that became final (k may be 0)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size:
            emphasised = np.empty_like(x)
            emphasised[0] = x[0] - PREEMPHASIS * self._previous if self.samples else x[0]
            emphasised[1:] = x[1:] - PREEMPHASIS * x[:-1]
            self._previous = float(x[-1])
            self._kept = np.concatenate((self._kept, emphasised))
            self.samples += x.size
        pad = N_FFT // 2
        if self.samples <= pad:  # column 0 reflects samples 1..400 about sample 0
            return np.zeros((N_MELS, 0), np.float32)
        last = (self.samples - pad) // HOP  # column c is final when c * HOP + pad <= samples
        return self._emit(last + 1, end=None)

    def finish(self) -> np.ndarray:
        """The remaining columns, the end reflected as `melspectrogram` does (1 + samples // HOP in all)."""
        if self.samples <= N_FFT // 2:
            raise ValueError(f"waveform of {self.samples} samples is too short for a {N_FFT}-point STFT")
        return self._emit(1 + self.samples // HOP, end=self.samples)

    def _emit(self, stop: int, end: int | None) -> np.ndarray:
        """Columns self.columns .. stop - 1; `end`: the signal's length, reflected beyond (None: not known)."""
        first, pad = self.columns, N_FFT // 2
        if stop <= first:
            return np.zeros((N_MELS, 0), np.float32)
        index = np.arange(first * HOP - pad, (stop - 1) * HOP + pad)
        index = np.abs(index)  # reflection at the start: sample -m is sample m
        if end is not None:
            index = np.where(index >= end, 2 * (end - 1) - index, index)
        segment = self._kept[index - self._base]
        frames = np.lib.stride_tricks.as_strided(
            segment, shape=(stop - first, N_FFT), strides=(segment.strides[0] * HOP, segment.strides[0]),
            writeable=False,
        )
        window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)).astype(np.float64)
        columns = _normalised_log_mel(np.abs(np.fft.rfft(frames * window, axis=1)).T)
        self.columns = stop
        keep_from = max(0, min(stop * HOP - pad, self.samples - pad - 1))  # the next column, or the end's mirror
        self._kept = self._kept[keep_from - self._base:]
        self._base = keep_from
        return columns


def write_wav(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """16-bit mono WAV, written atomically; returns its path."""
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    with atomic_output(path) as tmp:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(sr)
            f.writeframes(pcm.tobytes())
    return Path(path)
