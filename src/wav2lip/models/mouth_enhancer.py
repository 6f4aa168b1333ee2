"""A person-specific mouth enhancer: the generator's 96-px lower face -> the same at `scale` times the size.

Tiny on purpose (it must run at 150 faces/s on two CPU cores, beside the generator): a few 3x3
convolutions at the input's resolution, a pixel-shuffle upsampling, and the result added to a bicubic
upscale of the input, so an untrained network already gives the plain bicubic face and training only
learns the detail this one person's mouth has (teeth, lip edges, skin texture).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALES = (2, 3, 4)  # output side over input side: the 96-px face to a 192..384-px face box


class MouthEnhancer(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, scale * H, scale * W), about [0, 1] (unclamped)."""

    def __init__(self, channels: int = 16, blocks: int = 3, scale: int = 2) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale}")
        self.channels, self.blocks, self.scale = channels, blocks, scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(blocks))
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        # The detail starts at zero: before training the output is exactly the bicubic upscale.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        h = F.relu(self.head(x))
        for conv in self.body:
            h = h + F.relu(conv(h))
        return base + self.shuffle(self.tail(h))
