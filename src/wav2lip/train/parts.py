"""What a recipe is: the networks it trains (each with its optimizer and checkpoint prefix) and the
steps the shared loop calls. The defaults here are what a recipe without that concern does.

Recipes register themselves by name (`@register("expert")`) and the loop looks them up in RECIPES, so
the loop imports no recipe and a recipe's module may drive the loop (distill does) without a circle.
The package's `__init__` imports every recipe module, so all are registered once `wav2lip.train` is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, TypeVar

import numpy as np
import torch
from torch import nn


@dataclass
class Part:
    prefix: str  # "" -> checkpoint_step000003000.pth; "disc_" -> disc_checkpoint_step000003000.pth
    kind: str  # the checkpoints.load_model kind
    model: nn.Module  # the plain module (never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    extra: dict | None = None  # entries saved beside the weights in every checkpoint (a student's teacher)


class Recipe:
    """Base of the expert and generator recipes.

    `train_model` (and `train_disc` with a GAN) is what the training step calls: the loop replaces
    it with a DistributedDataParallel wrapper under torchrun; evaluation uses the plain modules.
    """

    def __init__(self, config, device: torch.device, autocast: Callable[[], ContextManager],
                 scaler: torch.amp.GradScaler) -> None:
        self.config, self.device, self.autocast, self.scaler = config, device, autocast, scaler

    def channels_last_networks(self) -> list[nn.Module]:
        """The networks the loop holds channels-last on a CPU (see loop._channels_last): none by default."""
        return []

    def after_eval(self, metrics: dict[str, float]) -> list[str]:
        """React to an evaluation (e.g. switch a loss on); return messages for the log."""
        return []

    def collage(self, batch) -> np.ndarray | None:
        """A sample image for this evaluation batch, or None when the recipe makes no images."""
        return None

    def state(self) -> dict:
        """Training state beyond weights and optimizers that a resumed run needs."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what `state` returned."""


RECIPES: dict[str, type[Recipe]] = {}  # config.recipe -> the class the loop builds
R = TypeVar("R", bound=type[Recipe])


def register(name: str) -> Callable[[R], R]:
    """Class decorator: the shared loop builds this recipe for `config.recipe == name`."""
    def add(cls: R) -> R:
        RECIPES[name] = cls
        return cls
    return add
