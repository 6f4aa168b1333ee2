"""Live media in and out: audio files played in real-time chunks, raw PCM from a pipe, and `LiveOutput`,
which muxes frames as they come into a file (written atomically) or a network stream."""
from __future__ import annotations

import contextlib
import itertools
import os
import time
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

from ..constants import DEFAULT_CRF, DEFAULT_PRESET, STREAM_CONTAINERS
from ..errors import Wav2LipError
from . import video as video_io
from .audio import SAMPLE_RATE, _mono, _open_audio
from .files import atomic_output, check_output


def file_chunks(path: str | os.PathLike, chunk: float = 0.02, realtime: bool = True) -> Iterator[np.ndarray]:
    """The audio of a media file as 16 kHz mono chunks of `chunk` seconds (decoded as `load_audio`
    decodes), each handed over when its last sample would have been heard if `realtime`. The file is
    checked and opened now, so a bad one fails here rather than on the stream's thread."""
    path = Path(path)
    container, _ = _open_audio(path)  # load_audio's checks: a file, not empty, readable, audio at a speech rate
    return _play(path, container, max(1, round(chunk * SAMPLE_RATE)), realtime)


def _play(path: Path, container: av.container.InputContainer, size: int, realtime: bool) -> Iterator[np.ndarray]:
    with container:
        resampler = av.AudioResampler(format="fltp", layout=None, rate=SAMPLE_RATE)
        frames = itertools.chain(video_io.decode_stream(container, container.streams.audio[0]), [None])
        pending = np.zeros(0, np.float32)
        sent = 0
        start = time.perf_counter()
        for frame in frames:
            parts = [_mono(f) for f in resampler.resample(frame)]
            pending = np.concatenate([pending, *parts]) if parts else pending
            while pending.size >= size or (frame is None and pending.size):
                piece, pending = pending[:size], pending[size:]
                sent += piece.size
                if realtime:
                    time.sleep(max(0.0, start + sent / SAMPLE_RATE - time.perf_counter()))
                yield np.clip(piece, -1.0, 1.0)
        if sent == 0:
            raise Wav2LipError(f"{path}: audio stream is empty (no samples decoded)")


PCM_TYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # options.PCM_FORMATS -> sample type


def pcm_chunks(fd: int, fmt: str = "s16le", block: int = 4096) -> Iterator[np.ndarray]:
    """Raw mono PCM from a file descriptor (a pipe: whatever has arrived, up to `block` bytes at a time)
    as float32 chunks; s16le is scaled to [-1, 1)."""
    if fmt not in PCM_TYPES:
        raise Wav2LipError(f"unknown PCM format {fmt!r} (one of {', '.join(PCM_TYPES)})")
    dtype = PCM_TYPES[fmt]
    rest = b""
    while True:
        data = os.read(fd, block)
        if not data:
            return
        data = rest + data
        usable = len(data) - len(data) % dtype.itemsize
        rest = data[usable:]
        if usable:
            x = np.frombuffer(data[:usable], dtype=dtype).astype(np.float32)
            yield x / 32768.0 if dtype.kind == "i" else np.nan_to_num(x)


# PyAV container formats for network targets, by URL scheme.
NETWORK_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtp": "rtp_mpegts", "rtmp": "flv",
                   "rtmps": "flv", "rtsp": "rtsp"}


def is_network_target(target: str | os.PathLike) -> bool:
    return str(target).split("://", 1)[0] in NETWORK_FORMATS and "://" in str(target)


def check_stream_output(target: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Fail before any work when `LiveOutput` cannot write `target`: a network URL it knows, or a file
    path that is none of the inputs, in a writable folder, with an extension it has a container for."""
    if is_network_target(target):
        return
    path = check_output(target, inputs)
    if path.suffix.lower() not in STREAM_CONTAINERS:
        raise Wav2LipError(f"{path}: cannot stream video into {path.suffix or 'a file without extension'}; "
                           f"name it {', '.join(STREAM_CONTAINERS)}, or give a network URL")


class LiveOutput:
    """Frames with their audio into a video file (H.264 + AAC, written atomically) or a network stream PyAV can
    write (MPEG-TS over udp/srt/tcp, FLV over rtmp, rtsp). A network stream is paced: frame k is not sent
    before k / fps after the first, so a source faster than real time does not flood the receiver."""

    def __init__(self, target: str | os.PathLike, fps: float, width: int, height: int,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> None:
        self.target, self.fps = str(target), fps
        self.network = is_network_target(target)
        video_io.check_h264_size(target, width, height)
        self.width, self.height = video_io.encoded_size(width, height)
        self.crf, self.preset = crf, preset
        self.frames = 0
        self._atomic = None
        self._container = None
        self._start = 0.0
        self._samples = 0

    def __enter__(self) -> LiveOutput:
        if self.network:
            fmt = NETWORK_FORMATS[self.target.split("://", 1)[0]]
            try:
                self._container = av.open(self.target, "w", format=fmt)
            except av.FFmpegError as exc:
                raise Wav2LipError(f"{self.target}: cannot open the stream ({exc.strerror or exc})") from None
        else:
            self._atomic = atomic_output(self.target)
            tmp = self._atomic.__enter__()
            fmt = STREAM_CONTAINERS[Path(self.target).suffix.lower()]
            self._container = av.open(str(tmp), "w", format=fmt)
        options = {"crf": str(self.crf), "preset": self.preset}
        if self.network:
            options["tune"] = "zerolatency"
        self._video = self._container.add_stream("libx264", rate=video_io._exact_rate(self.fps), options=options)
        self._video.pix_fmt = "yuv420p"
        self._video.width, self._video.height = self.width, self.height
        self._audio = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        self._audio.format = "fltp"
        return self

    def write(self, image: np.ndarray, audio: np.ndarray) -> None:
        """One BGR frame and the 16 kHz samples that play with it."""
        pad_h, pad_w = self.height - image.shape[0], self.width - image.shape[1]
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self.network:
            if self.frames == 0:
                self._start = time.perf_counter()
            time.sleep(max(0.0, self._start + self.frames / self.fps - time.perf_counter()))
        video = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        video.pts, video.time_base = self.frames, 1 / video_io._exact_rate(self.fps)
        self._container.mux(self._video.encode(video))
        self.frames += 1
        if audio.size:
            sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32)[None], format="fltp",
                                               layout="mono")
            sound.sample_rate, sound.pts = SAMPLE_RATE, self._samples
            self._samples += audio.size
            self._container.mux(self._audio.encode(sound))

    def __exit__(self, exc_type, exc, tb) -> None:
        error = exc
        if error is None and self.frames == 0:
            error = Wav2LipError(f"{self.target}: no frames were made")
        try:
            if error is None:
                self._container.mux(self._video.encode(None))
                self._container.mux(self._audio.encode(None))
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the temporary file is gone
            error = e
        finally:
            if self._container is not None:
                with contextlib.suppress(av.FFmpegError):
                    self._container.close()
        if self._atomic is not None:
            if error is None:
                self._atomic.__exit__(None, None, None)
            else:
                self._atomic.__exit__(type(error), error, error.__traceback__)
        if error is not None and error is not exc:
            raise error
