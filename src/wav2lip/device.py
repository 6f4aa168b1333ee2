"""Pick the device and the generator's arithmetic: what "auto" means on this machine."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .errors import Wav2LipError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
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


def autocast(precision: str, device: torch.device) -> ContextManager:
    """Mixed precision for the generator's forward pass (weights stay fp32, convolutions run lower)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
