"""Lip-sync metrics: LSE-D and LSE-C from the SyncNet v2 evaluator, and the audio-visual offset.

The numbers only compare with published ones when computed the evaluator's way (spec section 10):
25 fps video, 224 x 224 BGR crops fed as 0..255 floats, 13 MFCCs of int16-valued 16 kHz audio, and
the distance / confidence arithmetic of the reference. Frames stream through in batches of 5-frame
clips, so video length is bounded by time, not memory.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io import audio as audio_io
from .. import faces
from ..checkpoints import load_model
from ..constants import MIN_FACE_SIZE, MIN_TRACK
from ..device import resolve_device
from ..errors import Wav2LipError
from ..io.audio import MEL_STEP, mel_start
from ..io.files import atomic_output
from ..io.video import VIDEO_EXTENSIONS, find_videos, open_source
from ..lipsync.options import EVALUATE_MODES, check_choice
from ..models.syncnet import stack_lower_halves

# The evaluator's features and search (spec section 10).
EVAL_FPS = 25  # video is scored at 25 fps
CROP_SIZE = 224  # SyncNet v2 sees 224 x 224 frames
CLIP_FRAMES = 5  # video frames per clip (0.2 s)
SAMPLES_PER_FRAME = audio_io.SAMPLE_RATE // EVAL_FPS  # 640 audio samples per video frame
MFCC_RATE = 100  # MFCC frames per second (10 ms step)
MFCC_PER_FRAME = MFCC_RATE // EVAL_FPS  # 4 MFCC frames per video frame
MFCC_WINDOW = 20  # MFCC frames per clip (0.2 s)
VSHIFT = 15  # offsets searched: -15..15 frames
MEDFILT_KERNEL = 9  # median filter of the framewise confidence
TRACK_MEDFILT_KERNEL = 13  # median filter of the crop size and centre along a face track
CROP_SCALE = 0.4  # crop margin: rows [cy - s, cy + 1.8 s), columns cx +- 1.4 s
CROP_PAD_VALUE = 110  # grey the frame is padded with before cropping
TRACK_IOU = 0.5  # a face continues the track when it overlaps the last box by more than this
DETECT_BATCH = 16  # frames per face-detection call in "track" mode
MIN_FRAMES = CLIP_FRAMES + 1  # the reference scores min(frames, audio) - 5 clips: 6 frames give one
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds this to the difference

# python_speech_features.mfcc defaults (spec section 10).
MFCC_WINLEN = 400  # samples (25 ms)
MFCC_STEP = 160  # samples (10 ms)
MFCC_NFFT = 512
MFCC_FILTERS = 26
MFCC_CEPS = 13
MFCC_PREEMPH = 0.97
MFCC_LIFTER = 22

Mode = Literal["whole", "track"]


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 2595 * np.log10(1 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1)


def _mfcc_filters(sr: int) -> np.ndarray:
    """(26, 257) HTK-mel triangles on FFT-bin edges rounded down, peaks of 1, from 0 Hz to sr / 2."""
    points = np.linspace(_hz_to_mel_htk(0), _hz_to_mel_htk(sr / 2), MFCC_FILTERS + 2)
    edges = np.floor((MFCC_NFFT + 1) * _mel_to_hz_htk(points) / sr)
    bins = np.arange(MFCC_NFFT // 2 + 1)[None, :]
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((bins >= low) & (bins < mid), (bins - low) / (mid - low), 0.0)
        falling = np.where((bins >= mid) & (bins < high), (high - bins) / (high - mid), 0.0)
    return rising + falling


def _dct_ortho(n: int) -> np.ndarray:
    """(n, n) orthonormal DCT-II matrix."""
    k = np.arange(n)[:, None]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


def mfcc(signal: np.ndarray, sr: int = audio_io.SAMPLE_RATE) -> np.ndarray:
    """The evaluator's (13, n) MFCCs: python_speech_features defaults on raw int16-valued samples.

    Pre-emphasis keeping the first sample, zero-padded 25 ms rectangular frames every 10 ms, power
    spectrum, 26 HTK filters, log, orthonormal DCT-II, lifter 22, coefficient 0 = log frame energy.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"mfcc expects a non-empty 1-D signal, got shape {x.shape}")
    x = np.append(x[0], x[1:] - MFCC_PREEMPH * x[:-1])
    n = 1 if x.size <= MFCC_WINLEN else 1 + int(np.ceil((x.size - MFCC_WINLEN) / MFCC_STEP))
    x = np.concatenate([x, np.zeros((n - 1) * MFCC_STEP + MFCC_WINLEN - x.size)])
    frames = np.lib.stride_tricks.sliding_window_view(x, MFCC_WINLEN)[::MFCC_STEP]
    power = np.abs(np.fft.rfft(frames, MFCC_NFFT)) ** 2 / MFCC_NFFT
    tiny = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, tiny, energy)
    banks = power @ _mfcc_filters(sr).T
    banks = np.where(banks == 0, tiny, banks)
    ceps = (np.log(banks) @ _dct_ortho(MFCC_FILTERS).T)[:, :MFCC_CEPS]
    ceps *= 1 + (MFCC_LIFTER / 2) * np.sin(np.pi * np.arange(MFCC_CEPS) / MFCC_LIFTER)
    ceps[:, 0] = np.log(energy)
    return ceps.T


def median_filter(x: np.ndarray, kernel: int) -> np.ndarray:
    """scipy.signal.medfilt: odd `kernel`, zeros beyond both ends (the reference's filter)."""
    if kernel % 2 != 1:
        raise ValueError(f"median filter kernel must be odd, got {kernel}")
    x = np.asarray(x, dtype=np.float64)
    half = kernel // 2
    padded = np.pad(x, half)
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=1)


@dataclass
class OffsetSearch:
    """The reference's search over audio shifts of -vshift..vshift frames."""

    mean_dists: np.ndarray  # (2 vshift + 1,) mean distance per shift, shift -vshift first
    offset: int  # frames the audio should move: vshift - argmin
    min_dist: float  # LSE-D
    confidence: float  # LSE-C: median(mean_dists) - min_dist
    framewise_conf: np.ndarray  # (n,) median - per-frame distance at the best shift, median-filtered (9)


def offset_search(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = VSHIFT) -> OffsetSearch:
    """Compare video clip i with audio clip i + o for o in -vshift..vshift (zeros beyond the audio).

    Float32 and torch's pairwise distance (eps 1e-6), the median taken as torch's lower middle, to give
    the reference's numbers.
    """
    video_emb = torch.as_tensor(video_emb, dtype=torch.float32)
    audio_emb = torch.as_tensor(audio_emb, dtype=torch.float32)
    n = video_emb.shape[0]
    if n == 0 or audio_emb.shape[0] != n:
        raise ValueError(f"need equal, non-zero numbers of video and audio clips, got {n} and {audio_emb.shape[0]}")
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    dists = torch.stack(
        [F.pairwise_distance(video_emb, padded[shift:shift + n], eps=PAIRWISE_EPS) for shift in range(2 * vshift + 1)],
        dim=1,
    )
    mean_dists = dists.mean(dim=0)
    min_dist, best = torch.min(mean_dists, 0)
    median = torch.median(mean_dists)
    framewise = (median - dists[:, best]).numpy()
    return OffsetSearch(
        mean_dists=mean_dists.numpy(),
        offset=int(vshift - best),
        min_dist=float(min_dist),
        confidence=float(median - min_dist),
        framewise_conf=median_filter(framewise, MEDFILT_KERNEL).astype(np.float32),
    )


@dataclass
class SyncScore:
    """LSE-D (lower is better), LSE-C (higher is better) and the AV offset in frames at 25 fps.

    In "track" mode the video's numbers are the means over its face tracks (each in `tracks`), the
    offset and the per-frame curve those of the longest track.
    """

    offset: int
    lse_d: float
    lse_c: float
    n_frames: int  # 5-frame clips scored (one per video frame)
    framewise_conf: np.ndarray = field(repr=False)
    mean_dists: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))
    model: str = ""  # which network produced the numbers
    start: int = 0  # video frame (25 fps) of the first framewise_conf value
    tracks: list[TrackScore] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        out = {
            "model": self.model,
            "offset": self.offset,
            "lse_d": self.lse_d,
            "lse_c": self.lse_c,
            "n_frames": self.n_frames,
            "start": self.start,
            "framewise_conf": [round(float(v), 4) for v in self.framewise_conf],
            "mean_dists": [round(float(v), 4) for v in self.mean_dists],
        }
        if self.tracks:
            out["tracks"] = [{"start": t.start, "end": t.end, **t.score.as_dict()} for t in self.tracks]
        return out


@dataclass
class TrackScore:
    """One face track of "track" mode: video frames [start, end) at 25 fps, and its score."""

    start: int
    end: int
    score: SyncScore

def evaluator_audio(path: str | os.PathLike) -> np.ndarray:
    """16 kHz mono audio as the evaluator reads it: int16 sample values (as floats, no scaling)."""
    wav = audio_io.load_audio(path)
    return np.clip(np.round(wav.astype(np.float64) * 32768), -32768, 32767)


def audio_clips(mfccs: np.ndarray, n_clips: int) -> np.ndarray:
    """(n_clips, 1, 13, 20) float32: MFCC frames 4v .. 4v + 19 for video frame v."""
    starts = MFCC_PER_FRAME * np.arange(n_clips)
    if n_clips and starts[-1] + MFCC_WINDOW > mfccs.shape[1]:
        raise ValueError(f"{mfccs.shape[1]} MFCC frames are too few for {n_clips} clips")
    index = starts[:, None] + np.arange(MFCC_WINDOW)[None, :]
    return np.ascontiguousarray(mfccs[:, index].transpose(1, 0, 2)[:, None], dtype=np.float32)


def crop_whole(frame: np.ndarray) -> np.ndarray:
    """The paper's LRS2 scoring: the whole (already face-cropped) frame resized to 224 x 224."""
    return cv2.resize(frame, (CROP_SIZE, CROP_SIZE))


def smooth_track(boxes: np.ndarray) -> np.ndarray:
    """(n, 3) crop half-size s and centre (cx, cy) per frame from (n, 4) boxes, median-filtered (13).

    The kernel shrinks for tracks shorter than 13 frames, so the zero padding of the reference filter
    never outvotes the real values (it would give s = 0).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    n = boxes.shape[0]
    kernel = min(TRACK_MEDFILT_KERNEL, n if n % 2 else n - 1)
    s = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([median_filter(v, kernel) for v in (s, cx, cy)], axis=1)


def crop_track(frame: np.ndarray, s: float, cx: float, cy: float) -> np.ndarray:
    """The evaluator's face crop: pad by int(1.8 s) with grey 110, take rows [cy - s, cy + 1.8 s) and
    columns [cx - 1.4 s, cx + 1.4 s) (a square shifted down to hold the mouth), resize to 224."""
    pad = int(s * (1 + 2 * CROP_SCALE))
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(CROP_PAD_VALUE,) * 3)
    my, mx = cy + pad, cx + pad
    face = padded[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)),
                  int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    if face.size == 0:
        raise ValueError(f"empty face crop for s={s}, centre=({cx}, {cy})")
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE))


def _clip_batches(frames: Iterable[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
    """(B, 3, 5, H, W) float clips, one per start frame v whose frame v + 5 exists too.

    The reference scores min(frames, audio) - 5 clips, one fewer than the frames allow, so a clip is
    only emitted once the frame following it has arrived.
    """
    window: list[np.ndarray] = []
    for frame in frames:
        window.append(frame)
        if len(window) == batch_size + CLIP_FRAMES:
            yield _stack_clips(window[:-1])
            window = window[-CLIP_FRAMES:]
    if len(window) > CLIP_FRAMES:
        yield _stack_clips(window[:-1])


def _stack_clips(frames: list[np.ndarray]) -> torch.Tensor:
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float()  # (3, T, H, W), BGR
    return video.unfold(1, CLIP_FRAMES, 1).permute(1, 0, 4, 2, 3).contiguous()


def _embed(forward, batches: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for batch in batches:
            out.append(forward(batch.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)


class SyncModel:
    """A network that embeds 5-frame face clips and their 0.2 s of audio into one space.

    The offset search, LSE-D and LSE-C are computed the same way whichever network embeds: SyncNet v2
    (the evaluator, numbers comparable with papers) or the project's lip-sync expert (numbers on the
    expert's own scale, distances of unit vectors in [0, 2]).
    """

    kind = ""

    def __init__(self, net: nn.Module, description: str, device: torch.device) -> None:
        self.net, self.description, self.device = net, description, device

    def crop_whole(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def crop_track(self, frame: np.ndarray, s: float, cx: float, cy: float) -> np.ndarray:
        raise NotImplementedError

    def embed_video(self, crops: Iterable[np.ndarray], batch_size: int) -> torch.Tensor:
        raise NotImplementedError

    def embed_audio(self, samples: np.ndarray, n_clips: int, batch_size: int) -> torch.Tensor:
        raise NotImplementedError


class SyncNetV2Model(SyncModel):
    """The SyncNet v2 evaluator (spec section 10): 224 x 224 BGR 0..255 crops, 13 MFCCs."""

    kind = "syncnet_v2"

    def crop_whole(self, frame: np.ndarray) -> np.ndarray:
        return crop_whole(frame)

    def crop_track(self, frame: np.ndarray, s: float, cx: float, cy: float) -> np.ndarray:
        return crop_track(frame, s, cx, cy)

    def embed_video(self, crops: Iterable[np.ndarray], batch_size: int) -> torch.Tensor:
        return _embed(self.net.forward_lip, _clip_batches(crops, batch_size), self.device)

    def embed_audio(self, samples: np.ndarray, n_clips: int, batch_size: int) -> torch.Tensor:
        clips = audio_clips(mfcc(samples[: (n_clips + CLIP_FRAMES) * SAMPLES_PER_FRAME]), n_clips)
        batches = (torch.from_numpy(clips[i:i + batch_size]) for i in range(0, n_clips, batch_size))
        return _embed(self.net.forward_aud, batches, self.device)


class ExpertModel(SyncModel):
    """The project's lip-sync expert (spec section 7): lower halves of 96 x 96 crops, 80-band mel windows.

    It sees what it was trained on: the whole frame (face crops) or, along a track, the detector's box
    (as `wav2lip preprocess` crops training faces), resized to 96 x 96; audio windows start at mel
    frame int(80 v / 25) for video frame v. The one place the expert embeds faces and audio: the
    offset search here and sync filtering of prepared clips (`data.preprocess.clip_sync`) both use it.
    """

    kind = "expert"

    def crop_whole(self, frame: np.ndarray) -> np.ndarray:
        return cv2.resize(frame, (EXPERT_SIZE, EXPERT_SIZE))[EXPERT_SIZE // 2:]

    def crop_track(self, frame: np.ndarray, s: float, cx: float, cy: float) -> np.ndarray:
        pad = int(s) + 1
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(CROP_PAD_VALUE,) * 3)
        box = padded[int(cy - s + pad):int(cy + s + pad), int(cx - s + pad):int(cx + s + pad)]
        if box.size == 0:
            raise ValueError(f"empty face crop for s={s}, centre=({cx}, {cy})")
        return self.crop_whole(box)

    def embed_faces(self, clips: Iterable[torch.Tensor]) -> torch.Tensor:
        """Unit face embeddings of batches of (B, 3, 5, 48, 96) lower-half clips valued 0..255."""
        def forward(batch: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.net.face_encoder(stack_lower_halves(batch / 255.0)).flatten(1), dim=1)

        return _embed(forward, clips, self.device)

    def embed_mel(self, mel: np.ndarray, frames: Sequence[int], batch_size: int) -> torch.Tensor:
        """Unit audio embeddings of the 0.2 s windows of `mel` that go with video frames `frames`."""
        windows = audio_io.mel_windows(mel, [mel_start(v, EVAL_FPS) for v in frames])
        batches = (torch.from_numpy(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size))

        def forward(mels: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.net.audio_encoder(mels).flatten(1), dim=1)

        return _embed(forward, batches, self.device)

    def embed_video(self, crops: Iterable[np.ndarray], batch_size: int) -> torch.Tensor:
        return self.embed_faces(_clip_batches(crops, batch_size))

    def embed_audio(self, samples: np.ndarray, n_clips: int, batch_size: int) -> torch.Tensor:
        mel = audio_io.melspectrogram((samples / 32768.0).astype(np.float32))
        need = mel_start(n_clips - 1, EVAL_FPS) + MEL_STEP
        if mel.shape[1] < need:  # the last windows run past the audio: silence, as the evaluator's zeros
            mel = np.pad(mel, ((0, 0), (0, need - mel.shape[1])), constant_values=mel.min())
        return self.embed_mel(mel, range(n_clips), batch_size)


EXPERT_PREFIX = "expert:"  # --model expert:PATH scores with a trained lip-sync expert
EXPERT_SIZE = 96  # the expert's face crop side (spec section 7)


def as_device(device: str | torch.device) -> torch.device:
    """The one place evaluation turns a device name ("auto", "cpu", ...) into a torch.device, so the
    sync model, the face detector and every video of a folder run on the same one."""
    return resolve_device(device) if isinstance(device, str) else torch.device(device)


def load_sync_model(model: SyncModel | nn.Module | str | os.PathLike = "syncnet_v2.model",
                    device: str | torch.device = "auto") -> SyncModel:
    """A SyncModel from a module, a SyncNet v2 file or store name, or `expert:PATH` (a trained expert)."""
    from ..models.syncnet import SyncNet

    device = as_device(device)
    if isinstance(model, SyncModel):
        return model
    if isinstance(model, SyncNet):
        return ExpertModel(model.to(device).eval(), f"lip-sync expert (width {model.width})", device)
    if isinstance(model, nn.Module):
        return SyncNetV2Model(model.to(device).eval(), "SyncNet v2", device)
    name = str(model)
    if name.startswith(EXPERT_PREFIX):
        path = name[len(EXPERT_PREFIX):]
        net = load_model(path, "syncnet", device=device)
        return ExpertModel(net, f"lip-sync expert {path} (width {net.width})", device)
    return SyncNetV2Model(load_model(model, "syncnet_v2", device=device), f"SyncNet v2 {model}", device)


def score_crops(crops: Iterable[np.ndarray], samples: np.ndarray, model: SyncModel, batch_size: int = 20) -> SyncScore:
    """Offset, LSE-D, LSE-C of a stream of model-ready crops (25 fps) against int16-valued 16 kHz audio.

    Scores min(frames, audio frames) - 5 clips, as the reference; raises ValueError when none.
    """
    max_frames = samples.size // SAMPLES_PER_FRAME
    video_emb = model.embed_video(itertools.islice(crops, max_frames), batch_size)
    n_clips = video_emb.shape[0]
    if n_clips == 0:
        raise ValueError("too few frames to score")
    audio_emb = model.embed_audio(samples, n_clips, batch_size)
    result = offset_search(video_emb, audio_emb)
    return SyncScore(offset=result.offset, lse_d=result.min_dist, lse_c=result.confidence, n_frames=n_clips,
                     framewise_conf=result.framewise_conf, mean_dists=result.mean_dists, model=model.description)


# ---- "track" mode: the reference evaluator's pipeline (run_pipeline.py defaults, spec section 10) ----
# (MIN_TRACK and MIN_FACE_SIZE, which `wav2lip evaluate --help` shows, are in wav2lip.constants)

NUM_FAILED_DET = 25  # frames a track survives without a matching detection (--num_failed_det)
SCENE_CUT = 0.5  # colour-histogram distance that starts a new shot (faces.tracking's cut rule; see README)


@dataclass
class FaceTrack:
    """Frames [start, start + len(boxes)) of one face within one shot; boxes gap-interpolated."""

    start: int
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2

    @property
    def end(self) -> int:
        return self.start + len(self.boxes)


def track_shot(detections: list[list[faces.Detection]], start: int, end: int,
               min_track: int = MIN_TRACK, min_face_size: float = MIN_FACE_SIZE) -> list[FaceTrack]:
    """The reference's track_shot over frames [start, end) of one shot.

    Repeatedly: a track starts at the first face left; each later frame continues it with the first
    face whose IoU with the track's last box exceeds 0.5, while no more than 25 frames have passed;
    used faces are removed and the next track starts. Tracks with more than `min_track` detections
    are interpolated over their gaps and kept when their mean width or height exceeds `min_face_size`.
    """
    left = [[d.box.astype(np.float64) for d in detections[i]] for i in range(start, end)]
    tracks = []
    while True:
        frames: list[int] = []
        boxes: list[np.ndarray] = []
        for i in range(start, end):
            candidates = left[i - start]
            if not candidates:
                continue
            if not frames:
                take: int | None = 0
            elif i - frames[-1] <= NUM_FAILED_DET:
                iou = faces.box_iou(boxes[-1], np.stack(candidates))[0]
                above = np.flatnonzero(iou > TRACK_IOU)
                take = int(above[0]) if above.size else None
            else:
                break
            if take is not None:
                frames.append(i)
                boxes.append(candidates.pop(take))
        if not frames:
            return tracks
        if len(frames) > min_track:
            span = np.arange(frames[0], frames[-1] + 1)
            stacked = np.stack(boxes)
            filled = np.stack([np.interp(span, frames, stacked[:, k]) for k in range(4)], axis=1)
            size = max(np.mean(filled[:, 2] - filled[:, 0]), np.mean(filled[:, 3] - filled[:, 1]))
            if size > min_face_size:
                tracks.append(FaceTrack(int(span[0]), filled))


def find_tracks(video_path: str | os.PathLike, n_frames: int, detector: faces.FaceDetector,
                min_track: int = MIN_TRACK, min_face_size: float = MIN_FACE_SIZE) -> tuple[list[FaceTrack], list[tuple[int, int]]]:
    """Face tracks of the first `n_frames` frames at 25 fps, and the shots [start, end) they came from.

    One decoding pass detects faces on every frame (in batches) and marks scene cuts; only boxes and
    one histogram are kept, so memory does not grow with the frame size.
    """
    from ..faces.tracking import colour_histogram, histogram_distance

    frames = open_source(video_path, fps=EVAL_FPS).frames(n_frames, loop="none")
    detections: list[list[faces.Detection]] = []
    cuts, previous = [0], None
    while batch := list(itertools.islice(frames, DETECT_BATCH)):
        for k, frame in enumerate(batch):
            hist = colour_histogram(frame)
            if previous is not None and histogram_distance(previous, hist) > SCENE_CUT:
                cuts.append(len(detections) + k)
            previous = hist
        detections.extend(detector.detect(batch))
    cuts.append(len(detections))
    shots = list(zip(cuts[:-1], cuts[1:]))
    tracks = []
    for first, last in shots:
        if last - first >= min_track:
            tracks.extend(track_shot(detections, first, last, min_track, min_face_size))
    return tracks, shots


def _score_track(video_path: Path, track: FaceTrack, samples: np.ndarray, model: SyncModel,
                 batch_size: int) -> SyncScore:
    """Score one track as the reference scores its cropped track video: its frames, its stretch of audio."""
    smoothed = smooth_track(track.boxes)
    frames = open_source(video_path, fps=EVAL_FPS).frames(track.end, loop="none")
    crops = (model.crop_track(f, *smoothed[i]) for i, f in enumerate(itertools.islice(frames, track.start, None)))
    score = score_crops(crops, samples[track.start * SAMPLES_PER_FRAME:track.end * SAMPLES_PER_FRAME], model,
                        batch_size)
    score.start = track.start
    return score


def evaluate_sync(
    video_path: str | os.PathLike,
    audio_path: str | os.PathLike | None = None,
    model: SyncModel | nn.Module | str | os.PathLike = "syncnet_v2.model",
    mode: Mode = "whole",
    detector: faces.FaceDetector | str = "retinaface",
    device: str | torch.device = "auto",
    batch_size: int = 20,
    detector_weights: str | os.PathLike | None = None,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
    progress: bool = False,
) -> SyncScore:
    """Score lip sync of a video against its own audio track (or `audio_path`).

    mode "whole": each whole frame resized to the model's input (generated face crops, the paper's
    LRS2 figures); "track": the reference evaluator's pipeline (shots, face tracks of more than
    `min_track` frames, each track cropped and scored, the video's numbers the mean over its tracks).
    `model`: a SyncNet v2 file or store name (default), `expert:PATH` for a trained lip-sync expert,
    or a module. `detector` is a FaceDetector or a detector name (with `detector_weights`) for "track".
    device "auto" picks CUDA, then Apple MPS, then the CPU; `progress` shows a bar over the frames.
    """
    check_choice(mode, EVALUATE_MODES, "evaluation mode")
    video_path = Path(video_path)
    device = as_device(device)
    source = open_source(video_path, fps=EVAL_FPS)
    if source.is_still:
        raise Wav2LipError(f"{video_path}: is a still image; lip sync is scored on videos")
    audio_file = Path(audio_path) if audio_path is not None else video_path
    samples = evaluator_audio(audio_file)
    max_frames = samples.size // SAMPLES_PER_FRAME
    if max_frames < MIN_FRAMES:
        raise Wav2LipError(
            f"{audio_file}: {samples.size / audio_io.SAMPLE_RATE:.3f} s of audio is too short to score; "
            f"need at least {MIN_FRAMES} frames ({MIN_FRAMES / EVAL_FPS:.2f} s)"
        )
    net = load_sync_model(model, device)
    if mode == "whole":
        frames: Iterable[np.ndarray] = source.frames(max_frames, loop="none")
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=min(max_frames, source.n_frames_estimate or max_frames), unit="frame",
                          dynamic_ncols=True, smoothing=0.1)
        try:
            return score_crops((net.crop_whole(f) for f in frames), samples, net, batch_size)
        except ValueError:
            raise Wav2LipError(
                f"{video_path}: too few video frames to score; need at least {MIN_FRAMES} at {EVAL_FPS} fps"
            ) from None
    if isinstance(detector, str):
        detector = faces.create_detector(detector, device=device, weights=detector_weights)
    tracks, shots = find_tracks(video_path, max_frames, detector, min_track, min_face_size)
    if not tracks:
        longest = max(b - a for a, b in shots)
        raise Wav2LipError(
            f"{video_path}: no face track of more than {min_track} frames with a mean face size over "
            f"{min_face_size:g} px ({len(shots)} shots, the longest {longest} frames); lower --min-track / "
            f"--min-face-size for short clips, or use --mode whole for face crops"
        )
    scored = []
    for track in tracks:
        try:
            scored.append(TrackScore(track.start, track.end, _score_track(video_path, track, samples, net, batch_size)))
        except ValueError:
            continue  # a track whose audio ends within 5 frames of its start
    if not scored:
        raise Wav2LipError(f"{video_path}: no face track has audio under more than {CLIP_FRAMES} of its frames")
    main = max(scored, key=lambda t: t.score.n_frames).score
    return SyncScore(
        offset=main.offset,
        lse_d=float(np.mean([t.score.lse_d for t in scored])),
        lse_c=float(np.mean([t.score.lse_c for t in scored])),
        n_frames=sum(t.score.n_frames for t in scored),
        framewise_conf=main.framewise_conf,
        mean_dists=main.mean_dists,
        model=net.description,
        start=main.start,
        tracks=scored,
    )


# ---- many videos: --dir, --reference, --json / --csv, --plot ----

CSV_FIELDS = ("set", "video", "offset", "lse_d", "lse_c", "n_frames", "tracks", "seconds", "error")


def reference_for(video: Path, folder: Path, reference: Path) -> Path | None:
    """The ground-truth video beside a generated one: the same relative path, or the same name with any
    video extension, under `reference`."""
    rel = video.relative_to(folder)
    if (reference / rel).is_file():
        return reference / rel
    for ext in VIDEO_EXTENSIONS:
        candidate = (reference / rel).with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


@dataclass
class VideoResult:
    """One scored (or failed) video of a batch; `set` is "generated" or "reference"."""

    set: str
    video: str  # path relative to its folder
    score: dict | None  # SyncScore.as_dict()
    error: str | None
    seconds: float
    stamp: list  # [size, mtime_ns] of the file when scored: a changed file is scored again

    def row(self) -> dict:
        s = self.score or {}
        return {"set": self.set, "video": self.video, "offset": s.get("offset", ""),
                "lse_d": _fmt(s.get("lse_d")), "lse_c": _fmt(s.get("lse_c")), "n_frames": s.get("n_frames", ""),
                "tracks": len(s.get("tracks", [])) if s else "", "seconds": f"{self.seconds:.2f}",
                "error": self.error or ""}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def means(results: list[VideoResult], set_name: str) -> dict:
    """Mean offset magnitude, LSE-D and LSE-C over the scored videos of one set; in "track" mode also
    over all tracks (the reference averages every track's line of all_scores.txt)."""
    ok = [r.score for r in results if r.set == set_name and r.score]
    out: dict = {"videos": len(ok), "failed": sum(1 for r in results if r.set == set_name and r.error)}
    if ok:
        out.update(lse_d=float(np.mean([s["lse_d"] for s in ok])), lse_c=float(np.mean([s["lse_c"] for s in ok])),
                   abs_offset=float(np.mean([abs(s["offset"]) for s in ok])),
                   n_frames=int(sum(s["n_frames"] for s in ok)))
        tracks = [t for s in ok for t in s.get("tracks", [])]
        if tracks:
            out.update(track_lse_d=float(np.mean([t["lse_d"] for t in tracks])),
                       track_lse_c=float(np.mean([t["lse_c"] for t in tracks])), n_tracks=len(tracks))
    return out


def evaluate_folder(
    folder: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    plot_dir: str | os.PathLike | None = None,
    report=None,
    **options,
) -> list[VideoResult]:
    """Score every video under `folder` (and its ground truth under `reference`), resumably.

    The JSON (and CSV) are rewritten atomically after each video; a re-run with the same JSON skips
    the videos already in it whose file is unchanged. A video that fails is recorded with its error
    and the rest go on. `options` are evaluate_sync's; `report(result)` is called after each video.
    """
    folder = Path(folder)
    videos = find_videos(folder)
    reference = Path(reference) if reference is not None else None
    if reference is not None and not reference.is_dir():
        raise Wav2LipError(f"{reference}: reference folder does not exist")
    inputs = {v.resolve() for v in videos}
    if reference is not None:
        inputs |= {p.resolve() for p in reference.rglob("*") if p.is_file()}
    for out in (json_path, csv_path):
        if out is not None and Path(out).resolve() in inputs:
            raise Wav2LipError(f"{out}: output is one of the input videos; choose another path")
        if out is not None and Path(out).is_dir():
            raise Wav2LipError(f"{out}: is a folder; give a file path for the scores")
    if plot_dir is not None:
        plot_dir = Path(plot_dir)
        if plot_dir.exists() and not plot_dir.is_dir():
            raise Wav2LipError(f"{plot_dir}: --plot with --dir names a folder (one PNG per video)")
        _require_matplotlib()
        plot_dir.mkdir(parents=True, exist_ok=True)
    options["device"] = as_device(options.get("device", "auto"))
    model = load_sync_model(options.pop("model", "syncnet_v2.model"), options["device"])
    settings = {"model": model.description, "mode": options.get("mode", "whole")}
    done = _previous(json_path, settings)
    if options.get("mode") == "track" and isinstance(options.get("detector", "retinaface"), str):
        options["detector"] = faces.create_detector(options.get("detector", "retinaface"), device=options["device"],
                                                    weights=options.pop("detector_weights", None))
    results: list[VideoResult] = []
    for video in videos:
        rel = str(video.relative_to(folder))
        pairs = [("generated", video)]
        if reference is not None:
            pairs.append(("reference", reference_for(video, folder, reference)))
        scored: dict[str, VideoResult] = {}
        for set_name, path in pairs:
            key = f"{set_name}:{rel}"
            if path is None:
                result = VideoResult(set_name, rel, None, f"no reference video for {rel} under {reference}", 0.0, [])
            elif key in done and done[key].stamp == _stamp(path) and done[key].score is not None:
                result = done[key]
            else:
                result = _score_one(set_name, rel, path, model, options)
            scored[set_name] = result
            results.append(result)
            if report is not None:
                report(result)
            _write_outputs(results, settings, json_path, csv_path)
        if plot_dir is not None and scored["generated"].score:
            curves = [(name, r.score) for name, r in scored.items() if r.score]
            plot_confidence(curves, plot_dir / (rel.replace(os.sep, "__") + ".png"), title=rel)
    return results


def _score_one(set_name: str, rel: str, path: Path, model: SyncModel, options: dict) -> VideoResult:
    started = time.perf_counter()
    try:
        score = evaluate_sync(path, model=model, **options).as_dict()
        error = None
    except Wav2LipError as exc:
        score, error = None, str(exc)
    return VideoResult(set_name, rel, score, error, time.perf_counter() - started, _stamp(path))


def _previous(json_path: str | os.PathLike | None, settings: dict) -> dict[str, VideoResult]:
    """Results of an earlier run written to the same JSON with the same model and mode."""
    if json_path is None or not Path(json_path).is_file():
        return {}
    try:
        data = json.loads(Path(json_path).read_text(encoding="utf-8"))
        rows = [VideoResult(**row) for row in data["videos"]]
        same = all(data.get(k) == v for k, v in settings.items())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise Wav2LipError(f"{json_path}: exists and is not a scores file of `wav2lip evaluate --dir`; "
                           "move it or choose another --json") from None
    if not same:
        raise Wav2LipError(f"{json_path}: holds scores of another model or mode ({data.get('model')}, "
                           f"{data.get('mode')}); choose another --json to compare")
    return {f"{r.set}:{r.video}": r for r in rows}


def _write_outputs(results: list[VideoResult], settings: dict, json_path, csv_path) -> None:
    sets = sorted({r.set for r in results}, key=["generated", "reference"].index)
    summary = {name: means(results, name) for name in sets}
    if json_path is not None:
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps({**settings, "means": summary, "videos": [r.__dict__ for r in results]},
                                      indent=1), encoding="utf-8")
    if csv_path is not None:
        with atomic_output(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(r.row() for r in results)
            for name in sets:
                m = summary[name]
                writer.writerow({"set": name, "video": "MEAN", "offset": _fmt(m.get("abs_offset")),
                                 "lse_d": _fmt(m.get("lse_d")), "lse_c": _fmt(m.get("lse_c")),
                                 "n_frames": m.get("n_frames", ""), "tracks": m.get("n_tracks", ""),
                                 "error": f"{m['failed']} failed" if m["failed"] else ""})


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise Wav2LipError("--plot needs matplotlib: pip install 'wav2lip[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confidence(curves: list[tuple[str, SyncScore | dict]], path: str | os.PathLike, title: str = "") -> None:
    """A PNG of the per-frame confidence (median distance minus the frame's distance at the best offset)
    against time, one line per (label, score); tracks each drawn at their own frames."""
    plt = _require_matplotlib()
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
    for colour, (label, score) in enumerate(curves):
        data = score.as_dict() if isinstance(score, SyncScore) else score
        parts = data.get("tracks") or [data]
        for k, part in enumerate(parts):
            conf = np.asarray(part["framewise_conf"])
            t = (part.get("start", 0) + np.arange(conf.size)) / EVAL_FPS
            name = f"{label} (offset {data['offset']:+d}, LSE-D {data['lse_d']:.2f}, LSE-C {data['lse_c']:.2f})"
            ax.plot(t, conf, color=f"C{colour}", lw=1, label=name if k == 0 else None)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("confidence")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
