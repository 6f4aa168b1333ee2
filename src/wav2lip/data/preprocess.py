"""Turn a folder of talking-face videos into the training layout (spec section 9), and sync-filter it.

For each video: frames resampled to 25 fps by timestamp, the detector's raw box (no pads, no
smoothing, as the reference) cropped and saved as `<i>.jpg` (frames without a face leave gaps),
the audio as 16 kHz mono `audio.wav`, its mel as `mel.npy` (so training never recomputes it), and
last a `.done` marker written atomically: a clip folder without it is incomplete and is redone on
the next run, one with it is skipped. Videos are shared among worker processes, and among machines
by the RANK / WORLD_SIZE environment variables (machine r takes every WORLD_SIZE-th video).

Sync filtering (spec section 7): a trained expert scores every clip; clips whose in-sync score is
below a threshold leave the file lists (beside any that sync correction dropped: see `layout`).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TypeVar

import cv2
import numpy as np
import torch

from ..io import audio
from ..io import video as video_io
from ..errors import Wav2LipError
from ..io.files import atomic_output, check_folder
from ..shards import shard
from ..faces import FaceTrackOptions
from ..io.audio import mel_start, write_wav
from . import layout
from .layout import FPS, MEL_STEP, MIN_FRAMES, SAMPLES_PER_FRAME, SPLITS, SYNC_T, clip_mel

MAX_FACE_GAP = 25  # frames (1 s) without a face before a clip is split there (the evaluator's track gap)
SCENE_CUT = FaceTrackOptions().scene_cut  # colour-histogram distance of a cut, as face tracking uses
DONE = ".done"  # marker of a complete clip folder
T = TypeVar("T")


@dataclass
class ClipResult:
    """What became of one video: the clip folders written (several when it was split) and why."""

    name: str  # "<speaker>/<clip>" of the video
    frames: int  # frames read at 25 fps
    faces: int  # crops written
    error: str | None = None
    skipped: bool = False  # already complete from an earlier run
    clips: list[str] = field(default_factory=list)  # "<speaker>/<folder>" written for it
    notes: list[str] = field(default_factory=list)  # every split or dropped stretch, with the reason
    spans: list[str] = field(default_factory=list)  # "<speaker>/<folder>:<frames>" per clip written

    @property
    def written_frames(self) -> int:
        """Frames of the clip folders written (dropped stretches excluded)."""
        return sum(int(n.split(":")[1]) for n in self.spans)


def clip_name(video: Path) -> str:
    """`<speaker>/<clip>`: the video's folder name and its name without extension (the reference's)."""
    return f"{video.parent.name}/{video.stem}"


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The raw detector box clipped to the frame, as the reference crops it (integer, no pads)."""
    h, w = frame.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(box[2])), min(h, int(box[3]))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return frame[y1:y2, x1:x2]


def segments(has_face: list[bool], cuts: list[int], max_gap: int = MAX_FACE_GAP,
             min_faces: int = MIN_FRAMES) -> tuple[list[tuple[int, int]], list[str]]:
    """Split frames [0, n) into training clips: at every scene cut, and around every run of more than
    `max_gap` frames without a face (the run itself is left out). Returns the kept [start, end) spans
    (those with more than `min_faces` face frames, what training can use) and a note per split or drop.
    """
    n = len(has_face)
    spans, notes = [], []
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    for c in bounds[1:-1]:
        notes.append(f"split at a scene cut at frame {c}")
    for a, b in zip(bounds[:-1], bounds[1:]):
        start, run = a, 0
        for i in range(a, b + 1):
            if i < b and not has_face[i]:
                run += 1
                continue
            if run > max_gap:  # frames [i - run, i) have no face
                notes.append(f"left out frames {i - run}-{i - 1}: no face for {run} frames")
                if i - run > start:
                    spans.append((start, i - run))
                start = i
            run = 0
        if b > start:
            spans.append((start, b))
    kept = []
    for a, b in spans:
        count = sum(has_face[a:b])
        if count > min_faces:
            kept.append((a, b))
        elif count:
            notes.append(f"dropped frames {a}-{b - 1}: {count} face frames, training needs more than {min_faces}")
    return kept, notes


def _marker(output_dir: Path, name: str) -> Path:
    """Where a finished video's record lives: outside the clip folders, so the lists never see it."""
    return output_dir / ".videos" / f"{name}.json"


def _remove_outputs(output_dir: Path, name: str) -> None:
    """Every folder and marker a video may have left, and its speaker folder if that is now empty."""
    speaker, clip = name.split("/")
    folder = output_dir / speaker
    for path in [folder / clip, folder / f".{clip}.part", *folder.glob(f"{clip}_s[0-9][0-9]")]:
        if path.is_dir():
            shutil.rmtree(path)
    _marker(output_dir, name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty


def _finished(output_dir: Path, name: str) -> ClipResult | None:
    """The earlier run's result when every clip folder it wrote is complete."""
    marker = _marker(output_dir, name)
    if marker.is_file():
        try:
            record = json.loads(marker.read_text())
            result = ClipResult(**{k: v for k, v in record.items() if k not in ("source", "skipped")}, skipped=True)
        except (ValueError, TypeError):
            return None
        if all((output_dir / c / DONE).is_file() for c in result.clips):
            return result
        return None
    speaker, clip = name.split("/")
    if (output_dir / speaker / clip / DONE).is_file():  # written before the per-video records existed
        done = json.loads((output_dir / speaker / clip / DONE).read_text())
        return ClipResult(name, done["frames"], done["faces"], skipped=True, clips=[name],
                          spans=[f"{name}:{done['frames']}"])
    return None


def preprocess_video(video: str | Path, folder: str | Path, detector, batch_size: int = 16) -> ClipResult:
    """Write one video's clip folders (crops, audio.wav, mel.npy, then the .done marker); streams the video.

    `folder` is `<output>/<speaker>/<clip>`. The crops go to a hidden temporary folder first; then the
    video is split at scene cuts and long face losses (see `segments`): one clip keeps the name
    `<clip>`, several are `<clip>_s00`, `<clip>_s01`, ... (numbered by span), each with its frames
    from 0 and its stretch of the audio. A failure removes everything the video wrote.
    """
    from ..faces.tracking import colour_histogram, histogram_distance
    from ..io.video import open_source

    video, folder = Path(video), Path(folder)
    output_dir = folder.parent.parent
    name = f"{folder.parent.name}/{folder.name}"
    done = _finished(output_dir, name)
    if done is not None:
        return done
    _remove_outputs(output_dir, name)  # an interrupted earlier attempt
    try:
        return _preprocess_video(video, output_dir, name, detector, batch_size, colour_histogram,
                                 histogram_distance, open_source)
    except BaseException:
        _remove_outputs(output_dir, name)
        raise


def _preprocess_video(video, output_dir, name, detector, batch_size, colour_histogram, histogram_distance,
                      open_source) -> ClipResult:
    speaker, clip = name.split("/")
    work = output_dir / speaker / f".{clip}.part"
    for attempt in range(3):  # another worker may remove the speaker folder it found empty meanwhile
        try:
            work.mkdir(parents=True)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    wav = audio.load_audio(video)
    has_face: list[bool] = []
    cuts: list[int] = []
    previous = None
    with open_source(video, fps=FPS) as source:
        for batch in _batches(iter(source), batch_size):
            for frame, detections in zip(batch, detector.detect(batch)):
                hist = colour_histogram(frame)
                if previous is not None and histogram_distance(previous, hist) > SCENE_CUT:
                    cuts.append(len(has_face))
                previous = hist
                crop = _crop(frame, max(detections, key=lambda d: d.score).box) if detections else None
                if crop is not None:
                    cv2.imwrite(str(work / f"{len(has_face)}.jpg"), crop)
                has_face.append(crop is not None)
    spans, notes = segments(has_face, cuts)
    candidates = len(spans) + sum(1 for n in notes if n.startswith("dropped"))
    result = ClipResult(name, len(has_face), sum(has_face), notes=notes)
    if not spans:
        result.notes.append("no stretch with enough face frames: nothing written")
    for k, (a, b) in enumerate(spans):
        target = output_dir / speaker / (clip if candidates == 1 else f"{clip}_s{k:02d}")
        target.mkdir()
        for i in range(a, b):
            if has_face[i]:
                os.replace(work / f"{i}.jpg", target / f"{i - a if candidates > 1 else i}.jpg")
        segment = wav[a * SAMPLES_PER_FRAME:b * SAMPLES_PER_FRAME] if candidates > 1 else wav
        write_wav(target / "audio.wav", segment)
        _write_mel(target)
        with atomic_output(target / DONE) as tmp:
            tmp.write_text(json.dumps({"frames": b - a if candidates > 1 else len(has_face),
                                       "faces": sum(has_face[a:b]), "source": str(video), "span": [a, b]}))
        result.clips.append(f"{speaker}/{target.name}")
        result.spans.append(f"{speaker}/{target.name}:{b - a}")
    shutil.rmtree(work)
    marker = _marker(output_dir, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(marker) as tmp:
        tmp.write_text(json.dumps({**result.__dict__, "source": str(video)}))
    if not result.clips:
        with contextlib.suppress(OSError):
            (output_dir / speaker).rmdir()
    return result


def _write_mel(folder: Path) -> None:
    with atomic_output(folder / "mel.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, audio.melspectrogram(audio.load_audio(folder / "audio.wav")))  # of the 16-bit file


_WORKER: dict = {}


def _init_worker(detector_name: str, device: str, weights: str | None, batch_size: int, threads: int) -> None:
    from ..faces import create_detector

    if threads > 0:
        torch.set_num_threads(threads)
    _WORKER["detector"] = create_detector(detector_name, device=device, weights=weights, batch_size=batch_size)
    _WORKER["batch_size"] = batch_size


def _work(job: tuple[Path, Path]) -> ClipResult:
    video, folder = job
    try:
        return preprocess_video(video, folder, _WORKER["detector"], _WORKER["batch_size"])
    except Wav2LipError as exc:
        return ClipResult(clip_name(video), 0, 0, error=str(exc))


def check_output_dir(output_dir: str | Path) -> Path:
    """The prepared-data folder, created if needed; one clear error if it is a file or not writable."""
    return check_folder(output_dir, "--output-dir")


def preprocess(
    input_dir: str | Path, output_dir: str | Path, detector: str = "retinaface", weights: str | None = None,
    device: str = "cpu", workers: int = 1, batch_size: int = 16, rank: int | None = None,
    world: int | None = None, val_fraction: float = 0.05, test_fraction: float = 0.05, progress: bool = True,
) -> list[ClipResult]:
    """Preprocess this machine's share of the videos under `input_dir` into `output_dir`.

    Then (re)writes train/val/test.txt over every complete clip in `output_dir` (so after the last
    machine finishes, or on any re-run, the lists cover everything) and `report.json` (every video
    split or dropped, with the reason, and totals). Videos that fail (no audio, unreadable) are
    reported and leave nothing behind.
    """
    videos = shard(video_io.find_videos(input_dir, "input folder"), rank, world)
    output_dir = check_output_dir(output_dir)
    jobs = [(v, output_dir / clip_name(v)) for v in videos]
    results: list[ClipResult] = []
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    args = (detector, device, weights, batch_size, threads if workers > 1 else 0)
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="clip", dynamic_ncols=True)
    try:
        if workers > 1:
            # Spawned, not forked: a forked worker inherits objects whose threads it lacks (a PyAV filter
            # graph's slice threads), and freeing one there waits for them forever (seen as a hung test).
            with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer=_init_worker,
                                     initargs=args) as pool:
                for result in pool.map(_work, jobs):
                    results.append(_report(result, progress, bar))
        else:
            _init_worker(*args)
            for job in jobs:
                results.append(_report(_work(job), progress, bar))
    finally:
        if bar is not None:
            bar.close()
    _, note = write_lists(output_dir, val_fraction, test_fraction)
    write_report(output_dir, results, note)
    if progress and note:
        print(note, file=sys.stderr)
    return results


def _report(result: ClipResult, progress: bool, bar=None) -> ClipResult:
    """One line per clip (above the progress bar, when there is one)."""
    if progress:
        state = "error: " + result.error if result.error else ("done before" if result.skipped else "ok")
        split = f", {len(result.clips)} clips" if len(result.clips) != 1 and not result.error else ""
        lines = [f"{result.name}: {result.faces}/{result.frames} faces{split}, {state}"]
        lines += [f"  {note}" for note in result.notes]
        for line in lines:
            if bar is not None:
                bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)
        if bar is not None:
            bar.update(1)
    return result


def totals(results: list[ClipResult]) -> dict:
    """Videos, clips, frames and hours written (by this run, including clips done before)."""
    ok = [r for r in results if not r.error]
    frames = sum(r.written_frames for r in ok)
    return {"videos": len(results), "failed": sum(1 for r in results if r.error),
            "split": sum(1 for r in ok if len(r.clips) > 1), "dropped": sum(1 for r in ok if not r.clips),
            "clips": sum(len(r.clips) for r in ok), "frames": frames, "face_frames": sum(r.faces for r in ok),
            "hours": round(frames / FPS / 3600, 4)}


def write_report(output_dir: Path, results: list[ClipResult], split_note: str | None = None) -> dict:
    """`report.json`: totals and every video that failed, was split, or lost frames, with the reasons."""
    report = {
        "totals": totals(results),
        "split_note": split_note,
        "failed": {r.name: r.error for r in results if r.error},
        "changed": {r.name: {"clips": r.clips, "notes": r.notes} for r in results if r.notes and not r.error},
    }
    with atomic_output(output_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


def complete_clips(root: str | Path) -> list[str]:
    """`<speaker>/<clip>` of every clip folder under `root` that has its .done marker."""
    root = Path(root)
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob(f"*/*/{DONE}"))


def _unit(name: str) -> float:
    return zlib.crc32(name.encode()) % 10_000 / 10_000


def write_lists(root: str | Path, val_fraction: float = 0.05,
                test_fraction: float = 0.05) -> tuple[dict[str, list[str]], str | None]:
    """train/val/test.txt over the complete clips, and a note when the split had to fall back.

    A speaker's split is fixed by a hash of its name, so lists stay stable as more clips complete and
    held-out speakers are never trained on. When that leaves a held-out split asked for empty (too few
    speakers), clips are split instead (by a hash of the clip name, so still stable), and when even
    that leaves one empty, the last clips in name order fill it; a single clip is repeated in every
    split. The note says which happened: training then validates on speakers it has seen.
    """
    names = complete_clips(root)
    wanted = {"val": val_fraction, "test": test_fraction}

    def assign(key) -> dict[str, list[str]]:
        splits: dict[str, list[str]] = {s: [] for s in SPLITS}
        for name in names:
            u = _unit(key(name))
            splits["val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"].append(name)
        return splits

    def short(splits) -> list[str]:
        return [s for s, f in wanted.items() if f > 0 and not splits[s]] + ([] if splits["train"] else ["train"])

    splits, note = assign(lambda n: n.split("/")[0]), None
    speakers = len({n.split("/")[0] for n in names})
    if names and short(splits):
        splits = assign(lambda n: n)
        note = (f"only {speakers} speaker(s): clips, not speakers, are split into train/val/test, so validation "
                "sees speakers that training sees")
        if short(splits):
            splits = {s: [] for s in SPLITS}
            held = [s for s, f in wanted.items() if f > 0]
            if len(names) > len(held):
                for s, name in zip(held, reversed(names)):
                    splits[s].append(name)
                splits["train"] = [n for n in names if all(n not in splits[s] for s in held)]
            else:
                splits = {s: list(names) if s == "train" or s in held else [] for s in SPLITS}
                note = (f"only {len(names)} clip(s) from {speakers} speaker(s): every split lists the same clips, "
                        "so validation measures nothing held out")
    layout.write_splits(root, splits)
    return splits, note

# ---- sync filtering (spec section 7) ----

@dataclass
class ClipSyncProbability:
    """An expert's mean sync probability of a prepared clip's windows at each audio offset (the sync
    filter's measure; `evaluation.sync.SyncScore` is the evaluator's distance-based LSE-D / LSE-C)."""

    name: str
    score: float  # mean sync probability of in-sync windows (offset 0)
    offset: int  # frames by which the lips lag the audio, by the expert's best match
    offsets: list[int]
    scores: list[float]  # mean sync probability at each offset


@torch.no_grad()
def clip_sync(expert: torch.nn.Module, folder: str | Path, max_offset: int = 5,
              device: str | torch.device = "cpu", batch_size: int = 64) -> ClipSyncProbability:
    """Score a prepared clip with an expert: mean sync probability of 5-frame windows against the
    audio shifted by -max_offset..max_offset frames. The best offset tells how far the lips lag.
    Faces and audio are embedded by the evaluator's ExpertModel, as `wav2lip evaluate` embeds them."""
    from ..evaluation.sync import load_sync_model
    from ..models.syncnet import sync_probability

    model = load_sync_model(expert, device)
    folder = Path(folder)
    mel = clip_mel(folder)
    frames = {int(p.stem): p for p in folder.glob("*.jpg") if p.stem.isdigit()}
    offsets = list(range(-max_offset, max_offset + 1))
    starts = [
        f for f in sorted(frames)
        if all(f + j in frames for j in range(SYNC_T))
        and mel_start(f - max_offset, FPS) >= 0 and mel_start(f + max_offset, FPS) + MEL_STEP <= mel.shape[1]
    ]
    if not starts:
        raise Wav2LipError(f"{folder}: no 5-frame window with audio around it to score")
    lower: dict[int, np.ndarray] = {}
    for f in sorted({f + j for f in starts for j in range(SYNC_T)}):
        image = cv2.imread(str(frames[f]))
        if image is None:
            raise Wav2LipError(f"{frames[f]}: unreadable image")
        lower[f] = model.crop_whole(image)
    # Each face window and each audio window is embedded once, then paired at every offset.
    windows = (torch.from_numpy(np.stack([np.stack([lower[f + j] for j in range(SYNC_T)]) for f in chunk]))
               .permute(0, 4, 1, 2, 3).float() for chunk in _batches(iter(starts), batch_size))
    face_emb = model.embed_faces(windows)
    needed = sorted({f + o for f in starts for o in offsets})
    audio_emb = dict(zip(needed, model.embed_mel(mel, needed, batch_size)))
    totals = np.zeros(len(offsets))
    for k, offset in enumerate(offsets):
        paired = torch.stack([audio_emb[f + offset] for f in starts])
        totals[k] = sync_probability(paired, face_emb).sum().item()
    means = totals / len(starts)
    best = offsets[int(np.argmax(means))]
    return ClipSyncProbability(f"{folder.parent.name}/{folder.name}", float(means[max_offset]), -best, offsets,
                               [float(m) for m in means])


def filter_sync(root: str | Path, expert: str | Path, min_sync: float, device: str = "cpu",
                max_offset: int = 5) -> dict[str, list[str]]:
    """Score every clip of the original lists with the expert and drop those below `min_sync` (or
    unscorable) from the file lists, beside the clips sync correction dropped (`layout.drop`).

    Re-filtering starts from the original `<split>.all.txt` and replaces the filter's earlier drops;
    the scores go to `sync_scores.json`; returns the clips the filter dropped per split.
    """
    from ..checkpoints import load_model

    root = Path(root)
    model = load_model(expert, "syncnet", device)
    lists = layout.original_lists(root)
    scores: dict[str, dict] = {}
    for name in dict.fromkeys(n for names in lists.values() for n in names):
        try:
            result = clip_sync(model, root / name, max_offset, device)
        except Wav2LipError as exc:
            scores[name] = {"error": str(exc)}
            continue
        scores[name] = {"score": result.score, "offset": result.offset}
    failed = {n for n, s in scores.items() if "error" in s or s["score"] < min_sync}
    layout.drop(root, "filter_sync", failed)
    with atomic_output(root / "sync_scores.json") as tmp:
        tmp.write_text(json.dumps({"min_sync": min_sync, "clips": scores}, indent=1))
    return {split: [n for n in names if n in failed] for split, names in lists.items()}
