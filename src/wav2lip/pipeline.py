"""The streaming lip-sync chain: decode -> detect/track -> crop -> generate -> blend -> encode.

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

from . import audio as audio_io
from . import checkpoints, store, video_io
from .blend import BLENDS, to_uint8
from .device import inference_model, resolve_device, resolve_precision
from .errors import Wav2LipError
from .export import onnx_generator
from .faces import BoxCalibration, FaceDetector, FaceTrackOptions, cached_track, create_detector, track
from .files import check_output
from .options import (BACKENDS, BLEND_MODES, DETECTORS, LOOP_MODES, SMOOTH_MODES, X264_PRESETS, check_choice,
                      check_finite, video_container)
from .stages import Profile, Stage

FACE_SIZE = 96  # generator crop side (spec section 4)
MEL_STEP = 16  # mel frames per window (spec section 3)
REFERENCE_BATCH = 128  # the reference's generator batch (spec section 5)
# Frames held per generator batch are capped at this many bytes: at most three batches are in flight,
# so 720p runs in batches of 46 and 1080p of 20, and peak memory stays far below 2 GB.
MAX_BATCH_BYTES = 128 * 2**20
FRAME_QUEUE = 8  # frames between per-frame stages: enough to smooth out jitter, little memory
STAGES = ("decode", "detect", "crop", "generate", "blend", "encode")
STOP_WAIT_S = 5.0  # a stopped run waits this long for its stage threads to leave torch/PyAV

# uint8 -> float32 x / 255, exactly as the reference's float64 division then cast to float32.
_UNIT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


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

    @property
    def speed(self) -> float:
        """Output frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        where = f" -> {self.output}" if self.output else ""
        return (f"{self.frames} frames ({self.frames / self.fps:.2f} s at {self.fps:g} fps), "
                f"{self.faces_missed} without a face, {self.seconds:.1f} s, {self.speed:.1f} frames/s{where}")

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


# ---------------------------------------------------------------- the stages


@dataclass
class _Frame:
    index: int  # output frame number
    source: int  # source frame number (the same frame again when the video loops)
    first: bool  # first time this source frame is seen (it goes through detection)
    image: np.ndarray
    box: np.ndarray | None = None
    face: np.ndarray | None = None  # generated 96x96x3 uint8 BGR


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

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The reference's order: resize_factor, rotate, crop; a still image skips all three."""
        return image if self.still else prepare_frame(image, self.options, self.face)

    def decode(self, _: object = None) -> Iterator[_Frame]:
        """Output frames 0..n-1: the first pass of the video, then loops of it (or the still)."""
        n = self.n_frames
        if self.still or self.options.static:
            first = self.prepare(next(iter(self.source.frames(1))))
            for k in range(n):  # a fresh copy each time: frames are blended in place downstream
                yield _Frame(k, 0, k == 0, first.copy())
            return
        count = 0
        for image in self.source.frames():
            if count == n:
                break
            yield _Frame(count, count, True, self.prepare(image))
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
            yield _Frame(count + k - start, _loop_index(k, count, loop), False, self.prepare(image))

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
                 device: torch.device, cache_dir: str | Path | None, cancel: threading.Event | None = None) -> None:
        self.job, self.generator, self.get_detector = job, generator, detector
        self.device, self.cache_dir = device, cache_dir
        self.profile = Profile()
        self.stop = _StopFlag(cancel)

    @property
    def cancelled(self) -> bool:
        return self.stop.cancel is not None and self.stop.cancel.is_set()

    def track_options(self) -> FaceTrackOptions:
        opts = self.job.options
        return FaceTrackOptions(pads=tuple(opts.pads), smooth=opts.smooth, detect_every=opts.detect_every,
                                calibration=BoxCalibration(*opts.calibration) if opts.calibration else None)

    def detect(self, frames: Iterable[_Frame]) -> Iterator[_Frame]:
        """Boxes for the first pass of the video, tracked as the reference does on its kept frames
        (0 .. reference count) and the extra frames after them as a second shot, so the extras never
        change a reference frame's smoothing; looped frames reuse their source frame's box."""
        job = self.job
        frames = iter(frames)
        boxes: list[np.ndarray | None] = []
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
        options = self.track_options()
        detector = self.get_detector()
        if job.still or job.options.static:
            limits = [1]
        else:
            limits = [job.n_reference] + ([job.n_frames] if job.n_frames > job.n_reference else [])
        for segment, limit in enumerate(limits):
            source = {"fps": job.fps, "resize_factor": job.options.resize_factor, "rotate": job.options.rotate,
                      "crop": list(job.options.crop), "static": job.options.static, "segment": segment}
            tracked = (cached_track(job.face, take(limit), detector, options, self.cache_dir, source)
                       if job.options.cache else track(take(limit), detector, options))
            for item in tracked:
                frame = pending.popleft()
                frame.box = item.box
                boxes.append(item.box)
                yield frame
        if not any(box is not None for box in boxes):
            raise Wav2LipError(f"{job.face}: no face found in any frame (give the face box with --box)")
        for item in itertools.chain(ahead, frames):
            item.box = boxes[item.source] if item.source < len(boxes) else None
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
        with_face = [f for f in batch if f.box is not None]
        if not with_face:
            return _Batch(batch, np.zeros((0, 1, 80, MEL_STEP), np.float32), np.zeros((0, 6, 96, 96), np.float32))
        crops = np.stack([crop_face(f.image, f.box) for f in with_face])
        mel = frame_mel_windows(self.job.mel, [f.index for f in with_face], self.job.fps)
        return _Batch(batch, mel, generator_faces(crops))

    def generate(self, batches: Iterable[_Batch]) -> Iterator[_Frame]:
        for batch in batches:
            if len(batch.mel):
                faces = to_uint8(run_generator(self.generator, batch.mel, batch.faces, self.device))
                for frame, face in zip((f for f in batch.frames if f.box is not None), faces):
                    frame.face = face
            yield from batch.frames

    def blend(self, frames: Iterable[_Frame]) -> Iterator[_Frame]:
        fn = BLENDS[self.job.options.blend]
        for frame in frames:
            if frame.face is not None:
                fn(frame.image, frame.box, frame.face)
                frame.face = None
            yield frame

    def frames(self) -> Iterator[_Frame]:
        """The chain's output, in order; stopping early (or an error) stops every stage."""
        stages: Iterable = None
        started: list[Stage] = []
        chain = (("decode", self.job.decode, FRAME_QUEUE), ("detect", self.detect, FRAME_QUEUE),
                 ("crop", self.crop, 1), ("generate", self.generate, FRAME_QUEUE),
                 ("blend", self.blend, FRAME_QUEUE))
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


def run_generator(model: nn.Module, mel: np.ndarray, faces: np.ndarray, device: torch.device) -> np.ndarray:
    """(B, 1, 80, 16) mel + (B, 6, 96, 96) faces -> (B, 3, 96, 96) float32 in [0, 1]."""
    with torch.inference_mode():
        out = model(torch.from_numpy(mel).to(device), torch.from_numpy(faces).to(device))
    return out.float().cpu().numpy()


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, smoothing=0.1)


def stream(job: _Job, run: _Run, progress: bool = False) -> Iterator[_Frame]:
    """Output frames in order, with the progress bar."""
    bar = _progress(job.n_frames, progress)
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
                  dict(run.profile.seconds))


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
    backend: "torch", or "onnxruntime" (CPU, fp32: the generator exported once into the weight cache).
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
            self.generator = inference_model(network, self.precision, self.device)  # fp32: the network itself
        self._detector = detector if isinstance(detector, FaceDetector) else None
        self._detector_args = {"name": detector, "weights": detector_weights, "batch_size": face_det_batch_size}
        if detector_max_size is not None:
            self._detector_args["max_size"] = detector_max_size or None
        if self._detector is None and detector not in DETECTORS:
            raise Wav2LipError(f"unknown face detector {detector!r} (one of {', '.join(DETECTORS)})")
        self.cache_dir = cache_dir
        self.weights = [p for p in (checkpoint, detector_weights) if p is not None]

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
        return job, _Run(job, self.generator, lambda: self.detector, self.device, self.cache_dir, cancel)

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
