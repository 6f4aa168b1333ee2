"""Wav2Lip: lip-sync any video or photo to any speech, with the authors' checkpoints.

    import wav2lip
    syncer = wav2lip.LipSyncer("wav2lip_gan.pth")          # loads the models once
    result = syncer.run("face.mp4", "speech.wav", "out.mp4")  # -> Result (frames, faces missed, speed)
    for frame in syncer.frames("photo.png", "speech.wav"):   # or the output frames themselves
        ...
    wav2lip.lipsync("face.mp4", "speech.wav", "out.mp4")     # one call
    score = wav2lip.evaluate_sync("out.mp4")                 # offset, LSE-D, LSE-C (SyncNet v2)
"""
from __future__ import annotations

import importlib

from .errors import Wav2LipError

# Public name -> the module that defines it, imported on first use: `import wav2lip` (and with it the
# command's --help and usage errors) does not load torch, OpenCV or PyAV.
_LAZY = {"LipSyncer": "lipsync.offline", "Result": "lipsync.offline", "SyncOptions": "lipsync.options",
         "lipsync": "lipsync.offline", "LiveFrame": "lipsync.live", "LiveSyncer": "lipsync.live",
         "SyncScore": "evaluation.sync", "evaluate_sync": "evaluation.sync"}

# The subpackage `wav2lip.lipsync` is imported now (it is light) and its name taken back, so that
# `wav2lip.lipsync` stays the one-call function, served by __getattr__, whatever is imported later.
importlib.import_module(f"{__name__}.lipsync")
del globals()["lipsync"]

__all__ = ["LipSyncer", "LiveFrame", "LiveSyncer", "Result", "SyncOptions", "SyncScore", "Wav2LipError", "evaluate_sync", "lipsync"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
