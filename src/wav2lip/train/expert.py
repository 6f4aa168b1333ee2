"""The SyncNet expert recipe (spec section 7): BCE of the embeddings' cosine against in/off sync."""
from __future__ import annotations

from typing import Callable, ContextManager

import torch
import torch.nn.functional as F

from .. import checkpoints, store
from ..data.layout import ClipEntry
from ..models.syncnet import SyncNet, stack_lower_halves, sync_probability
from .config import TrainConfig
from .data import ExpertSamples
from .parts import Part, Recipe, register


def sync_loss(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of the cosine (a probability in [0, 1]) against 1 (in sync) or 0; in float32, outside autocast."""
    probability = probability.float().clamp(0.0, 1.0)
    return F.binary_cross_entropy(probability, target.float())


@register("expert")
class ExpertRecipe(Recipe):
    """Trains SyncNet(width) with Adam (lr 1e-4) on half in-sync, half off-sync samples."""

    checkpoint_kind = "syncnet"

    def __init__(self, config: TrainConfig, device: torch.device,
                 autocast: Callable[[], ContextManager], scaler: torch.amp.GradScaler) -> None:
        super().__init__(config, device, autocast, scaler)
        self.model = SyncNet(width=config.width).to(device)
        if config.init:
            path = store.resolve(config.init)
            checkpoints.load_state(self.model, checkpoints.read_checkpoint(path).state_dict, path, "syncnet")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=config.betas)
        self.train_model = self.model

    def parts(self) -> list[Part]:
        return [Part("", "syncnet", self.model, self.optimizer)]

    def samples(self, clips: list[ClipEntry], seed: int) -> ExpertSamples:
        return ExpertSamples(clips, seed, self.config.frame_cache)

    def _forward(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        faces, mel, label = batch
        faces = faces.to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255.0)
        mel = mel.to(self.device, non_blocking=True)
        label = label.to(self.device, non_blocking=True)
        with self.autocast():
            audio_emb, face_emb = model(mel, stack_lower_halves(faces))
        probability = sync_probability(audio_emb.float(), face_emb.float())
        return sync_loss(probability, label), probability, label

    def train_step(self, batch) -> dict[str, float]:
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, _, _ = self._forward(self.train_model, batch)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.item()}

    @torch.no_grad()
    def eval_step(self, batch) -> dict[str, float]:
        self.model.eval()
        loss, probability, label = self._forward(self.model, batch)
        accuracy = ((probability > 0.5).float() == label).float().mean()
        return {"loss": loss.item(), "accuracy": accuracy.item()}
