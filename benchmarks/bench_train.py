"""Prove on a CPU that the method works: a lip-sync expert, then generators trained with it.

The paper's ablation in miniature, on synthetic talking faces whose true mouth state is known
(wav2lip.data.synth), everything through the public API (make_config / train, run in chunks that resume):
1. data: a training set (seed 1), a disjoint judge set (seed 2: other faces, other audio) and
   held-out test clips (seed 3, never seen by any network);
2. the expert (training set) and an independent judge expert (judge set) train side by side, one
   process each, until their eval loss reaches --expert-target; the judge, needed only for scoring,
   keeps training beside the generators if it needs longer, until it stops improving at its lowest
   learning rate (its time is inside the budget);
3. three generators train side by side for the same number of steps with that frozen expert:
   l1 (sync weight kept at 0), expert (the recipe: the sync loss switches itself on once the eval
   sync loss falls under 0.75) and gan (the wav2lip_gan recipe);
4. on the test clips, each generator and the ground truth are scored: eval sync loss under the
   training expert, the judge's AV offset / LSE-D / LSE-C (spec section 10's search, with the judge),
   mouth-opening correlation with the truth, lower-half PSNR and sharpness relative to the truth.
Narrow networks and lr 1e-3 (the authors use 1e-4) keep it within an hour on two CPU cores.

    python benchmarks/bench_train.py --minutes 60 --json results.json [--out /tmp/bench_train]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from wav2lip.data import synth
from wav2lip.checkpoints import load_model
from wav2lip.evaluation.sync import offset_search
from wav2lip.data.layout import IMG_SIZE, MEL_STEP, SYNC_T, clip_mel
from wav2lip.io.audio import mel_start
from wav2lip.lipsync.kernel import SILENT_MEL
from wav2lip.models.syncnet import stack_lower_halves, sync_probability
from wav2lip.train import checkpoint_path, latest_checkpoint, make_config, train
from wav2lip.train.generator import GeneratorRecipe

ROWS = ("l1", "expert", "gan")
# The most of the budget the training expert may take; the generators start as soon as it is done.
EXPERT_SHARE = 0.40
SCORING_RESERVE_S = 150.0


def _steps_done(folder: Path) -> int:
    latest = latest_checkpoint(folder)
    return torch.load(latest, weights_only=True)["global_step"] if latest else 0


def _train_chunk(job: dict) -> dict:
    """Train one network to job['steps'] (resuming its folder); return the eval metrics and seconds."""
    torch.set_num_threads(1)
    started = time.time()
    metrics = train(make_config(job["recipe"], resume=True, **job["config"]))
    return {"metrics": metrics, "seconds": time.time() - started}


def _switch_step(folder: Path) -> int | None:
    """The step at which the curriculum switched the sync loss on, from the run's log."""
    for line in (folder / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "sync loss weight now" in record.get("note", "") and record.get("split") == "val":
            return int(record["step"])
    return None


def train_expert(args, root: Path, folder: Path, deadline: float, name: str) -> dict:
    """One expert in chunks until its eval loss <= target or the deadline.

    On a plateau (two evaluations without a new best) the learning rate drops to a third, at most
    twice: a resumed run takes the rate it is given. A plateau at the lowest rate ends the run, so the
    judge gives the generators its core instead of training on beside them until their deadline (on a
    60-minute run it stopped at 3,800 steps, 0.2589; training on had taken it to 5,200 steps, 0.2488).
    """
    common = dict(workers=0, threads=1, progress=False, batch_size=32, width=args.expert_width,
                  eval_batches=32, log_interval=50, keep_checkpoints=2)
    run = {"loss": float("inf"), "best": float("inf"), "stale": 0, "lr": args.lr, "drops": 0,
           "steps": _steps_done(folder), "seconds": 0.0, "history": []}
    chunk_s = 0.0
    while run["loss"] > args.expert_target and time.time() + chunk_s < deadline:
        tick = time.time()
        result = _train_chunk({"recipe": "expert", "config": dict(
            data_root=str(root), checkpoint_dir=str(folder), steps=run["steps"] + args.expert_chunk,
            eval_interval=args.expert_chunk, checkpoint_interval=args.expert_chunk, lr=run["lr"], **common)})
        chunk_s = time.time() - tick
        run["steps"] += args.expert_chunk
        run["loss"] = result["metrics"]["loss"]
        run["accuracy"] = result["metrics"]["accuracy"]
        run["seconds"] += result["seconds"]
        run["history"].append({"step": run["steps"], "loss": run["loss"], "lr": run["lr"]})
        print(f"{name} step {run['steps']}: eval loss {run['loss']:.4f}, accuracy {run['accuracy']:.3f}, "
              f"lr {run['lr']:.1e} ({result['seconds']:.0f} s)", flush=True)
        if run["loss"] < run["best"] - 0.003:
            run["best"], run["stale"] = run["loss"], 0
        else:
            run["stale"] += 1
        if run["stale"] >= 2 and run["drops"] == 2:
            print(f"{name}: no new best at its lowest rate; stopped", flush=True)
            break
        if run["stale"] >= 2:
            run["lr"] /= 3
            run["drops"] += 1
            run["stale"] = 0
    run["checkpoint"] = str(latest_checkpoint(folder))
    return run


def _expert_process(args, root: Path, folder: Path, deadline: float, name: str) -> None:
    run = train_expert(args, root, folder, deadline, name)
    (folder / "bench_state.json").write_text(json.dumps(run))


def start_expert(args, root: Path, folder: Path, deadline: float, name: str) -> mp.Process:
    """Train an expert in a process of its own; its result lands in FOLDER/bench_state.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_state.json").unlink(missing_ok=True)
    process = mp.get_context("fork").Process(target=_expert_process, args=(args, root, folder, deadline, name))
    process.start()
    return process


def finish_expert(process: mp.Process, folder: Path) -> dict:
    process.join()
    return json.loads((folder / "bench_state.json").read_text())


def _fork(source: Path, target: Path, step: int, switch: bool = False) -> None:
    """Start `target` as a copy of `source` at `step` (checkpoint and log up to it); nothing at step 0.

    With `switch`, the copy takes the step the recipe's curriculum takes at that step's evaluation (which
    is `source`'s, bit for bit): its sync loss weight, in the checkpoint's training state, and the log's note.
    """
    target.mkdir(parents=True, exist_ok=True)
    if step == 0:
        return
    records = [json.loads(line) for line in (source / "log.jsonl").read_text().splitlines()]
    records = [record for record in records if record["step"] <= step]
    payload = torch.load(checkpoint_path(source, step), weights_only=True)
    if switch:
        curriculum = SimpleNamespace(config=make_config("generator"), sync_weight=0.0)
        evaluation = next(r for r in reversed(records) if r["split"] == "val" and r["step"] == step)
        messages = GeneratorRecipe.after_eval(curriculum, {"sync": evaluation["sync"]})
        payload["train_state"]["sync_weight"] = curriculum.sync_weight
        evaluation["note"] = "; ".join(messages)
    torch.save(payload, checkpoint_path(target, step))
    (target / "log.jsonl").write_text("".join(f"{json.dumps(record)}\n" for record in records))


def train_generators(args, data: Path, expert: Path, out: Path, deadline: float) -> dict:
    """l1, expert and gan generators side by side, in rounds of the same steps, until the deadline.

    Until its sync loss switches on, the recipe's generator is the l1 generator bit for bit (same seed,
    same samples, same steps; resuming is exact). So it is not trained twice: when an evaluation of
    the l1 run falls under the threshold, the recipe's run starts from that checkpoint with the switch
    its own evaluation would have made, and joins the next round. The last round is cut to the steps
    that fit before the deadline, so no minutes of the budget go unused.
    """
    common = dict(data_root=str(data), expert=str(expert), workers=0, threads=1, progress=False, lr=args.lr,
                  disc_lr=args.disc_lr, batch_size=args.batch_size, width=args.width, eval_batches=8,
                  log_interval=50, keep_checkpoints=2, expert_mode=args.expert_mode)
    extra = {"l1": dict(sync_weight=0.0), "expert": {}, "gan": dict(gan=True)}
    folders = {name: out / f"gen_{name}" for name in ROWS}
    threshold = make_config("generator").sync_threshold
    steps = min(_steps_done(folders[name]) for name in ("l1", "gan"))
    running = ["l1", "gan"] + (["expert"] if folders["expert"].exists() else [])
    first = steps
    history: dict[str, list] = {name: [] for name in ROWS}
    step_s, seconds = 0.0, {name: 0.0 for name in ROWS}

    def job(name: str, to: int, chunk: int) -> dict:
        interval = chunk if chunk == args.gen_chunk else to  # a cut round's end is no multiple of its steps
        return {"recipe": "generator", "config": dict(checkpoint_dir=str(folders[name]), steps=to,
                                                      eval_interval=interval, checkpoint_interval=interval,
                                                      **common, **extra[name])}

    with mp.get_context("fork").Pool(3) as pool:
        while True:
            fits = int((deadline - time.time()) / (step_s * 1.05)) // 10 * 10 if step_s else args.gen_chunk
            chunk = min(args.gen_chunk, fits)
            if chunk < 10 and steps != first:  # at least one round
                break
            steps += chunk
            tick = time.time()
            results = dict(zip(running, pool.map(_train_chunk, [job(name, steps, chunk) for name in running])))
            step_s = (time.time() - tick) / chunk
            if "expert" not in running and results["l1"]["metrics"]["sync"] < threshold:
                _fork(folders["l1"], folders["expert"], steps, switch=True)
                results["expert"] = results["l1"]  # the same run until this step: its history and time too
                history["expert"], seconds["expert"] = list(history["l1"]), seconds["l1"]
                running.append("expert")
                step_s *= len(running) / (len(running) - 1)  # one more process on the same cores
                print(f"l1 eval sync loss under {threshold} at step {steps}: the recipe's run forks from it "
                      "and switches its sync loss on", flush=True)
            line = []
            for name in running:
                m = results[name]["metrics"]
                seconds[name] += results[name]["seconds"]
                history[name].append({"step": steps, "l1": m["l1"], "sync": m["sync"]})
                line.append(f"{name} l1 {m['l1']:.4f} sync {m['sync']:.3f}")
            print(f"generators step {steps} ({step_s * chunk:.0f} s): " + "; ".join(line), flush=True)
    if "expert" not in running:  # never switched on: the recipe's run is the l1 run
        _fork(folders["l1"], folders["expert"], steps)
        history["expert"] = list(history["l1"])
    return {name: {"steps": steps, "checkpoint": str(latest_checkpoint(folders[name])), "seconds": seconds[name],
                   "history": history[name], "sync_switched_on_at": _switch_step(folders[name])}
            for name in ROWS}


def write_test_clips(root: Path, n: int, seconds: float, seed: int) -> list[Path]:
    """Held-out clips (unseen faces and audio) in the prepared layout, with their true mouth opening."""
    folders = []
    for k in range(n):
        folder = root / f"{k:03d}"
        if not (folder / "mouth.npy").exists():
            clip = synth.make_clip(seed * 1_000_003 + k, seconds)
            folder.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(clip.frames()):
                cv2.imwrite(str(folder / f"{i}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            synth.write_wav(folder / "audio.wav", clip.wav)
            np.save(folder / "mouth.npy", clip.opening)
        folders.append(folder)
    return folders


class TestClip:
    """A held-out clip's frames 1..n-1 (frame 0 has no mel window one frame earlier), mels and truth."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.mel = clip_mel(folder)
        n = len(list(folder.glob("*.jpg")))
        self.frames = [f for f in range(1, n) if mel_start(f) + MEL_STEP <= self.mel.shape[1]]
        faces = [cv2.imread(str(folder / f"{f}.jpg")) for f in range(n)]
        self.truth = np.stack([faces[f] for f in self.frames])
        rng = np.random.default_rng(seed)
        self.reference = np.stack([faces[int(rng.integers(n))] for _ in self.frames])
        self.opening = np.load(folder / "mouth.npy")[self.frames]

    @torch.no_grad()
    def generate(self, model: torch.nn.Module) -> np.ndarray:
        """Every frame generated as in training: its own face masked, a reference, the mel one frame earlier
        (moved by the model's mel_offset; digital silence before the audio's start)."""
        target = self.truth.astype(np.float32) / 255
        masked = target.copy()
        masked[:, IMG_SIZE // 2:] = 0
        x = torch.from_numpy(np.concatenate([masked, self.reference.astype(np.float32) / 255], axis=3))
        offset = getattr(model, "mel_offset", 0)
        pad = max(0, -offset)
        mel = np.concatenate((np.full((self.mel.shape[0], pad), SILENT_MEL, np.float32), self.mel), axis=1)
        starts = [mel_start(f - 1) + offset + pad for f in self.frames]
        mels = np.stack([mel[None, :, s:s + MEL_STEP] for s in starts])
        out = model(torch.from_numpy(mels).float(), x.permute(0, 3, 1, 2))
        return (out.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)

    def windows(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Every 5-frame window of `frames` as the expert takes it (lower halves on channels) and its mel."""
        n = len(frames) - SYNC_T + 1
        lower = torch.from_numpy(frames[:, IMG_SIZE // 2:]).permute(0, 3, 1, 2).float() / 255  # (N, 3, 48, 96)
        faces = torch.stack([lower[i:i + SYNC_T].permute(1, 0, 2, 3) for i in range(n)])  # (n, 3, 5, 48, 96)
        mels = np.stack([self.mel[None, :, mel_start(f):mel_start(f) + MEL_STEP] for f in self.frames[:n]])
        return stack_lower_halves(faces), torch.from_numpy(mels).float()

    @torch.no_grad()
    def embed(self, expert: torch.nn.Module, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert (eval mode) embeddings of each 5-frame window of `frames` and of its audio window."""
        faces, mels = self.windows(frames)
        return expert.eval()(mels, faces)


@torch.no_grad()
def sync_losses(clips: list[TestClip], generated: list[np.ndarray], expert: torch.nn.Module,
                batch_size: int, seed: int = 0) -> dict[str, float]:
    """Mean BCE of the expert's verdict 'in sync' over every window of the clips, in both BatchNorm modes.

    Train mode is the reference's frozen expert (and ours by default): BatchNorm uses the statistics of
    each batch, here batches of windows drawn at random across clips as in training evaluation, of the
    generators' training batch size: the noise of statistics over few windows raises the loss of every
    face, the truth's too (with the expert of the README, 0.208 at 8 windows, 0.168 at 16, 0.148 at 32).
    """
    pairs = [clip.windows(frames) for clip, frames in zip(clips, generated)]
    faces, mels = torch.cat([f for f, _ in pairs]), torch.cat([m for _, m in pairs])
    losses = {}
    for mode in ("train", "eval"):
        model = copy.deepcopy(expert).train(mode == "train")
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(faces)))
        bce = []
        for i in range(0, len(order) - batch_size + 1, batch_size):
            index = order[i:i + batch_size]
            audio_emb, face_emb = model(mels[index], faces[index])
            bce += (-torch.log(sync_probability(audio_emb, face_emb).clamp(min=math.exp(-100)))).tolist()
        losses[mode] = float(np.mean(bce))
    return losses


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse)) if mse > 0 else float("inf")


def _sharpness(frames: np.ndarray) -> float:
    """Mean variance of the Laplacian of the lower halves (grey): how much fine detail there is."""
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(f[IMG_SIZE // 2:], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
                          for f in frames]))


def score(clips: list[TestClip], generated: list[np.ndarray], expert: torch.nn.Module,
          judge: torch.nn.Module, vshift: int, expert_mode: str, batch_size: int) -> dict:
    """The table's columns for one row (generated frames per clip; the truth for the truth row)."""
    offsets, lse_d, lse_c, measured, truth_open, psnr, sharp, sharp_truth = [], [], [], [], [], [], [], []
    for clip, frames in zip(clips, generated):
        audio_emb, face_emb = clip.embed(judge, frames)
        search = offset_search(face_emb, audio_emb, vshift)
        offsets.append(search.offset)
        lse_d.append(search.min_dist)
        lse_c.append(search.confidence)
        measured += [synth.mouth_opening(f) for f in frames]
        truth_open += clip.opening.tolist()
        psnr.append(_psnr(frames[:, IMG_SIZE // 2:], clip.truth[:, IMG_SIZE // 2:]))
        sharp.append(_sharpness(frames))
        sharp_truth.append(_sharpness(clip.truth))
    sync = sync_losses(clips, generated, expert, batch_size)
    return {
        "eval_sync_loss": sync[expert_mode],
        "eval_sync_loss_train_bn": sync["train"],
        "eval_sync_loss_eval_bn": sync["eval"],
        "judge_offset_accuracy": float(np.mean([o == 0 for o in offsets])),
        "judge_offsets": offsets,
        "judge_lse_d": float(np.mean(lse_d)),
        "judge_lse_c": float(np.mean(lse_c)),
        "mouth_r": float(np.corrcoef(measured, truth_open)[0, 1]),
        "psnr_lower": float(np.mean(psnr)) if np.isfinite(np.mean(psnr)) else None,  # None: identical
        "sharpness": float(np.sum(sharp) / np.sum(sharp_truth)),
    }


def collage(clips: list[TestClip], outputs: dict[str, list[np.ndarray]], path: Path, n_frames: int = 8) -> None:
    """Lower halves of a stretch of one test clip: one row per row of the table, frames left to right."""
    clip = 0
    opening = clips[clip].opening
    start = int(np.argmax(np.convolve(np.abs(np.diff(opening)), np.ones(n_frames), "valid")))  # a lively stretch
    rows = []
    for name, frames in outputs.items():
        strip = np.concatenate([f[IMG_SIZE // 2 - 8:] for f in frames[clip][start:start + n_frames]], axis=1)
        label = np.full((strip.shape[0], 70, 3), 255, np.uint8)
        cv2.putText(label, name, (4, strip.shape[0] // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        rows.append(np.concatenate([label, strip], axis=1))
    image = np.concatenate(rows, axis=0)
    image = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), image)


def evaluate_rows(args, out: Path, experts: dict, generators: dict) -> dict:
    clips = [TestClip(folder, seed=k) for k, folder in enumerate(write_test_clips(out / "test", args.test_clips,
                                                                                    args.test_seconds, seed=3))]
    expert = load_model(experts["expert"]["checkpoint"], "syncnet")
    judge = load_model(experts["judge"]["checkpoint"], "syncnet")
    outputs = {"truth": [clip.truth for clip in clips]}
    for name in ROWS:
        model = load_model(generators[name]["checkpoint"], "wav2lip")
        outputs[name] = [clip.generate(model) for clip in clips]
    rows = {name: score(clips, frames, expert, judge, args.vshift, args.expert_mode, args.batch_size)
            for name, frames in outputs.items()}
    for name in ROWS:
        rows[name]["checkpoint"] = generators[name]["checkpoint"]
        rows[name]["steps"] = generators[name]["steps"]
        rows[name]["sync_switched_on_at"] = generators[name]["sync_switched_on_at"]
    collage(clips, {name: outputs[name] for name in ("truth", *ROWS)}, out / "collage.png")
    return rows


def print_table(result: dict) -> None:
    columns = [("eval_sync_loss", "sync loss", "{:.3f}"), ("eval_sync_loss_eval_bn", "sync loss (BN eval)", "{:.3f}"), ("judge_offset_accuracy", "judge offset ok", "{:.0%}"),
               ("judge_lse_d", "LSE-D", "{:.3f}"), ("judge_lse_c", "LSE-C", "{:.3f}"),
               ("mouth_r", "mouth r", "{:.3f}"), ("psnr_lower", "PSNR lower", "{:.2f}"),
               ("sharpness", "sharpness", "{:.3f}")]
    print()
    print("| row | " + " | ".join(title for _, title, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in (*ROWS, "truth"):
        row = result["rows"][name]
        print(f"| {name} | " + " | ".join("-" if row[key] is None else fmt.format(row[key]) for key, _, fmt in columns) + " |")
    e, j = result["expert"], result["judge"]
    print(f"\nexpert: eval loss {e['eval_loss']:.4f} after {e['steps']} steps ({e['seconds'] / 60:.1f} min); "
          f"judge: eval loss {j['eval_loss']:.4f} after {j['steps']} steps; generators: "
          f"{result['rows']['expert']['steps']} steps each; sync loss switched on at step "
          f"{result['rows']['expert']['sync_switched_on_at']} (expert), {result['rows']['gan']['sync_switched_on_at']} "
          f"(gan); total {result['minutes']:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_train")
    parser.add_argument("--minutes", type=float, default=60.0, help="time budget for everything, data to table")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--clips", type=int, default=96, help="clips in the training set (and in the judge's)")
    parser.add_argument("--expert-width", type=float, default=0.125)
    parser.add_argument("--expert-target", type=float, default=0.25, help="stop training an expert at this eval loss")
    parser.add_argument("--expert-chunk", type=int, default=200, help="expert steps between evaluations")
    parser.add_argument("--width", type=float, default=0.125, help="generator width")
    parser.add_argument("--gen-chunk", type=int, default=100, help="generator steps between evaluations")
    parser.add_argument("--batch-size", type=int, default=make_config("generator").batch_size,
                        help="generator batch (the recipe's 16; also the batches the sync loss is scored in)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--disc-lr", type=float, default=1e-4,
                        help="the GAN discriminator's learning rate (the reference's; at 1e-3 it outputs 0.5 for every face)")
    parser.add_argument("--expert-mode", default=make_config("generator").expert_mode, choices=("eval", "train"))
    parser.add_argument("--test-clips", type=int, default=12)
    parser.add_argument("--test-seconds", type=float, default=4.0)
    parser.add_argument("--vshift", type=int, default=15, help="judge's offset search range, frames")
    args = parser.parse_args()
    started = time.time()
    budget_end = started + args.minutes * 60
    out = Path(args.out)
    data, judge_data = out / "data", out / "judge_data"
    for root, seed in ((data, 1), (judge_data, 2)):
        if not (root / "train.txt").exists():
            synth.write_dataset(root, args.clips, seed=seed, seconds=3.0, clips_per_speaker=2)
    print(f"data ready ({time.time() - started:.0f} s)", flush=True)

    # The judge trains beside everything else until its target or the generators' end; the
    # generators start as soon as the training expert reaches its target.
    gen_deadline = budget_end - SCORING_RESERVE_S
    judge = start_expert(args, judge_data, out / "judge", gen_deadline, "judge")
    expert = start_expert(args, data, out / "expert", started + args.minutes * 60 * EXPERT_SHARE, "expert")
    experts = {"expert": finish_expert(expert, out / "expert")}
    generators = train_generators(args, data, Path(experts["expert"]["checkpoint"]), out, gen_deadline)
    experts["judge"] = finish_expert(judge, out / "judge")
    rows = evaluate_rows(args, out, experts, generators)
    result = {
        "minutes": (time.time() - started) / 60,
        "budget_minutes": args.minutes,
        "expert": {"eval_loss": experts["expert"]["loss"], "steps": experts["expert"]["steps"],
                   "history": experts["expert"]["history"],
                   "accuracy": experts["expert"]["accuracy"], "seconds": experts["expert"]["seconds"],
                   "checkpoint": experts["expert"]["checkpoint"], "width": args.expert_width},
        "judge": {"eval_loss": experts["judge"]["loss"], "steps": experts["judge"]["steps"],
                  "seconds": experts["judge"]["seconds"], "checkpoint": experts["judge"]["checkpoint"],
                  "history": experts["judge"]["history"], "trained_within_budget": True},
        "generators": {name: {k: v for k, v in generators[name].items()} for name in ROWS},
        "rows": rows,
        "settings": vars(args),
        "collage": str(out / "collage.png"),
        "load_average": os.getloadavg(),
    }
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
