"""Video in and out with PyAV: constant-rate decoding by timestamp, stills, rotation, H.264/FFV1 with audio.

Decoding never trusts a container's nominal frame rate: frames are picked by their presentation time, so
variable-frame-rate phone videos stay in sync with their audio. Encoding streams frames straight into the
encoder and interleaves the audio as it goes, so memory does not grow with the length of the video.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Literal

import av
import cv2
import numpy as np
from av.stream import Disposition
from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc

from ..constants import DEFAULT_CRF, DEFAULT_PRESET, LOOP_MODES, video_container
from ..errors import Wav2LipError
from .files import atomic_output

log = logging.getLogger(__name__)

LoopMode = Literal["repeat", "pingpong", "none"]

STILL_FPS = 25.0  # the reference's default --fps for a still image (spec section 5)


# Rates that cameras and editors actually use; an average within 0.05% of one of them is that rate.
_STANDARD_RATES = tuple(
    Fraction(r)
    for r in ("8", "10", "12", "12.5", "15", "24000/1001", "24", "25", "30000/1001", "30", "48", "50",
              "60000/1001", "60", "90", "100", "120000/1001", "120", "240")
)
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_REVERSE_BLOCK_BYTES = 256 * 2**20  # memory for one block of frames played backwards (pingpong)
_AVCOL_SPC_SMPTE170M = 6  # FFmpeg's AVColorSpace for BT.601 (PyAV's Colorspace enum is swscale's, not this)
_AUDIO_LEAD_S = 0.5  # audio is muxed this far ahead of the video so the two stay interleaved
# Largest frame accepted (twice 8K UHD's 33 megapixels): FFmpeg decodes one frame just to open a file,
# so a 775 KB 16000x16000 PNG would cost gigabytes before any check; headers are read first instead.
MAX_PIXELS = 64 * 2**20
H264_MAX_SIDE = 16384  # pixels: x264 refuses a wider or taller frame (found by fuzzing: a 96x65535 GIF)
# Data may end this much (or 0.5%) before the declared duration (AAC priming; videos: at most 3 frames).
_TRUNCATION_TOLERANCE_S = Fraction(1, 10)
# File extensions taken for videos when a whole folder is searched (preprocess, evaluate --dir).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".flv", ".m4v")


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` learns about a file. Sizes are display sizes (after rotation metadata)."""

    width: int | None
    height: int | None
    fps: float | None  # the constant rate `open_source` decodes at; None for stills and audio-only files
    duration: float | None  # seconds
    n_frames: int  # frames at `fps` (1 for a still, 0 without video); an estimate from the container
    rotation: int  # degrees clockwise applied to show the frames upright: 0, 90, 180 or 270
    has_video: bool
    has_audio: bool
    is_still: bool
    video_codec: str | None = None
    audio_codec: str | None = None


def _seconds(value: int | None, time_base: Fraction | None) -> Fraction | None:
    return None if value is None or time_base is None else value * time_base


def constant_rate(average: Fraction | float | None) -> Fraction:
    """Output rate for a stream's average rate: a standard rate when within 0.05% (29.97 stays 30000/1001),
    else the nearest integer (a phone's 29.87 fps average becomes 30)."""
    if not average or average <= 0:
        return Fraction(25)
    average = Fraction(average)
    for rate in _STANDARD_RATES:
        if abs(average / rate - 1) < Fraction(5, 10000):
            return rate
    if average >= 2:
        return Fraction(round(average))
    # Never 0: a damaged header's 1e-6 fps rounds to 0/1 here, and every frame time divides by the rate.
    return max(average.limit_denominator(100), Fraction(1, 100))


def _exact_rate(fps: float | Fraction) -> Fraction:
    """A float rate as the fraction it stands for (29.97002997 -> 30000/1001)."""
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return rate


def _rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Clockwise degrees that show a frame upright, from its display matrix or the old `rotate` tag."""
    counterclockwise = int(round(getattr(frame, "rotation", 0) or 0))
    if counterclockwise:
        return (-counterclockwise) % 360 // 90 * 90
    tag = next((value for key, value in stream.metadata.items() if key.lower() == "rotate"), None)
    try:
        return int(float(tag)) % 360 // 90 * 90 if tag else 0
    except ValueError:
        return 0


def _rotate(image: np.ndarray, clockwise: int) -> np.ndarray:
    if clockwise == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(clockwise // 90)))


def _check_file(path: Path) -> None:
    """Refuse what FFmpeg would hang on or misread: a FIFO, a device, a socket, a folder."""
    if not path.exists():
        raise Wav2LipError(f"{path}: file not found")
    if path.is_dir():
        raise Wav2LipError(f"{path}: is a folder, not a media file")
    if not path.is_file():
        raise Wav2LipError(f"{path}: not a regular file (a pipe, device or socket); give a media file")


def _header_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the header of a PNG, JPEG, GIF, BMP or WebP file, without decoding it."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", head[6:10])
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        if head[12:16] == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if head[12:16] == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if head[12:16] == b"VP8 ":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
    if head[:2] == b"\xff\xd8":  # JPEG: walk the markers to the first start-of-frame
        i = 2
        while i + 9 < len(head) and head[i] == 0xFF:
            marker, length = head[i + 1], int.from_bytes(head[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", head[i + 5:i + 9])
                return width, height
            i += 2 + length
    return None


def _check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise Wav2LipError(f"{path}: {width}x{height} frames are too large (more than {MAX_PIXELS // 2**20} "
                           "megapixels); scale the image or video down first")


def _open_container(path: Path) -> av.container.InputContainer:
    """Open for reading, after refusing an image whose header declares absurd dimensions."""
    size = _header_size(path) if path.is_file() else None
    if size is not None:
        _check_size(path, *size)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise Wav2LipError(
            f"{path}: not a readable video, image or audio file, or truncated ({e.strerror or e})") from None
    try:
        for stream in (*container.streams.video, *container.streams.audio):
            context = stream.codec_context
            if context is None:  # FFmpeg knows no decoder for the stream's codec tag (or it is damaged)
                raise Wav2LipError(f"{path}: {stream.type} stream {stream.index} is in an unknown or damaged "
                                   "format that cannot be decoded")
            if stream.type == "video" and context.width and context.height:
                _check_size(path, context.width, context.height)
    except Wav2LipError:
        container.close()
        raise
    return container


def decode_stream(container: av.container.InputContainer, stream) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """Decode one stream to its end, skipping corrupt packets (as the ffmpeg tool does).

    A file must hold what its header declares: when the data ends short of the declared duration (a
    truncated file whose index survived, e.g. a faststart MP4 cut short, or a damaged part the demuxer
    cannot pass) this raises a one-line Wav2LipError at the end instead of passing a shorter stream off
    as the whole. Skipped packets of a complete file are summed up in one warning.
    """
    ends: dict[int, Fraction] = {}  # stream index -> latest presentation end seen in the data
    skipped = decoded = 0
    damage = None
    packets = container.demux()  # every stream: where the data ends is where the last of them ends
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as e:
            damage = e
            packet = None
        if packet is not None and packet.pts is not None and packet.time_base is not None:
            end = (packet.pts + (packet.duration or 0)) * packet.time_base
            ends[packet.stream.index] = max(end, ends.get(packet.stream.index, end))
        if packet is not None and packet.stream.index != stream.index:
            continue
        try:
            for frame in stream.decode(packet):
                decoded += 1
                yield frame
        except av.FFmpegError:
            skipped += 1
        if packet is None:
            break
    _check_complete(container, stream, ends, damage, skipped)
    if skipped and decoded:  # with nothing decoded the caller's error says it all, in one line
        log.warning("%s: skipped %d undecodable %s packet%s", container.name, skipped, stream.type,
                    "" if skipped == 1 else "s")


def _check_complete(container: av.container.InputContainer, stream, ends: dict[int, Fraction],
                    damage: Exception | None, skipped: int) -> None:
    """Raise when the data ends before the duration the file declares: per stream where the container
    records one (MP4, MOV), else for the file as a whole (Matroska, WebM)."""
    shortfalls = []  # (stream, where its data ends, where it should end)
    for other in container.streams:
        if other.disposition & Disposition.attached_pic:  # an MP3's cover art: one picture, no duration
            continue
        if other.type in ("video", "audio") and other.duration and other.time_base and other.index in ends:
            declared = ((other.start_time or 0) + other.duration) * other.time_base
            shortfalls.append((other, ends[other.index], declared))
    if not shortfalls and container.duration and ends:
        declared = Fraction(container.duration + (container.start_time or 0), av.time_base)
        shortfalls.append((stream, max(ends.values()), declared))
    for other, end, declared in shortfalls:
        tolerance = _TRUNCATION_TOLERANCE_S
        if other.type == "video" and other.average_rate:
            tolerance = min(tolerance, 3 / Fraction(other.average_rate))  # a missing last frame or two
        if end < declared - max(tolerance, declared * Fraction(1, 200)):
            what = f"damaged ({damage})" if damage is not None else "truncated"
            extra = f", {skipped} {stream.type} packets undecodable" if skipped else ""
            raise Wav2LipError(f"{container.name}: {what}: its {other.type} ends at {float(end):.2f} s of the "
                               f"{float(declared):.2f} s the file declares{extra}")
    if damage is not None:
        log.warning("%s: %s stops at a damaged part (%s)", container.name, stream.type, damage)


@dataclass
class _Inspection:
    info: MediaInfo
    rate: Fraction | None
    first_image: np.ndarray | None  # upright BGR image of the first frame (the whole content of a still)
    start: Fraction | None  # presentation time of the first frame, seconds


def _inspect(path: str | os.PathLike) -> _Inspection:
    """Open a file and decode up to two video frames: enough to know rotation, size and stillness."""
    path = Path(path)
    _check_file(path)
    with _open_container(path) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_codec = audio.codec_context.name if audio else None
        if not container.streams.video:
            duration = (_seconds(audio.duration, audio.time_base) if audio else None) or (
                Fraction(container.duration, av.time_base) if container.duration else None)
            info = MediaInfo(None, None, None, None if duration is None else float(duration), 0, 0, False,
                             audio is not None, False, None, audio_codec)
            return _Inspection(info, None, None, None)
        stream = container.streams.video[0]
        frames = []
        for frame in decode_stream(container, stream):
            frames.append(frame)
            if len(frames) == 2:
                break
        if not frames:
            raise Wav2LipError(f"{path}: no video frame could be decoded (empty, truncated or corrupt file)")
        first = frames[0]
        rotation = _rotation_of(first, stream)
        image = _rotate(first.to_ndarray(format="bgr24"), rotation)
        h, w = image.shape[:2]
        codec = stream.codec_context.name
        if len(frames) == 1:
            info = MediaInfo(w, h, None, None, 1, rotation, True, audio is not None, True, codec, audio_codec)
            return _Inspection(info, None, image, None)
        rate = constant_rate(stream.average_rate or stream.guessed_rate)
        duration = _seconds(stream.duration, stream.time_base) or (
            Fraction(container.duration, av.time_base) if container.duration else None)
        if duration:
            n_frames = max(1, round(duration * rate))
        else:
            n_frames = stream.frames or 0
        start = _seconds(first.pts, stream.time_base) or Fraction(0)
        info = MediaInfo(w, h, float(rate), None if duration is None else float(duration), n_frames, rotation,
                         True, audio is not None, False, codec, audio_codec)
        return _Inspection(info, rate, None, start)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a media file; decodes its first two video frames so stillness and rotation are facts."""
    return _inspect(path).info


class FrameSource:
    """BGR uint8 HxWx3 frames of a video or still image at a constant rate, upright.

    Output frame k shows the source frame on screen at time start + (k + 1/2) / fps, the middle of the
    output frame's interval, where start is the first frame's timestamp. Picking by timestamp keeps
    variable-frame-rate (phone) videos in sync; sampling at the middle means timestamp jitter of up to half
    a frame neither drops nor repeats frames, and a constant-rate video at its own rate maps 1:1.

    A still is a file with exactly one decodable frame, whatever its extension: any image FFmpeg decodes
    (PNG, JPEG with its EXIF orientation, WebP, BMP, TIFF, PPM, JPEG 2000, AVIF, a one-frame GIF: every
    format OpenCV writes) and also a one-frame video. It yields the same image every frame.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, rotate: bool = False,
                 loop: LoopMode = "repeat") -> None:
        if loop not in LOOP_MODES:
            raise ValueError(f"loop must be one of {LOOP_MODES}, got {loop!r}")
        inspection = _inspect(path)
        info = inspection.info
        self.path = Path(path)
        if not info.has_video and info.has_audio:
            raise Wav2LipError(f"{self.path}: an audio file with no video stream; give a video or an image")
        if not info.has_video:
            raise Wav2LipError(f"{self.path}: contains no video frames (empty video?)")
        self.loop: LoopMode = loop
        self.is_still = info.is_still
        self.rotation = (info.rotation + (90 if rotate else 0)) % 360
        self._extra_rotation = 90 if rotate else 0
        if fps is not None:
            self.rate = _exact_rate(fps)
        else:
            self.rate = inspection.rate if inspection.rate is not None else Fraction(STILL_FPS)
        self.fps = float(self.rate)
        self._still = None if inspection.first_image is None else _rotate(inspection.first_image, self._extra_rotation)
        self._start = inspection.start
        swap = self._extra_rotation == 90
        self.width = info.height if swap else info.width
        self.height = info.width if swap else info.height
        if self.is_still:
            self.n_frames_estimate = 1
        elif fps is None or not info.duration:
            self.n_frames_estimate = info.n_frames
        else:
            self.n_frames_estimate = max(1, round(info.duration * self.fps))
        self._count: int | None = 1 if self.is_still else None  # output frames in one pass, once known

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between passes (each pass opens its own container); kept for the contract."""

    def __repr__(self) -> str:
        kind = "still" if self.is_still else "video"
        return f"FrameSource({str(self.path)!r}, {kind} {self.width}x{self.height} @ {self.rate} fps)"

    def frames(self, n: int | None = None, loop: LoopMode | None = None) -> Iterator[np.ndarray]:
        """Exactly `n` frames (n=None: one pass), looping a shorter video.

        "repeat" plays 0..M-1, 0..M-1, ...; "pingpong" plays 0..M-1, M-2..1, 0..M-1, ... (backward passes
        re-decode in bounded blocks instead of keeping the video); "none" stops after one pass (fewer than
        `n` frames). A still yields its image `n` times (once for n=None). Every frame is a fresh array, so
        callers may draw on it.
        """
        loop = self.loop if loop is None else loop
        if loop not in LOOP_MODES:
            raise ValueError(f"loop must be one of {LOOP_MODES}, got {loop!r}")
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self._still is not None:
            for _ in range(1 if n is None else n):
                yield self._still.copy()
            return
        if n is None or loop == "none":
            for _, image in self._pass(0, n):
                yield image
            return
        produced = 0
        forward = True
        while produced < n:
            if forward:
                before = produced
                for _, image in self._pass(0, n - produced):
                    yield image
                    produced += 1
                if produced == before:
                    raise Wav2LipError(f"{self.path}: no video frame could be decoded")
            else:
                for image in self._backward(min(self._count - 2, n - produced)):
                    yield image
                    produced += 1
            if produced >= n:  # done before the pass ended: the pass length may still be unknown
                return
            if loop == "pingpong" and self._count > 2:
                forward = not forward

    def frame_at(self, k: int, loop: LoopMode | None = None) -> np.ndarray:
        """Frame k of `frames(k + 1, loop)`: within the first pass decoded from the keyframe before it
        (a preview of frame 5000 does not decode 5000 frames), past it by playing the loop."""
        if self._still is None:
            for _, image in self._pass(k, 1):
                return image
        return next(itertools.islice(self.frames(k + 1, loop), k, None))

    def _sample_time(self, k: int) -> Fraction:
        return self._start + (2 * k + 1) / (2 * self.rate)

    def _backward(self, count: int) -> Iterator[np.ndarray]:
        """Frames M-2, M-3, ... (`count` of them): each block is decoded forward, then yielded reversed."""
        block = max(8, _REVERSE_BLOCK_BYTES // (3 * self.width * self.height))
        high = self._count - 1  # exclusive end of the next block
        low_limit = high - count
        while high > low_limit:
            low = max(low_limit, high - block)
            images = [image for _, image in self._pass(low, high - low)]
            yield from reversed(images)
            high = low

    def _pass(self, first: int, limit: int | None) -> Iterator[tuple[int, np.ndarray]]:
        """Output frames first, first+1, ... (at most `limit`), decoded from the nearest keyframe before."""
        stop = None if limit is None else first + limit
        if stop is not None and stop <= first:
            return
        container = _open_container(self.path)
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base = stream.time_base
            if first > 0:
                try:
                    container.seek(math.floor(self._sample_time(first) / time_base), stream=stream, backward=True)
                except av.FFmpegError:
                    yield from self._pass_from_start(first, stop)
                    return
            k = first
            held: av.VideoFrame | None = None  # the frame on screen at the next sample time
            held_time = Fraction(0)
            for frame in decode_stream(container, stream):
                time = held_time + 1 / self.rate if frame.pts is None else frame.pts * time_base
                if held is None and first > 0 and time > self._sample_time(first):
                    # The seek landed past the wanted frame (a sparse index): decode from the start instead.
                    yield from self._pass_from_start(first, stop)
                    return
                if held is not None:
                    while (stop is None or k < stop) and self._sample_time(k) < time:
                        yield k, self._upright(held)
                        k += 1
                    if stop is not None and k >= stop:
                        return
                held, held_time = frame, time
            if held is None:
                return
            duration = held.duration * time_base if held.duration else 1 / self.rate
            end = held_time + duration
            while (stop is None or k < stop) and self._sample_time(k) < end:
                yield k, self._upright(held)
                k += 1
            if k > first or first == 0:  # this pass reached the end: k frames make one pass
                self._count = max(k, 1)

    def _pass_from_start(self, first: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
        for k, image in self._pass(0, stop):
            if k >= first:
                yield k, image

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        """A fresh array per call, so a frame shown twice can be drawn on by the caller each time."""
        image = frame.to_ndarray(format="bgr24")
        return _rotate(image, self.rotation)


def find_videos(folder: str | os.PathLike, what: str = "folder of videos") -> list[Path]:
    """Every video file under `folder` (by extension, recursively), sorted, so that shards, workers and
    resumed runs agree on the order."""
    root = Path(folder)
    if not root.is_dir():
        raise Wav2LipError(f"{root}: {what} does not exist")
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise Wav2LipError(f"{root}: no video files found ({', '.join(VIDEO_EXTENSIONS)})")
    return videos


def open_source(path: str | os.PathLike, fps: float | None = None, rotate: bool = False,
                loop: LoopMode = "repeat") -> FrameSource:
    """Open a video or still image as a constant-rate frame source.

    fps: output rate (default: the video's average rate, rounded to a standard one; 25 for a still).
    rotate: turn a further 90 degrees clockwise after honouring rotation metadata (the reference's --rotate).
    loop: how `frames(n)` continues when the video is shorter than n frames.
    """
    return FrameSource(path, fps=fps, rotate=rotate, loop=loop)


def encoded_size(width: int, height: int, lossless: bool = False) -> tuple[int, int]:
    """Frame size a VideoWriter stores: H.264 4:2:0 needs even sizes, so an odd side grows by one pixel
    (a copy of the last row/column); FFV1 keeps any size. Callers wanting an exact size should pick even."""
    if lossless:
        return width, height
    return width + width % 2, height + height % 2


def check_h264_size(target: str | os.PathLike, width: int, height: int) -> None:
    """Refuse before any work a frame size x264 cannot encode (it fails to open past H264_MAX_SIDE)."""
    if max(width, height) > H264_MAX_SIDE:
        raise Wav2LipError(f"{target}: {width}x{height} frames are too large for H.264 (at most {H264_MAX_SIDE} "
                           "pixels a side); scale the input down (--resize-factor, --crop) or write --lossless .mkv")


def _check_output_folder(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise Wav2LipError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise Wav2LipError(f"{path}: output folder {folder} is not writable")
    if path.is_dir():
        raise Wav2LipError(f"{path}: is a folder, not an output file")


def _audio_frames(path: Path, rate: int, layout: str, fmt: str, start: float) -> Iterator[av.AudioFrame]:
    """The audio of `path` from `start` seconds to its end, resampled, with pts counted in samples."""
    container = _open_container(path)
    with container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        skip = round(start * rate)
        written = 0

        def emit(frames: list[av.AudioFrame]) -> Iterator[av.AudioFrame]:
            nonlocal skip, written
            for frame in frames:
                if skip >= frame.samples:
                    skip -= frame.samples
                    continue
                if skip:
                    data = frame.to_ndarray()
                    data = data[:, skip:] if av.AudioFormat(fmt).is_planar else data[:, skip * len(frame.layout.channels):]
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
                    frame.sample_rate = rate
                    skip = 0
                frame.pts = written
                frame.time_base = Fraction(1, rate)
                written += frame.samples
                yield frame

        for frame in decode_stream(container, stream):
            yield from emit(resampler.resample(frame))
        yield from emit(resampler.resample(None))


class VideoWriter:
    """Encode BGR frames to H.264 (yuv420p, CRF) in mp4, or losslessly to FFV1 (bgr0) in Matroska, with the
    whole audio of any media file (AAC in mp4, FLAC in Matroska), written atomically.

    Use as a context manager: nothing appears at `path` unless the block finishes, and an existing file
    there survives a failure. `audio_start` skips that many seconds of the audio.
    Odd sizes: H.264 output grows by one pixel on odd sides (see `encoded_size`); FFV1 keeps the size.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, width: int, height: int,
                 audio: str | os.PathLike | None = None, lossless: bool = False, crf: int = DEFAULT_CRF,
                 preset: str = DEFAULT_PRESET, audio_start: float = 0.0) -> None:
        self.path = Path(path)
        _check_output_folder(self.path)
        self.format = video_container(self.path, lossless)
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.rate = _exact_rate(fps)
        self.width, self.height = width, height
        self.encoded_width, self.encoded_height = encoded_size(width, height, lossless)
        if not lossless:
            check_h264_size(self.path, width, height)
        self.lossless = lossless
        self.crf, self.preset = crf, preset
        self.audio_start = audio_start
        self.audio = None if audio is None else Path(audio)
        self._audio_rate = self._audio_layout = None
        if self.audio is not None:
            _check_file(self.audio)
            with _open_container(self.audio) as container:
                if not container.streams.audio:
                    raise Wav2LipError(f"{self.audio}: has no audio stream")
                codec = container.streams.audio[0].codec_context
                self._audio_rate = codec.sample_rate
                self._audio_layout = "mono" if codec.channels == 1 else "stereo"
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._container = None
        self._audio_iter: Iterator[av.AudioFrame] | None = None

    def __enter__(self) -> VideoWriter:
        self._stack = contextlib.ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_output(self.path))
            self._open(tmp)
        except BaseException as exc:
            self._close_container()
            self._stack.__exit__(type(exc), exc, exc.__traceback__)  # close() would rename the partial file in
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        except BaseException as e:
            self._close_container()
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise
        self._close_container()
        if exc_type is None:
            self._stack.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)

    def _open(self, tmp: Path) -> None:
        options = {"movflags": "+faststart"} if self.format in ("mp4", "mov") else {}
        self._container = av.open(str(tmp), "w", format=self.format, options=options)
        if self.lossless:
            video = self._container.add_stream("ffv1", rate=self.rate)
            video.pix_fmt = "bgr0"
        else:
            video = self._container.add_stream("libx264", rate=self.rate,
                                               options={"crf": str(self.crf), "preset": self.preset})
            video.pix_fmt = "yuv420p"
            # Frames are converted with BT.601 limited-range coefficients; say so, or players guess BT.709 for HD.
            video.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            video.codec_context.color_primaries = ColorPrimaries.SMPTE170M
            video.codec_context.color_trc = ColorTrc.SMPTE170M
            video.codec_context.color_range = ColorRange.MPEG
        video.width, video.height = self.encoded_width, self.encoded_height
        self._video = video
        self._audio_stream = None
        self._audio_iter = None
        self._audio_time = Fraction(0)
        if self.audio is not None:
            if self.lossless:
                self._audio_stream = self._container.add_stream("flac", rate=self._audio_rate,
                                                                layout=self._audio_layout)
                sample_format = "s16"
            else:
                rate = self._audio_rate if self._audio_rate in _AAC_RATES else 48000
                self._audio_stream = self._container.add_stream("aac", rate=rate, layout=self._audio_layout)
                sample_format = "fltp"
            self._audio_stream.format = sample_format
            self._audio_iter = _audio_frames(self.audio, self._audio_stream.rate, self._audio_layout,
                                             sample_format, self.audio_start)

    def write(self, frame: np.ndarray) -> None:
        """Encode one BGR uint8 frame of the size given at construction."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write called outside its `with` block")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width}x3 uint8 frame, got {frame.shape} {frame.dtype}")
        pad_h, pad_w = self.encoded_height - self.height, self.encoded_width - self.width
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = np.ascontiguousarray(frame)
        if self.lossless:
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
        else:
            # OpenCV rounds correctly (swscale's default path turns grey 100 into 95/98/96) and is ~10x faster.
            video_frame = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        video_frame.pts = self.frames_written
        video_frame.time_base = 1 / self.rate
        self._container.mux(self._video.encode(video_frame))
        self.frames_written += 1
        self._pump_audio(self.frames_written / self.rate + Fraction(_AUDIO_LEAD_S))

    def write_many(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.write(frame)

    def _pump_audio(self, until: Fraction | None) -> None:
        """Encode audio up to `until` seconds (None: all of it), keeping the two streams interleaved."""
        if self._audio_iter is None:
            return
        while until is None or self._audio_time < until:
            frame = next(self._audio_iter, None)
            if frame is None:
                if self._audio_time == 0:
                    raise Wav2LipError(f"{self.audio}: no audio samples after {self.audio_start:g} s")
                self._container.mux(self._audio_stream.encode(None))
                self._audio_iter = None
                return
            self._container.mux(self._audio_stream.encode(frame))
            self._audio_time += Fraction(frame.samples, frame.sample_rate)

    def _finish(self) -> None:
        if self.frames_written == 0:
            raise ValueError(f"{self.path}: no frames were written")
        self._container.mux(self._video.encode(None))
        self._pump_audio(None)
        self._container.close()
        self._container = None

    def _close_container(self) -> None:
        if self._audio_iter is not None:
            self._audio_iter.close()
            self._audio_iter = None
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
