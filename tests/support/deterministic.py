"""Deterministic weights: the fill recipe the parity fixtures in ../shared/fixtures were computed with.

Real checkpoints cannot be downloaded on every machine, so tests and benchmarks use this fill to
prove that our networks compute the same functions as the published ones.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn


def deterministic_tensor(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The fixture recipe for one state-dict entry, seeded by the CRC32 of its key (no `module.`)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        values = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1 and key.endswith(".weight"):
        values = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1:
        values = rng.uniform(-0.1, 0.1, shape)
    else:
        fan_in = int(np.prod(shape[1:]))
        values = rng.uniform(-1, 1, shape) * np.sqrt(3 / fan_in)
    return values.astype(np.float32)


def deterministic_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every float entry of `model`'s state dict filled by the recipe; counters kept as they are."""
    filled = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            filled[key] = value
        else:
            filled[key] = torch.from_numpy(deterministic_tensor(key, tuple(value.shape)))
    return filled


def fill_deterministic(model: nn.Module) -> nn.Module:
    """Load the deterministic fill into `model`, put it in eval mode and return it."""
    model.load_state_dict(deterministic_state_dict(model))
    return model.eval()
