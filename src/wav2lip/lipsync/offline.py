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

import functools
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
from torch import nn

from ..io import audio as audio_io
from .. import checkpoints
from .. import store
from ..io import video as video_io
from .blend import blend_mask
from ..device import DTYPES, inference_model, resolve_device, resolve_precision
from . import self_enhance
from .enhance import ENHANCE_BATCH, Enhancer, FaceEnhancer
from ..errors import Wav2LipError
from ..export import onnx_generator
from ..faces import FaceDetector, FaceTrackOptions, cached_track, create_detector, track
from ..faces.cache import file_digest
from ..io.files import check_output
from .options import BACKENDS, DETECTORS, SyncOptions, video_container
from ..faces import speaker as speakers
from ..io.files import atomic_output
from .kernel import (Batch, Frame, FrameKernel, fixed_box, frame_mel_windows, loop_index,
                     prepare_frame, speech_weights, track_options)
from .stages import Profile, Stage

# Frames held per generator batch are capped at this many bytes: at most three batches are in flight,
# so 720p runs in batches of 46 and 1080p of 20, and peak memory stays far below 2 GB.
MAX_BATCH_BYTES = 128 * 2**20
FRAME_QUEUE = 8  # frames between per-frame stages: enough to smooth out jitter, little memory
STAGES = ("decode", "detect", "crop", "generate", "blend", "enhance", "encode")
STOP_WAIT_S = 5.0  # a stopped run waits this long for its stage threads to leave torch/PyAV

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


# ---------------------------------------------------------------- the stages


class _Job:
    """One lip-sync run's inputs, decided before any frame is decoded."""

    def __init__(self, face: str | Path, audio: str | Path, options: SyncOptions, mel_offset: int = 0) -> None:
        options.check()
        self.face, self.audio, self.options, self.mel_offset = Path(face), Path(audio), options, mel_offset
        wav = audio_io.load_audio(self.audio)
        if not np.any(wav):
            raise Wav2LipError(f"{self.audio}: the audio is completely silent: nothing to lip-sync")
        self.mel = audio_io.melspectrogram(wav)
        if self.mel.shape[1] < audio_io.MEL_STEP:
            raise Wav2LipError(
                f"{self.audio}: audio of {wav.size / audio_io.SAMPLE_RATE:.3f} s is shorter than one "
                f"mel window ({audio_io.MEL_STEP / audio_io.MEL_FPS:.1f} s)"
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
                       else speech_weights(wav, self.n_frames, self.fps, options.crossfade, mel_offset))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The reference's order: resize_factor, rotate, crop; a still image skips all three."""
        return image if self.still else prepare_frame(image, self.options, self.face)

    def decode(self, _: object = None) -> Iterator[Frame]:
        """Output frames 0..n-1: the first pass of the video, then loops of it (or the still)."""
        n = self.n_frames
        if self.still or self.options.static:
            first = self.prepare(next(iter(self.source.frames(1))))
            for k in range(n):  # a fresh copy each time: frames are blended in place downstream
                yield Frame(k, 0, k == 0, first.copy(), speech=float(self.speech[k]))
            return
        count = 0
        for image in self.source.frames():
            if count == n:
                break
            yield Frame(count, count, True, self.prepare(image), speech=float(self.speech[count]))
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
            yield Frame(index, loop_index(k, count, loop), False, self.prepare(image),
                         speech=float(self.speech[index]))

    @property
    def silent_frames(self) -> int:
        """Output frames changed by the silence mode (pauses and their crossfades)."""
        return int(np.sum(self.speech < 1))

    def fixed_box(self, width: int, height: int) -> np.ndarray | None:
        return fixed_box(self.options, width, height, self.face)


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
                 enhancer: Enhancer | None = None) -> None:
        self.job, self.generator, self.get_detector = job, generator, detector
        self.device, self.cache_dir, self.get_expert = device, cache_dir, expert
        self.enhancer = enhancer
        self.speakers: list[speakers.ShotChoice] = []
        self.profile = Profile()
        self.stop = _StopFlag(cancel)
        self.kernel = FrameKernel(job.options, generator, device, enhancer, still=job.still or job.options.static)

    @property
    def cancelled(self) -> bool:
        return self.stop.cancel is not None and self.stop.cancel.is_set()

    def track_options(self, offset: int = 0) -> FaceTrackOptions:
        """Tracking settings; `offset`: the first frame of the segment being tracked (speaker points)."""
        return track_options(self.job.options, self.speakers, offset)

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

    def detect(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Boxes for the first pass of the video, tracked as the reference does on its kept frames
        (0 .. reference count) and the extra frames after them as a second shot, so the extras never
        change a reference frame's smoothing; looped frames reuse their source frame's box."""
        job = self.job
        frames = iter(frames)
        boxes: list[np.ndarray | None] = []
        points: list[np.ndarray | None] = []
        pending: deque[Frame] = deque()
        first = next(frames, None)
        if first is None:
            return
        fixed = job.fixed_box(first.image.shape[1], first.image.shape[0])
        ahead: list[Frame] = [first]

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

    def crop(self, frames: Iterable[Frame]) -> Iterator[Batch]:
        """Consecutive frames in batches with the generator's inputs for those that have a face."""
        batch: list[Frame] = []
        size = None
        for frame in frames:
            size = size or self.batch_size(frame.image)
            batch.append(frame)
            if len(batch) == size:
                yield self._inputs(batch)
                batch = []
        if batch:
            yield self._inputs(batch)

    def _inputs(self, batch: list[Frame]) -> Batch:
        job = self.job
        return self.kernel.inputs(batch, lambda indices: frame_mel_windows(job.mel, indices, job.fps, job.mel_offset))

    def generate(self, batches: Iterable[Batch]) -> Iterator[Frame]:
        for batch in batches:
            yield from self.kernel.generate(batch)

    def blend(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            yield self.kernel.blend(frame)

    def enhance(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Restore the painted mouth of frames with a face, a few at a time (one network call, no more faces
        than a generator call)."""
        size = min(ENHANCE_BATCH, self.job.options.batch_size)
        batch: list[Frame] = []
        for frame in frames:
            batch.append(frame)
            if sum(f.box is not None for f in batch) == size:
                yield from self.kernel.enhance(batch)
                batch = []
        yield from self.kernel.enhance(batch)

    def frames(self) -> Iterator[Frame]:
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


def _progress(total: int, enabled: bool, label: str | None = None):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, smoothing=0.1, desc=label)


def stream(job: _Job, run: _Run, progress: bool = False) -> Iterator[Frame]:
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
                 on_progress: Callable[[int, int], None] | None = None,
                 on_frame: Callable[[Frame], None] | None = None) -> Result:
    """Run the chain into a video file at `output` (written atomically; nothing there on failure or
    cancellation). `on_progress(frames written, frames in all)` is called after every frame, `on_frame`
    with each frame written (its image, face box, source frame)."""
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
            if on_frame is not None:
                on_frame(frame)
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
            path = store.resolve(checkpoint)
            self.mel_offset = checkpoints.mel_offset(checkpoints.read_checkpoint(path), path)
            self.checkpoint = path
        else:
            self.precision = resolve_precision(precision, self.device)
            checkpoint = self.checkpoint = store.resolve(checkpoint)
            network = checkpoints.load_model(checkpoint, "wav2lip", device=self.device)
            self.mel_offset = network.mel_offset  # the window it was trained on (Wav2Lip.mel_offset)
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

    def enhancer_for(self, options: SyncOptions, face: Path, fit: bool = True) -> Enhancer | None:
        """The enhancer `options.enhance` names for a run on `face`, loaded (or its file refused) before any
        frame is made: GFPGAN, a fitted file, or with `fit` the one fitted to `face` (`--enhance self`:
        from the cache, else fitted now, which takes minutes; without `fit`, None until then)."""
        if options.enhance == "self" and not fit:
            return None
        return self_enhance.load_enhancer(options.enhance, face, lambda: self.enhancer, lambda: self.detector,
                                          self.device, options.progress, lambda: self.painter_for(face))

    def painter_for(self, face: str | Path) -> self_enhance.Painter | None:
        """This generator painting `face`'s frames from its own soundtrack, for fitting an enhancer to
        both (None for a face without one)."""
        return self_enhance.painter_for(face, lambda: self)

    @functools.cached_property
    def checkpoint_digest(self) -> str:
        """The generator file's SHA-256 (what an enhancer it painted for records), read once."""
        return file_digest(self.checkpoint)

    @property
    def detector(self) -> FaceDetector:
        """Created on first use, so runs with a fixed --box never need the detector's weights."""
        if self._detector is None:
            args = dict(self._detector_args)
            self._detector = create_detector(args.pop("name"), device=self.device, **args)
        return self._detector

    def _run(self, face: str | Path, audio: str | Path, options: dict,
             cancel: threading.Event | None = None, fit: bool = True) -> tuple[_Job, _Run]:
        job = _Job(face, audio, SyncOptions.from_kwargs(options), self.mel_offset)
        enhancer = self.enhancer_for(job.options, job.face, fit)
        return job, _Run(job, self.generator, lambda: self.detector, self.device, self.cache_dir, cancel,
                         lambda: self.speaker_model, enhancer)

    def check(self, face: str | Path, audio: str | Path, **options) -> None:
        """Raise the Wav2LipError `run` would raise before its first frame for these inputs and options
        (the audio decoded, the face's first frames probed), without running anything."""
        self._run(face, audio, options, fit=False)

    def inputs(self, face: str | Path, audio: str | Path) -> list[str | Path]:
        """Every file a run reads: an output path must be none of them."""
        return [face, audio, *self.weights]

    def run(self, face: str | Path, audio: str | Path, output: str | Path, *,
            on_progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
            on_frame: Callable[[Frame], None] | None = None, **options) -> Result:
        """Lip-sync `face` (video or image) to `audio` into `output` (.mp4, .mov or .mkv; .mkv with
        lossless=True). Options: the fields of `SyncOptions`. `on_progress(done, total)` is called after
        every frame, `on_frame(frame)` with each frame written (for measuring it against its source);
        setting `cancel` stops every stage within a tenth of a second and raises Wav2LipError, with
        nothing left at `output`."""
        check_output_path(output, self.inputs(face, audio), bool(options.get("lossless")))
        job, run = self._run(face, audio, options, cancel)
        return lipsync_file(job, run, output, on_progress, on_frame)

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
        item = Frame(frame, frame, True, image, speech=float(job.speech[frame]))
        item.box = job.fixed_box(image.shape[1], image.shape[0])
        if item.box is None:
            tracked = next(track([image], self.detector, run.track_options()))
            item.box = tracked.box
            item.landmarks = tracked.detection.landmarks if tracked.detection is not None else None
        if item.box is None:
            raise Wav2LipError(f"{job.face}: no face found in frame {frame} (give the face box with --box)")
        # The kernel paints and blends it as a run would; a pause shown as the source is painted anyway,
        # to show what fades in at its edges.
        shown = Frame(frame, frame, True, image.copy(), item.box, speech=item.speech, landmarks=item.landmarks)
        shown.speech = 1.0 if job.options.silence == "original" else item.speech
        run.kernel.generate(run._inputs([shown]))
        generated, shown.speech = shown.face.copy(), item.speech
        blended = run.kernel.blend(shown).image
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
