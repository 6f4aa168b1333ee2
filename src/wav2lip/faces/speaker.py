"""Which face speaks: with several faces on screen, follow, shot by shot, the face whose lips agree
with the video's own soundtrack, as a lip-sync expert (the Wav2Lip SyncNet) judges them.

1. a cheap look: full-frame detection on every STRIDE-th frame; a video that never shows two faces
   at once stops here, and lip-sync runs exactly as without this module;
2. per shot (colour-histogram cuts, as tracking does), faces are linked into tracks by overlap and
   the lower half of each face kept at the expert's 96 x 96 size, for the first MAX_SCORED frames;
3. each track is scored like the expert's offset search (preprocess.clip_sync): the mean sync
   probability of its 5-frame windows with their own audio, minus the median over audio shifted
   by -MAX_OFFSET..MAX_OFFSET frames. A face that talks to this audio peaks at no shift; a silent
   face, or one that talks to other words, does not. The track with the highest confidence wins;
   without an expert, a soundtrack, or any track long enough to score, the largest face does.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Iterable

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from ..io import audio as audio_io
from ..errors import Wav2LipError
from .boxes import box_iou
from .detectors import FaceDetector
from .tracking import colour_histogram, histogram_distance

STRIDE = 10  # frames between detections of the first look
MAX_SCORED = 250  # frames of each shot detected and scored (10 s at 25 fps)
TRACK_IOU = 0.3  # a face continues a track when it overlaps the track's last box by more than this
MAX_GAP = 25  # frames a track may go unseen (missed detections) and still continue
MIN_WINDOWS = 3  # 5-frame windows a track needs to be scored
MAX_OFFSET = 6  # frames of audio shift searched on each side for the confidence baseline
SCENE_CUT = 0.5  # colour-histogram distance that starts a new shot (as FaceTrackOptions.scene_cut)
FACE_SIZE = 96  # the expert's crop side (spec section 8)
WINDOW = 5  # frames per expert window (spec section 7)
MEL_STEP = audio_io.MEL_STEP


@dataclass
class TrackCandidate:
    """One face track of a shot: frames seen, mean box area, its centre at the shot's first sighting,
    and the expert's sync confidence (None: not scored)."""

    track: int
    first: int
    frames: int
    area: float
    centre: tuple[float, float]
    confidence: float | None = None


@dataclass
class ShotChoice:
    """The face followed in one shot (from frame `start`), why, and every track's score."""

    start: int
    chosen: int
    reason: str  # "sync", "largest" (no expert, soundtrack or scorable track) or "only face"
    tracks: list[TrackCandidate] = field(default_factory=list)

    @property
    def point(self) -> tuple[float, float]:
        return next(t.centre for t in self.tracks if t.track == self.chosen)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        scores = ", ".join(f"track {t.track}" + (f" {t.confidence:+.3f}" if t.confidence is not None else "")
                           for t in self.tracks)
        return f"shot at frame {self.start}: track {self.chosen} ({self.reason}; {scores})"


@dataclass
class _Track:
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    lower: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (48, 96, 3) BGR lower face


def _lower_face(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    h, w = frame.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(box[2])), min(h, int(box[3]))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE))[FACE_SIZE // 2:]


def several_faces(frames: Iterable[np.ndarray], detector: FaceDetector) -> bool:
    """The first look: does any STRIDE-th frame show two faces or more?"""
    return any(len(detector.detect([frame])[0]) > 1 for k, frame in enumerate(frames) if k % STRIDE == 0)


def _shots(frames: Iterable[np.ndarray], detector: FaceDetector) -> list[tuple[int, list[_Track]]]:
    """(first frame, tracks) per shot, detecting and linking faces on each shot's first MAX_SCORED frames."""
    shots: list[tuple[int, list[_Track]]] = []
    previous = None
    for index, frame in enumerate(frames):
        hist = colour_histogram(frame)
        if previous is None or histogram_distance(previous, hist) > SCENE_CUT:
            shots.append((index, []))
        previous = hist
        start, tracks = shots[-1]
        if index - start >= MAX_SCORED:
            continue
        for det in detector.detect([frame])[0]:
            best, overlap = None, TRACK_IOU
            for track in tracks:
                last = max(track.boxes)
                if last < index and index - last <= MAX_GAP:
                    iou = float(box_iou(track.boxes[last], det.box[None])[0, 0])
                    if iou > overlap:
                        best, overlap = track, iou
            if best is None:
                best = _Track()
                tracks.append(best)
            best.boxes[index] = det.box
            crop = _lower_face(frame, det.box)
            if crop is not None:
                best.lower[index] = crop
    return shots


@torch.inference_mode()
def sync_confidence(expert: torch.nn.Module, lower: dict[int, np.ndarray], mel: np.ndarray, fps: float,
                    max_offset: int = MAX_OFFSET) -> float | None:
    """Mean sync probability of a track's 5-frame windows with their own audio, minus the median over
    shifts of -max_offset..max_offset frames; None when fewer than MIN_WINDOWS windows have audio at
    every shift."""
    from ..models.syncnet import sync_probability

    starts = [f for f in sorted(lower) if all(f + j in lower for j in range(WINDOW))
              and audio_io.mel_start(f - max_offset, fps) >= 0
              and audio_io.mel_start(f + max_offset, fps) + MEL_STEP <= mel.shape[1]]
    if len(starts) < MIN_WINDOWS:
        return None
    device = next(expert.parameters()).device
    faces = np.stack([np.concatenate([lower[f + j] for j in range(WINDOW)], axis=2) for f in starts])
    faces_t = torch.from_numpy(faces).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    face_emb = F.normalize(expert.face_encoder(faces_t).flatten(1), dim=1)
    means = []
    for offset in range(-max_offset, max_offset + 1):
        mels = audio_io.mel_windows(mel, [audio_io.mel_start(f + offset, fps) for f in starts])
        audio_emb = F.normalize(expert.audio_encoder(torch.from_numpy(mels).float().to(device)).flatten(1), dim=1)
        means.append(float(sync_probability(audio_emb, face_emb).mean()))
    return means[max_offset] - float(np.median(means))


def soundtrack_mel(video: str | os.PathLike) -> np.ndarray | None:
    """The mel of the video's own audio, or None when it has no (usable) soundtrack."""
    try:
        wav = audio_io.load_audio(video)
    except Wav2LipError:
        return None
    if not np.any(wav) or wav.size <= audio_io.N_FFT:
        return None
    return audio_io.melspectrogram(wav)


def choose_speakers(frames: Iterable[np.ndarray], detector: FaceDetector, fps: float,
                    mel: np.ndarray | None = None, expert: torch.nn.Module | None = None) -> list[ShotChoice]:
    """Per shot, the face to follow: the best sync confidence against `mel` (the video's own audio) when
    an expert is given, else the largest face. Shots without a face are left out."""
    choices = []
    for start, tracks in _shots(frames, detector):
        tracks = [t for t in tracks if t.boxes]
        if not tracks:
            continue
        scores = []
        for k, track in enumerate(tracks):
            first = min(track.boxes)
            box = track.boxes[first]
            area = float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in track.boxes.values()]))
            confidence = (sync_confidence(expert, track.lower, mel, fps)
                          if expert is not None and mel is not None and len(tracks) > 1 else None)
            scores.append(TrackCandidate(k, first, len(track.boxes), area,
                                     (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2), confidence))
        scored = [s for s in scores if s.confidence is not None]
        if len(scores) == 1:
            chosen, reason = 0, "only face"
        elif scored:
            chosen, reason = max(scored, key=lambda s: s.confidence).track, "sync"
        else:
            chosen, reason = max(scores, key=lambda s: s.area * s.frames).track, "largest"
        choices.append(ShotChoice(start, chosen, reason, scores))
    return choices
