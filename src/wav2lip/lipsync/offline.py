"""The streaming lip-sync chain: decode -> detect/track -> crop -> generate -> blend (-> enhance) -> encode.

Each stage runs in its own thread and hands its results to the next through a bounded queue, so the
stages overlap (PyAV, OpenCV and torch release the GIL) and the slowest one sets the pace, while
only a few batches of frames are ever in memory, whatever the length of the video.

By default every frame the authors' inference makes is made the same way (spec sections 3-5): the
per-frame mel window, the BGR [0, 1] 96x96 crop with its lower half masked beside the unmasked one,
pads (0, 10, 0, 0), the truncating uint8 conversion and the bilinear paste. What differs is
what the reference cannot do: it covers the whole audio, loops or cuts the video, survives frames
without a face, and never holds the video in memory.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
from torch import nn

from ..io import audio as audio_io
from .. import checkpoints
from .. import store
from . import vad
from ..io import video as video_io
from .blend import BLENDS, MaskShape, blend_mask, feather, to_uint8
from ..device import DTYPES, inference_model, resolve_device, resolve_precision
from .enhance import ENHANCE_BATCH, ENHANCERS, FaceEnhancer
from ..errors import Wav2LipError
from ..export import onnx_generator
from ..faces import BoxCalibration, FaceDetector, FaceTrackOptions, cached_track, create_detector, track
from ..io.files import check_output
from .options import (BACKENDS, BLEND_MODES, DETECTORS, LOOP_MODES, SMOOTH_MODES, X264_PRESETS, check_choice,
                      check_finite, video_container)
from ..faces import speaker as speakers
from .options import MASK_KINDS, SILENCE_MODES, SPEAKER_MODES  # noqa: F401
from ..io.files import atomic_output
from .stages import Profile, Stage

FACE_SIZE = 96  # generator crop side (spec section 4)
MEL_STEP = 16  # mel frames per window (spec section 3)
REFERENCE_BATCH = 128  # the reference's generator batch (spec section 5)
# Frames held per generator batch are capped at this many bytes: at most three batches are in flight,
# so 720p runs in batches of 46 and 1080p of 20, and peak memory stays far below 2 GB.
MAX_BATCH_BYTES = 128 * 2**20
FRAME_QUEUE = 8  # frames between per-frame stages: enough to smooth out jitter, little memory
STAGES = ("decode", "detect", "crop", "generate", "blend", "enhance", "encode")
STOP_WAIT_S = 5.0  # a stopped run waits this long for its stage threads to leave torch/PyAV
SILENCE = SILENCE_MODES  # what the mouth does where nobody speaks
MIN_SILENCE = 0.3  # s: shorter pauses keep the generator's own mouth (it closes them itself)
SPEAKERS = SPEAKER_MODES  # which of several faces is lip-synced (faces.speaker)

# uint8 -> float32 x / 255, exactly as the reference's float64 division then cast to float32.
_UNIT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
# The mel window of digital silence: every band at the floor (spec section 2's normalisation of -100 dB).
SILENT_MEL = np.float32(-audio_io.MAX_ABS_VALUE)


@dataclass
class SyncOptions:
    """Per-run settings; defaults are the reference's where it has one (spec section 5)."""

    box: tuple[int, int, int, int] | None = None  # fixed face box, reference order: top, bottom, left, right
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right
    smooth: str = "centered"  # "centered" (lag-free), "mean5" (the reference's), "none"
    detect_every: int = FaceTrackOptions.detect_every  # full-frame detection period, tracking in between
    static: bool = False  # use only the first frame of the video
    fps: float | None = None  # output rate (a still: default 25; a video: resample to this rate)
    resize_factor: int = 1  # integer downscale of video frames
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)  # top, bottom, left, right; -1 = to the edge
    rotate: bool = False  # turn video frames 90 degrees clockwise
    loop: str = "repeat"  # video shorter than the audio: "repeat" or "pingpong"
    blend: str = "paste"  # "paste" (the reference's) or "feather"
    batch_size: int = REFERENCE_BATCH  # generator batch (lowered for big frames, see MAX_BATCH_BYTES)
    lossless: bool = False  # FFV1 RGB in Matroska: bit-exact frames
    crf: int = video_io.DEFAULT_CRF
    preset: str = video_io.DEFAULT_PRESET
    cache: bool = True  # reuse face boxes of a video tracked before with the same settings
    progress: bool = False  # tqdm bar on stderr
    # Where the audio holds no speech (wav2lip.lipsync.vad): "still" feeds the generator a silent window (closed,
    # still mouth), "original" shows the source frames, "off" lip-syncs to whatever sound is there (the
    # reference). `crossfade` frames at each edge of a pause ease from one to the other.
    silence: str = "still"
    crossfade: int = 3
    # The feather blend's mask (blend.MaskShape): where it starts (fraction of the box height), how
    # soft its edge is, colour matching, and "ellipse" or "landmarks" (mouth and jaw from RetinaFace).
    # With several faces: "auto" follows, per shot, the face whose lips agree with the video's own
    # soundtrack (LipSyncer's speaker_model), else the largest; face_index / face_at override it.
    speaker: str = "auto"
    face_index: int | None = None  # the i-th face from the left at each shot's start
    face_at: tuple[float, float] | None = None  # the face nearest this point (x, y in frame pixels)
    mask: str = "ellipse"
    mask_top: float = MaskShape.top
    mask_softness: float = MaskShape.softness
    colour_match: bool = True
    enhance: str = "none"  # "gfpgan": restore the painted mouth with GFPGAN v1.4 (see enhance.py)
    enhance_strength: float = 1.0  # 0 = plain, 1 = restored, where the generator painted
    calibration: tuple[float, float, float, float] | None = None  # detector box map dx dy sx sy (`detect --compare`)

    @classmethod
    def from_kwargs(cls, options: dict) -> SyncOptions:
        """Checked options from keyword arguments; an unknown name is one line listing the valid ones."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise Wav2LipError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                               f"(valid: {', '.join(names)})")
        result = cls(**options)
        result.check()
        return result

    def check(self) -> None:
        check_choice(self.smooth, SMOOTH_MODES, "smoothing")
        check_choice(self.loop, LOOP_MODES, "loop mode")
        check_choice(self.blend, BLEND_MODES, "blend")
        check_choice(self.preset, X264_PRESETS, "x264 preset")
        if self.resize_factor < 1:
            raise Wav2LipError(f"resize factor must be a positive integer, got {self.resize_factor}")
        if self.batch_size < 1:
            raise Wav2LipError(f"generator batch size must be positive, got {self.batch_size}")
        if self.detect_every < 0:
            raise Wav2LipError(f"detect every must be 0 (only when the track is lost) or more, got {self.detect_every}")
        check_finite(self.fps, "fps")
        if self.fps is not None and self.fps <= 0:
            raise Wav2LipError(f"fps must be positive, got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise Wav2LipError(f"crf must be 0 (lossless) to 51 (worst), got {self.crf}")
        if self.box is not None and len(self.box) != 4:
            raise Wav2LipError(f"box needs 4 numbers (top, bottom, left, right), got {self.box}")
        if self.calibration is not None:
            if len(self.calibration) != 4:
                raise Wav2LipError(f"calibration needs 4 numbers (dx, dy, sx, sy), got {self.calibration}")
            for value in self.calibration:
                check_finite(value, "calibration")
            if min(self.calibration[2:]) <= 0:
                raise Wav2LipError(f"calibration scales sx, sy must be positive, got {self.calibration}")
        if self.silence not in SILENCE:
            raise Wav2LipError(f"unknown silence mode {self.silence!r} ({', '.join(SILENCE)})")
        if self.crossfade < 0:
            raise Wav2LipError(f"crossfade must be 0 or more frames, got {self.crossfade}")
        if self.speaker not in SPEAKERS:
            raise Wav2LipError(f"unknown speaker choice {self.speaker!r} ({' or '.join(SPEAKERS)})")
        if self.face_index is not None and self.face_index < 0:
            raise Wav2LipError(f"face index counts from 0 (leftmost face), got {self.face_index}")
        if self.enhance not in ENHANCERS:
            raise Wav2LipError(f"unknown enhancer {self.enhance!r} (one of {', '.join(ENHANCERS)})")
        if not 0.0 <= self.enhance_strength <= 1.0:
            raise Wav2LipError(f"enhance strength must be between 0 and 1, got {self.enhance_strength}")
        try:
            self.mask_shape.check()
        except ValueError as exc:
            raise Wav2LipError(str(exc)) from None

    @property
    def mask_shape(self) -> MaskShape:
        return MaskShape(self.mask_top, self.mask_softness, self.colour_match, self.mask)


@dataclass
class Result:
    """What one run did. `profile` holds seconds of work per stage (threads overlap, so they add up
    to more than `seconds`)."""

    output: Path | None
    frames: int
    faces_missed: int
    seconds: float
    fps: float  # output frame rate of the video
    width: int
    height: int
    profile: dict[str, float] = field(default_factory=dict)
    silent_frames: int = 0  # frames in pauses of the speech, kept still or original (SyncOptions.silence)
    speakers: list = field(default_factory=list)  # faces.speaker.ShotChoice per shot, when several faces showed

    @property
    def speed(self) -> float:
        """Output frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        where = f" -> {self.output}" if self.output else ""
        silent = f", {self.silent_frames} in pauses" if self.silent_frames else ""
        lines = [f"{self.frames} frames ({self.frames / self.fps:.2f} s at {self.fps:g} fps), "
                 f"{self.faces_missed} without a face{silent}, {self.seconds:.1f} s, {self.speed:.1f} frames/s{where}"]
        return "\n".join(lines + [f"speaker: {choice.summary()}" for choice in self.speakers])

    def profile_table(self) -> str:
        lines = [f"{'stage':<10}{'ms/frame':>10}"]
        for name in STAGES:
            if name in self.profile:
                lines.append(f"{name:<10}{1000 * self.profile[name] / max(self.frames, 1):>10.2f}")
        lines.append(f"{'end-to-end':<10}{1000 * self.seconds / max(self.frames, 1):>10.2f}  ({self.speed:.1f} frames/s)")
        return "\n".join(lines)


# ---------------------------------------------------------------- reference crop and generator input


def crop_face(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box (x1, y1, x2, y2) resized to 96x96 with INTER_LINEAR, aspect ignored (spec section 5)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)


def generator_faces(crops: np.ndarray) -> np.ndarray:
    """(B, 96, 96, 3) uint8 BGR crops -> (B, 6, 96, 96) float32: the crop with rows 48.. zeroed, then
    the crop itself, in [0, 1] (spec section 4; at inference the reference face is the same frame)."""
    unit = _UNIT[crops]
    masked = unit.copy()
    masked[:, FACE_SIZE // 2:] = 0
    return np.ascontiguousarray(np.concatenate((masked, unit), axis=3).transpose(0, 3, 1, 2))


def frame_mel_windows(mel: np.ndarray, frames: Iterable[int], fps: float) -> np.ndarray:
    """(N, 1, 80, 16) windows for output frames: the reference's start for each frame it makes,
    the final window for the frames beyond it (spec section 3)."""
    starts = [audio_io.mel_window_start(i, fps, mel.shape[1]) for i in frames]
    return audio_io.mel_windows(mel, starts)


def speech_weights(wav: np.ndarray, n_frames: int, fps: float, crossfade: int) -> np.ndarray:
    """(n_frames,) float32 per output frame: 1 where its mel window (0.2 s from the frame's start) holds
    speech, 0 in pauses of at least MIN_SILENCE, stepping over `crossfade` frames inside each pause's
    edges, so no speech frame is ever changed."""
    activity = vad.speech_activity(wav)
    starts = np.arange(n_frames) / fps
    speech = vad.activity_per_window(activity, starts, MEL_STEP / audio_io.MEL_FPS)
    weights = np.ones(n_frames, np.float32)
    shortest = max(1, int(np.ceil(MIN_SILENCE * fps)))
    for start, stop, spoken in vad.run_lengths(speech):
        if spoken or stop - start < shortest:
            continue
        k = np.arange(start, stop)
        ramp_in = (k - start + 1) / (crossfade + 1) if start > 0 else np.ones(k.size)
        ramp_out = (stop - k) / (crossfade + 1) if stop < n_frames else np.ones(k.size)
        weights[start:stop] = 1 - np.clip(np.minimum(ramp_in, ramp_out), 0, 1)
    return weights


# ---------------------------------------------------------------- the stages


@dataclass
class _Frame:
    index: int  # output frame number
    source: int  # source frame number (the same frame again when the video loops)
    first: bool  # first time this source frame is seen (it goes through detection)
    image: np.ndarray
    box: np.ndarray | None = None
    face: np.ndarray | None = None  # generated 96x96x3 uint8 BGR
    speech: float = 1.0  # 1: lip-synced; 0: a pause (SyncOptions.silence); between: a crossfade
    landmarks: np.ndarray | None = None  # (5, 2) smoothed detector landmarks (landmark mask, enhancer)


@dataclass
class _Batch:
    frames: list[_Frame]
    mel: np.ndarray  # (F, 1, 80, 16) for the frames with a face, in order
    faces: np.ndarray  # (F, 6, 96, 96)


def _loop_index(k: int, count: int, loop: str) -> int:
    """Source frame of output frame k when `count` source frames loop (video_io's order)."""
    if loop == "pingpong" and count > 2:
        period = 2 * count - 2
        r = k % period
        return r if r < count else period - r
    return k % count


def prepare_frame(image: np.ndarray, opts: SyncOptions, face: Path) -> np.ndarray:
    """A video frame as the reference prepares it: resize_factor, rotate, crop, in that order."""
    if opts.resize_factor > 1:
        h, w = image.shape[:2]
        image = cv2.resize(image, (w // opts.resize_factor, h // opts.resize_factor))
    if opts.rotate:
        image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    y1, y2, x1, x2 = opts.crop
    if (y1, y2, x1, x2) != (0, -1, 0, -1):
        x2 = image.shape[1] if x2 == -1 else x2
        y2 = image.shape[0] if y2 == -1 else y2
        image = np.ascontiguousarray(image[y1:y2, x1:x2])
        if image.size == 0:
            raise Wav2LipError(f"{face}: --crop {' '.join(map(str, opts.crop))} leaves an empty frame")
    return image


class _Job:
    """One lip-sync run's inputs, decided before any frame is decoded."""

    def __init__(self, face: str | Path, audio: str | Path, options: SyncOptions) -> None:
        options.check()
        self.face, self.audio, self.options = Path(face), Path(audio), options
        wav = audio_io.load_audio(self.audio)
        if not np.any(wav):
            raise Wav2LipError(f"{self.audio}: the audio is completely silent: nothing to lip-sync")
        self.mel = audio_io.melspectrogram(wav)
        if self.mel.shape[1] < MEL_STEP:
            raise Wav2LipError(
                f"{self.audio}: audio of {wav.size / audio_io.SAMPLE_RATE:.3f} s is shorter than one "
                f"mel window ({MEL_STEP / audio_io.MEL_FPS:.1f} s)"
            )
        self.source = video_io.open_source(self.face, fps=options.fps, rotate=False, loop=options.loop)
        self.fps = self.source.fps
        self.still = self.source.is_still
        if not self.still and options.resize_factor > min(self.source.width, self.source.height):
            raise Wav2LipError(f"{self.face}: --resize-factor {options.resize_factor} leaves nothing of its "
                               f"{self.source.width}x{self.source.height} frames")
        self.n_frames = audio_io.frame_count_for_audio(wav.size, self.fps)
        self.n_reference = len(audio_io.reference_chunk_starts(self.mel.shape[1], self.fps))
        self.speech = (np.ones(self.n_frames, np.float32) if options.silence == "off"
                       else speech_weights(wav, self.n_frames, self.fps, options.crossfade))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The reference's order: resize_factor, rotate, crop; a still image skips all three."""
        return image if self.still else prepare_frame(image, self.options, self.face)

    def decode(self, _: object = None) -> Iterator[_Frame]:
        """Output frames 0..n-1: the first pass of the video, then loops of it (or the still)."""
        n = self.n_frames
        if self.still or self.options.static:
            first = self.prepare(next(iter(self.source.frames(1))))
            for k in range(n):  # a fresh copy each time: frames are blended in place downstream
                yield _Frame(k, 0, k == 0, first.copy(), speech=float(self.speech[k]))
            return
        count = 0
        for image in self.source.frames():
            if count == n:
                break
            yield _Frame(count, count, True, self.prepare(image), speech=float(self.speech[count]))
            count += 1
        if count == 0:
            raise Wav2LipError(f"{self.face}: no video frame could be decoded")
        if count == n:
            return
        loop = self.options.loop
        if loop == "repeat":
            rest = self.source.frames(n - count, loop="repeat")
            start = 0
        else:  # video_io plays pingpong from the first forward pass: skip that pass
            rest = itertools.islice(self.source.frames(n, loop="pingpong"), count, None)
            start = count
        for k, image in enumerate(rest, start):
            index = count + k - start
            yield _Frame(index, _loop_index(k, count, loop), False, self.prepare(image),
                         speech=float(self.speech[index]))

    @property
    def silent_frames(self) -> int:
        """Output frames changed by the silence mode (pauses and their crossfades)."""
        return int(np.sum(self.speech < 1))

    def fixed_box(self, width: int, height: int) -> np.ndarray | None:
        """`--box` (top, bottom, left, right) as (x1, y1, x2, y2), checked against the frame."""
        if self.options.box is None:
            return None
        y1, y2, x1, x2 = self.options.box
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise Wav2LipError(
                f"--box {' '.join(map(str, self.options.box))} (top bottom left right) is not inside the "
                f"{width}x{height} frame of {self.face}"
            )
        return np.array([x1, y1, x2, y2], dtype=np.int64)


class _StopFlag(threading.Event):
    """The stages' stop flag: set by the run itself when it ends, or from outside through `cancel`
    (which the run only reads, so a caller's event is never set by the run)."""

    def __init__(self, cancel: threading.Event | None) -> None:
        super().__init__()
        self.cancel = cancel

    def is_set(self) -> bool:
        return super().is_set() or (self.cancel is not None and self.cancel.is_set())


class _Run:
    """The stages of one run, sharing the job, the models and the stop flag."""

    def __init__(self, job: _Job, generator: nn.Module, detector: Callable[[], FaceDetector],
                 device: torch.device, cache_dir: str | Path | None, cancel: threading.Event | None = None,
                 expert: Callable[[], nn.Module | None] = lambda: None,
                 enhancer: FaceEnhancer | None = None) -> None:
        self.job, self.generator, self.get_detector = job, generator, detector
        self.device, self.cache_dir, self.get_expert = device, cache_dir, expert
        self.enhancer = enhancer
        self.speakers: list[speakers.ShotChoice] = []
        self.profile = Profile()
        self.stop = _StopFlag(cancel)
        self._still_face: tuple[np.ndarray, list[torch.Tensor]] | None = None  # a still's input, its features

    @property
    def cancelled(self) -> bool:
        return self.stop.cancel is not None and self.stop.cancel.is_set()

    def track_options(self, offset: int = 0) -> FaceTrackOptions:
        """Tracking settings; `offset`: the first frame of the segment being tracked (speaker points)."""
        opts = self.job.options
        points = None
        if any(choice.reason == "sync" for choice in self.speakers):
            points = tuple((max(0, c.start - offset), *c.point) for c in self.speakers)
        return FaceTrackOptions(pads=tuple(opts.pads), smooth=opts.smooth, detect_every=opts.detect_every,
                                face_index=opts.face_index, face_at=opts.face_at, speaker_points=points,
                                calibration=BoxCalibration(*opts.calibration) if opts.calibration else None)

    def choose_speakers(self, detector: FaceDetector) -> None:
        """`speaker="auto"` on a video that shows several faces: score them against its own soundtrack.
        Without an expert nothing is looked at: the tracker's own rule already takes the largest face."""
        job = self.job
        opts = job.options
        if (opts.speaker != "auto" or opts.face_index is not None or opts.face_at is not None
                or job.still or opts.static):
            return
        expert = self.get_expert()
        if expert is None:
            return
        first_pass = lambda: (job.prepare(f) for f in job.source.frames(job.n_frames, loop="none"))  # noqa: E731
        if not speakers.several_faces(first_pass(), detector):
            return
        mel = speakers.soundtrack_mel(job.face)
        self.speakers = speakers.choose_speakers(first_pass(), detector, job.fps, mel, expert)

    def detect(self, frames: Iterable[_Frame]) -> Iterator[_Frame]:
        """Boxes for the first pass of the video, tracked as the reference does on its kept frames
        (0 .. reference count) and the extra frames after them as a second shot, so the extras never
        change a reference frame's smoothing; looped frames reuse their source frame's box."""
        job = self.job
        frames = iter(frames)
        boxes: list[np.ndarray | None] = []
        points: list[np.ndarray | None] = []
        pending: deque[_Frame] = deque()
        first = next(frames, None)
        if first is None:
            return
        fixed = job.fixed_box(first.image.shape[1], first.image.shape[0])
        ahead: list[_Frame] = [first]

        def take(limit: int) -> Iterator[np.ndarray]:
            """First-pass frames up to output frame `limit`, remembered for pairing with boxes."""
            while True:
                item = ahead.pop() if ahead else next(frames, None)
                if item is None:
                    return
                if not item.first or item.index >= limit:
                    ahead.append(item)
                    return
                pending.append(item)
                yield item.image

        if fixed is not None:
            for item in itertools.chain(ahead, frames):
                item.box = fixed
                yield item
            return
        detector = self.get_detector()
        self.choose_speakers(detector)
        if job.still or job.options.static:
            limits = [1]
        else:
            limits = [job.n_reference] + ([job.n_frames] if job.n_frames > job.n_reference else [])
        for segment, limit in enumerate(limits):
            options = self.track_options(0 if segment == 0 else limits[0])
            source = {"fps": job.fps, "resize_factor": job.options.resize_factor, "rotate": job.options.rotate,
                      "crop": list(job.options.crop), "static": job.options.static, "segment": segment,
                      "frames": [limits[segment - 1] if segment else 0, limit]}  # the range tracked as one shot
            tracked = (cached_track(job.face, take(limit), detector, options, self.cache_dir, source)
                       if job.options.cache else track(take(limit), detector, options))
            for item in tracked:
                frame = pending.popleft()
                frame.box, frame.landmarks = item.box, item.landmarks
                boxes.append(item.box)
                points.append(item.landmarks)
                yield frame
        if not any(box is not None for box in boxes):
            raise Wav2LipError(f"{job.face}: no face found in any frame (give the face box with --box)")
        for item in itertools.chain(ahead, frames):
            item.box = boxes[item.source] if item.source < len(boxes) else None
            item.landmarks = points[item.source] if item.source < len(points) else None
            yield item

    def batch_size(self, frame: np.ndarray) -> int:
        return max(1, min(self.job.options.batch_size, MAX_BATCH_BYTES // frame.nbytes))

    def crop(self, frames: Iterable[_Frame]) -> Iterator[_Batch]:
        """Consecutive frames in batches with the generator's inputs for those that have a face."""
        batch: list[_Frame] = []
        size = None
        for frame in frames:
            size = size or self.batch_size(frame.image)
            batch.append(frame)
            if len(batch) == size:
                yield self._inputs(batch)
                batch = []
        if batch:
            yield self._inputs(batch)

    def _inputs(self, batch: list[_Frame]) -> _Batch:
        with_face = [f for f in batch if self._generates(f)]
        if not with_face:
            return _Batch(batch, np.zeros((0, 1, 80, MEL_STEP), np.float32), np.zeros((0, 6, 96, 96), np.float32))
        crops = np.stack([crop_face(f.image, f.box) for f in with_face])
        mel = frame_mel_windows(self.job.mel, [f.index for f in with_face], self.job.fps)
        if self.job.options.silence == "still":
            weight = np.array([f.speech for f in with_face], np.float32)[:, None, None, None]
            mel = weight * mel + (1 - weight) * SILENT_MEL  # the generator's closed mouth in pauses
        return _Batch(batch, mel, generator_faces(crops))

    def _generates(self, frame: _Frame) -> bool:
        """Frames the generator paints: those with a face, except pauses shown as the source."""
        return frame.box is not None and (frame.speech > 0 or self.job.options.silence != "original")

    def generate(self, batches: Iterable[_Batch]) -> Iterator[_Frame]:
        for batch in batches:
            if len(batch.mel):
                faces = to_uint8(self._run_generator(batch))
                for frame, face in zip((f for f in batch.frames if self._generates(f)), faces):
                    frame.face = face
            yield from batch.frames

    def _run_generator(self, batch: _Batch) -> np.ndarray:
        """The generator on a batch. A still face (a photo, or --static) goes through its face encoder once
        per run, not once per frame: only the mel changes from frame to frame."""
        faces = batch.faces
        if not ((self.job.still or self.job.options.static) and hasattr(self.generator, "encode_face")
                and (faces == faces[:1]).all()):
            return run_generator(self.generator, batch.mel, faces, self.device)
        if self._still_face is None or not np.array_equal(self._still_face[0], faces[0]):
            with torch.inference_mode():
                skips = self.generator.encode_face(torch.from_numpy(faces[:1]).to(self.device))
            self._still_face = (faces[0].copy(), skips)
        skips = [s.expand(len(batch.mel), *s.shape[1:]) for s in self._still_face[1]]
        with torch.inference_mode():
            out = self.generator.decode(torch.from_numpy(batch.mel).to(self.device), skips)
        return out.float().cpu().numpy()

    def blend(self, frames: Iterable[_Frame]) -> Iterator[_Frame]:
        fn = blend_function(self.job.options)
        original = self.job.options.silence == "original"
        held = _HeldLandmarks()
        for frame in frames:
            frame.landmarks = held(frame.box, frame.landmarks)
            if frame.face is not None:
                if original and frame.speech < 1:
                    _blend_faded(fn, frame)
                else:
                    fn(frame)
                frame.face = None
            yield frame

    def enhance(self, frames: Iterable[_Frame]) -> Iterator[_Frame]:
        """Restore the painted mouth of frames with a face, a few at a time (one network call)."""
        opts = self.job.options
        enhancer = self.enhancer
        batch: list[_Frame] = []

        def flush() -> Iterator[_Frame]:
            faces = [f for f in batch if f.box is not None]
            if faces and opts.enhance_strength > 0:
                enhancer.enhance([f.image for f in faces], [f.box for f in faces], [f.landmarks for f in faces],
                                 opts.blend, opts.enhance_strength)
            yield from batch
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if sum(f.box is not None for f in batch) == ENHANCE_BATCH:
                yield from flush()
        yield from flush()

    def frames(self) -> Iterator[_Frame]:
        """The chain's output, in order; stopping early (or an error) stops every stage."""
        stages: Iterable = None
        started: list[Stage] = []
        chain = (("decode", self.job.decode, FRAME_QUEUE), ("detect", self.detect, FRAME_QUEUE),
                 ("crop", self.crop, 1), ("generate", self.generate, FRAME_QUEUE),
                 ("blend", self.blend, FRAME_QUEUE))
        if self.enhancer is not None:
            chain += (("enhance", self.enhance, FRAME_QUEUE),)
        try:
            for name, work, maxsize in chain:
                stages = Stage(name, work, stages, maxsize, self.profile, self.stop)
                started.append(stages)
            yield from stages
        finally:
            self.stop.set()
            # Threads left inside torch or PyAV when the interpreter exits abort it ("terminate called
            # without an active exception"): give each the time to finish its current item.
            deadline = time.monotonic() + STOP_WAIT_S
            for stage in started:
                stage.thread.join(max(0.0, deadline - time.monotonic()))


def blend_function(options: SyncOptions) -> Callable[[_Frame], None]:
    """frame -> None: the chosen blend of `frame.face` into `frame.image` with the options' mask."""
    if options.blend != "feather":
        paste_fn = BLENDS[options.blend]
        return lambda frame: paste_fn(frame.image, frame.box, frame.face)
    shape = options.mask_shape
    return lambda frame: feather(frame.image, frame.box, frame.face, shape, frame.landmarks)


class _HeldLandmarks:
    """Frames between detections (tracking skips every other one, the cache keeps only detections)
    get the last detected landmarks, carried along with the box."""

    def __init__(self) -> None:
        self.relative: np.ndarray | None = None

    def __call__(self, box: np.ndarray | None, landmarks: np.ndarray | None) -> np.ndarray | None:
        if box is None:
            return None
        origin, size = box[:2].astype(np.float64), np.maximum(box[2:] - box[:2], 1).astype(np.float64)
        if landmarks is not None:
            self.relative = (np.asarray(landmarks, np.float64) - origin) / size
            return landmarks
        return None if self.relative is None else origin + self.relative * size


def _blend_faded(fn: Callable, frame: _Frame) -> None:
    """Blend, then mix the box back toward the source frame by the frame's speech weight (a crossfade
    into a pause shown as the source)."""
    x1, y1, x2, y2 = (int(v) for v in frame.box)
    source = frame.image[y1:y2, x1:x2].astype(np.float32)
    fn(frame)
    region = frame.image[y1:y2, x1:x2]
    mixed = source + frame.speech * (region.astype(np.float32) - source)
    region[:] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Preview:
    """What `LipSyncer.preview` wrote: the PNG, the frame, its box (x1, y1, x2, y2) and the time taken."""

    output: Path
    frame: int
    box: tuple[int, int, int, int]
    speech: float
    seconds: float

    def summary(self) -> str:
        pause = "" if self.speech == 1 else f" (in a pause: speech weight {self.speech:g})"
        return f"frame {self.frame}{pause}, face box {self.box}, {self.seconds:.2f} s -> {self.output}"


PREVIEW_HEIGHT = 360  # pixels of each preview panel


def _source_frame(job: _Job, index: int) -> np.ndarray:
    """Output frame `index`'s source image (a looped frame: its source frame)."""
    return job.prepare(job.source.frame_at(0 if job.still or job.options.static else index))


def _panels(image: np.ndarray, blended: np.ndarray, generated: np.ndarray, mask: np.ndarray,
            box: np.ndarray) -> np.ndarray:
    """source | generated crop | blended | mask, each the box with a margin, side by side, labelled."""
    x1, y1, x2, y2 = (int(v) for v in box)
    mx, my = (x2 - x1) // 4, (y2 - y1) // 4
    ax1, ay1 = max(0, x1 - mx), max(0, y1 - my)
    ax2, ay2 = min(image.shape[1], x2 + mx), min(image.shape[0], y2 + my)
    canvas = np.full_like(image[ay1:ay2, ax1:ax2], 128)
    crop = canvas.copy()
    crop[y1 - ay1:y2 - ay1, x1 - ax1:x2 - ax1] = cv2.resize(generated, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    weights = np.zeros_like(canvas)
    weights[y1 - ay1:y2 - ay1, x1 - ax1:x2 - ax1] = np.round(255 * mask).astype(np.uint8)
    panels = []
    for label, panel in (("source", image[ay1:ay2, ax1:ax2]), ("generated", crop),
                         ("blended", blended[ay1:ay2, ax1:ax2]), ("mask", weights)):
        scale = PREVIEW_HEIGHT / panel.shape[0]
        panel = cv2.resize(panel, (max(1, round(panel.shape[1] * scale)), PREVIEW_HEIGHT), interpolation=cv2.INTER_AREA)
        cv2.putText(panel, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3)
        cv2.putText(panel, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1)
        panels += [panel, np.zeros((PREVIEW_HEIGHT, 4, 3), np.uint8)]
    return np.hstack(panels[:-1])


def run_generator(model: nn.Module, mel: np.ndarray, faces: np.ndarray, device: torch.device) -> np.ndarray:
    """(B, 1, 80, 16) mel + (B, 6, 96, 96) faces -> (B, 3, 96, 96) float32 in [0, 1]."""
    with torch.inference_mode():
        out = model(torch.from_numpy(mel).to(device), torch.from_numpy(faces).to(device))
    return out.float().cpu().numpy()


def _progress(total: int, enabled: bool, label: str | None = None):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, smoothing=0.1, desc=label)


def stream(job: _Job, run: _Run, progress: bool = False) -> Iterator[_Frame]:
    """Output frames in order, with the progress bar."""
    enhance = job.options.enhance
    bar = _progress(job.n_frames, progress, f"lip-sync + {enhance}" if enhance != "none" else None)
    try:
        for frame in run.frames():
            yield frame
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def lipsync_file(job: _Job, run: _Run, output: str | Path,
                 on_progress: Callable[[int, int], None] | None = None) -> Result:
    """Run the chain into a video file at `output` (written atomically; nothing there on failure or
    cancellation). `on_progress(frames written, frames in all)` is called after every frame."""
    output = Path(output)
    opts = job.options
    start = time.perf_counter()
    missed = 0
    writer = None
    frames = stream(job, run, opts.progress)
    if on_progress is not None:
        on_progress(0, job.n_frames)
    try:
        for frame in frames:
            if run.cancelled:
                break
            t0 = time.perf_counter()
            if writer is None:
                h, w = frame.image.shape[:2]
                writer = video_io.VideoWriter(output, job.fps, w, h, audio=job.audio, lossless=opts.lossless,
                                              crf=opts.crf, preset=opts.preset)
                writer.__enter__()
            writer.write(frame.image)
            missed += frame.box is None
            run.profile.add("encode", time.perf_counter() - t0)
            if on_progress is not None:
                on_progress(writer.frames_written, job.n_frames)
        if run.cancelled:  # the stages end quietly when cancelled: never finish a partial file
            raise Wav2LipError(f"{output}: cancelled, nothing written")
        if writer is None:
            raise Wav2LipError(f"{job.face}: no frames to write")
        t0 = time.perf_counter()
        writer.__exit__(None, None, None)
        run.profile.add("encode", time.perf_counter() - t0)
    except BaseException as exc:
        frames.close()
        if writer is not None:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    h, w = writer.height, writer.width
    return Result(output, writer.frames_written, missed, time.perf_counter() - start, job.fps, w, h,
                  dict(run.profile.seconds), silent_frames=job.silent_frames, speakers=run.speakers)


def check_output_path(output: str | Path, inputs: Iterable[str | Path | None] = (), lossless: bool = False) -> Path:
    """Fail before any work when the output cannot be written: one of the inputs, a folder, a missing or
    read-only folder, an extension with no container for the video."""
    output = check_output(output, inputs)
    video_container(output, lossless)
    return output


class LipSyncer:
    """Loads the generator (and, on first need, the face detector) once; lip-syncs many inputs.

    checkpoint: a Wav2Lip generator file or a model-store name; detector: "retinaface", "s3fd" or a
    ready `FaceDetector`; device: "auto", "cpu", "cuda", "mps"; precision: "auto", "fp32", "bf16",
    "fp16" ("auto" = the fastest one measured to keep the face visibly identical, see device.py);
    backend: "torch", or "onnxruntime" (CPU, fp32: the generator exported once into the weight cache);
    speaker_model: a Wav2Lip lip-sync expert (file, store name or module) that picks the speaking face
    among several (SyncOptions.speaker); without one the largest face is followed.
    enhancer_weights: GFPGAN v1.4 weights for runs with enhance="gfpgan" (default: the model store's
    GFPGANv1.4.pth), loaded on first need; fp32 unless a precision is asked for explicitly.
    """

    def __init__(
        self,
        checkpoint: str | Path = "wav2lip_gan.pth",
        detector: str | FaceDetector = "retinaface",
        device: str = "auto",
        precision: str = "auto",
        detector_weights: str | Path | None = None,
        face_det_batch_size: int = 16,
        detector_max_size: int | None = None,
        cache_dir: str | Path | None = None,
        backend: str = "torch",
        speaker_model: str | Path | nn.Module | None = None,
        enhancer_weights: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise Wav2LipError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
        self.device = resolve_device("cpu" if backend == "onnxruntime" and device == "auto" else device)
        if backend == "onnxruntime":
            if self.device.type != "cpu" or precision not in ("auto", "fp32"):
                raise Wav2LipError("the onnxruntime backend runs the fp32 generator on the CPU "
                                   "(use --device cpu --precision fp32, or the torch backend)")
            self.precision = "fp32"
            self.generator = onnx_generator(checkpoint)
        else:
            self.precision = resolve_precision(precision, self.device)
            checkpoint = store.resolve(checkpoint)
            network = checkpoints.load_model(checkpoint, "wav2lip", device=self.device)
            self.generator = inference_model(network, self.precision, self.device, inplace=True)  # fp32: the network itself
        self._detector = detector if isinstance(detector, FaceDetector) else None
        self._detector_args = {"name": detector, "weights": detector_weights, "batch_size": face_det_batch_size}
        if detector_max_size is not None:
            self._detector_args["max_size"] = detector_max_size or None
        if self._detector is None and detector not in DETECTORS:
            raise Wav2LipError(f"unknown face detector {detector!r} (one of {', '.join(DETECTORS)})")
        self.cache_dir = cache_dir
        self.weights = [p for p in (checkpoint, detector_weights) if p is not None]
        self._speaker_model = speaker_model
        self._enhancer: FaceEnhancer | None = None
        self._enhancer_weights = enhancer_weights
        self._precision_asked = precision

    @property
    def speaker_model(self) -> nn.Module | None:
        """The lip-sync expert that tells which face speaks (speaker="auto"), loaded on first need."""
        if self._speaker_model is not None and not isinstance(self._speaker_model, nn.Module):
            self._speaker_model = checkpoints.load_model(store.resolve(self._speaker_model), "syncnet",
                                                         device=self.device).eval()
        return self._speaker_model

    @property
    def enhancer(self) -> FaceEnhancer:
        """GFPGAN, loaded on the first run that asks for it (most runs never need its 350 MB)."""
        if self._enhancer is None:
            path = store.resolve(self._enhancer_weights or "GFPGANv1.4.pth")
            network = checkpoints.load_model(path, "gfpgan", device=self.device)
            # "auto" keeps GFPGAN in fp32: its bf16 face measured 38.3 dB PSNR against fp32 (worst of
            # four real faces, benchmarks/bench_enhance.py), under the 40 dB bound "auto" requires.
            dtype = DTYPES[self.precision] if self._precision_asked != "auto" else torch.float32
            self._enhancer = FaceEnhancer(network, self.device, dtype)
        return self._enhancer

    @property
    def detector(self) -> FaceDetector:
        """Created on first use, so runs with a fixed --box never need the detector's weights."""
        if self._detector is None:
            args = dict(self._detector_args)
            self._detector = create_detector(args.pop("name"), device=self.device, **args)
        return self._detector

    def _run(self, face: str | Path, audio: str | Path, options: dict,
             cancel: threading.Event | None = None) -> tuple[_Job, _Run]:
        job = _Job(face, audio, SyncOptions.from_kwargs(options))
        # The enhancer is loaded (or its file refused) before any frame is made.
        enhancer = self.enhancer if job.options.enhance != "none" else None
        return job, _Run(job, self.generator, lambda: self.detector, self.device, self.cache_dir, cancel,
                         lambda: self.speaker_model, enhancer)

    def check(self, face: str | Path, audio: str | Path, **options) -> None:
        """Raise the Wav2LipError `run` would raise before its first frame for these inputs and options
        (the audio decoded, the face's first frames probed), without running anything."""
        self._run(face, audio, options)

    def inputs(self, face: str | Path, audio: str | Path) -> list[str | Path]:
        """Every file a run reads: an output path must be none of them."""
        return [face, audio, *self.weights]

    def run(self, face: str | Path, audio: str | Path, output: str | Path, *,
            on_progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
            **options) -> Result:
        """Lip-sync `face` (video or image) to `audio` into `output` (.mp4, .mov or .mkv; .mkv with
        lossless=True). Options: the fields of `SyncOptions`. `on_progress(done, total)` is called after
        every frame; setting `cancel` stops every stage within a tenth of a second and raises Wav2LipError,
        with nothing left at `output`."""
        check_output_path(output, self.inputs(face, audio), bool(options.get("lossless")))
        job, run = self._run(face, audio, options, cancel)
        return lipsync_file(job, run, output, on_progress)

    def preview(self, face: str | Path, audio: str | Path, output: str | Path, frame: int = 0,
                **options) -> Preview:
        """Write one PNG for output frame `frame`: source | generated crop | blended | mask, to tune the
        blend (SyncOptions mask fields) in a second before a long run. The box is that frame's own
        detection (a run also smooths it with its neighbours); audio window and silence as in a run."""
        start = time.perf_counter()
        output = check_output(output, [face, audio])
        if output.suffix.lower() != ".png":
            raise Wav2LipError(f"{output}: the preview is a PNG image (name it .png)")
        job, run = self._run(face, audio, options)
        if not 0 <= frame < job.n_frames:
            raise Wav2LipError(f"{job.face}: frame {frame} is outside the output's {job.n_frames} frames")
        image = _source_frame(job, frame)
        item = _Frame(frame, frame, True, image, speech=float(job.speech[frame]))
        item.box = job.fixed_box(image.shape[1], image.shape[0])
        if item.box is None:
            tracked = next(track([image], self.detector, run.track_options()))
            item.box = tracked.box
            item.landmarks = tracked.detection.landmarks if tracked.detection is not None else None
        if item.box is None:
            raise Wav2LipError(f"{job.face}: no face found in frame {frame} (give the face box with --box)")
        batch = run._inputs([_Frame(frame, frame, True, image, item.box, speech=1.0 if job.options.silence
                                    == "original" else item.speech)])
        generated = to_uint8(run_generator(self.generator, batch.mel, batch.faces, self.device))[0]
        blended = image.copy()
        shown = _Frame(frame, frame, True, blended, item.box, generated.copy(), item.speech, item.landmarks)
        if job.options.silence == "original" and item.speech < 1:
            _blend_faded(blend_function(job.options), shown)
        else:
            blend_function(job.options)(shown)
        x1, y1, x2, y2 = (int(v) for v in item.box)
        mask = (blend_mask(item.box, job.options.mask_shape, item.landmarks) if job.options.blend == "feather"
                else np.ones((y2 - y1, x2 - x1, 1), np.float32))
        with atomic_output(output) as tmp:
            if not cv2.imwrite(str(tmp), _panels(image, blended, generated, mask, item.box)):
                raise Wav2LipError(f"{output}: the PNG could not be written")
        return Preview(output, frame, (x1, y1, x2, y2), item.speech, time.perf_counter() - start)

    def frames(self, face: str | Path, audio: str | Path, **options) -> Iterator[np.ndarray]:
        """The output frames (BGR uint8) one at a time, for callers that want frames, not a file."""
        job, run = self._run(face, audio, options)
        for frame in stream(job, run, options.get("progress", False)):
            yield frame.image


def lipsync(face: str | Path, audio: str | Path, output: str | Path, checkpoint: str | Path = "wav2lip_gan.pth",
            detector: str = "retinaface", device: str = "auto", precision: str = "auto",
            detector_weights: str | Path | None = None, **options) -> Result:
    """One call: load the models, lip-sync `face` to `audio` into `output`. Options: the fields of
    `SyncOptions`, checked (with the output path) before any model is loaded."""
    SyncOptions.from_kwargs(options)
    check_output_path(output, [face, audio, checkpoint, detector_weights], bool(options.get("lossless")))
    syncer = LipSyncer(checkpoint, detector, device, precision, detector_weights=detector_weights)
    return syncer.run(face, audio, output, **options)
