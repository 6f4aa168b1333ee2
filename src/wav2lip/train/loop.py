"""The one training loop shared by the expert and the generator, nanoGPT-style.

Top to bottom: distributed setup (only when torchrun's RANK/WORLD_SIZE are set; the same code runs
as one CPU process), data, recipe (models + optimizers), resume, the loop with logging, evaluation
every `eval_interval` steps and checkpoints every `checkpoint_interval` steps and on Ctrl-C/SIGTERM.

Checkpoints are the authors' files (`checkpoint_step000003000.pth`, `disc_checkpoint_step...` with
the GAN): {state_dict, optimizer, global_step, global_epoch} plus a `train_state` entry (torch RNG,
sync weight, config) that the authors' loader ignores. Samples are a function of their index, so a
resumed run continues with exactly the batches the uninterrupted run would have drawn.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import checkpoints
from ..device import DEVICES, DTYPES, resolve_device, resolve_precision
from ..errors import Wav2LipError
from ..io.files import atomic_output
from ..shards import local_rank, rank_and_world
from ..data.layout import read_file_list
from .config import TrainConfig
from .data import ClipSamples, StepSampler
from .parts import RECIPES, Recipe

_CHECKPOINT = re.compile(r"^checkpoint_step(\d+)\.pth$")
# Seed offset of the validation samples: evaluation never sees the training draws.
_EVAL_SEED = 1_000_003


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(config: TrainConfig) -> tuple[Distributed, torch.device]:
    """DDP when torchrun set RANK/WORLD_SIZE, else a single process; NCCL on CUDA, gloo on CPU."""
    rank, world = rank_and_world()
    if world > 1:
        info = Distributed(rank, world, local_rank())
        use_cuda = torch.cuda.is_available() and config.device in ("auto", "cuda")
        if use_cuda:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return info, device
    device = resolve_device(config.device) if config.device in DEVICES else torch.device(config.device)  # "cuda:1"
    return Distributed(), device


def _precision(config: TrainConfig, device: torch.device) -> tuple[Callable, torch.amp.GradScaler]:
    """Autocast context factory and gradient scaler for `config.precision`. "auto" keeps the CPU in
    fp32: the recipes' targets (benchmarks/bench_train.py) were measured there, and below width 0.25
    bf16 autocast gains nothing on a CPU; on CUDA it is bf16 where supported, else fp16 with scaling."""
    if config.precision == "auto":
        precision = "fp32" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        precision = resolve_precision(config.precision, device)  # an explicit choice, checked as infer checks it
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    if precision == "fp32":
        return contextlib.nullcontext, scaler
    dtype = DTYPES[precision]
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _channels_last(recipe: Recipe) -> None:
    """Hold the generator recipes' networks channels-last, so oneDNN's convolutions (three quarters of a
    CPU step) skip reordering their weights each call: at width 0.125 on one thread a generator step is
    13% faster (docs/training.md), the full-width generator 3%. The parameters stay the same objects (the
    optimizers keep them) and their values are unchanged; checkpoints are written contiguous. CPU only:
    unmeasured on CUDA. The expert recipe keeps the default layout: its steps are a small share of a
    training's time, and the layout's other rounding made the tiny experts trained for exact AV offsets
    (tests, sync filtering) miss a 6-frame shift."""
    for network in recipe.channels_last_networks():
        network.to(memory_format=torch.channels_last)


def checkpoint_path(folder: str | Path, step: int, prefix: str = "") -> Path:
    return Path(folder) / f"{prefix}checkpoint_step{step:09d}.pth"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the highest step in `folder`, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := _CHECKPOINT.match(name))]
    return max(found)[1] if found else None


class _StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop saves a checkpoint after the current step and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait
        self.requested = True

    def __enter__(self) -> _StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Log:
    """log.jsonl (one object per logged step or eval), TensorBoard if installed: rank 0 only."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = folder / "log.jsonl"
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.board = SummaryWriter(str(folder / "tensorboard"))

    def write(self, step: int, split: str, values: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: round(float(v), 6) for k, v in values.items()}, **extra}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.board is not None:
            for name, value in values.items():
                self.board.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _save(recipe: Recipe, config: TrainConfig, step: int, epoch: int) -> Path:
    """All parts' checkpoints for `step` (atomic each), the main file last: it marks the step complete."""
    folder = Path(config.checkpoint_dir)
    state = {"torch_rng": torch.get_rng_state(), "config": json.dumps(config.to_dict()), **recipe.state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    parts = recipe.parts()
    for part in parts[1:]:
        checkpoints.save_checkpoint(checkpoint_path(folder, step, part.prefix), part.model, part.optimizer,
                                    step, epoch, extra=part.extra)
    main = checkpoint_path(folder, step)
    checkpoints.save_checkpoint(main, parts[0].model, parts[0].optimizer, step, epoch,
                                extra={"train_state": state, **(parts[0].extra or {})})
    if config.keep_checkpoints > 0:
        steps = sorted(int(m.group(1)) for name in os.listdir(folder) if (m := _CHECKPOINT.match(name)))
        for old in steps[:-config.keep_checkpoints]:
            for part in parts:
                checkpoint_path(folder, old, part.prefix).unlink(missing_ok=True)
    return main


def _resume(recipe: Recipe, path: Path) -> int:
    """Load every part, optimizer and training state of the checkpoint at `path`; return its step."""
    main = checkpoints.read_checkpoint(path)
    step = int(main.step or 0)
    for part in recipe.parts():
        part_path = checkpoint_path(path.parent, step, part.prefix)
        saved = main if not part.prefix else checkpoints.read_checkpoint(part_path)
        checkpoints.load_state(part.model, saved.state_dict, part_path, part.kind)
        if saved.optimizer is None:
            raise Wav2LipError(f"{part_path}: has no optimizer state to resume from")
        rates = [group["lr"] for group in part.optimizer.param_groups]  # the config's, which a resume may change
        try:
            part.optimizer.load_state_dict(saved.optimizer)
            for group, lr in zip(part.optimizer.param_groups, rates):
                group["lr"] = lr
        except (ValueError, KeyError) as exc:
            raise Wav2LipError(f"{part_path}: optimizer state does not fit this model ({exc})") from None
    state = main.extra.get("train_state") or {}
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    recipe.load_state(state)
    return step


def _loader(dataset, config: TrainConfig, sampler: StepSampler, device: torch.device) -> DataLoader:
    workers = max(0, config.workers)
    return DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None, drop_last=False,
    )


def _all_reduce_mean(values: dict[str, float], count: int, info: Distributed,
                     device: torch.device) -> tuple[dict[str, float], int]:
    """Means over all ranks of per-rank sums (`values`) over `count` batches, and the batches of all ranks."""
    keys = sorted(values)
    totals = torch.tensor([values[k] for k in keys] + [float(count)], dtype=torch.float64, device=device)
    if info.world > 1:
        dist.all_reduce(totals)
    n = int(totals[-1].item())
    return {k: totals[i].item() / max(1, n) for i, k in enumerate(keys)}, n


def evaluate(recipe: Recipe, config: TrainConfig, val_samples: ClipSamples, info: Distributed,
             device: torch.device, step: int) -> tuple[dict[str, float], int]:
    """The mean of each metric over one pass over the validation set, at most `eval_batches` batches
    (sharded across ranks; the reference's 700 or 1400 batches would go round a small set many times),
    and the number of batches evaluated on all ranks."""
    batches = min(config.eval_batches, math.ceil(val_samples.n_frames / config.batch_size))
    n_local = math.ceil(batches / info.world)
    sampler = StepSampler(config.batch_size, 0, info.rank, info.world, stop_step=n_local)
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(total=n_local, desc=f"eval {step}", unit="batch", leave=False, dynamic_ncols=True,
               disable=not (info.main and config.progress))
    for batch in _loader(val_samples, config, sampler, device):
        if count == 0 and info.main:
            image = recipe.collage(batch)
            if image is not None:
                with atomic_output(Path(config.checkpoint_dir) / f"samples_step{step:09d}.png") as tmp:
                    cv2.imwrite(str(tmp), image)
        for name, value in recipe.eval_step(batch).items():
            sums[name] = sums.get(name, 0.0) + value
        count += 1
        bar.update(1)
    bar.close()
    return _all_reduce_mean(sums, count, info, device)


def train(config: TrainConfig) -> dict[str, float]:
    """Train `config.recipe` until `config.steps`; return the last evaluation's metrics (rank 0's view).

    Stops early, after saving a checkpoint, on Ctrl-C or SIGTERM.
    """
    threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        return _train(config)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig) -> dict[str, float]:
    info, device = _setup_distributed(config)
    if not config.checkpoint_dir:
        raise Wav2LipError("no checkpoint folder given (--checkpoint-dir)")
    folder = Path(config.checkpoint_dir)
    if info.main:
        folder.mkdir(parents=True, exist_ok=True)
    train_clips = read_file_list(config.data_root, config.train_list)
    val_clips = read_file_list(config.data_root, config.val_list)

    torch.manual_seed(config.seed)
    autocast, scaler = _precision(config, device)
    recipe: Recipe = RECIPES[config.recipe](config, device, autocast, scaler)
    start = 0
    latest = latest_checkpoint(folder) if config.resume else None
    if latest is not None:
        start = _resume(recipe, latest)
    if device.type == "cpu":
        _channels_last(recipe)
    if info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        recipe.train_model = DistributedDataParallel(recipe.train_model, device_ids=ids)
        if getattr(recipe, "disc", None) is not None:
            recipe.train_disc = DistributedDataParallel(recipe.disc, device_ids=ids)

    train_samples = recipe.samples(train_clips, config.seed)
    val_samples = recipe.samples(val_clips, config.seed + _EVAL_SEED)
    sampler = StepSampler(config.batch_size, start, info.rank, info.world, stop_step=config.steps)
    log = _Log(folder, info.main)
    if info.main and start:
        log.write(start, "resume", {}, checkpoint=latest.name)
    per_step = config.batch_size * info.world
    last_eval: dict[str, float] = {}
    running: dict[str, float] = {}
    n_running = 0
    saved_at = start
    step = start
    bar = tqdm(total=config.steps, initial=start, disable=not (info.main and config.progress),
               desc=config.recipe, dynamic_ncols=True)
    tick = time.perf_counter()
    with _StopRequest() as stop:
        try:
            for batch in _loader(train_samples, config, sampler, device):
                metrics = recipe.train_step(batch)
                step += 1
                bar.update(1)
                for name, value in metrics.items():
                    running[name] = running.get(name, 0.0) + value
                n_running += 1
                if step % config.log_interval == 0 or step == config.steps:
                    elapsed = time.perf_counter() - tick
                    means = {k: v / n_running for k, v in running.items()}
                    bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()}, refresh=False)
                    log.write(step, "train", means, samples_per_s=round(n_running * per_step / elapsed, 2),
                              epoch=step * per_step // len(train_clips))
                    running, n_running, tick = {}, 0, time.perf_counter()
                if step % config.eval_interval == 0 or (config.eval_at_start and step == 1):
                    last_eval, batches = evaluate(recipe, config, val_samples, info, device, step)
                    messages = recipe.after_eval(last_eval)
                    log.write(step, "val", last_eval, batches=batches,
                              **({"note": "; ".join(messages)} if messages else {}))
                    if info.main:
                        bar.write(f"step {step} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
                    tick = time.perf_counter()
                if step % config.checkpoint_interval == 0 and info.main:
                    _save(recipe, config, step, step * per_step // len(train_clips))
                    saved_at = step
                if _stop_everywhere(stop.requested, info, device):
                    break
        except RuntimeError:
            if not stop.requested:  # a worker killed by the Ctrl-C that we are handling is not a failure
                raise
        finally:
            bar.close()
            log.close()
        if info.main and step != saved_at:
            path = _save(recipe, config, step, step * per_step // len(train_clips))
            if stop.requested:
                print(f"stopped at step {step}; saved {path}")
    return last_eval


def _stop_everywhere(requested: bool, info: Distributed, device: torch.device) -> bool:
    """Whether any rank was asked to stop (all ranks must leave the loop at the same step)."""
    if info.world == 1:
        return requested
    flag = torch.tensor([1.0 if requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
