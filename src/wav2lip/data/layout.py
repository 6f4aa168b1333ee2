"""The prepared training-data layout (spec section 9): its constants, file lists and readers, in one place.

Everything that writes it (preprocess, synth, sync correction and filtering) and everything that
reads it (training, sync scoring of prepared clips) takes them from here.

    <root>/<speaker>/<clip>/<i>.jpg     face crop of video frame i (gaps: frames without a face)
    <root>/<speaker>/<clip>/audio.wav   16 kHz mono; `mel.npy` beside it is its mel, when written
    <root>/<split>.txt                  the clips training reads, one `<speaker>/<clip>` a line
    <root>/<split>.all.txt              every clip of the split: the lists before any sync step dropped one
    <root>/dropped.json                 the clips each sync step (sync-fix, filter) dropped in its latest run

Sync steps never edit `<split>.txt` directly: each records its drops, and the lists are rebuilt as the
originals minus every step's drops, so steps run together or one after the other all count, and a
step run again replaces only its own earlier decisions.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import Wav2LipError
from ..io import audio
from ..io.arrays import load_npy
from ..io.files import atomic_output

IMG_SIZE = 96  # face crops are resized to this (spec section 8)
SYNC_T = 5  # frames per window (spec sections 7-8)
FPS = 25  # training video rate (spec section 8)
MEL_STEP = audio.MEL_STEP  # mel frames per window (0.2 s)
SAMPLES_PER_FRAME = audio.SAMPLE_RATE // FPS  # 640 audio samples per video frame
# Clips of this many frames or fewer are never sampled (spec section 8).
MIN_FRAMES = 3 * SYNC_T
SPLITS = ("train", "val", "test")
ORIGINAL_SUFFIX = ".all.txt"  # <split>.all.txt: the split before sync steps dropped clips
DROPPED = "dropped.json"  # {step: [clip, ...]} of the sync steps' latest runs


def read_names(path: Path) -> list[str]:
    """The `<speaker>/<clip>` names of a file list, blank lines skipped."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def write_names(path: Path, names: Iterable[str]) -> None:
    """A file list, one name a line, written atomically (training may be reading the old one)."""
    with atomic_output(path) as tmp:
        tmp.write_text("".join(f"{name}\n" for name in names))


def original_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}{ORIGINAL_SUFFIX}"


def write_splits(root: str | Path, splits: dict[str, list[str]]) -> None:
    """The lists of every clip there is (as preprocessing finds them). Once sync steps have run, these
    become the originals and `<split>.txt` still leaves out the clips the steps dropped."""
    root = Path(root)
    if any(original_path(root, split).is_file() for split in SPLITS):
        for split, names in splits.items():
            write_names(original_path(root, split), names)
        _write_kept(root, splits, _read_dropped(root))
    else:
        for split, names in splits.items():
            write_names(root / f"{split}.txt", names)


def original_lists(root: str | Path) -> dict[str, list[str]]:
    """Each existing split's clips before any sync step: `<split>.all.txt`, saved from `<split>.txt`
    the first time a step asks."""
    root = Path(root)
    lists = {}
    for split in SPLITS:
        listing, original = root / f"{split}.txt", original_path(root, split)
        if not original.is_file() and listing.is_file():
            write_names(original, read_names(listing))
        if original.is_file():
            lists[split] = read_names(original)
    return lists


def drop(root: str | Path, step: str, dropped: Iterable[str]) -> dict[str, list[str]]:
    """Record the clips sync step `step` drops (replacing its earlier run's record) and rewrite every
    `<split>.txt` as its original minus the clips any step dropped; returns the lists written."""
    root = Path(root)
    originals = original_lists(root)
    record = _read_dropped(root)
    record[step] = sorted(set(dropped))
    with atomic_output(root / DROPPED) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return _write_kept(root, originals, record)


def _read_dropped(root: Path) -> dict[str, list[str]]:
    path = root / DROPPED
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not all(isinstance(v, list) for v in record.values()):
            raise ValueError("not a {step: [clips]} object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise Wav2LipError(f"{path}: not a record of dropped clips ({exc}); delete it and run the sync "
                           "steps again") from None
    return record


def _write_kept(root: Path, originals: dict[str, list[str]], record: dict[str, list[str]]) -> dict[str, list[str]]:
    gone = {name for names in record.values() for name in names}
    kept = {split: [n for n in names if n not in gone] for split, names in originals.items()}
    for split, names in kept.items():
        write_names(root / f"{split}.txt", names)
    return kept


@dataclass(frozen=True)
class ClipEntry:
    name: str  # "<speaker>/<clip>" as in the file list
    folder: Path
    frames: np.ndarray  # sorted indices of the frame files present (gaps where no face was found)


def read_file_list(root: str | Path, split: str) -> list[ClipEntry]:
    """The clips named in `<root>/<split>.txt` that have more than MIN_FRAMES frames.

    Errors name the file: a missing root or list, a list naming missing clip folders, no usable clip.
    """
    root = Path(root)
    if not root.is_dir():
        raise Wav2LipError(f"{root}: data root does not exist (expected the layout `wav2lip preprocess` writes)")
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise Wav2LipError(f"{listing}: file list not found (is {root} a prepared data root?)")
    names = read_names(listing)
    if not names:
        raise Wav2LipError(f"{listing}: the file list is empty")
    missing = [n for n in names if not (root / n).is_dir()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise Wav2LipError(f"{listing}: {len(missing)} listed clips have no folder under {root}: {shown}")
    clips = []
    for name in names:
        folder = root / name
        frames = sorted(int(f[:-4]) for f in os.listdir(folder) if f.endswith(".jpg") and f[:-4].isdigit())
        if len(frames) > MIN_FRAMES:
            if not (folder / "audio.wav").is_file() and not (folder / "mel.npy").is_file():
                raise Wav2LipError(f"{folder}: audio.wav is missing")
            clips.append(ClipEntry(name, folder, np.array(frames, np.int64)))
    if not clips:
        raise Wav2LipError(f"{listing}: no listed clip has more than {MIN_FRAMES} face frames")
    return clips


def clip_mel(folder: Path) -> np.ndarray:
    """(80, T) mel of a clip: `mel.npy` if present and newer than audio.wav, else from audio.wav."""
    wav_path, mel_path = folder / "audio.wav", folder / "mel.npy"
    if mel_path.is_file() and (not wav_path.exists() or mel_path.stat().st_mtime >= wav_path.stat().st_mtime):
        try:
            mel = load_npy(mel_path)  # never unpickled, its declared size checked before it is allocated
        except (ValueError, OSError) as exc:
            raise Wav2LipError(f"{mel_path}: not a saved mel spectrogram ({exc}); delete it to recompute it "
                               "from audio.wav") from None
        if not isinstance(mel, np.ndarray) or mel.ndim != 2 or mel.shape[0] != audio.N_MELS \
                or mel.dtype.kind != "f" or not np.isfinite(mel).all():
            raise Wav2LipError(f"{mel_path}: not a finite ({audio.N_MELS}, T) float mel spectrogram "
                               f"(holds {getattr(mel, 'dtype', type(mel))} {getattr(mel, 'shape', '')}); "
                               "delete it to recompute it from audio.wav")
        return mel
    return audio.melspectrogram(audio.load_audio(wav_path))
