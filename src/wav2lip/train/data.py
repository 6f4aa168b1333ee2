"""Training samples from the prepared layout (spec section 9, `data.layout`), drawn as the reference draws them.

Every sample is a pure function of (seed, sample index): a resumed or sharded run sees exactly the
samples an uninterrupted single run would. Images stay uint8 until they reach the device (a quarter of
the bytes through workers and pinned memory); mels come from `mel.npy` beside `audio.wav` when
preprocessing wrote one, else they are computed once per clip and kept.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.layout import FPS, IMG_SIZE, MEL_STEP, SYNC_T, ClipEntry, clip_mel
from ..errors import Wav2LipError
from ..io.audio import MEL_FPS, mel_start

# Draws tried for one sample before deciding the data cannot give any.
_MAX_DRAWS = 1000


class _LRU:
    """A bounded dict: the newest `capacity` entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: OrderedDict = OrderedDict()

    def get(self, key):
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if self.capacity <= 0:
            return
        self.items[key] = value
        if len(self.items) > self.capacity:
            self.items.popitem(last=False)


def _read_jpeg(path: Path) -> np.ndarray | None:
    """A BGR face crop, or None when the file is missing, cut short (no end-of-image marker: checked
    first, so libjpeg never prints its warnings) or does not decode."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


class ClipSamples(Dataset):
    """Shared machinery of both recipes: clip choice, frame windows, mel windows, caches.

    Each DataLoader worker holds its own copy of the caches (decoded frames and mels).
    """

    def __init__(self, clips: list[ClipEntry], seed: int, frame_cache: int = 20_000) -> None:
        self.clips = clips
        self.seed = seed
        self._frames = _LRU(frame_cache)
        self._mels = _LRU(max(64, frame_cache // 100))
        self._present = [set(c.frames.tolist()) for c in clips]
        self.unreadable: set[Path] = set()  # face images that failed to decode (skipped, named if nothing is left)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def n_frames(self) -> int:
        """Face frames in all clips: what one pass over the set samples (each sample is a random window,
        so a pass is this many samples, not a visit to every window)."""
        return sum(len(clip.frames) for clip in self.clips)

    def frame(self, k: int, index: int) -> np.ndarray | None:
        """The 96x96 BGR uint8 crop of frame `index` of clip k, None if absent or unreadable."""
        if index not in self._present[k]:
            return None
        key = (k, index)
        image = self._frames.get(key)
        if image is None:
            path = self.clips[k].folder / f"{index}.jpg"
            image = _read_jpeg(path)
            if image is None:
                self.unreadable.add(path)
                return None
            if image.shape[:2] != (IMG_SIZE, IMG_SIZE):
                image = cv2.resize(image, (IMG_SIZE, IMG_SIZE))
            self._frames.put(key, image)
        return image

    def window(self, k: int, start: int) -> np.ndarray | None:
        """Frames start..start+4 of clip k as (5, 96, 96, 3) uint8, None if any is missing."""
        images = []
        for index in range(start, start + SYNC_T):
            image = self.frame(k, index)
            if image is None:
                return None
            images.append(image)
        return np.stack(images)

    def mel(self, k: int) -> np.ndarray:
        mel = self._mels.get(k)
        if mel is None:
            mel = clip_mel(self.clips[k].folder)
            self._mels.put(k, mel)
        return mel

    def mel_window(self, k: int, frame: int, offset: int = 0) -> np.ndarray | None:
        """(1, 80, 16) mel window of video frame `frame` (moved by `offset` mel steps), None where it runs
        outside the audio."""
        start = mel_start(frame, FPS) + offset
        mel = self.mel(k)
        if start < 0 or start + MEL_STEP > mel.shape[1]:
            return None
        return mel[None, :, start:start + MEL_STEP].astype(np.float32)

    def draw(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """A random clip, a random frame and a random different frame of the same clip."""
        k = int(rng.integers(len(self.clips)))
        frames = self.clips[k].frames
        first = int(frames[rng.integers(len(frames))])
        other = first
        while other == first:
            other = int(frames[rng.integers(len(frames))])
        return k, first, other

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def exhausted(self) -> Wav2LipError:
        where = self.clips[0].folder.parent.parent
        if self.unreadable:
            first = min(self.unreadable)
            return Wav2LipError(
                f"{first}: not a readable face image ({len(self.unreadable)} unreadable images met); run "
                f"`wav2lip preprocess` again on those clips or take them out of the file lists"
            )
        short = self._short_audio()
        if short:
            clip, seconds, need = short[0]
            return Wav2LipError(
                f"{clip.folder / 'audio.wav'}: {seconds:.2f} s of audio for frames that need {need:.2f} s, and no "
                f"usable training sample in {_MAX_DRAWS} draws ({len(short)} of {len(self.clips)} clips like it; a "
                f"damaged or cut audio.wav: run `wav2lip preprocess` again on them or take them out of the lists)"
            )
        return Wav2LipError(
            f"{where}: no usable training sample in {_MAX_DRAWS} draws (clips too short for their audio?)"
        )

    def _short_audio(self) -> list[tuple[ClipEntry, float, float]]:
        """(clip, seconds of audio, seconds its frames need) for the clips whose audio cannot cover even
        their first five frames' mel windows: what an exhausted draw names."""
        short = []
        for k, clip in enumerate(self.clips):
            try:
                n_mel = self.mel(k).shape[1]
            except Wav2LipError:
                n_mel = 0
            first = int(clip.frames[0]) if len(clip.frames) else 0
            need = mel_start(first + SYNC_T, FPS) + MEL_STEP
            if n_mel < need:
                short.append((clip, n_mel / MEL_FPS, need / MEL_FPS))
        return short


class ExpertSamples(ClipSamples):
    """SyncNet samples (spec section 7): half in sync, half with frames from another window.

    Item: faces (5, 48, 96, 3) uint8 lower halves, mel (1, 80, 16) float32, label float32 (1 = in sync).
    """

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
        rng = self.rng(index)
        for _ in range(_MAX_DRAWS):
            k, frame, wrong = self.draw(rng)
            in_sync = bool(rng.random() < 0.5)
            faces = self.window(k, frame if in_sync else wrong)
            if faces is None:
                continue
            mel = self.mel_window(k, frame)
            if mel is None:
                continue
            return faces[:, IMG_SIZE // 2:], mel, np.float32(in_sync)
        raise self.exhausted()


class GeneratorSamples(ClipSamples):
    """Wav2Lip samples (spec section 8): target window, random reference window, per-frame mels.

    Item: target (5, 96, 96, 3) uint8, reference (5, 96, 96, 3) uint8, per-frame mels (5, 1, 80, 16)
    (frame j uses the window of frame j - 1), and the whole window's mel (1, 80, 16) for the sync loss.
    With a `mel_offset`, a fifth entry: the per-frame mels moved by that many mel steps, for a model
    trained on another window (the others stay: a teacher's input, the expert's judgement).
    A draw with any frame or mel window missing is dropped and redrawn, as the reference does.
    """

    def __init__(self, clips: list[ClipEntry], seed: int, frame_cache: int = 20_000, mel_offset: int = 0) -> None:
        super().__init__(clips, seed, frame_cache)
        self.mel_offset = mel_offset

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng(index)
        for _ in range(_MAX_DRAWS):
            k, frame, wrong = self.draw(rng)
            target = self.window(k, frame)
            reference = self.window(k, wrong)
            if target is None or reference is None:
                continue
            mel = self.mel_window(k, frame)
            if mel is None or frame < 1:
                continue
            per_frame = [self.mel_window(k, frame + j - 1) for j in range(SYNC_T)]
            if any(m is None for m in per_frame):
                continue
            if not self.mel_offset:
                return target, reference, np.stack(per_frame), mel
            moved = [self.mel_window(k, frame + j - 1, self.mel_offset) for j in range(SYNC_T)]
            if any(m is None for m in moved):
                continue
            return target, reference, np.stack(per_frame), mel, np.stack(moved)
        raise self.exhausted()


class StepSampler(Sampler[int]):
    """Sample indices for steps start, start+1, ...: step s of rank r gets its own slice of a global batch.

    Global batch s holds indices [s*B*W, (s+1)*B*W); rank r takes B of them. The same run on more
    processes, or resumed at any step, draws the same samples.
    """

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1,
                 stop_step: int | None = None) -> None:
        self.batch_size, self.start_step, self.rank, self.world = batch_size, start_step, rank, world
        self.stop_step = stop_step

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while self.stop_step is None or step < self.stop_step:
            first = (step * self.world + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            step += 1

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an endless sampler has no length")
        return (self.stop_step - self.start_step) * self.batch_size


def to_device_images(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float in [0, 1] on `device` (BGR kept, as the reference)."""
    return batch.to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255.0)
