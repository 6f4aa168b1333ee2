"""GFPGAN v1.4 (Wang et al., CVPR 2021; spec/GFPGAN.md): a U-Net whose decoder steers a StyleGAN2 face
prior through spatial feature transforms (SFT), restoring one aligned 512 x 512 face.

Module paths match the released `GFPGANv1.4.pth` (`params_ema`), so it loads unmodified. `narrow`
scales every channel count (the released file: 1) for small test models. The StyleGAN2 noise maps
are the file's stored buffers unless `fresh_noise` is asked for: fresh noise at every call is what
makes consecutive video frames flicker (spec section 4).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

OUT_SIZE = 512  # restored face side (spec section 1)
STYLE_DIM = 512  # num_style_feat (spec section 1)
N_MLP = 8  # style MLP depth, stored but unused with input_is_latent (spec sections 1, 3)
CHANNEL_MULTIPLIER = 2  # spec section 1
LEAKY = 0.2  # leaky ReLU slope everywhere (spec section 3)
DEMOD_EPS = 1e-8  # spec section 3
_LEVELS = int(math.log2(OUT_SIZE)) - 2  # 7 resolutions above 4x4: 8 .. 512
N_LATENTS = 2 * _LEVELS + 2  # 16 style codes (different_w)
N_NOISES = 2 * _LEVELS + 1  # 15 stored noise maps


def decoder_channels(narrow: float = 1.0) -> dict[int, int]:
    """StyleGAN2 decoder width per resolution (spec section 3, full width)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * CHANNEL_MULTIPLIER, 128: 128 * CHANNEL_MULTIPLIER,
            256: 64 * CHANNEL_MULTIPLIER, 512: 32 * CHANNEL_MULTIPLIER}
    return {r: int(c * narrow) for r, c in base.items()}


def unet_channels(narrow: float = 1.0) -> dict[int, int]:
    """U-Net width per resolution: half the decoder's (spec section 3)."""
    return decoder_channels(narrow * 0.5)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    """conv 3x3 + leaky, bilinear resize, conv 3x3 + leaky; skip: resize then 1x1 conv without bias."""

    def __init__(self, cin: int, cout: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu_(self.conv1(x), LEAKY)
        out = F.interpolate(out, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out = F.leaky_relu_(self.conv2(out), LEAKY)
        x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out.add_(self.skip(x))


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (spec section 3), computed as input scaling, one shared
    convolution for the whole batch and output demodulation: the same function as one grouped
    convolution with a per-sample weight, without building B weight tensors."""

    def __init__(self, cin: int, cout: int, kernel: int, demodulate: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel // 2
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel) / math.sqrt(cin * kernel**2))
        self.modulation = nn.Linear(STYLE_DIM, cin)
        nn.init.ones_(self.modulation.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """`gain` multiplies the demodulated output (free: it rides on the per-channel factor)."""
        s = self.modulation(style)  # (B, C_in)
        x = x * s[:, :, None, None]
        if self.upsample:  # bilinear resizing is per channel, so scaling before it is the same function
            x = _up(x)
        weight = self.weight[0]
        out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            energy = (s * s) @ weight.square().sum(dim=(2, 3)).t()  # (B, C_out): sum over C_in, k, k
            out = out.mul_((torch.rsqrt(energy + DEMOD_EPS) * gain)[:, :, None, None])
        elif gain != 1.0:
            out = out.mul_(gain)
        return out


class StyleConv(nn.Module):
    """Modulated conv x sqrt(2), plus weighted noise, plus bias, leaky ReLU (spec section 3)."""

    def __init__(self, cin: int, cout: int, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, cout, 3, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style, gain=math.sqrt(2))
        if noise is None:
            noise = torch.randn(out.shape[0], 1, out.shape[2], out.shape[3], device=out.device, dtype=out.dtype)
        return F.leaky_relu_(out.add_(self.weight * noise).add_(self.bias), LEAKY)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation, plus bias, plus the previous RGB upsampled."""

    def __init__(self, cin: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(cin, 3, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style).add_(self.bias)
        if skip is not None:
            out = out.add_(_up(skip) if self.upsample else skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class PixelNorm(nn.Module):
    """The style MLP's input normalisation (kept so the stored MLP's module indices match)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + DEMOD_EPS)


class StyleGAN2Decoder(nn.Module):
    """StyleGAN2 generator whose first conv of each resolution is modulated by SFT conditions."""

    def __init__(self, narrow: float = 1.0) -> None:
        super().__init__()
        ch = decoder_channels(narrow)
        mlp: list[nn.Module] = [PixelNorm()]
        for _ in range(N_MLP):
            mlp += [nn.Linear(STYLE_DIM, STYLE_DIM), nn.LeakyReLU(LEAKY)]
        self.style_mlp = nn.Sequential(*mlp)  # in the file; not applied (input_is_latent)
        self.constant_input = ConstantInput(ch[4])
        self.style_conv1 = StyleConv(ch[4], ch[4])
        self.to_rgb1 = ToRGB(ch[4], upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        self.noises.register_buffer("noise0", torch.randn(1, 1, 4, 4))
        cin = ch[4]
        for level in range(_LEVELS):
            res = 8 << level
            self.style_convs.append(StyleConv(cin, ch[res], upsample=True))
            self.style_convs.append(StyleConv(ch[res], ch[res]))
            self.to_rgbs.append(ToRGB(ch[res]))
            for k in (1, 2):
                self.noises.register_buffer(f"noise{2 * level + k}", torch.randn(1, 1, res, res))
            cin = ch[res]

    def forward(self, latent: torch.Tensor, conditions: list[tuple[torch.Tensor, torch.Tensor]],
                fresh_noise: bool = False) -> torch.Tensor:
        """latent (B, 16, 512) used directly as W+ codes; conditions: (scale, shift) per level 8..512."""
        if fresh_noise:
            noise: list[torch.Tensor | None] = [None] * N_NOISES
        else:
            noise = [getattr(self.noises, f"noise{i}") for i in range(N_NOISES)]
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        rgb = self.to_rgb1(out, latent[:, 1])
        for level, (scale, shift) in enumerate(conditions):
            i = 2 * level + 1
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            half = out.shape[1] // 2  # sft_half: only the second half of the channels is modulated
            out = torch.cat((out[:, :half], out[:, half:] * scale + shift), dim=1)
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            rgb = self.to_rgbs[level](out, latent[:, i + 2], rgb)
        return rgb


def _condition(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(LEAKY), nn.Conv2d(channels, channels, 3, 1, 1))


class GFPGAN(nn.Module):
    """GFPGANv1Clean at out_size 512: (B, 3, 512, 512) RGB in [-1, 1] -> restored face, same range.

    With `return_rgb`, also the U-Net's intermediate RGB images at 8 .. 512 (spec section 2).
    """

    def __init__(self, narrow: float = 1.0) -> None:
        super().__init__()
        self.width = narrow
        ch = unet_channels(narrow)
        self.conv_body_first = nn.Conv2d(3, ch[OUT_SIZE], 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(ch[OUT_SIZE >> i], ch[OUT_SIZE >> (i + 1)], 0.5) for i in range(_LEVELS))
        self.final_conv = nn.Conv2d(ch[4], ch[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(ResBlock(ch[4 << i], ch[8 << i], 2) for i in range(_LEVELS))
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[8 << i], 3, 1) for i in range(_LEVELS))
        self.final_linear = nn.Linear(ch[4] * 4 * 4, N_LATENTS * STYLE_DIM)
        self.stylegan_decoder = StyleGAN2Decoder(narrow)
        self.condition_scale = nn.ModuleList(_condition(ch[8 << i]) for i in range(_LEVELS))
        self.condition_shift = nn.ModuleList(_condition(ch[8 << i]) for i in range(_LEVELS))

    def forward(self, x: torch.Tensor, return_rgb: bool = False, fresh_noise: bool = False):
        feat = F.leaky_relu_(self.conv_body_first(x), LEAKY)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu_(self.final_conv(feat), LEAKY)
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], N_LATENTS, STYLE_DIM)
        conditions, rgbs = [], []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[-1 - i])
            conditions.append((self.condition_scale[i](feat), self.condition_shift[i](feat)))
            if return_rgb:
                rgbs.append(self.toRGB[i](feat))
        image = self.stylegan_decoder(latent, conditions, fresh_noise)
        return (image, rgbs) if return_rgb else image
