"""Turn a folder of talking-face videos into the training layout (spec section 9), and sync-filter it.

For each video: frames resampled to 25 fps by timestamp, the detector's raw box (no pads, no
smoothing, as the reference) cropped and saved as `<i>.jpg` (frames without a face leave gaps),
the audio as 16 kHz mono `audio.wav`, its mel as `mel.npy` (so training never recomputes it), and
last a `.done` marker written atomically: a clip folder without it is incomplete and is redone on
the next run, one with it is skipped. Videos are shared among worker processes, and among machines
by the RANK / WORLD_SIZE environment variables (machine r takes every WORLD_SIZE-th video).

Sync filtering (spec section 7): a trained expert scores every clip; clips whose in-sync score is
below a threshold leave the file lists.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import audio
from .errors import Wav2LipError
from .files import atomic_output
from .synth import write_wav

FPS = 25  # training video rate (spec section 8)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".flv", ".m4v")
DONE = ".done"  # marker of a complete clip folder
SPLITS = ("train", "val", "test")


@dataclass
class ClipResult:
    name: str  # "<speaker>/<clip>"
    frames: int  # frames read at 25 fps
    faces: int  # crops written
    error: str | None = None
    skipped: bool = False  # already complete from an earlier run


def find_videos(input_dir: str | Path) -> list[Path]:
    """Every video file under `input_dir`, sorted (so shards and workers agree on the order)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise Wav2LipError(f"{root}: input folder does not exist")
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise Wav2LipError(f"{root}: no video files found ({', '.join(VIDEO_EXTENSIONS)})")
    return videos


def clip_name(video: Path) -> str:
    """`<speaker>/<clip>`: the video's folder name and its name without extension (the reference's)."""
    return f"{video.parent.name}/{video.stem}"


def shard(items: list, rank: int | None = None, world: int | None = None) -> list:
    """This machine's share: every `world`-th item from `rank` (RANK / WORLD_SIZE by default)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    if not 0 <= rank < world:
        raise Wav2LipError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return items[rank::world]


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch = []
    for frame in frames:
        batch.append(frame)
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


def preprocess_video(video: str | Path, folder: str | Path, detector, batch_size: int = 16) -> ClipResult:
    """Write one clip folder (crops, audio.wav, mel.npy, then the .done marker); streams the video."""
    from .video_io import open_source

    video, folder = Path(video), Path(folder)
    name = f"{folder.parent.name}/{folder.name}"
    if (folder / DONE).is_file():
        done = json.loads((folder / DONE).read_text())
        return ClipResult(name, done["frames"], done["faces"], skipped=True)
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier attempt
    folder.mkdir(parents=True)
    wav = audio.load_audio(video)
    n_frames = n_faces = 0
    with open_source(video, fps=FPS) as source:
        for batch in _batches(iter(source), batch_size):
            for frame, detections in zip(batch, detector.detect(batch)):
                if detections:
                    best = max(detections, key=lambda d: d.score)
                    crop = _crop(frame, best.box)
                    if crop is not None:
                        cv2.imwrite(str(folder / f"{n_frames}.jpg"), crop)
                        n_faces += 1
                n_frames += 1
    write_wav(folder / "audio.wav", wav)
    with atomic_output(folder / "mel.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, audio.melspectrogram(audio.load_audio(folder / "audio.wav")))  # of the 16-bit file
    with atomic_output(folder / DONE) as tmp:
        tmp.write_text(json.dumps({"frames": n_frames, "faces": n_faces, "source": str(video)}))
    return ClipResult(name, n_frames, n_faces)


_WORKER: dict = {}


def _init_worker(detector_name: str, device: str, weights: str | None, batch_size: int, threads: int) -> None:
    from .faces import create_detector

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


def preprocess(
    input_dir: str | Path, output_dir: str | Path, detector: str = "retinaface", weights: str | None = None,
    device: str = "cpu", workers: int = 1, batch_size: int = 16, rank: int | None = None,
    world: int | None = None, val_fraction: float = 0.05, test_fraction: float = 0.05, progress: bool = True,
) -> list[ClipResult]:
    """Preprocess this machine's share of the videos under `input_dir` into `output_dir`.

    Then (re)writes train/val/test.txt over every complete clip in `output_dir` (so after the last
    machine finishes, or on any re-run, the lists cover everything); whole speakers go to one split.
    Videos that fail (no audio, unreadable) are reported and skipped.
    """
    videos = shard(find_videos(input_dir), rank, world)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
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
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=args) as pool:
                for result in pool.map(_work, jobs):
                    results.append(_report(result, progress, bar))
        else:
            _init_worker(*args)
            for job in jobs:
                results.append(_report(_work(job), progress, bar))
    finally:
        if bar is not None:
            bar.close()
    write_lists(output_dir, val_fraction, test_fraction)
    return results


def _report(result: ClipResult, progress: bool, bar=None) -> ClipResult:
    """One line per clip (above the progress bar, when there is one)."""
    if progress:
        state = "error: " + result.error if result.error else ("done before" if result.skipped else "ok")
        line = f"{result.name}: {result.faces}/{result.frames} faces, {state}"
        if bar is not None:
            bar.write(line, file=sys.stderr)
            bar.update(1)
        else:
            print(line, file=sys.stderr)
    return result


def complete_clips(root: str | Path) -> list[str]:
    """`<speaker>/<clip>` of every clip folder under `root` that has its .done marker."""
    root = Path(root)
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob(f"*/*/{DONE}"))


def write_lists(root: str | Path, val_fraction: float = 0.05, test_fraction: float = 0.05) -> dict[str, list[str]]:
    """train/val/test.txt over the complete clips; a speaker's split is fixed by a hash of its name,
    so lists stay stable as more clips complete and held-out speakers are never trained on."""
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in complete_clips(root):
        u = zlib.crc32(name.split("/")[0].encode()) % 10_000 / 10_000
        split = "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"
        splits[split].append(name)
    for split, names in splits.items():
        with atomic_output(Path(root) / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{n}\n" for n in names))
    return splits


# ---- sync filtering (spec section 7) ----

@dataclass
class SyncScore:
    name: str
    score: float  # mean sync probability of in-sync windows (offset 0)
    offset: int  # frames by which the lips lag the audio, by the expert's best match
    offsets: list[int]
    scores: list[float]  # mean sync probability at each offset


@torch.no_grad()
def clip_sync(expert: torch.nn.Module, folder: str | Path, max_offset: int = 5,
              device: str | torch.device = "cpu", batch_size: int = 64) -> SyncScore:
    """Score a prepared clip with an expert: mean sync probability of 5-frame windows against the
    audio shifted by -max_offset..max_offset frames. The best offset tells how far the lips lag."""
    from .models.syncnet import sync_probability
    from .train.data import IMG_SIZE, MEL_STEP, SYNC_T, clip_mel, mel_start

    folder = Path(folder)
    mel = clip_mel(folder)
    frames = {int(p.stem): p for p in folder.glob("*.jpg") if p.stem.isdigit()}
    offsets = list(range(-max_offset, max_offset + 1))
    starts = [
        f for f in sorted(frames)
        if all(f + j in frames for j in range(SYNC_T))
        and mel_start(f - max_offset) >= 0 and mel_start(f + max_offset) + MEL_STEP <= mel.shape[1]
    ]
    if not starts:
        raise Wav2LipError(f"{folder}: no 5-frame window with audio around it to score")
    lower: dict[int, np.ndarray] = {}
    for f in sorted({f + j for f in starts for j in range(SYNC_T)}):
        image = cv2.imread(str(frames[f]))
        if image is None:
            raise Wav2LipError(f"{frames[f]}: unreadable image")
        lower[f] = cv2.resize(image, (IMG_SIZE, IMG_SIZE))[IMG_SIZE // 2:]
    expert.eval()
    # Each face window and each audio window is embedded once, then paired at every offset.
    needed = sorted({f + o for f in starts for o in offsets})
    audio_emb: dict[int, torch.Tensor] = {}
    for i in range(0, len(needed), batch_size):
        chunk = needed[i:i + batch_size]
        mels = np.stack([mel[None, :, mel_start(g):mel_start(g) + MEL_STEP] for g in chunk])
        emb = F.normalize(expert.audio_encoder(torch.from_numpy(mels).float().to(device)).flatten(1), dim=1)
        audio_emb.update(zip(chunk, emb))
    face_emb: dict[int, torch.Tensor] = {}
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        faces = np.stack([np.concatenate([lower[f + j] for j in range(SYNC_T)], axis=2) for f in chunk])
        faces_t = torch.from_numpy(faces).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        face_emb.update(zip(chunk, F.normalize(expert.face_encoder(faces_t).flatten(1), dim=1)))
    totals = np.zeros(len(offsets))
    for k, offset in enumerate(offsets):
        a = torch.stack([audio_emb[f + offset] for f in starts])
        v = torch.stack([face_emb[f] for f in starts])
        totals[k] = sync_probability(a, v).sum().item()
    means = totals / len(starts)
    best = offsets[int(np.argmax(means))]
    return SyncScore(f"{folder.parent.name}/{folder.name}", float(means[max_offset]), -best, offsets,
                     [float(m) for m in means])


def filter_sync(root: str | Path, expert: str | Path, min_sync: float, device: str = "cpu",
                max_offset: int = 5) -> dict[str, list[str]]:
    """Score every listed clip with the expert and drop those below `min_sync` from the file lists.

    The unfiltered lists are kept once as `<split>.all.txt` (re-filtering starts from them), the
    scores go to `sync_scores.json`; returns the dropped clips per split.
    """
    from .checkpoints import load_model

    root = Path(root)
    model = load_model(expert, "syncnet", device)
    scores: dict[str, dict] = {}
    dropped: dict[str, list[str]] = {}
    for split in SPLITS:
        listing, original = root / f"{split}.txt", root / f"{split}.all.txt"
        if not listing.is_file():
            continue
        if not original.is_file():
            shutil.copyfile(listing, original)
        names = [n.strip() for n in original.read_text().splitlines() if n.strip()]
        kept = []
        for name in names:
            try:
                result = clip_sync(model, root / name, max_offset, device)
            except Wav2LipError as exc:
                scores[name] = {"error": str(exc)}
                continue
            scores[name] = {"score": result.score, "offset": result.offset}
            if result.score >= min_sync:
                kept.append(name)
        dropped[split] = [n for n in names if n not in kept]
        with atomic_output(listing) as tmp:
            tmp.write_text("".join(f"{n}\n" for n in kept))
    with atomic_output(root / "sync_scores.json") as tmp:
        tmp.write_text(json.dumps({"min_sync": min_sync, "clips": scores}, indent=1))
    return dropped
