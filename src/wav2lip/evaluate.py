"""Lip-sync metrics: LSE-D and LSE-C from the SyncNet v2 evaluator, and the audio-visual offset.

The numbers only compare with published ones when computed the evaluator's way (spec section 10):
25 fps video, 224 x 224 BGR crops fed as 0..255 floats, 13 MFCCs of int16-valued 16 kHz audio, and
the distance / confidence arithmetic of the reference. Frames stream through in batches of 5-frame
clips, so video length is bounded by time, not memory.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import audio as audio_io
from . import faces
from .checkpoints import load_model
from .device import resolve_device
from .errors import Wav2LipError
from .options import EVALUATE_MODES, check_choice
from .video_io import open_source

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
MAX_TRACK_GAP = 25  # frames without a face bridged by interpolation
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
    """LSE-D (lower is better), LSE-C (higher is better) and the AV offset in frames at 25 fps."""

    offset: int
    lse_d: float
    lse_c: float
    n_frames: int  # 5-frame clips scored (one per video frame)
    framewise_conf: np.ndarray = field(repr=False)
    mean_dists: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))

    def as_dict(self) -> dict:
        return {
            "offset": self.offset,
            "lse_d": self.lse_d,
            "lse_c": self.lse_c,
            "n_frames": self.n_frames,
            "framewise_conf": [round(float(v), 4) for v in self.framewise_conf],
            "mean_dists": [round(float(v), 4) for v in self.mean_dists],
        }


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
    """(B, 3, 5, 224, 224) float clips, one per start frame v whose frame v + 5 exists too.

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


def _embed(model: nn.Module, batches: Iterable[torch.Tensor], tower: str, device: torch.device) -> torch.Tensor:
    forward = getattr(model, tower)
    out = []
    with torch.inference_mode():
        for batch in batches:
            out.append(forward(batch.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1024)


def _load_evaluator(model: nn.Module | str | os.PathLike, device: torch.device) -> nn.Module:
    if isinstance(model, nn.Module):
        return model.to(device).eval()
    return load_model(model, "syncnet_v2", device=device)


def link_face_track(detections: list[list[faces.Detection]]) -> list[np.ndarray | None]:
    """One face per frame, linked as the evaluator links its tracks (spec section 10).

    A face continues the track when its IoU with the last tracked box exceeds 0.5 and at most 25
    frames have passed; otherwise (start, or the face lost for longer) the largest face starts anew.
    """
    picked: list[np.ndarray | None] = []
    last, last_index = None, -MAX_TRACK_GAP - 1
    for index, dets in enumerate(detections):
        box = None
        if dets:
            boxes = np.stack([d.box for d in dets]).astype(np.float64)
            if last is not None and index - last_index <= MAX_TRACK_GAP:
                iou = faces.box_iou(last, boxes)[0]
                if iou.max() > TRACK_IOU:
                    box = boxes[int(iou.argmax())]
            else:
                box = boxes[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]
        if box is not None:
            last, last_index = box, index
        picked.append(box)
    return picked


def fill_track(picked: list[np.ndarray | None]) -> np.ndarray:
    """(n, 4) boxes: gaps of at most 25 frames linearly interpolated (as the evaluator does), frames
    outside them holding the nearest known box so that every frame gets a crop."""
    known = np.array([i for i, box in enumerate(picked) if box is not None])
    if known.size == 0:
        raise ValueError("no face in any frame")
    boxes = np.empty((len(picked), 4))
    for i, box in enumerate(picked):
        if box is not None:
            boxes[i] = box
            continue
        after = known[np.searchsorted(known, i):]
        before = known[:np.searchsorted(known, i)]
        if before.size and after.size and after[0] - before[-1] <= MAX_TRACK_GAP + 1:
            t = (i - before[-1]) / (after[0] - before[-1])
            boxes[i] = (1 - t) * picked[before[-1]] + t * picked[after[0]]
        else:
            nearest = min([*before[-1:], *after[:1]], key=lambda k: abs(k - i))
            boxes[i] = picked[nearest]
    return boxes


def _face_boxes(video_path: Path, n_frames: int, detector: faces.FaceDetector | str,
                device: torch.device, weights: str | os.PathLike | None = None) -> np.ndarray:
    """(n, 4) float boxes of the main face for the first `n_frames` frames at 25 fps.

    Detection runs in batches (several times faster per frame than one call per frame on a CPU);
    only boxes are kept, so the frames are decoded again for cropping.
    """
    if isinstance(detector, str):
        detector = faces.create_detector(detector, device=device, weights=weights)
    frames = open_source(video_path, fps=EVAL_FPS).frames(n_frames, loop="none")
    detections: list[list[faces.Detection]] = []
    while batch := list(itertools.islice(frames, DETECT_BATCH)):
        detections.extend(detector.detect(batch))
    try:
        return fill_track(link_face_track(detections))
    except ValueError:
        raise Wav2LipError(f"{video_path}: no face found in any frame; use mode 'whole' for face crops") from None


def evaluate_sync(
    video_path: str | os.PathLike,
    audio_path: str | os.PathLike | None = None,
    model: nn.Module | str | os.PathLike = "syncnet_v2.model",
    mode: Mode = "whole",
    detector: faces.FaceDetector | str = "retinaface",
    device: str | torch.device = "auto",
    batch_size: int = 20,
    detector_weights: str | os.PathLike | None = None,
    progress: bool = False,
) -> SyncScore:
    """Score lip sync of a video against its own audio track (or `audio_path`).

    mode "whole": each whole frame resized to 224 (generated face crops, the paper's LRS2 figures);
    "track": the main face followed and cropped with the evaluator's rule (videos in the wild).
    `model` is a SyncNetV2 module, a checkpoint path, or a store name; `detector` a FaceDetector or a
    detector name for "track" (with `detector_weights`, default the store's file); device "auto" picks
    CUDA, then Apple MPS, then the CPU.
    """
    check_choice(mode, EVALUATE_MODES, "evaluation mode")
    video_path = Path(video_path)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
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
    net = _load_evaluator(model, device)

    frames: Iterable[np.ndarray] = source.frames(max_frames, loop="none")
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=min(max_frames, source.n_frames_estimate or max_frames), unit="frame",
                      dynamic_ncols=True, smoothing=0.1)
    if mode == "whole":
        crops = (crop_whole(f) for f in frames)
    else:
        track = smooth_track(_face_boxes(video_path, max_frames, detector, device, detector_weights))
        crops = (crop_track(f, *track[i]) for i, f in enumerate(itertools.islice(frames, len(track))))
    video_emb = _embed(net, _clip_batches(crops, batch_size), "forward_lip", device)
    n_clips = video_emb.shape[0]
    if n_clips == 0:
        raise Wav2LipError(
            f"{video_path}: too few video frames to score; need at least {MIN_FRAMES} at {EVAL_FPS} fps"
        )
    clips = audio_clips(mfcc(samples[: (n_clips + CLIP_FRAMES) * SAMPLES_PER_FRAME]), n_clips)
    audio_batches = (torch.from_numpy(clips[i:i + batch_size]) for i in range(0, n_clips, batch_size))
    audio_emb = _embed(net, audio_batches, "forward_aud", device)
    result = offset_search(video_emb, audio_emb)
    return SyncScore(
        offset=result.offset,
        lse_d=result.min_dist,
        lse_c=result.confidence,
        n_frames=n_clips,
        framewise_conf=result.framewise_conf,
        mean_dists=result.mean_dists,
    )
