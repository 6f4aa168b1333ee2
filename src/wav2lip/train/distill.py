"""Distillation (`wav2lip distill`): a compact student generator learns a frozen teacher's faces.

Loss = (1 - w_sync) * (L1(student, teacher) + w_feat * feature loss) + w_sync * expert sync loss,
both networks fed the same masked + reference faces and mel windows. The teacher's output is the
target, so any talking-face videos prepared as usual will do: no sync labels, no ground truth needed
(the L1 to the ground truth is logged only). With `--expert` the sync loss is switched on exactly as
in the generator recipe (the first evaluation whose sync loss is below the threshold).

The student is the generator at another `width` and optionally without its residual blocks
(`Wav2Lip(residual=False)`). At the teacher's own width it starts from the teacher's weights (every
remaining key keeps its name), else from scratch. The optional feature loss compares the decoder
stages' attention maps (the channel mean of squared activations, L2-normalised per sample: attention
transfer, Zagoruyko & Komodakis 2017), which needs no adapter layers between two widths.

Every checkpoint, and the final `--out` file, records the student's layout and its teacher's name and
SHA-256, so `wav2lip infer --checkpoint student.pth` needs no flags and `weights inspect` names it.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints, store
from ..errors import Wav2LipError
from ..io.files import check_folder, check_output
from ..models.generator import Wav2Lip
from ..shards import rank_and_world
from .config import TrainConfig
from .generator import GeneratorRecipe, _load_into, collage_image, frozen_expert
from .loop import latest_checkpoint, train
from .parts import Part, Recipe, register


def teacher_record(path: str | os.PathLike) -> dict[str, str]:
    """What a student keeps of its teacher: the file's name and SHA-256."""
    return {"name": Path(path).name, "sha256": store.sha256_of(path)}


@contextlib.contextmanager
def decoder_features(model: nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """The outputs of `model`'s decoder stages during the block (deepest first), captured by forward
    hooks, so that a DistributedDataParallel wrapper's own forward still runs."""
    maps: list[torch.Tensor] = []
    handles = [stage.register_forward_hook(lambda module, inputs, output: maps.append(output))
               for stage in model.face_decoder_blocks] if enabled else []
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over stages of the L2 distance between the two networks' normalised attention maps."""
    def attention(h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h.float().pow(2).mean(dim=1).flatten(1), dim=1)

    distances = [(attention(s) - attention(t)).norm(dim=1).mean() for s, t in zip(student, teacher)]
    return torch.stack(distances).mean()


@register("distill")
class DistillRecipe(GeneratorRecipe):
    """The generator recipe's data, sync-loss curriculum and collages, with a teacher as the target."""

    def __init__(self, config: TrainConfig, device: torch.device,
                 autocast: Callable[[], ContextManager], scaler: torch.amp.GradScaler) -> None:
        Recipe.__init__(self, config, device, autocast, scaler)
        if config.gan:
            raise Wav2LipError("distillation trains without the GAN (its target is the teacher's face); "
                               "drop the gan setting")
        path = teacher_path(config)
        self.teacher = checkpoints.load_model(path, "wav2lip", device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.record = teacher_record(path)
        check_teacher(self.teacher, path)
        self.model = Wav2Lip(width=config.width, residual=config.residual, mel_offset=config.mel_offset).to(device)
        if config.init:
            _load_into(self.model, config.init, "wav2lip")
        elif self.teacher.width == config.width:
            kept = self.model.state_dict()
            kept.update({k: v for k, v in self.teacher.state_dict().items() if k in kept})
            self.model.load_state_dict(kept)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=config.betas)
        self.expert = None
        if config.expert:
            self.expert = frozen_expert(config, device)
        self.train_model = self.model
        self.sync_weight = 0.0
        self.disc_weight = 0.0
        self.disc = None

    def parts(self) -> list[Part]:
        return [Part("", "wav2lip", self.model, self.optimizer, extra={"teacher": self.record})]

    def channels_last_networks(self) -> list[nn.Module]:
        return [*super().channels_last_networks(), self.teacher]

    def _teacher_mels(self, batch) -> torch.Tensor:
        """The teacher's per-frame mels: the authors' windows, whatever the student's mel_offset."""
        return batch[2].to(self.device, non_blocking=True)

    @torch.no_grad()
    def _teacher(self, per_frame: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with decoder_features(self.teacher, self.config.feature_weight > 0) as maps, self.autocast():
            target = self.teacher(per_frame, faces)
        return target.float(), maps

    def train_step(self, batch) -> dict[str, float]:
        faces, per_frame, mel, truth = self._inputs(batch)
        target, teacher_maps = self._teacher(self._teacher_mels(batch), faces)
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with decoder_features(self.model, self.config.feature_weight > 0) as maps, self.autocast():
            generated = self.train_model(per_frame, faces)
        generated = generated.float()
        l1 = F.l1_loss(generated, target)
        metrics = {"l1_teacher": l1.item()}
        loss = l1
        if self.config.feature_weight > 0:
            features = attention_loss(maps, teacher_maps)
            loss = loss + self.config.feature_weight * features
            metrics["features"] = features.item()
        loss = (1 - self.sync_weight) * loss
        if self.sync_weight > 0:
            sync = self.expert_sync_loss(mel, generated)
            loss = loss + self.sync_weight * sync
            metrics["sync"] = sync.item()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        metrics["loss"] = loss.item()
        with torch.no_grad():
            metrics["l1"] = F.l1_loss(generated, truth).item()
        return metrics

    @torch.no_grad()
    def eval_step(self, batch) -> dict[str, float]:
        faces, per_frame, mel, truth = self._inputs(batch)
        target, _ = self._teacher(self._teacher_mels(batch), faces)
        generated = self._generate(per_frame, faces)
        metrics = {"l1_teacher": F.l1_loss(generated, target).item(), "l1": F.l1_loss(generated, truth).item()}
        if self.expert is not None:
            metrics["sync"] = self.expert_sync_loss(mel, generated).item()
        return metrics

    def after_eval(self, metrics: dict[str, float]) -> list[str]:
        return super().after_eval(metrics) if self.expert is not None else []

    @torch.no_grad()
    def collage(self, batch) -> np.ndarray:
        """Rows of reference | masked | teacher | student | ground truth, one row per frame."""
        n = self.config.collage_items
        batch = [part[:n] for part in batch]
        faces, per_frame, _, truth = self._inputs(batch)
        target, _ = self._teacher(self._teacher_mels(batch), faces)
        return collage_image([faces[:, 3:], faces[:, :3], target, self._generate(per_frame, faces), truth])


def teacher_path(config: TrainConfig) -> Path:
    """The teacher's file (a path, or a model-store name fetched and verified there)."""
    if not config.teacher:
        raise Wav2LipError("distillation needs a teacher generator (--teacher T.pth)")
    return store.resolve(config.teacher)


def check_teacher(teacher: Wav2Lip, path: Path) -> None:
    """The student's windows are moved from the authors' (its mel_offset), so the teacher must hear those."""
    if teacher.mel_offset:
        raise Wav2LipError(f"{path}: the teacher was trained on a mel window {teacher.mel_offset} steps from the "
                           f"authors'; distil from a generator on the authors' window")


def default_checkpoint_dir(out: str | os.PathLike) -> Path:
    """Where `distill` keeps its checkpoints when not told: `student_checkpoints/` beside `student.pth`."""
    out = Path(out)
    return out.with_name(out.stem + "_checkpoints")


def distill(config: TrainConfig, out: str | os.PathLike) -> tuple[dict[str, float], Path | None]:
    """Train the student `config` describes (recipe "distill") and, once `config.steps` is reached,
    write it to `out` (atomically, weights and layout and teacher only). Returns the last evaluation
    and `out`, or None in its place when the run stopped early (or on ranks other than 0).

    The teacher, the output and the checkpoint folder are checked before any work: a file that is not
    a Wav2Lip generator is one line naming it; `out` is never one of the inputs.
    """
    if not math.isfinite(config.feature_weight) or config.feature_weight < 0:
        raise Wav2LipError(f"the feature loss weight must be a number >= 0, got {config.feature_weight}")
    path = teacher_path(config)
    check_teacher(checkpoints.load_model(path, "wav2lip"), path)  # a bad teacher fails here, before any folder is made
    inputs = [path, config.expert, config.init, config.data_root]
    check_output(out, inputs=inputs, what="student")
    check_folder(config.checkpoint_dir, "checkpoint folder", inputs=[config.data_root])
    metrics = train(config)
    if rank_and_world()[0] != 0:
        return metrics, None
    latest = latest_checkpoint(config.checkpoint_dir)
    saved = checkpoints.read_checkpoint(latest) if latest is not None else None
    if saved is None or int(saved.step or 0) < config.steps:
        return metrics, None  # stopped early: the checkpoint folder holds the state to --resume from
    student = checkpoints.load_model(latest, "wav2lip")
    checkpoints.save_checkpoint(out, student, step=int(saved.step), epoch=int(saved.epoch or 0),
                                extra={"teacher": saved.extra.get("teacher") or teacher_record(path)})
    return metrics, Path(out)
