"""Sync correction of prepared clips: measure each clip's audio-video offset, shift the audio of the
clips whose offset is confidently non-zero, and keep in the file lists only clips whose sync is visible.

Web videos are often out of sync by a few frames (the authors' guidance: correct them before training,
then filter by thresholding an expert). Any sync model scores a clip: the SyncNet v2 evaluator or a
lip-sync expert trained here (`expert:PATH`), on the clip's face crops as they are (like the paper's
LRS2 scoring). A clip's offset is where its mean distance is smallest, its confidence the median
distance minus that minimum (LSE-C, on the model's own scale).

Nothing original is lost: the first correction keeps the clip's `audio.wav` as `audio.orig.wav` and
each list as `<split>.all.txt`; every run starts from those, so a run with a better model replaces
the corrections of a worse one. The clips dropped here leave the lists beside those sync filtering
dropped (`layout.drop`).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..io import audio
from ..errors import Wav2LipError
from ..evaluation.sync import SyncModel, SyncScore, evaluator_audio, load_sync_model, score_crops
from ..io.audio import write_wav
from ..io.files import atomic_output
from . import layout
from .layout import SAMPLES_PER_FRAME

ORIGINAL_AUDIO = "audio.orig.wav"  # the clip's audio before any correction
SCORES = "sync_fix.json"  # per-clip offsets and confidences of the last run
# Default confidence thresholds per model kind: SyncNet v2's LSE-C is ~7-8 on in-sync LRS2 video (spec
# section 10) and near 0 where nothing can be seen; the expert's distances are of unit vectors, so its
# confidences are smaller (the synthetic-data expert of the README gives 0.2-0.5 in sync).
DEFAULT_MIN_CONFIDENCE = {"syncnet_v2": 3.0, "expert": 0.1}


@dataclass
class ClipSync:
    name: str
    offset: int  # frames by which the lips lag the audio (as `wav2lip evaluate` reports it)
    confidence: float
    lse_d: float
    n_frames: int
    shifted: bool  # the audio was moved by `offset` frames
    kept: bool  # listed after filtering: confidence at or above the threshold
    offset_after: int | None = None  # rescored after the shift (only for shifted clips)
    confidence_after: float | None = None
    error: str | None = None


def clip_frames(folder: Path) -> Iterator[np.ndarray]:
    """The clip's crops 0..last in order, a missing frame (no face) replaced by the previous crop."""
    indices = sorted(int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit())
    if not indices:
        raise Wav2LipError(f"{folder}: no face crops (*.jpg)")
    present = set(indices)
    last = None
    for i in range(indices[-1] + 1):
        if i in present or last is None:
            path = folder / f"{(i if i in present else indices[0])}.jpg"
            image = cv2.imread(str(path))
            if image is None:
                raise Wav2LipError(f"{path}: unreadable image")
            last = image
        yield last


def shift_audio(wav: np.ndarray, offset: int) -> np.ndarray:
    """The audio moved later by `offset` frames (earlier when negative), same length, silence filling in:
    lips that lag their sound by `offset` frames then match it."""
    n = offset * SAMPLES_PER_FRAME
    if n == 0:
        return wav.copy()
    if abs(n) >= wav.size:
        return np.zeros_like(wav)
    if n > 0:
        return np.concatenate([np.zeros(n, wav.dtype), wav[:-n]])
    return np.concatenate([wav[-n:], np.zeros(-n, wav.dtype)])


def score_clip(folder: Path, model: SyncModel, wav_path: Path, batch_size: int = 20) -> SyncScore:
    """Offset and confidence of a prepared clip's crops against an audio file."""
    crops = (model.crop_whole(f) for f in clip_frames(folder))
    try:
        return score_crops(crops, evaluator_audio(wav_path), model, batch_size)
    except ValueError:
        raise Wav2LipError(f"{folder}: too few frames (or too little audio) to score") from None


def _write_audio(folder: Path, wav: np.ndarray | Path) -> None:
    """audio.wav (a copy of a file, or samples) and its mel.npy, written after it so training uses it."""
    if isinstance(wav, Path):
        with atomic_output(folder / "audio.wav") as tmp:
            shutil.copyfile(wav, tmp)
    else:
        write_wav(folder / "audio.wav", wav)
    with atomic_output(folder / "mel.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, audio.melspectrogram(audio.load_audio(folder / "audio.wav")))


def sync_fix(root: str | Path, model: SyncModel | str = "syncnet_v2.model", min_confidence: float | None = None,
             device: str = "cpu", batch_size: int = 20,
             report: Callable[[ClipSync], None] | None = None) -> list[ClipSync]:
    """Measure, correct and filter every clip of the original lists under `root` (see the module doc).

    A clip whose offset is non-zero with confidence >= `min_confidence` gets its audio (and mel)
    shifted and is rescored; clips under the threshold leave the lists (their sync cannot be seen).
    Writes `sync_fix.json` and the filtered `<split>.txt`; returns one record per clip.
    """
    root = Path(root)
    net = load_sync_model(model, device)
    threshold = DEFAULT_MIN_CONFIDENCE[net.kind] if min_confidence is None else min_confidence
    lists = layout.original_lists(root)
    if not lists:
        raise Wav2LipError(f"{root}: no train/val/test.txt; run `wav2lip preprocess --input-dir` first")
    records: list[ClipSync] = []
    for name in dict.fromkeys(n for names in lists.values() for n in names):  # a clip in two lists: once
        record = _fix_clip(root / name, name, net, threshold, batch_size)
        records.append(record)
        if report is not None:
            report(record)
    layout.drop(root, "sync_fix", [r.name for r in records if not r.kept])
    with atomic_output(root / SCORES) as tmp:
        tmp.write_text(json.dumps({"model": net.description, "min_confidence": threshold,
                                   "clips": [asdict(r) for r in records]}, indent=1))
    return records


def _fix_clip(folder: Path, name: str, net: SyncModel, threshold: float, batch_size: int) -> ClipSync:
    original = folder / ORIGINAL_AUDIO
    source = original if original.is_file() else folder / "audio.wav"
    try:
        score = score_clip(folder, net, source, batch_size)
    except Wav2LipError as exc:
        return ClipSync(name, 0, 0.0, 0.0, 0, False, False, error=str(exc))
    confident = score.lse_c >= threshold
    shift = confident and score.offset != 0
    if shift:
        if not original.is_file():
            shutil.copyfile(folder / "audio.wav", original)
        _write_audio(folder, shift_audio(audio.load_audio(original), score.offset))
    elif original.is_file():  # corrected by an earlier run, not by this one: back to the original
        _write_audio(folder, original)
        original.unlink()
    record = ClipSync(name, score.offset, score.lse_c, score.lse_d, score.n_frames, shift, confident)
    if shift:
        after = score_clip(folder, net, folder / "audio.wav", batch_size)
        record.offset_after, record.confidence_after = after.offset, after.lse_c
    return record
