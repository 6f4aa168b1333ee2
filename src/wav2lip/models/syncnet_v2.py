"""SyncNet v2 (Chung & Zisserman, "Out of time", 2016): the network behind the LSE-D / LSE-C metrics.

Module names and indices follow the released `syncnet_v2.model` state dict (spec section 10, layers.md),
so the authors' file loads without any key mapping.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel, padding=0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv3d_bn_relu(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


def _embedding_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, 1024))


class SyncNetV2(nn.Module):
    """Two towers mapping 0.2 s of MFCCs and 5 mouth frames to 1024-d embeddings; in sync = close in L2."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(1, 64, 3, padding=1),
            nn.MaxPool2d(1, stride=1),
            *_conv_bn_relu(64, 192, 3, padding=1),
            nn.MaxPool2d(3, stride=(1, 2)),
            *_conv_bn_relu(192, 384, 3, padding=1),
            *_conv_bn_relu(384, 256, 3, padding=1),
            *_conv_bn_relu(256, 256, 3, padding=1),
            nn.MaxPool2d(3, stride=2),
            *_conv_bn_relu(256, 512, (5, 4)),
        )
        self.netfcaud = _embedding_head()
        self.netfclip = _embedding_head()
        self.netcnnlip = nn.Sequential(
            *_conv3d_bn_relu(3, 96, (5, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv3d_bn_relu(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d_bn_relu(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_bn_relu(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_bn_relu(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv3d_bn_relu(256, 512, (1, 6, 6)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCCs (20 frames = 0.2 s) -> (B, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, lips: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR frames as float 0..255 (no scaling) -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(lips).flatten(1))

    def forward(self, mfcc: torch.Tensor, lips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_aud(mfcc), self.forward_lip(lips)
