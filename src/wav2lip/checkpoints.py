"""Read and write the authors' checkpoint formats; tell which network a file holds.

The Wav2Lip files are `torch.save`d dicts {state_dict, optimizer, global_step, global_epoch}; S3FD,
SyncNet v2 and RetinaFace ship bare state dicts; GFPGAN's BasicSR files hold {params_ema (, params)}. Keys may carry `module.` (a data-parallel wrapper)
or `_orig_mod.` (torch.compile); `_canonical_keys` is the one place that removes them, so module
names inside `wav2lip.models` stay the authors' own. Files are always read with
`weights_only=True`: a user-supplied pickle never gets to run code.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .constants import MEL_OFFSETS
from .errors import Wav2LipError
from .io.files import atomic_output

# What each `kind` is called in messages.
MODEL_NAMES = {
    "wav2lip": "Wav2Lip generator",
    "syncnet": "SyncNet lip-sync expert",
    "discriminator": "visual quality discriminator",
    "s3fd": "S3FD face detector",
    "retinaface": "RetinaFace mobilenet0.25 face detector",
    "syncnet_v2": "SyncNet v2 evaluator",
    "gfpgan": "GFPGAN v1.4 face restorer",
}

# Top-level module names of each network: enough to tell the six apart from a key set.
_SIGNATURES = {
    "wav2lip": {"face_encoder_blocks", "audio_encoder", "face_decoder_blocks", "output_block"},
    "syncnet": {"face_encoder", "audio_encoder"},
    "discriminator": {"face_encoder_blocks", "binary_pred"},
    "s3fd": {
        *(f"conv{i}" for i in ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3",
                                "5_1", "5_2", "5_3", "6_1", "6_2", "7_1", "7_2")),
        "fc6", "fc7", "conv3_3_norm", "conv4_3_norm", "conv5_3_norm",
        *(f"{level}_mbox_{head}" for level in ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7",
                                               "conv6_2", "conv7_2") for head in ("conf", "loc")),
    },
    "retinaface": {"body", "fpn", "ssh1", "ssh2", "ssh3", "ClassHead", "BboxHead", "LandmarkHead"},
    "syncnet_v2": {"netcnnaud", "netfcaud", "netfclip", "netcnnlip"},
    "gfpgan": {"conv_body_first", "conv_body_down", "final_conv", "conv_body_up", "toRGB", "final_linear",
               "stylegan_decoder", "condition_scale", "condition_shift"},
}

# For the width-scalable networks: a key whose dimension `dim` is 512 channels at full width.
_WIDTH_PROBES = {
    "wav2lip": ("audio_encoder.12.conv_block.0.weight", 0),
    "syncnet": ("audio_encoder.13.conv_block.0.weight", 0),
    "discriminator": ("binary_pred.0.weight", 1),
    "gfpgan": ("stylegan_decoder.constant_input.weight", 1),  # GFPGAN's `narrow`
}
_FULL_CHANNELS = 512
# A generator key that exists only with the residual blocks (a student may leave them out).
_FIRST_RESIDUAL = "audio_encoder.1.conv_block.0.weight"

# Adam betas of the GAN recipe; the plain generator used Adam's defaults (spec section 8).
_GAN_BETAS = (0.5, 0.999)
_PLAIN_BETAS = (0.9, 0.999)

# BasicSR's entries in GFPGAN files, preferred first (spec/GFPGAN.md section 1).
_BASICSR_KEYS = ("params_ema", "params")

# torch.save's legacy (pre-1.6) files open with this pickled magic number; newer ones are zip archives.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Checkpoint:
    """A file's contents: the state dict (canonical keys) and the training state saved beside it."""

    state_dict: dict[str, torch.Tensor]
    optimizer: dict | None = None
    step: int | None = None
    epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointInfo:
    """What `wav2lip weights inspect` prints about a file."""

    kind: str
    n_params: int
    step: int | None
    epoch: int | None
    variant: str | None  # "gan" or "plain" for a generator whose optimizer betas tell; else None
    width: float | None  # channel scale of the Wav2Lip networks; None for the others
    residual: bool | None = None  # a generator with its residual blocks; None for the other networks
    teacher: dict[str, str] | None = None  # a distilled student's teacher: {"name", "sha256"}
    file_size: int | None = None  # bytes
    mel_offset: int | None = None  # a generator's mel window start, in mel steps from the frame's; None: others

    @property
    def student(self) -> bool:
        return self.teacher is not None


def _canonical_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without data-parallel (`module.`) or torch.compile (`_orig_mod.`) prefixes."""
    canonical = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        canonical[key] = value
    return canonical


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; every failure becomes a one-line Wav2LipError."""
    if not path.exists():
        raise Wav2LipError(f"{path}: no such file")
    if not path.is_file():
        raise Wav2LipError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise Wav2LipError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch words it "Unsupported global: GLOBAL x" or, for a blocked module (os.system is posix.system),
        # "Trying to load unsupported GLOBAL x whose module y is blocked".
        needed = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(exc))
        if needed:
            raise Wav2LipError(
                f"{path}: refused: loading it would run code from the file (it needs {needed.group(1)}); "
                "only plain tensor checkpoints are accepted"
            ) from None
        raise Wav2LipError(f"{path}: {_damage(path)}") from None
    except Exception:  # torch reports damaged archives as RuntimeError, EOFError, struct.error, ...
        raise Wav2LipError(f"{path}: {_damage(path)}") from None


def _damage(path: Path) -> str:
    """Tell a damaged PyTorch file from something that never was one, by its first bytes."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC:
        return "the PyTorch checkpoint is truncated or corrupt (download it again)"
    return "not a PyTorch checkpoint (unreadable by torch.load)"


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read the authors' wrapped format or a bare state dict, with canonical keys."""
    path = Path(path)
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        if not _is_state_dict(obj["state_dict"]):
            raise Wav2LipError(f"{path}: not a checkpoint (its 'state_dict' entry holds no tensors)")
        known = ("state_dict", "optimizer", "global_step", "global_epoch")
        return Checkpoint(
            state_dict=_canonical_keys(obj["state_dict"]),
            optimizer=obj.get("optimizer"),
            step=obj.get("global_step"),
            epoch=obj.get("global_epoch"),
            extra={k: v for k, v in obj.items() if k not in known},
        )
    basicsr = next((k for k in _BASICSR_KEYS if isinstance(obj, Mapping) and k in obj), None)
    if basicsr is not None:
        if not _is_state_dict(obj[basicsr]):
            raise Wav2LipError(f"{path}: not a checkpoint (its {basicsr!r} entry holds no tensors)")
        return Checkpoint(state_dict=_canonical_keys(obj[basicsr]),
                          extra={k: v for k, v in obj.items() if k not in _BASICSR_KEYS})
    if _is_state_dict(obj):
        return Checkpoint(state_dict=_canonical_keys(obj))
    raise Wav2LipError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, not a model state dict)")


def identify(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The kind of network a state dict holds (see MODEL_NAMES), by its top-level module names.

    The best overlap wins, so a file with some keys missing is still recognised (and its loader can
    then say which keys are missing); None when nothing overlaps at least half.
    """
    names = {key.split(".", 1)[0] for key in _canonical_keys(state_dict)}
    best, best_score = None, 0.0
    for kind, signature in _SIGNATURES.items():
        score = len(names & signature) / len(names | signature)
        if score > best_score:
            best, best_score = kind, score
    return best if best_score >= 0.5 else None


def infer_width(kind: str, state_dict: Mapping[str, torch.Tensor]) -> float | None:
    """The `width` a Wav2Lip-family state dict was built with (1.0 for the authors' files).

    Exact for widths whose channel counts are exact (0.5, 0.25, ...); others round differently per
    layer, which is why `save_checkpoint` also records the width of a narrow model.
    """
    if kind not in _WIDTH_PROBES:
        return None
    key, dim = _WIDTH_PROBES[kind]
    if key not in state_dict or state_dict[key].dim() <= dim:
        return 1.0
    return state_dict[key].shape[dim] / _FULL_CHANNELS


def _width(kind: str, checkpoint: Checkpoint) -> float | None:
    """The width `save_checkpoint` recorded for a narrow model, else the one its shapes imply."""
    if kind in _WIDTH_PROBES and isinstance(checkpoint.extra.get("width"), float):
        return checkpoint.extra["width"]
    return infer_width(kind, checkpoint.state_dict)


def _residual(kind: str, checkpoint: Checkpoint) -> bool | None:
    """Whether a generator file has its residual blocks: recorded by `save_checkpoint` for a student
    without them, else told by the keys (the first residual block of the audio encoder)."""
    if kind != "wav2lip":
        return None
    if isinstance(checkpoint.extra.get("residual"), bool):
        return checkpoint.extra["residual"]
    return _FIRST_RESIDUAL in checkpoint.state_dict


def build_model(kind: str, width: float = 1.0, residual: bool = True) -> nn.Module:
    """A freshly initialised network of `kind` (width applies to the three Wav2Lip networks and to
    GFPGAN, whose `narrow` it is; `residual=False` is the generator without its residual blocks)."""
    if kind == "wav2lip":
        from .models.generator import Wav2Lip
        return Wav2Lip(width=width, residual=residual)
    if kind == "syncnet":
        from .models.syncnet import SyncNet
        return SyncNet(width=width)
    if kind == "discriminator":
        from .models.discriminator import QualityDiscriminator
        return QualityDiscriminator(width=width)
    if kind == "s3fd":
        from .models.s3fd import S3FD
        return S3FD()
    if kind == "retinaface":
        from .models.retinaface import RetinaFace
        return RetinaFace()
    if kind == "syncnet_v2":
        from .models.syncnet_v2 import SyncNetV2
        return SyncNetV2()
    if kind == "gfpgan":
        from .models.gfpgan import GFPGAN
        return GFPGAN(narrow=width)
    raise ValueError(f"unknown model kind {kind!r} (one of {', '.join(MODEL_NAMES)})")


def _examples(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _check_kind(state: Mapping[str, torch.Tensor], path: str | os.PathLike, kind: str) -> None:
    found = identify(state)
    if found != kind:
        holds = f"holds the {MODEL_NAMES[found]}" if found else "holds none of the known networks"
        raise Wav2LipError(f"{path}: expected the {MODEL_NAMES[kind]}, but the file {holds}")


def load_state(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, kind: str
) -> None:
    """Load `state_dict` into `model` (any wrapper), or say in one line what does not fit and where."""
    target = _unwrap(model)
    state = _canonical_keys(state_dict)
    _check_kind(state, path, kind)
    name = MODEL_NAMES[kind]
    expected = target.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise Wav2LipError(
            f"{path}: {name} checkpoint is missing {len(missing)} of {len(expected)} keys: "
            f"{_examples(missing)}"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise Wav2LipError(
            f"{path}: {name} checkpoint has {len(unexpected)} keys the model lacks: {_examples(unexpected)}"
        )
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if wrong:
        key = wrong[0]
        raise Wav2LipError(
            f"{path}: {name} checkpoint has {len(wrong)} tensors of the wrong shape, e.g. {key} is "
            f"{tuple(state[key].shape)} where the model needs {tuple(expected[key].shape)}"
        )
    target.load_state_dict(state, strict=False)


def load_model(
    name_or_path: str | os.PathLike, kind: str, device: str | torch.device = "cpu", width: float | None = None,
    residual: bool | None = None,
) -> nn.Module:
    """The network of `kind` with the weights of a file or a model-store name (fetched and verified
    there), on `device`, in eval mode: the one way every command loads a network.

    `width` (and, for a generator, `residual`) are read from the file's record or its tensors unless
    given, so narrow trained models and distilled students load with no flags.
    """
    if kind not in MODEL_NAMES:
        raise ValueError(f"unknown model kind {kind!r} (one of {', '.join(MODEL_NAMES)})")
    from . import store  # resolve a name through the store; an existing path is used as it is

    path = store.resolve(name_or_path)
    checkpoint = read_checkpoint(path)
    _check_kind(checkpoint.state_dict, path, kind)
    if width is None:
        width = _width(kind, checkpoint) or 1.0
    if residual is None:
        residual = _residual(kind, checkpoint) is not False
    model = build_model(kind, width=width, residual=residual)
    load_state(model, checkpoint.state_dict, path, kind)
    if kind == "wav2lip":
        model.mel_offset = mel_offset(checkpoint, path)
    return model.to(device).eval()


def _variant(checkpoint: Checkpoint) -> str | None:
    """GAN or plain generator, told by the Adam betas its optimizer state recorded (spec section 8)."""
    groups = (checkpoint.optimizer or {}).get("param_groups") or []
    betas = tuple(float(b) for b in groups[0].get("betas", ())) if groups else ()
    return {_GAN_BETAS: "gan", _PLAIN_BETAS: "plain"}.get(betas)


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Which network a file holds, its parameter count, training step/epoch and generator variant."""
    checkpoint = read_checkpoint(path)
    kind = identify(checkpoint.state_dict)
    if kind is None:
        shown = sorted({key.split(".", 1)[0] for key in checkpoint.state_dict})
        raise Wav2LipError(f"{path}: holds none of the known networks (modules: {_examples(shown)})")
    n_params = sum(
        v.numel() for k, v in checkpoint.state_dict.items() if not k.endswith(_BUFFER_SUFFIXES)
    )
    return CheckpointInfo(
        kind=kind,
        n_params=n_params,
        step=checkpoint.step,
        epoch=checkpoint.epoch,
        variant=_variant(checkpoint) if kind == "wav2lip" else None,
        width=_width(kind, checkpoint),
        residual=_residual(kind, checkpoint),
        teacher=_teacher(checkpoint) if kind == "wav2lip" else None,
        file_size=Path(path).stat().st_size,
        mel_offset=mel_offset(checkpoint, path) if kind == "wav2lip" else None,
    )


def mel_offset(checkpoint: Checkpoint, path: str | os.PathLike) -> int:
    """The mel window a generator file records (`Wav2Lip.mel_offset`): 0, the authors', when none."""
    value = checkpoint.extra.get("mel_offset", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value not in MEL_OFFSETS:
        raise Wav2LipError(f"{path}: mel_offset must be a whole number of mel steps from {MEL_OFFSETS.start} to "
                           f"{MEL_OFFSETS.stop - 1}, got {value!r}")
    return value


def _teacher(checkpoint: Checkpoint) -> dict[str, str] | None:
    """The teacher a distilled student records (`wav2lip distill`), or None."""
    record = checkpoint.extra.get("teacher")
    if isinstance(record, Mapping) and all(isinstance(record.get(k), str) for k in ("name", "sha256")):
        return {"name": record["name"], "sha256": record["sha256"]}
    return None


def _contiguous(value: Any) -> Any:
    """`value` with every tensor in it laid out contiguously: a file does not depend on the memory
    layout training held its weights in (channels-last on a CPU)."""
    if isinstance(value, torch.Tensor):
        return value.contiguous()
    if isinstance(value, dict):
        return {k: _contiguous(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_contiguous(v) for v in value)
    return value


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the authors' format atomically, keys without wrapper prefixes, so their code loads it too.

    `extra` entries (plain Python values and tensors only) are stored beside the four standard ones,
    and so is the layout of a model other than the authors': the `width` of a narrow Wav2Lip-family
    model, `residual: False` for a generator without residual blocks (the authors' code ignores both).
    A distilled student's `extra` holds its `teacher` ({"name", "sha256"}); a generator trained on another
    mel window than the authors' records its `mel_offset`.
    """
    module = _unwrap(model)
    payload = {
        "state_dict": _contiguous(_canonical_keys(module.state_dict())),
        "optimizer": _contiguous(optimizer.state_dict()) if optimizer is not None else None,
        "global_step": int(step),
        "global_epoch": int(epoch),
    }
    clash = set(payload) & set(extra or {})
    if clash:
        raise ValueError(f"extra entries {sorted(clash)} would overwrite the checkpoint's own")
    payload.update(extra or {})
    width = getattr(module, "width", 1.0)
    if width != 1.0:
        payload["width"] = float(width)
    if getattr(module, "residual", True) is False:
        payload["residual"] = False
    if getattr(module, "mel_offset", 0):
        payload["mel_offset"] = int(module.mel_offset)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
