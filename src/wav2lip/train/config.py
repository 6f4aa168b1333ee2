"""Training configuration: the authors' hyper-parameters as defaults, overridable by a file and flags.

Precedence: dataclass defaults < the recipe's defaults (expert, generator or distill) <
a JSON or TOML config file < keyword overrides (the command-line flags that were given).
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..constants import MEL_OFFSETS
from ..device import PRECISIONS
from ..errors import Wav2LipError

RECIPES = ("expert", "generator", "distill")


@dataclass
class TrainConfig:
    recipe: str = "expert"  # "expert" (SyncNet, spec 7), "generator" (Wav2Lip, spec 8) or "distill" (a student)
    data_root: str = ""  # prepared layout of spec section 9
    checkpoint_dir: str = ""
    train_list: str = "train"  # file list names under data_root (without .txt)
    val_list: str = "val"
    expert: str | None = None  # frozen SyncNet for the generator's sync loss (path or known name)
    init: str | None = None  # generator (or expert) weights to fine-tune from, e.g. wav2lip_gan.pth
    init_disc: str | None = None  # discriminator weights for --gan fine-tuning
    teacher: str | None = None  # distill: the frozen generator whose output the student learns (path or name)
    residual: bool = True  # distill: the student keeps the generator's residual blocks
    feature_weight: float = 0.0  # distill: weight of the decoder-feature (attention map) loss beside the L1
    mel_offset: int = 0  # generator, distill: the trained model's mel window starts this many mel steps (12.5 ms)
    # from the frame's start, the authors' 0; -13 needs only 50 ms of audio after a frame (a live student)
    resume: bool = False  # continue from the latest checkpoint in checkpoint_dir, if any
    gan: bool = False  # add the visual quality discriminator (hq_wav2lip recipe)
    width: float = 1.0  # channel scale of the trained networks; 1.0 is the authors' layout
    steps: int = 1_000_000  # optimizer steps to reach (the reference trains until stopped)
    batch_size: int = 64  # per process
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eval_interval: int = 10_000
    checkpoint_interval: int = 10_000
    eval_batches: int = 1400  # batches per evaluation at most (the reference's eval_steps); one pass over the
    # validation set, as many samples as its clips have frames, when that is fewer
    eval_at_start: bool = False  # evaluate after step 1 (the plain generator recipe does)
    log_interval: int = 10
    sync_threshold: float = 0.75  # eval sync loss below which the sync loss is switched on (spec 8)
    sync_weight: float = 0.01  # the sync weight once switched on (0.03 with the GAN)
    disc_weight: float = 0.07  # perceptual (GAN) loss weight with --gan
    expert_mode: str = "train"  # frozen expert's BatchNorm: "train" (the reference; see generator.py) or "eval"
    seed: int = 0
    workers: int = 2  # DataLoader worker processes per training process
    frame_cache: int = 20_000  # decoded 96x96 frames kept per worker
    threads: int = 0  # torch CPU threads while training (0: torch's default)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # autocast: "auto" (CUDA: bf16 where supported, else fp16 + scaler; CPU: fp32),
    # "fp32", "bf16" (CUDA, or a CPU with native bf16: about 2x faster from width 0.25 up) or "fp16" (CUDA)
    keep_checkpoints: int = 5  # newest checkpoint files kept (0: keep all, like the reference)
    progress: bool = True  # tqdm progress bar on rank 0
    collage_items: int = 2  # clips shown in each evaluation's sample collage

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# The authors' settings per recipe (spec sections 7-8; the reference hparams).
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "expert": dict(batch_size=64, eval_interval=10_000, checkpoint_interval=10_000, eval_batches=1400),
    "generator": dict(batch_size=16, eval_interval=3000, checkpoint_interval=3000, eval_batches=700,
                      eval_at_start=True),
}
RECIPE_DEFAULTS["distill"] = dict(RECIPE_DEFAULTS["generator"])  # the plain generator's schedule
GAN_DEFAULTS: dict[str, Any] = dict(betas=(0.5, 0.999), sync_weight=0.03, eval_at_start=False)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a .json or .toml file (keys as in TrainConfig; a [train] table is also accepted)."""
    path = Path(path)
    if not path.is_file():
        raise Wav2LipError(f"{path}: config file not found")
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(path.read_text())
        else:
            values = json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Wav2LipError(f"{path}: not a valid config file ({exc})") from None
    except RecursionError:  # the parsers recurse once per level of nesting
        raise Wav2LipError(f"{path}: not a valid config file (nested too deeply)") from None
    if isinstance(values, dict) and isinstance(values.get("train"), dict):
        values = values["train"]
    if not isinstance(values, dict):
        raise Wav2LipError(f"{path}: a config file must hold a table of settings")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise Wav2LipError(f"{path}: unknown settings {', '.join(unknown)}")
    return values


def _check_types(values: dict[str, Any], source: str | Path | None) -> None:
    """Each setting of the type TrainConfig declares (ints accepted for floats): {"lr": "fast"} is
    one clear line here rather than a TypeError deep inside the optimizer."""
    where = f"{source}: " if source else ""
    defaults = TrainConfig()
    for name, value in values.items():
        default = getattr(defaults, name)
        if name == "betas":
            ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) for b in value)
            if ok:
                values[name] = tuple(float(b) for b in value)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                values[name] = float(value)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:  # str settings, some of them optional
            ok = isinstance(value, (str, os.PathLike)) or (value is None and default is None)
        if not ok:
            kind = "a pair of numbers" if name == "betas" else type(default).__name__ if default is not None else "str"
            raise Wav2LipError(f"{where}setting {name} must be {kind}, got {value!r}")


def make_config(recipe: str, config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The effective config; `overrides` set to None are ignored (flags the user did not give)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}")
    values: dict[str, Any] = dict(RECIPE_DEFAULTS[recipe])
    from_file = read_config_file(config_file) if config_file else {}
    _check_types(from_file, config_file)  # a bad value in the file is reported with the file's name
    given = {k: v for k, v in overrides.items() if v is not None}
    gan = given.get("gan", from_file.get("gan", False))
    if recipe == "generator" and gan:
        values.update(GAN_DEFAULTS)
    values.update(from_file)
    values.update(given)
    values["recipe"] = recipe
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}")
    _check_types(values, None)
    config = TrainConfig(**values)
    if config.expert_mode not in ("eval", "train"):
        raise Wav2LipError(f"expert_mode must be 'eval' or 'train', not {config.expert_mode!r}")
    if config.precision not in PRECISIONS:
        raise Wav2LipError(f"unknown precision {config.precision!r} (one of {', '.join(PRECISIONS)})")
    if config.mel_offset not in MEL_OFFSETS:
        raise Wav2LipError(f"mel_offset must be a whole number of mel steps from {MEL_OFFSETS.start} to "
                           f"{MEL_OFFSETS.stop - 1}, got {config.mel_offset}")
    if config.mel_offset and recipe == "expert":
        raise Wav2LipError("mel_offset moves a generator's window; the expert judges true sync on the authors' own")
    return config
