"""The visual quality discriminator of Wav2Lip + GAN (spec section 8, spec/layers.md).

Module paths match the authors' `visual_quality_disc.pth`. It judges only the lower half of each
96 x 96 face, where the generator paints the mouth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import NoNormConvBlock, scaled


class QualityDiscriminator(nn.Module):
    """Faces (B,3,T,96,96) in [0, 1] -> probability (B*T, 1) that each frame is real."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.width = width

        def c(n: int) -> int:
            return scaled(n, width)

        def conv(cin: int, cout: int, k: int, s: int | tuple[int, int], p: int) -> NoNormConvBlock:
            return NoNormConvBlock(cin, cout, k, s, p)

        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(conv(3, c(32), 7, 1, 3)),  # 48x96
            nn.Sequential(conv(c(32), c(64), 5, (1, 2), 2), conv(c(64), c(64), 5, 1, 2)),  # 48x48
            nn.Sequential(conv(c(64), c(128), 5, 2, 2), conv(c(128), c(128), 5, 1, 2)),  # 24
            nn.Sequential(conv(c(128), c(256), 5, 2, 2), conv(c(256), c(256), 5, 1, 2)),  # 12
            nn.Sequential(conv(c(256), c(512), 3, 2, 1), conv(c(512), c(512), 3, 1, 1)),  # 6
            nn.Sequential(conv(c(512), c(512), 3, 2, 1), conv(c(512), c(512), 3, 1, 1)),  # 3
            nn.Sequential(conv(c(512), c(512), 3, 1, 0), conv(c(512), c(512), 1, 1, 0)),  # 1
        ])
        self.binary_pred = nn.Sequential(nn.Conv2d(c(512), 1, 1), nn.Sigmoid())

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Fold the T frames into the batch frame-major (as the generator does) and judge each lower half."""
        x = faces.permute(2, 0, 1, 3, 4).reshape(-1, faces.shape[1], *faces.shape[3:])
        x = x[:, :, x.shape[2] // 2:]
        for stage in self.face_encoder_blocks:
            x = stage(x)
        return self.binary_pred(x).reshape(len(x), -1)

    def perceptual_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Generator's GAN term: BCE of D(generated) against 'real' (spec section 8)."""
        pred = self(fake)
        return F.binary_cross_entropy(pred, torch.ones_like(pred))
