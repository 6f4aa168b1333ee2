"""The conv units the Wav2Lip networks are built from (spec/layers.md).

Each unit keeps the authors' attribute names (`conv_block.0` conv, `conv_block.1` BatchNorm, `act`),
so a state dict from the published checkpoints loads key for key.
"""
from __future__ import annotations

import torch
from torch import nn

# BatchNorm eps of every reference layer (spec/layers.md).
BN_EPS = 1e-5


def scaled(channels: int, width: float) -> int:
    """Channel count of a `width`-scaled network; width 1.0 gives the authors' layout exactly."""
    return max(1, round(channels * width))


class _Fusable(nn.Module):
    """A conv unit (`conv_block` = conv, BatchNorm) whose folded form runs as one FusedConvUnit."""

    conv_block: nn.Sequential

    def fused(self) -> nn.Module:
        """This unit as one oneDNN call (device.fuse_pointwise), once its BatchNorm is folded away."""
        return FusedConvUnit(self) if isinstance(self.conv_block[1], nn.Identity) else self


class ConvBlock(_Fusable):
    """Conv2d -> BatchNorm2d -> (+ input when `residual`) -> ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int | tuple[int, int],
        padding: int | tuple[int, int], residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout, eps=BN_EPS)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBlock(_Fusable):
    """ConvTranspose2d -> BatchNorm2d -> ReLU: the decoder's upsampling unit."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class FusedConvUnit(nn.Module):
    """A folded ConvBlock or ConvTransposeBlock as one oneDNN call: the convolution with its bias, the
    residual add and the ReLU applied as it writes (no separate passes over the activations, which cost
    a tenth of the generator's time)."""

    def __init__(self, unit: ConvBlock | ConvTransposeBlock) -> None:
        super().__init__()
        conv = unit.conv_block[0]
        self.weight, self.bias = conv.weight, conv.bias
        self.transpose = isinstance(conv, nn.ConvTranspose2d)
        self.residual = getattr(unit, "residual", False)
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.output_padding = list(conv.output_padding) if self.transpose else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.mkldnn
        if self.transpose:
            return ops._convolution_transpose_pointwise(x, self.weight, self.bias, self.padding, self.output_padding,
                                                        self.stride, self.dilation, self.groups, "relu", [], "")
        if self.residual:
            return ops._convolution_pointwise.binary(x, x, self.weight, self.bias, self.padding, self.stride,
                                                     self.dilation, self.groups, "add", 1.0, "relu", [], "")
        return ops._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                          self.groups, "relu", [], "")


class NoNormConvBlock(nn.Module):
    """Conv2d -> LeakyReLU(0.01) without BatchNorm: the quality discriminator's unit."""

    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int | tuple[int, int],
        padding: int | tuple[int, int],
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))
