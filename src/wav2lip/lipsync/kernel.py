"""One frame's lip-sync, shared by every surface: the offline chain, live, the preview and the server.

A `FrameKernel` takes frames that already have their image, face box (and landmarks) and speech weight,
and does the rest the same way wherever it runs: the generator's input (the reference's 96x96 crop with
its lower half masked, the frame's mel window, silenced in pauses when `silence="still"`), the generator
(a still face encoded once per run), the blend (paste or feather with its mask, landmarks held between
detections, faded toward the source at the edges of pauses shown as `silence="original"`) and the
enhancer. What differs between surfaces is only where frames, boxes, mel windows and speech weights come
from (a file read ahead, or audio as it streams in).

By default every frame the authors' inference makes is made the same way (spec sections 3-5): the
per-frame mel window, the BGR [0, 1] 96x96 crop with its lower half masked beside the unmasked one,
pads (0, 10, 0, 0), the truncating uint8 conversion and the bilinear paste.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import Wav2LipError
from ..faces import BoxCalibration, FaceTrackOptions
from ..io import audio as audio_io
from ..models.generator import FACE_SIZE
from . import vad
from .blend import BLENDS, feather, to_uint8
from .enhance import Enhancer
from .options import SyncOptions

# uint8 -> float32 x / 255, exactly as the reference's float64 division then cast to float32.
_UNIT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
# The mel window of digital silence: every band at the floor (spec section 2's normalisation of -100 dB).
SILENT_MEL = np.float32(-audio_io.MAX_ABS_VALUE)


@dataclass
class Frame:
    """One output frame on its way through the kernel."""

    index: int  # output frame number
    source: int  # source frame number (the same frame again when the video loops)
    first: bool  # first time this source frame is seen (it goes through detection)
    image: np.ndarray
    box: np.ndarray | None = None
    face: np.ndarray | None = None  # generated 96x96x3 uint8 BGR
    speech: float = 1.0  # 1: lip-synced; 0: a pause (SyncOptions.silence); between: a crossfade
    landmarks: np.ndarray | None = None  # (5, 2) smoothed detector landmarks (landmark mask, enhancer)


@dataclass
class Batch:
    frames: list[Frame]
    mel: np.ndarray  # (F, 1, 80, 16) for the frames the generator paints, in order
    faces: np.ndarray  # (F, 6, 96, 96)


# ---------------------------------------------------------------- the reference's crop and input


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


def lead_samples(mel_offset: int = 0) -> int:
    """Samples after a frame's first sample that its mel window needs: 3400 (212.5 ms) for the authors'
    window, (mel_offset + 15) * 200 + 400 for a generator trained on a window `mel_offset` steps later."""
    return (mel_offset + audio_io.MEL_STEP - 1) * audio_io.HOP + audio_io.N_FFT // 2


def window_start(j: int, fps: float, mel_offset: int = 0) -> int:
    """First mel step of video frame j's window (spec section 3), moved by the generator's `mel_offset`."""
    return int(j * (audio_io.MEL_FPS / fps)) + mel_offset


def frame_mel_windows(mel: np.ndarray, frames: Iterable[int], fps: float, mel_offset: int = 0) -> np.ndarray:
    """(N, 1, 80, 16) windows for output frames: the reference's start for each frame it makes,
    the final window for the frames beyond it (spec section 3); a window moved before the audio's start
    by `mel_offset` hears digital silence there."""
    if not mel_offset:
        return audio_io.mel_windows(mel, [audio_io.mel_window_start(i, fps, mel.shape[1]) for i in frames])
    starts = np.array([min(window_start(i, fps, mel_offset), mel.shape[1] - audio_io.MEL_STEP) for i in frames])
    pad = max(0, -int(starts.min(initial=0)))
    if pad:
        mel = np.concatenate((np.full((mel.shape[0], pad), SILENT_MEL, np.float32), mel), axis=1)
    return audio_io.mel_windows(mel, starts + pad)


def run_generator(model: nn.Module, mel: np.ndarray, faces: np.ndarray, device: torch.device) -> np.ndarray:
    """(B, 1, 80, 16) mel + (B, 6, 96, 96) faces -> (B, 3, 96, 96) float32 in [0, 1]."""
    with torch.inference_mode():
        out = model(torch.from_numpy(mel).to(device), torch.from_numpy(faces).to(device))
    return out.float().cpu().numpy()


class Pauses:
    """The mouth's weight per output frame for the silence modes: 1 where the frame's mel window holds
    speech, 0 in a pause, stepping 1 / (crossfade + 1) per frame between them (the first frame takes its
    own value). One voice-activity detector (vad.SpeechDetector) fed as the audio comes: it needs no audio
    beyond a frame's mel window, so a file and a live stream of it give the same weights."""

    def __init__(self, fps: float, crossfade: int, mel_offset: int = 0) -> None:
        self.detector = vad.SpeechDetector()
        self.fps, self.mel_offset = fps, mel_offset
        self.step = 1.0 / (crossfade + 1)
        self.weight: float | None = None

    def speaking(self, j: int, detector: vad.SpeechDetector | None = None) -> bool:
        """Does frame j's mel window hold speech (as far as `detector`, by default this one, has heard)?"""
        return bool((detector or self.detector).decisions(*self._steps(j)).any())

    def forget_before(self, j: int) -> None:
        """Frames before j will not be asked about again: the detector may drop their decisions."""
        self.detector.forget(self._steps(j)[0])

    def _steps(self, j: int) -> tuple[int, int]:
        a, b = vad.window_steps(window_start(j, self.fps, self.mel_offset), audio_io.HOP, audio_io.MEL_STEP)
        return max(0, a), max(0, b)  # before the audio's start: silence

    def next(self, target: float) -> float:
        """The next frame's weight on the way to `target` (rounded so that the ends are exactly 0 and 1)."""
        if self.weight is None:
            self.weight = target
        elif target > self.weight:
            self.weight = min(target, round(self.weight + self.step, 9))
        else:
            self.weight = max(target, round(self.weight - self.step, 9))
        return self.weight


def speech_weights(wav: np.ndarray, n_frames: int, fps: float, crossfade: int, mel_offset: int = 0) -> np.ndarray:
    """(n_frames,) float32: the weights `Pauses` gives the frames of a whole recording."""
    pauses = Pauses(fps, crossfade, mel_offset)
    pauses.detector.push(wav)
    pauses.detector.finish()
    return np.array([pauses.next(1.0 if pauses.speaking(j) else 0.0) for j in range(n_frames)], np.float32)


# ---------------------------------------------------------------- frames of the source


def loop_index(k: int, count: int, loop: str) -> int:
    """Source frame of output frame k when `count` source frames loop (io.video's order)."""
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


def fixed_box(opts: SyncOptions, width: int, height: int, face: Path) -> np.ndarray | None:
    """`box` (top, bottom, left, right) as (x1, y1, x2, y2), checked against the frame."""
    if opts.box is None:
        return None
    y1, y2, x1, x2 = opts.box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise Wav2LipError(f"--box {' '.join(map(str, opts.box))} (top bottom left right) is not inside the "
                           f"{width}x{height} frame of {face}")
    return np.array([x1, y1, x2, y2], dtype=np.int64)


def track_options(opts: SyncOptions, speakers: list = (), offset: int = 0) -> FaceTrackOptions:
    """Tracking settings of a run; `speakers`: the shots' chosen faces (faces.speaker), `offset`: the
    first frame of the segment being tracked."""
    points = None
    if any(choice.reason == "sync" for choice in speakers):
        points = tuple((max(0, c.start - offset), *c.point) for c in speakers)
    return FaceTrackOptions(pads=tuple(opts.pads), smooth=opts.smooth, detect_every=opts.detect_every,
                            face_index=opts.face_index, face_at=opts.face_at, speaker_points=points,
                            calibration=BoxCalibration(*opts.calibration) if opts.calibration else None)


# ---------------------------------------------------------------- the kernel


class FrameKernel:
    """One run's generator, blend and enhancer, with the state that runs across frames (the still face's
    encoding, the last landmarks, the enhancer's). Frames must reach `blend` and `enhance` in output order."""

    def __init__(self, options: SyncOptions, generator: nn.Module, device: torch.device,
                 enhancer: Enhancer | None = None, still: bool = False) -> None:
        self.options, self.generator, self.device = options, generator, device
        self.enhancer = enhancer.for_stream() if enhancer is not None else None
        self.still = still
        self._still_face: tuple[np.ndarray, list[torch.Tensor]] | None = None  # a still's input, its features
        self._held = _HeldLandmarks()
        self._blend = blend_function(options)

    def generates(self, frame: Frame) -> bool:
        """Frames the generator paints: those with a face, except pauses shown as the source."""
        return frame.box is not None and (frame.speech > 0 or self.options.silence != "original")

    def inputs(self, frames: list[Frame], windows: Callable[[list[int]], np.ndarray]) -> Batch:
        """The generator's input for the frames it paints; `windows(indices)` gives their (N, 1, 80, 16)
        mel windows."""
        painted = [f for f in frames if self.generates(f)]
        if not painted:
            return Batch(frames, np.zeros((0, 1, 80, audio_io.MEL_STEP), np.float32),
                         np.zeros((0, 6, FACE_SIZE, FACE_SIZE), np.float32))
        crops = np.stack([crop_face(f.image, f.box) for f in painted])
        mel = windows([f.index for f in painted])
        if self.options.silence == "still":
            weight = np.array([f.speech for f in painted], np.float32)[:, None, None, None]
            mel = weight * mel + (1 - weight) * SILENT_MEL  # the generator's closed mouth in pauses
        return Batch(frames, mel, generator_faces(crops))

    def generate(self, batch: Batch) -> list[Frame]:
        """Paint the faces of a batch (`frame.face`)."""
        if len(batch.mel):
            faces = to_uint8(self._run_generator(batch))
            for frame, face in zip((f for f in batch.frames if self.generates(f)), faces):
                frame.face = face
        return batch.frames

    def _run_generator(self, batch: Batch) -> np.ndarray:
        """A still face (a photo, or --static) goes through the generator's face encoder once per run,
        not once per frame: only the mel changes from frame to frame."""
        faces = batch.faces
        if not (self.still and hasattr(self.generator, "encode_face") and (faces == faces[:1]).all()):
            return run_generator(self.generator, batch.mel, faces, self.device)
        if self._still_face is None or not np.array_equal(self._still_face[0], faces[0]):
            with torch.inference_mode():
                skips = self.generator.encode_face(torch.from_numpy(faces[:1]).to(self.device))
            self._still_face = (faces[0].copy(), skips)
        skips = [s.expand(len(batch.mel), *s.shape[1:]) for s in self._still_face[1]]
        with torch.inference_mode():
            out = self.generator.decode(torch.from_numpy(batch.mel).to(self.device), skips)
        return out.float().cpu().numpy()

    def blend(self, frame: Frame) -> Frame:
        """The painted face into the frame (in place); every output frame passes here, in order."""
        frame.landmarks = self._held(frame.box, frame.landmarks)
        if frame.face is not None:
            if self.options.silence == "original" and frame.speech < 1:
                blend_faded(self._blend, frame)
            else:
                self._blend(frame)
            frame.face = None
        return frame

    def enhance(self, frames: list[Frame]) -> list[Frame]:
        """Restore the painted mouth of the frames with a face, in one network call."""
        faces = [f for f in frames if f.box is not None]
        if self.enhancer is not None and faces and self.options.enhance_strength > 0:
            self.enhancer.enhance([f.image for f in faces], [f.box for f in faces], [f.landmarks for f in faces],
                                  self.options.blend, self.options.enhance_strength)
        return frames


def blend_function(options: SyncOptions) -> Callable[[Frame], None]:
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


def blend_faded(fn: Callable[[Frame], None], frame: Frame) -> None:
    """Blend, then mix the box back toward the source frame by the frame's speech weight (a crossfade
    into a pause shown as the source)."""
    x1, y1, x2, y2 = (int(v) for v in frame.box)
    source = frame.image[y1:y2, x1:x2].astype(np.float32)
    fn(frame)
    region = frame.image[y1:y2, x1:x2]
    mixed = source + frame.speech * (region.astype(np.float32) - source)
    region[:] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
