"""Pick the device and the generator's arithmetic: what "auto" means on this machine."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .constants import DEVICES, PRECISIONS
from .errors import Wav2LipError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA, then Apple MPS, then the CPU; an explicit device that is absent is an error."""
    if name not in DEVICES:
        raise Wav2LipError(f"unknown device {name!r} (one of {', '.join(DEVICES)})")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise Wav2LipError(f"device {name!r} is not available on this machine (try --device cpu)")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True on CPUs whose oneDNN kernels run bfloat16 natively (AVX-512 BF16 / AMX); elsewhere bf16
    is emulated and slower than fp32, so "auto" must not pick it."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> the fastest precision measured to keep the face visibly identical to fp32
    (PSNR >= 40 dB on the real clips, see benchmarks/bench_speed.py): bf16 on CPUs with native bf16,
    fp16 on CUDA, fp32 elsewhere. An explicit choice the device cannot run is an error."""
    if precision not in PRECISIONS:
        raise Wav2LipError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise Wav2LipError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return precision


class LowPrecision(nn.Module):
    """A generator copy for fast inference: each BatchNorm folded into its convolution (in fp32, before
    casting), weights in `dtype`, channels-last memory, and on the CPU each conv unit one oneDNN call
    (`fuse_pointwise`). On a CPU with native bf16 folding runs ~1.6x faster than autocast at the same PSNR
    (fewer, larger bf16 operations) and fusing 1.14x faster again."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, device: torch.device, inplace: bool = False) -> None:
        super().__init__()
        self.dtype = dtype
        self.model = fold_batchnorm(model, inplace).to(device=device, dtype=dtype, memory_format=torch.channels_last)
        if device.type == "cpu" and cpu_fusion_available():
            fuse_pointwise(self.model)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        audio = audio.to(self.dtype).contiguous(memory_format=torch.channels_last)
        face = face.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(audio, face).float()

    def encode_face(self, face: torch.Tensor) -> list[torch.Tensor]:
        """The generator's face features (Wav2Lip.encode_face) in this precision: computed once for a still."""
        return self.model.encode_face(face.to(self.dtype).contiguous(memory_format=torch.channels_last))

    def decode(self, audio: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        audio = audio.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model.decode(audio, skips).float()


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """An eval-mode copy (`inplace`: the model itself, for a caller that owns it: no copy of its
    weights) in which every Conv2d/ConvTranspose2d followed by a BatchNorm2d inside an nn.Sequential
    becomes one convolution (the BatchNorm replaced by Identity)."""
    model = (model if inplace else copy.deepcopy(model)).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
                conv.weight, conv.bias = fuse_conv_bn_weights(
                    conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias,
                    transpose=isinstance(conv, nn.ConvTranspose2d))
                module[i + 1] = nn.Identity()
    return model


def cpu_fusion_available() -> bool:
    """True where this PyTorch has oneDNN's fused convolution ops (the ones torch.compile emits on a CPU)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._convolution_pointwise.binary)
    except (AttributeError, RuntimeError):
        return False


def fuse_pointwise(model: nn.Module) -> nn.Module:
    """`model` (folded: no BatchNorm left in its conv units) with each unit that offers a `fused()` form (the
    generator's conv units: models.blocks.FusedConvUnit) replaced by it, in place."""
    for name, child in model.named_children():
        fused = getattr(child, "fused", None)
        if callable(fused):
            setattr(model, name, fused())
        else:
            fuse_pointwise(child)
    return model


def inference_model(model: nn.Module, precision: str, device: torch.device, inplace: bool = False) -> nn.Module:
    """The network to run for `precision`: fp32 is the model itself (the reference's arithmetic, bit for
    bit); bf16/fp16 a folded, cast copy (`LowPrecision`), or the model itself folded and cast when
    `inplace` (a network loaded for this use only: no second copy of its weights)."""
    model = model.to(device).eval()
    if precision == "fp32":
        return model
    return LowPrecision(model, DTYPES[precision], device, inplace).eval()
