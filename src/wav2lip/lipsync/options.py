"""Every option list in one place: the CLI's `choices` and the API's checks read these tuples.

Names that belong to a table elsewhere (detectors, blends, smoothers, devices) are taken from that
table, so adding an entry there adds it to every command and check at once.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

from .blend import BLENDS, MASKS
from ..device import DEVICES, PRECISIONS
from .enhance import ENHANCERS
from ..errors import Wav2LipError
from ..faces.detectors import DETECTORS
from ..faces.smoothing import SMOOTH_MODES
from ..io.video import LOOP_MODES as _SOURCE_LOOPS

BACKENDS = ("torch", "onnxruntime")  # onnxruntime: the exported fp32 generator, faster than torch fp32 on CPUs
BLEND_MODES = tuple(BLENDS)
LOOP_MODES = tuple(m for m in _SOURCE_LOOPS if m != "none")  # a video shorter than the audio: again, or back and forth
EVALUATE_MODES = ("whole", "track")
EXPERT_MODES = ("eval", "train")
SYNTH_LAYOUTS = ("prepared", "videos")  # synth-data: the training layout, or videos for preprocess
SILENCE_MODES = ("still", "original", "off")  # what the mouth does where nobody speaks (pipeline, vad)
SPEAKER_MODES = ("auto", "largest")  # which of several faces is lip-synced (faces.speaker)
MASK_KINDS = MASKS  # the feather blend's mask (blend.MaskShape)
PCM_FORMATS = ("s16le", "f32le")  # live: raw PCM on stdin, 16-bit integers or 32-bit floats, little-endian
# x264's presets, fastest first (x264 --fullhelp).
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
# Output video extension -> container. H.264 + AAC go in any of these; FFV1 + FLAC (lossless) only in Matroska.
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
LOSSLESS_CONTAINERS = {".mkv": "matroska"}
BOX_ORDER = ("top", "bottom", "left", "right")  # --box on every command line: the authors' order

__all__ = ["BACKENDS", "BLEND_MODES", "BOX_ORDER", "DETECTORS", "DEVICES", "ENHANCERS", "EVALUATE_MODES", "EXPERT_MODES",
           "LOOP_MODES", "LOSSLESS_CONTAINERS", "PCM_FORMATS", "PRECISIONS", "SMOOTH_MODES", "SYNTH_LAYOUTS", "VIDEO_CONTAINERS", "X264_PRESETS",
           "check_choice", "check_finite", "video_container"]


def check_choice(value: object, choices: Iterable[str], what: str) -> None:
    """One line naming the valid values when `value` is not one of them."""
    choices = tuple(choices)
    if value not in choices:
        raise Wav2LipError(f"unknown {what} {value!r} (one of {', '.join(choices)})")


def check_finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise Wav2LipError(f"{what} must be a finite number, got {value}")


def video_container(path: str | os.PathLike, lossless: bool = False) -> str:
    """The container format for an output video, chosen by its extension; other extensions are refused
    (rather than writing MP4 inside a file named .avi)."""
    table = LOSSLESS_CONTAINERS if lossless else VIDEO_CONTAINERS
    ext = Path(path).suffix.lower()
    if ext not in table:
        kind = "lossless (FFV1) video" if lossless else "video"
        raise Wav2LipError(f"{path}: cannot write {kind} as {ext or 'a file without extension'}; "
                           f"name it {' or '.join(table)}")
    return table[ext]
