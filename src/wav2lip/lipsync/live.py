"""Live lip-sync: frames of an avatar made as speech streams in, at the avatar's frame rate.

The avatar (a still or a video loop) is prepared once: every source frame's face box and 96x96 crop.
`LiveSyncer.stream` then reads audio chunks on its own thread, computes the mel incrementally
(`audio.MelStream`) and makes each frame as soon as its 0.2 s mel window is complete. The frames are the
offline pipeline's: frame j of the speech gets mel window int(j * 80 / fps) of the whole signal, the same
crop, generator and blend (spec sections 3-5), and the same pauses (one voice-activity detector that needs
no audio beyond a frame's mel window), so a file fed in pieces gives the offline frames, whatever the
options.

The floor of the latency: frame k's window ends (MEL_STEP - 1) * HOP + N_FFT / 2 = 3400 samples
(212.5 ms) after the frame's first sample, so no frame can exist before that much audio after it has
arrived (200 ms when the audio comes in 20 ms chunks, whose last sample arrives with the chunk). A
generator trained on an earlier window (a checkpoint's `mel_offset`, e.g. a student distilled for live)
lowers the floor to kernel.lead_samples(mel_offset): 800 samples (50 ms) at -13; its windows before the
audio's start hear digital silence, as offline.

Timing. Speech frames are yielded as soon as they are made. An output clock (frame k due at
anchor + k / fps, moved later whenever a frame comes late) paces everything else: while the source
sends nothing, the avatar's own frames are yielded at the clock's rate; when it pauses mid-speech for
longer than `stall` seconds after the output has caught up with the clock, the speech so far is finished
as if silence followed, and when audio comes again it continues the same signal, frame-aligned.
Speech starting and stopping, and pauses in it, fade the generated mouth in and out over `crossfade`
frames instead of switching it (kernel.Pauses, as offline).

Falling behind. Speech frame j is scheduled when its mel window is complete, and never sooner than one
frame period after frame j-1 (a source faster than real time is played at real time). On a machine whose
generator is slower than the frame rate, the frames would fall ever further behind that schedule. Once
frame j is more than `max_delay` seconds late it is shown with the last painted mouth instead of a new one
(`LiveFrame.held`; cheap: no generator call), and a batch is never larger than the time left before
`max_delay` allows: the latency stays bounded and the lip-sync loses frame rate instead. `max_delay=0`
never holds a frame: every frame is painted, however late (a file fed in pieces then gives the offline
frames on any machine).
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from ..errors import Wav2LipError
from ..io import video as video_io
from ..io.audio import HOP, MEL_STEP, N_FFT, N_MELS, SAMPLE_RATE, MelStream, frame_count_for_audio
from .kernel import (SILENT_MEL, Frame, FrameKernel, Pauses, fixed_box, lead_samples, loop_index, prepare_frame,
                     window_start)
from .offline import FRAME_QUEUE, LipSyncer, _Run
from .options import MODEL_TABLE, StreamOptions, SyncOptions
from .stages import Profile, Stage
from .vad import SpeechDetector

LEAD = lead_samples(0)  # samples after a frame's start that the authors' mel window needs (212.5 ms)
STALL = StreamOptions.stall  # seconds a source may pause mid-speech (once the output caught up) before the speech is finished
MAX_DELAY = StreamOptions.max_delay  # seconds a speech frame may run behind its schedule before its mouth is held
COST_WEIGHT = 0.3  # weight of the newest batch in the running estimate of the seconds a painted frame costs
ONE_PASS = 2**62  # frames asked of the avatar for "one pass, however long"
INBOX_SECONDS = 30.0  # audio buffered ahead of the generator before the source's thread waits
_SILENT_WINDOW = np.full((N_MELS, MEL_STEP), SILENT_MEL, np.float32)  # the mel of digital silence (the dB floor)


@dataclass
class LiveFrame:
    """One output frame. `sample` is where `audio` starts in the samples the source delivered (16 kHz),
    None for the avatar's own frames (idle: no audio, `audio` is silence); `mouth` is the weight of the
    generated mouth, 0 (the avatar's own) to 1 (lip-synced), between while crossfading."""

    index: int
    image: np.ndarray  # BGR uint8, the full frame
    audio: np.ndarray  # float32 16 kHz samples that play with this frame
    time: float  # index / fps, seconds
    sample: int | None
    mouth: float
    held: bool = False  # the mouth of the last painted frame, shown because the generator fell behind


class LiveSyncer:
    """An avatar prepared once (the face boxes and landmarks of one pass), lip-synced live to any number of
    streams.

    face: a still image or a video (looped as `loop` says); stall, max_delay: see the module's docstring; syncer: a
    `LipSyncer` whose models to share, else one is loaded from the model options (checkpoint, detector,
    device, precision, ...: the fields of `ModelOptions`); cancel: set it to stop the avatar's preparation
    (a client gone meanwhile); other options: the fields of `SyncOptions`, which mean here what they mean
    offline (the frame kernel is the same).
    """

    def __init__(self, face: str | Path, stall: float = STALL, syncer: LipSyncer | None = None,
                 cancel: threading.Event | None = None, max_delay: float = MAX_DELAY, **options) -> None:
        models = {k: options.pop(k) for k in list(options) if k in MODEL_TABLE}
        self.options = SyncOptions.from_kwargs(options)
        if not stall > 0:
            raise Wav2LipError(f"stall must be a positive number of seconds, got {stall}")
        if not max_delay >= 0 or math.isinf(max_delay):
            raise Wav2LipError(f"max_delay must be 0 (never hold) or a positive number of seconds, got {max_delay}")
        self.stall, self.max_delay = stall, max_delay
        self.face = Path(face)
        self.syncer = syncer or LipSyncer(**models)
        self.mel_offset = self.syncer.mel_offset
        self.lead = lead_samples(self.mel_offset)  # this generator's floor (module docstring)
        self.source = video_io.open_source(self.face, fps=self.options.fps, loop=self.options.loop)
        self.fps = self.source.fps
        self.still = self.source.is_still or self.options.static
        # The enhancer is loaded (or its file refused, or fitted to this avatar) before the avatar is prepared.
        self.enhancer = self.syncer.enhancer_for(self.options, self.face)
        self.boxes: list[np.ndarray | None] = []
        self.landmarks: list[np.ndarray | None] = []
        self.speakers: list = []
        self._prepare(cancel)
        self.height, self.width = self._first.shape[:2]

    def _frames(self, n: int | None = None) -> Iterator[np.ndarray]:
        """Prepared avatar frames: one pass (n=None), or n frames looping."""
        if self.still:
            first = next(iter(self.source.frames(1)))
            first = first if self.source.is_still else prepare_frame(first, self.options, self.face)
            yield from itertools.repeat(first, 1 if n is None else n)
            return
        for image in self.source.frames(n):
            yield prepare_frame(image, self.options, self.face)

    def _prepare(self, cancel: threading.Event | None) -> None:
        """One pass of the avatar through the offline chain's face stage (fixed box, speaker choice, tracking,
        calibration, the detection cache), tracked as a video shorter than its audio is tracked offline.
        Only the boxes and landmarks are kept, not the frames. Setting `cancel` stops it at the next frame
        (Wav2LipError; an unfinished track is never cached)."""
        job = _AvatarJob(self.face, self.options, self.source, cancel)
        run = _Run(job, self.syncer.generator, lambda: self.syncer.detector, self.syncer.device, self.syncer.cache_dir,
                   expert=lambda: self.syncer.speaker_model)
        for frame in run.detect(job.first_pass()):
            if not self.boxes:
                self._first = frame.image
            self.boxes.append(frame.box)
            self.landmarks.append(frame.landmarks)
        if not self.boxes:
            raise Wav2LipError(f"{self.face}: no video frame could be decoded")
        self.speakers = run.speakers

    def kernel(self) -> FrameKernel:
        """A fresh frame kernel for one stream (its state runs across that stream's frames)."""
        return FrameKernel(self.options, self.syncer.generator, self.syncer.device, self.enhancer, self.still)

    def _avatar(self, _: object = None) -> Iterator[tuple[int, np.ndarray]]:
        """(source index, fresh frame) for output frames 0, 1, 2, ... forever."""
        count = len(self.boxes)
        if self.still:
            while True:
                yield 0, self._first.copy()
        for k, image in enumerate(self._frames(2**62)):
            yield loop_index(k, count, self.options.loop), image

    def samples_of(self, k: int) -> int:
        """First 16 kHz sample of frame k's audio."""
        return round(k * SAMPLE_RATE / self.fps)

    def stream(self, chunks: Iterable[np.ndarray | tuple[np.ndarray, float]],
               sample_rate: int = SAMPLE_RATE) -> Iterator[LiveFrame]:
        """Frames for audio arriving as 1-D float chunks of any size at any pace (read on its own thread),
        in order, each as soon as it can be made; ends after the last frame of the audio once the chunks
        end. Closing the iterator early stops every thread. A chunk may come as (samples, arrived): the
        `time.perf_counter()` it reached a source that buffered it (a server), so that `max_delay` counts
        from then rather than from the handover."""
        if sample_rate <= 0:
            raise Wav2LipError(f"sample rate must be positive, got {sample_rate}")
        session = _Session(self, chunks, sample_rate)
        try:
            yield from session.frames()
        finally:
            session.close()


class _AvatarJob:
    """The avatar as the offline chain's face stage sees a job: one pass of its frames, one shot."""

    def __init__(self, face: Path, options: SyncOptions, source: video_io.FrameSource,
                 cancel: threading.Event | None = None) -> None:
        self.face, self.options, self.source, self.cancel = face, options, source, cancel
        self.fps, self.still = source.fps, source.is_still
        self.n_frames = self.n_reference = 1 if self.still or options.static else ONE_PASS

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image if self.still else prepare_frame(image, self.options, self.face)

    def fixed_box(self, width: int, height: int) -> np.ndarray | None:
        return fixed_box(self.options, width, height, self.face)

    def first_pass(self) -> Iterator[Frame]:
        images = self.source.frames(1 if self.still or self.options.static else None)
        for k, image in enumerate(images):
            if self.cancel is not None and self.cancel.is_set():
                raise Wav2LipError(f"{self.face}: the avatar's preparation was cancelled")
            yield Frame(k, k, True, self.prepare(image))


class _Inbox:
    """Audio chunks handed from the source's thread to the scheduler; the source waits beyond `limit` samples."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit, self.stop = limit, stop
        self.cond = threading.Condition()
        self.items: deque[tuple[np.ndarray, float, float]] = deque()  # (samples, handed over, arrived)
        self.samples = 0
        self.done = False
        self.error: BaseException | None = None

    def put(self, chunk: np.ndarray, when: float, arrived: float) -> bool:
        with self.cond:
            while self.samples > self.limit and not self.stop.is_set():
                self.cond.wait(0.1)
            if self.stop.is_set():
                return False
            self.items.append((chunk, when, arrived))
            self.samples += chunk.size
            self.cond.notify_all()
            return True

    def close(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done, self.error = True, error
            self.cond.notify_all()

    def take(self, timeout: float) -> list[tuple[np.ndarray, float, float]]:
        """Everything that arrived, waiting up to `timeout` seconds when nothing has."""
        with self.cond:
            if not self.items and not self.done and timeout > 0:
                self.cond.wait(timeout)
            items = list(self.items)
            self.items.clear()
            self.samples = 0
            self.cond.notify_all()
            return items


def _read(chunks: Iterable[np.ndarray], sample_rate: int, inbox: _Inbox, stop: threading.Event) -> None:
    """The source's thread: chunks -> mono float32 16 kHz in [-1, 1] (as `load_audio` clips) -> inbox."""
    resampler = None
    if sample_rate != SAMPLE_RATE:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pts = 0

    def resample(x: np.ndarray | None) -> np.ndarray:
        nonlocal pts
        frame = None
        if x is not None:
            frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, pts
            pts += x.size
        out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    iterator = iter(chunks)
    try:
        for chunk in iterator:
            when = arrived = time.perf_counter()
            if isinstance(chunk, tuple) and len(chunk) == 2 and isinstance(chunk[1], float):
                chunk, arrived = chunk
            x = np.asarray(chunk, dtype=np.float32)
            if x.ndim != 1:
                raise Wav2LipError(f"audio chunks must be 1-D (mono samples), got shape {x.shape}")
            if resampler is not None and x.size:
                x = resample(np.ascontiguousarray(x))
            if x.size and not inbox.put(np.clip(x, -1.0, 1.0), when, min(arrived, when)):
                return
            if stop.is_set():
                return
        if resampler is not None:
            tail = resample(None)
            if tail.size:
                now = time.perf_counter()
                inbox.put(np.clip(tail, -1.0, 1.0), now, now)
        inbox.close()
    except BaseException as exc:  # raised again in the consumer's thread
        inbox.close(exc)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()


class _Session:
    """One `stream()`: the signal T so far (what the source sent, plus the silence that finished speech
    at stalls), its mel, the next speech frame j of T and the next output frame k."""

    def __init__(self, live: LiveSyncer, chunks: Iterable[np.ndarray], sample_rate: int) -> None:
        self.live = live
        self.period = 1.0 / live.fps
        self.pauses = (Pauses(live.fps, live.options.crossfade, live.mel_offset) if live.options.silence != "off"
                       else None)
        self.kernel = live.kernel()
        self.batch = live.options.batch_size
        self.stop = threading.Event()
        self.inbox = _Inbox(int(INBOX_SECONDS * SAMPLE_RATE), self.stop)
        self.reader = threading.Thread(target=_read, args=(chunks, sample_rate, self.inbox, self.stop),
                                       name="wav2lip-live-audio", daemon=True)
        self.reader.start()
        self.avatar_stage = Stage("avatar", live._avatar, None, FRAME_QUEUE, Profile(), self.stop)
        self.avatar = iter(self.avatar_stage)
        self.mel = MelStream()
        self.col0 = min(0, live.mel_offset)  # final mel columns from col0 on: silence before the audio's start
        self.cols = np.full((N_MELS, -self.col0), SILENT_MEL, np.float32)
        self.signal = np.zeros(0, np.float32)  # samples of T from signal0 on
        self.signal0 = 0
        self.pads: list[tuple[int, int]] = []  # (position in T, samples of silence inserted there)
        self.tail: dict[int, np.ndarray] = {}  # windows of frames finished with silence (stall or end)
        self.tail_speech: dict[int, bool] = {}  # and whether those windows hold speech
        self.j = 0
        self.k = 0
        self.ended = False
        self.last_chunk = time.perf_counter()
        self.arrivals: deque[tuple[int, float]] = deque()  # (length of T after a chunk, when it came)
        self.scheduled: float | None = None  # when speech frame j-1 was due (module docstring)
        self.cost: float | None = None  # seconds a painted frame costs, running estimate
        self.last_face: np.ndarray | None = None  # the last painted mouth, for held frames
        self.finished = 0.0  # when the speech was last finished with silence (the tail's windows complete)
        self.anchor = time.perf_counter() + live.lead / SAMPLE_RATE  # frame 0 is due when speech could first exist

    # ---------------------------------------------------------------- audio in

    @property
    def length(self) -> int:
        """Samples of T so far."""
        return self.mel.samples

    def _append(self, samples: np.ndarray, when: float | None = None) -> None:
        columns = self.mel.push(samples)
        if columns.shape[1]:
            self.cols = np.concatenate((self.cols, columns), axis=1)
        self.signal = np.concatenate((self.signal, samples.astype(np.float32)))
        if self.pauses is not None:
            self.pauses.detector.push(samples)
        self.arrivals.append((self.length, time.perf_counter() if when is None else when))

    def _drain(self, timeout: float) -> None:
        """Take what the source sent, waiting up to `timeout` seconds for something."""
        items = self.inbox.take(timeout)
        for chunk, when, arrived in items:
            self._append(chunk, arrived)
            self.last_chunk = when  # stalls count from the handover: a buffered source is no stalled one
        if not items and self.inbox.done and not self.ended:
            if self.inbox.error is not None:
                raise self.inbox.error
            self.ended = True

    def _pad_to(self, position: int) -> None:
        """Silence in T up to `position`, so the next speech starts on frame j's first sample."""
        if position > self.length:
            self.pads.append((self.length, position - self.length))
            self._append(np.zeros(position - self.length, np.float32))

    def _finish_speech(self) -> None:
        """Windows for the frames holding the rest of T: the end mirrored as `melspectrogram` does when
        the source has ended (the offline frames), or silence after it (a stall, or a very short end)."""
        live, n = self.live, self.length
        first = self.j
        count = frame_count_for_audio(n, live.fps) if n > N_FFT // 2 and 1 + n // HOP >= MEL_STEP else 0
        if self.ended and count:
            columns = np.concatenate((self.cols, self.mel.finish()), axis=1)
            n_mel = self.col0 + columns.shape[1]
            starts = [min(window_start(j, live.fps, live.mel_offset), n_mel - MEL_STEP) for j in range(first, count)]
        else:
            count = math.ceil(n * live.fps / SAMPLE_RATE - 1e-9)
            while live.samples_of(count) < n:
                count += 1
            need = (window_start(count - 1, live.fps, live.mel_offset) + MEL_STEP - 1) * HOP + N_FFT // 2 + HOP
            columns = np.concatenate((self.cols, self.mel.copy().push(np.zeros(max(0, need - n)))), axis=1)
            starts = [window_start(j, live.fps, live.mel_offset) for j in range(first, count)]
            if not self.ended:
                self._pad_to(live.samples_of(count))
        for j, start in zip(range(first, count), starts):
            self.tail[j] = columns[:, start - self.col0:start - self.col0 + MEL_STEP]
        self.finished = time.perf_counter()  # the finished windows are complete from now on
        if self.pauses is not None:
            heard = self._heard_to_the_end((starts[-1] + MEL_STEP) * HOP + N_FFT // 2 if starts else 0)
            self.tail_speech.update((j, self.pauses.speaking(j, heard)) for j in range(first, count))
        if self.ended:  # nothing after the end: the last frame's audio may be short
            self.signal = np.concatenate((self.signal, np.zeros(max(0, live.samples_of(count) - n), np.float32)))

    def _heard_to_the_end(self, until: int) -> SpeechDetector:
        """The voice-activity detector with T finished: as a file ends (the source has ended), or with
        silence after it up to sample `until` (a stall: a copy, since T goes on when the source does)."""
        if self.ended:
            self.pauses.detector.finish()
            return self.pauses.detector
        heard = self.pauses.detector.copy()
        heard.push(np.zeros(max(0, until - self.length), np.float32))
        heard.finish()
        return heard

    # ---------------------------------------------------------------- frames out

    def _window(self, j: int) -> np.ndarray | None:
        if j in self.tail:
            return self.tail[j]
        start = window_start(j, self.live.fps, self.live.mel_offset)
        if start + MEL_STEP <= self.col0 + self.cols.shape[1]:
            return self.cols[:, start - self.col0:start - self.col0 + MEL_STEP]
        return None

    def _pending(self) -> bool:
        """T holds audio of speech frame j (its window may still be incomplete)."""
        return self.live.samples_of(self.j) < self.length or self.j in self.tail

    def _weight(self, target: float) -> float:
        """The mouth's weight for the next frame (no steps with silence="off": there are no pauses)."""
        return target if self.pauses is None else self.pauses.next(target)

    def _source_sample(self, position: int) -> int:
        return position - sum(size for at, size in self.pads if at + size <= position)

    def _ready(self, j: int) -> float:
        """When speech frame j's mel window was complete: the arrival of the chunk that completed it."""
        if j in self.tail:
            return self.finished
        need = self.live.samples_of(j) + self.live.lead
        return next((when for end, when in self.arrivals if end >= need), self.arrivals[-1][1])

    def _forget_arrivals(self) -> None:
        """Drop the arrivals that only frames before j needed (the last one stays: the latest arrival)."""
        need = self.live.samples_of(self.j) + self.live.lead
        while len(self.arrivals) > 1 and self.arrivals[0][0] < need:
            self.arrivals.popleft()

    def _due_speech(self, j: int) -> float:
        """When speech frame j is due: its window complete, one period after frame j-1 at the earliest."""
        ready = self._ready(j)
        return ready if self.scheduled is None else max(ready, self.scheduled + self.period)

    def _paint_count(self, ready: int) -> int:
        """How many of the `ready` speech frames to paint in one batch now (0: hold the next one's mouth)."""
        if self.live.max_delay == 0:
            return min(ready, self.batch)
        budget = self.live.max_delay - (time.perf_counter() - self._due_speech(self.j))
        if budget < 0 and self.last_face is not None:
            return 0
        if self.cost is None:
            return 1
        fits = max(1, min(ready, self.batch, int(budget / self.cost)))
        return 1 << (fits.bit_length() - 1)  # a power of two: few batch shapes, each slow only on its first call

    def _make(self, windows: list[np.ndarray | None], hold: bool = False) -> list[LiveFrame]:
        """Output frames k, k+1, ...: speech frames j, j+1, ... where a window is given, idle frames for None
        (the avatar's own frames: no audio has come for them). `hold`: show the last painted mouth instead
        of painting one."""
        live = self.live
        made, frames, mel = [], [], {}
        started = time.perf_counter()
        for window in windows:
            source, image = next(self.avatar)
            box, landmarks = live.boxes[source], live.landmarks[source]
            if window is None:  # painted only while the mouth fades out, with the mel of silence
                target, audio, sample = 0.0, np.zeros(live.samples_of(self.k + 1) - live.samples_of(self.k),
                                                       np.float32), None
                mel[self.k] = _SILENT_WINDOW
            else:
                speaking = self.tail_speech.pop(self.j) if self.j in self.tail_speech else (
                    self.pauses is None or self.pauses.speaking(self.j))
                target = 1.0 if speaking else 0.0
                lo, hi = live.samples_of(self.j) - self.signal0, live.samples_of(self.j + 1) - self.signal0
                audio, sample = self.signal[lo:hi].copy(), self._source_sample(live.samples_of(self.j))
                mel[self.k] = window
                self.scheduled = self._due_speech(self.j)
                self.tail.pop(self.j, None)
                self.j += 1
                self._forget_arrivals()
            weight = self._weight(target)
            if window is None and weight == 0:
                box = None
            frames.append(Frame(self.k, source, False, image, box, speech=weight, landmarks=landmarks))
            made.append(LiveFrame(self.k, image, audio, self.k / live.fps, sample, weight, held=hold))
            self.k += 1
        if hold:
            for frame in frames:
                if self.kernel.generates(frame):
                    frame.face = self.last_face
                self.kernel.blend(frame)
        else:
            batch = self.kernel.inputs(frames, lambda indices: np.stack([mel[i] for i in indices])[:, None])
            for frame in self.kernel.generate(batch):
                if frame.face is not None:
                    self.last_face = frame.face
                self.kernel.blend(frame)
            if len(batch.mel):
                cost = (time.perf_counter() - started) / len(batch.mel)
                self.cost = cost if self.cost is None else self.cost + COST_WEIGHT * (cost - self.cost)
        self.kernel.enhance(frames)
        self._trim()
        return made

    def _trim(self) -> None:
        """Forget mel columns and samples no later frame needs."""
        start = window_start(self.j, self.live.fps, self.live.mel_offset)
        first = start - MEL_STEP  # the last frames at the end take the final window, which starts up to here
        if first > self.col0:
            self.cols = self.cols[:, first - self.col0:]
            self.col0 = first
        if self.pauses is not None:
            self.pauses.forget_before(self.j)
        keep = max(0, min(start * HOP - N_FFT // 2, self.live.samples_of(self.j)))
        if keep > self.signal0:
            self.signal = self.signal[keep - self.signal0:]
            self.signal0 = keep

    def _due(self) -> float:
        return self.anchor + self.k * self.period

    def _emit(self, frames: list[LiveFrame]) -> Iterator[LiveFrame]:
        for frame in frames:
            now = time.perf_counter()
            if now > self.anchor + frame.index * self.period:  # late: the clock never runs behind the output
                self.anchor = now - frame.index * self.period
            yield frame

    def frames(self) -> Iterator[LiveFrame]:
        while True:
            self._drain(0)
            windows = []
            while len(windows) < self.batch and (window := self._window(self.j + len(windows))) is not None:
                windows.append(window)
            if windows:
                count = self._paint_count(len(windows))
                yield from self._emit(self._make(windows[:max(count, 1)], hold=count == 0))
                continue
            if self._pending() and self.ended:
                self._finish_speech()
                continue
            if self.ended:
                return
            now = time.perf_counter()
            due = self._due()
            if self._pending():
                if now >= due and now - self.last_chunk >= self.live.stall:
                    self._finish_speech()
                    continue
                self._drain(max(0.001, min(0.1, max(due, self.last_chunk + self.live.stall) - now)))
                continue
            if now >= due:
                yield from self._emit(self._make([None]))
                continue
            self._drain(min(0.1, due - now))

    def close(self) -> None:
        """Stop and join every thread this session started."""
        self.stop.set()
        with self.inbox.cond:
            self.inbox.cond.notify_all()
        self.avatar_stage.thread.join(timeout=2)
        self.reader.join(timeout=2)
