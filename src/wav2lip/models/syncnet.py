"""The SyncNet lip-sync expert (spec section 7, spec/layers.md): the training signal and sync judge.

Module paths match the authors' `lipsync_expert.pth`. `width` scales every internal channel count,
including the embedding size, for small test and training models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, scaled

# Frames the expert sees at once, stacked on channels (spec section 7).
SYNC_FRAMES = 5


class SyncNet(nn.Module):
    """Lower-half faces of 5 frames (B,15,48,96) and a mel window (B,1,80,16) -> two unit embeddings."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.width = width

        def c(n: int) -> int:
            return scaled(n, width)

        def res(n: int) -> ConvBlock:
            return ConvBlock(c(n), c(n), 3, 1, 1, residual=True)

        self.face_encoder = nn.Sequential(
            ConvBlock(3 * SYNC_FRAMES, c(32), 7, 1, 3),  # 48x96
            ConvBlock(c(32), c(64), 5, (1, 2), 1), res(64), res(64),  # 46x47
            ConvBlock(c(64), c(128), 3, 2, 1), res(128), res(128), res(128),  # 23x24
            ConvBlock(c(128), c(256), 3, 2, 1), res(256), res(256),  # 12x12
            ConvBlock(c(256), c(512), 3, 2, 1), res(512), res(512),  # 6x6
            ConvBlock(c(512), c(512), 3, 2, 1),  # 3x3
            ConvBlock(c(512), c(512), 3, 1, 0), ConvBlock(c(512), c(512), 1, 1, 0),  # 1x1
        )
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, c(32), 3, 1, 1), res(32), res(32),  # 80x16
            ConvBlock(c(32), c(64), 3, (3, 1), 1), res(64), res(64),  # 27x16
            ConvBlock(c(64), c(128), 3, 3, 1), res(128), res(128),  # 9x6
            ConvBlock(c(128), c(256), 3, (3, 2), 1), res(256), res(256),  # 3x3
            ConvBlock(c(256), c(512), 3, 1, 0), ConvBlock(c(512), c(512), 1, 1, 0),  # 1x1
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (audio_emb, face_emb), each (B, 512) and L2-normalised."""
        audio_emb = self.audio_encoder(audio).flatten(1)
        face_emb = self.face_encoder(face).flatten(1)
        return F.normalize(audio_emb, p=2, dim=1), F.normalize(face_emb, p=2, dim=1)


def stack_lower_halves(faces: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, 48, 96) lower halves -> (B, 3T, 48, 96), frames in order on channels (as the reference)."""
    batch, channels, frames = faces.shape[:3]
    return faces.permute(0, 2, 1, 3, 4).reshape(batch, frames * channels, *faces.shape[3:])


def sync_probability(audio_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the two embeddings: in [0, 1] because both come out of ReLUs (spec section 7)."""
    return F.cosine_similarity(audio_emb, face_emb)
