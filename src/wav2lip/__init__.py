"""Wav2Lip: lip-sync any video or photo to any speech, with the authors' checkpoints.

    import wav2lip
    syncer = wav2lip.LipSyncer("wav2lip_gan.pth")          # loads the models once
    result = syncer.run("face.mp4", "speech.wav", "out.mp4")  # -> Result (frames, faces missed, speed)
    for frame in syncer.frames("photo.png", "speech.wav"):   # or the output frames themselves
        ...
    wav2lip.lipsync("face.mp4", "speech.wav", "out.mp4")     # one call
    score = wav2lip.evaluate_sync("out.mp4")                 # offset, LSE-D, LSE-C (SyncNet v2)
"""
from .errors import Wav2LipError
from .evaluation.sync import SyncScore, evaluate_sync
from .lipsync.live import LiveFrame, LiveSyncer
from .lipsync.offline import LipSyncer, Result, SyncOptions, lipsync

__all__ = ["LipSyncer", "LiveFrame", "LiveSyncer", "Result", "SyncOptions", "SyncScore", "Wav2LipError", "evaluate_sync", "lipsync"]
__version__ = "0.1.0"
