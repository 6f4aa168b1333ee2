"""The Wav2Lip generator recipe (spec section 8), plain or with the visual quality GAN.

Loss = (1 - w_sync - w_disc) * L1 + w_sync * expert sync loss + w_disc * perceptual loss. w_sync
starts at 0 and is switched on (0.01, or 0.03 with the GAN) at the first evaluation whose sync loss
is below 0.75; it is saved in checkpoints so a resumed run keeps it.

The frozen expert's BatchNorm runs in train mode by default (`expert_mode = "train"`), as in the
reference, which never calls `.eval()` on it: each batch of generated faces is normalised with its own
statistics. Measured on synthetic data (README, Training): a strong expert in eval mode maps many
windows of a young generator to embeddings orthogonal to their audio's (sync probability exactly 0,
loss clamped at 100, no gradient through the ReLUs), so the mean eval sync loss stays far above the
0.75 that switches the sync loss on; batch statistics re-centre those faces and cut such windows by
3-4x. `expert_mode = "eval"` judges with the expert's own running statistics (as sync filtering and
evaluation do).
"""
from __future__ import annotations

from typing import Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from .. import checkpoints, store
from ..data.layout import IMG_SIZE, ClipEntry
from ..errors import Wav2LipError
from ..models.discriminator import QualityDiscriminator
from ..models.generator import Wav2Lip
from ..models.syncnet import stack_lower_halves, sync_probability
from .config import TrainConfig
from .data import GeneratorSamples, to_device_images
from .expert import sync_loss
from .parts import Part, Recipe, register


def _load_into(model: torch.nn.Module, path: str, kind: str) -> None:
    resolved = store.resolve(path)
    checkpoints.load_state(model, checkpoints.read_checkpoint(resolved).state_dict, resolved, kind)


def frozen_expert(config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The lip-sync expert whose verdict is a loss: no gradients of its own, BatchNorm as `expert_mode` says."""
    expert = checkpoints.load_model(config.expert, "syncnet", device)
    for p in expert.parameters():
        p.requires_grad_(False)
    return expert.train(config.expert_mode == "train")


@register("generator")
class GeneratorRecipe(Recipe):
    def __init__(self, config: TrainConfig, device: torch.device,
                 autocast: Callable[[], ContextManager], scaler: torch.amp.GradScaler) -> None:
        super().__init__(config, device, autocast, scaler)
        if not config.expert:
            raise Wav2LipError("training the generator needs a trained lip-sync expert (--expert EXPERT.pth)")
        self.model = Wav2Lip(width=config.width, residual=config.residual, mel_offset=config.mel_offset).to(device)
        if config.init:
            _load_into(self.model, config.init, "wav2lip")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=config.betas)
        self.expert = frozen_expert(config, device)
        self.train_model = self.model
        self.sync_weight = 0.0
        self.disc_weight = config.disc_weight if config.gan else 0.0
        self.disc = self.disc_optimizer = None
        if config.gan:
            self.disc = QualityDiscriminator(width=config.width).to(device)
            if config.init_disc:
                _load_into(self.disc, config.init_disc, "discriminator")
            self.disc_optimizer = torch.optim.Adam(self.disc.parameters(), lr=config.disc_lr, betas=config.betas)
            self.train_disc = self.disc

    def parts(self) -> list[Part]:
        parts = [Part("", "wav2lip", self.model, self.optimizer)]
        if self.disc is not None:
            parts.append(Part("disc_", "discriminator", self.disc, self.disc_optimizer))
        return parts

    def channels_last_networks(self) -> list[torch.nn.Module]:
        """Every network a step runs, trained or frozen (the expert, which no optimizer names)."""
        return [part.model for part in self.parts()] + ([self.expert] if self.expert is not None else [])

    def samples(self, clips: list[ClipEntry], seed: int) -> GeneratorSamples:
        return GeneratorSamples(clips, seed, self.config.frame_cache, self.config.mel_offset)

    def _inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked target + reference (B,6,T,96,96), the model's per-frame mels (moved by its mel_offset),
        the window's mel (the expert's), ground truth (B,3,T,96,96)."""
        target, reference, per_frame, mel = batch[:4]
        if len(batch) == 5:
            per_frame = batch[4]
        truth = to_device_images(target, self.device)
        masked = truth.clone()
        masked[:, :, :, IMG_SIZE // 2:] = 0
        faces = torch.cat([masked, to_device_images(reference, self.device)], dim=1)
        return faces, per_frame.to(self.device, non_blocking=True), mel.to(self.device, non_blocking=True), truth

    def expert_sync_loss(self, mel: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """BCE of the frozen expert's cosine on the generated lower halves against 'in sync'."""
        with self.autocast():
            audio_emb, face_emb = self.expert(mel, stack_lower_halves(generated[:, :, :, IMG_SIZE // 2:]))
        probability = sync_probability(audio_emb.float(), face_emb.float())
        return sync_loss(probability, torch.ones_like(probability))

    def _perceptual(self, generated: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            pred = self.disc(generated)
        return F.binary_cross_entropy(pred.float(), torch.ones_like(pred, dtype=torch.float32))

    def train_step(self, batch) -> dict[str, float]:
        faces, per_frame, mel, truth = self._inputs(batch)
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            generated = self.train_model(per_frame, faces)
        generated = generated.float()
        l1 = F.l1_loss(generated, truth)
        loss = (1 - self.sync_weight - self.disc_weight) * l1
        metrics = {"l1": l1.item()}
        if self.sync_weight > 0:
            sync = self.expert_sync_loss(mel, generated)
            loss = loss + self.sync_weight * sync
            metrics["sync"] = sync.item()
        if self.disc_weight > 0:
            perceptual = self._perceptual(generated)
            loss = loss + self.disc_weight * perceptual
            metrics["perceptual"] = perceptual.item()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        metrics["loss"] = loss.item()
        if self.disc is not None:
            metrics.update(self._disc_step(truth, generated.detach()))
        self.scaler.update()
        return metrics

    def _disc_step(self, truth: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """BCE(D(real), 1) + BCE(D(fake), 0), each backpropagated as the reference does."""
        self.disc_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            real_pred = self.train_disc(truth)
        real = F.binary_cross_entropy(real_pred.float(), torch.ones_like(real_pred, dtype=torch.float32))
        self.scaler.scale(real).backward()
        with self.autocast():
            fake_pred = self.train_disc(fake)
        fake_loss = F.binary_cross_entropy(fake_pred.float(), torch.zeros_like(fake_pred, dtype=torch.float32))
        self.scaler.scale(fake_loss).backward()
        self.scaler.step(self.disc_optimizer)
        return {"disc_real": real.item(), "disc_fake": fake_loss.item()}

    @torch.no_grad()
    def _generate(self, per_frame: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """The generator as evaluations and collages see it: eval mode, the run's autocast, fp32 out."""
        self.model.eval()
        with self.autocast():
            return self.model(per_frame, faces).float()

    @torch.no_grad()
    def eval_step(self, batch) -> dict[str, float]:
        faces, per_frame, mel, truth = self._inputs(batch)
        generated = self._generate(per_frame, faces)
        metrics = {"l1": F.l1_loss(generated, truth).item(), "sync": self.expert_sync_loss(mel, generated).item()}
        if self.disc is not None:
            metrics["perceptual"] = self._perceptual(generated).item()
        return metrics

    def after_eval(self, metrics: dict[str, float]) -> list[str]:
        """Switch the sync loss on once the evaluation sync loss is below the threshold (spec section 8)."""
        if metrics["sync"] < self.config.sync_threshold and self.sync_weight != self.config.sync_weight:
            self.sync_weight = self.config.sync_weight
            return [f"eval sync loss {metrics['sync']:.3f} < {self.config.sync_threshold}: "
                    f"sync loss weight now {self.sync_weight}"]
        return []

    @torch.no_grad()
    def collage(self, batch) -> np.ndarray:
        """Rows of reference | masked | generated | ground truth, one row per frame of the first clips."""
        n = self.config.collage_items
        faces, per_frame, _, truth = self._inputs([part[:n] for part in batch])
        return collage_image([faces[:, 3:], faces[:, :3], self._generate(per_frame, faces), truth])

    def state(self) -> dict:
        return {"sync_weight": float(self.sync_weight)}

    def load_state(self, state: dict) -> None:
        self.sync_weight = float(state.get("sync_weight", 0.0))


def collage_image(panels: list[torch.Tensor]) -> np.ndarray:
    """Panels (each (n, 3, T, 96, 96) in [0, 1]) side by side, one row per frame of each clip: uint8 HxWx3."""
    n, frames = panels[0].shape[0], panels[0].shape[2]
    rows = [torch.cat([p[i, :, t] for p in panels], dim=2) for i in range(n) for t in range(frames)]
    image = torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1) * 255
    return image.round().byte().cpu().numpy()
