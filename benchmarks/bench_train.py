"""Prove on a CPU that training learns lip sync: expert first, then the generator with that expert.

On synthetic talking faces whose true mouth opening is known (wav2lip.synth):
1. train the SyncNet expert until its eval loss is below 0.25, then check its offset detection on
   held-out clips whose lips lag or lead the audio by known amounts;
2. train the generator with that frozen expert and measure, on held-out clips (unseen faces, unseen
   audio), the Pearson r between the mouth opening measured in generated frames and the truth,
   against the same generator fed the audio windows in shuffled order.
Training runs in chunks through the public API (each chunk resumes from the previous checkpoint).
Narrow networks (--width) and lr 1e-3 (the authors use 1e-4) keep it within an hour on a CPU.

    python benchmarks/bench_train.py --out /tmp/bench_train [--minutes 55]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from wav2lip import synth
from wav2lip.checkpoints import load_model
from wav2lip.preprocess import clip_sync
from wav2lip.train import latest_checkpoint, make_config, train
from wav2lip.train.data import IMG_SIZE, MEL_STEP, clip_mel, mel_start, read_file_list


def offset_accuracy(expert_path: Path, root: Path, max_offset: int = 8) -> tuple[float, list]:
    expert = load_model(expert_path, "syncnet")
    results = []
    for clip in sorted(root.glob("spk*/*")):
        true = json.loads((clip / "synth.json").read_text())["shift"]
        found = clip_sync(expert, clip, max_offset=max_offset).offset
        results.append((clip.name, true, found))
    return float(np.mean([t == f for _, t, f in results])), results


@torch.no_grad()
def mouth_correlation(generator_path: Path, root: Path, split: str = "test", shuffle: bool = False,
                      seed: int = 0) -> tuple[float, int]:
    """Pearson r of measured vs true mouth opening over every generated frame of the held-out clips.

    Each frame is generated as in training: its own face with the lower half masked, a reference
    frame from elsewhere in the clip, and the mel window one frame earlier. `shuffle` permutes the
    mel windows among the frames of each clip (the audio no longer goes with its frame).
    """
    model = load_model(generator_path, "wav2lip")
    rng = np.random.default_rng(seed)
    measured, truth = [], []
    for entry in read_file_list(root, split):
        opening = np.load(entry.folder / "mouth.npy")
        mel = clip_mel(entry.folder)
        frames = [f for f in entry.frames if f >= 1 and mel_start(f - 1) + MEL_STEP <= mel.shape[1]]
        faces = {int(f): cv2.resize(cv2.imread(str(entry.folder / f"{f}.jpg")), (IMG_SIZE, IMG_SIZE))
                 for f in entry.frames}
        order = rng.permutation(len(frames)) if shuffle else np.arange(len(frames))
        mels = np.stack([mel[None, :, mel_start(frames[k] - 1):mel_start(frames[k] - 1) + MEL_STEP] for k in order])
        target = np.stack([faces[f] for f in frames]).astype(np.float32) / 255
        masked = target.copy()
        masked[:, IMG_SIZE // 2:] = 0
        reference = np.stack([faces[int(rng.choice(entry.frames))] for _ in frames]).astype(np.float32) / 255
        x = torch.from_numpy(np.concatenate([masked, reference], axis=3)).permute(0, 3, 1, 2)
        out = model(torch.from_numpy(mels).float(), x).permute(0, 2, 3, 1).numpy()
        generated = (out * 255).astype(np.uint8)
        measured += [synth.mouth_opening(g) for g in generated]
        truth += [float(opening[f]) for f in frames]
    return float(np.corrcoef(measured, truth)[0, 1]), len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_train")
    parser.add_argument("--minutes", type=float, default=55.0, help="time budget for both stages")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--expert-width", type=float, default=0.25)
    parser.add_argument("--width", type=float, default=0.125, help="generator width")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    deadline = time.time() + args.minutes * 60
    out = Path(args.out)
    data, shifted = out / "data", out / "shifted"
    if not (data / "train.txt").exists():
        synth.write_dataset(data, args.clips, seed=1, seconds=3.0)
    if not shifted.exists():
        rng = np.random.default_rng(0)
        for k in range(20):  # unseen faces and audio, lips lagging (+) or leading (-) by a known amount
            shift = int(rng.integers(-6, 7))
            clip = synth.make_clip(900_000 + k, 3.0, shift=shift)
            folder = shifted / f"spk{k:03d}" / "00000"
            folder.mkdir(parents=True)
            for i, frame in enumerate(clip.frames()):
                cv2.imwrite(str(folder / f"{i}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            synth.write_wav(folder / "audio.wav", clip.wav)
            (folder / "synth.json").write_text(json.dumps({"seed": clip.seed, "shift": shift}))
    common = dict(data_root=str(data), workers=1, threads=args.threads, progress=False, lr=1e-3)
    rows = []

    # Stage 1: the expert.
    expert_dir = out / "expert"
    step, chunk, loss, started = 0, 200, 1.0, time.time()
    expert_budget = started + (deadline - started) * 0.4
    while time.time() < expert_budget:
        latest = latest_checkpoint(expert_dir)
        step = (torch.load(latest, weights_only=True)["global_step"] if latest else 0) + chunk
        metrics = train(make_config("expert", checkpoint_dir=str(expert_dir), steps=step, batch_size=32,
                                    width=args.expert_width, eval_interval=chunk, checkpoint_interval=chunk,
                                    eval_batches=8, log_interval=50, resume=True, **common))
        loss = metrics["loss"]
        print(f"expert step {step}: eval loss {loss:.4f}, accuracy {metrics['accuracy']:.3f}", flush=True)
        if loss < 0.25:
            break
    expert_path = latest_checkpoint(expert_dir)
    log = [json.loads(line) for line in (expert_dir / "log.jsonl").read_text().splitlines()]
    speed = np.median([r["samples_per_s"] for r in log if r["split"] == "train"])
    accuracy, detail = offset_accuracy(expert_path, shifted)
    rows += [("expert steps", step), ("expert eval loss", f"{loss:.4f}"),
             ("expert offset detection (20 held-out clips)", f"{accuracy:.0%}"),
             ("expert samples/s (batch 32)", f"{speed:.1f}")]
    print("offsets (clip, true, found):", detail, flush=True)

    # Stage 2: the generator with that expert.
    gen_dir = out / "generator"
    chunk, step, r = 200, 0, float("nan")
    while time.time() < deadline:
        latest = latest_checkpoint(gen_dir)
        step = (torch.load(latest, weights_only=True)["global_step"] if latest else 0) + chunk
        metrics = train(make_config("generator", checkpoint_dir=str(gen_dir), expert=str(expert_path), steps=step,
                                    batch_size=8, width=args.width, eval_interval=chunk, checkpoint_interval=chunk,
                                    eval_batches=4, log_interval=50, resume=True, **common))
        r, n = mouth_correlation(latest_checkpoint(gen_dir), data)
        print(f"generator step {step}: eval l1 {metrics['l1']:.4f}, sync {metrics['sync']:.4f}, "
              f"mouth r {r:.3f} ({n} frames)", flush=True)
        if r >= 0.85:
            break
    gen_path = latest_checkpoint(gen_dir)
    r_shuffled, _ = mouth_correlation(gen_path, data, shuffle=True)
    log = [json.loads(line) for line in (gen_dir / "log.jsonl").read_text().splitlines()]
    speed = np.median([r_["samples_per_s"] for r_ in log if r_["split"] == "train"])
    collages = sorted(gen_dir.glob("samples_step*.png"))
    rows += [("generator steps", step), ("generator eval l1", f"{metrics['l1']:.4f}"),
             ("generator eval sync loss", f"{metrics['sync']:.4f}"),
             ("mouth opening r, held-out clips", f"{r:.3f}"),
             ("mouth opening r, audio shuffled", f"{r_shuffled:.3f}"),
             ("generator samples/s (batch 8 x 5 frames)", f"{speed:.1f}"),
             ("sample collage", str(collages[-1]) if collages else "-")]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
