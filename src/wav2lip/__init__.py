"""Wav2Lip: lip-sync any video or photo to any speech, with the authors' checkpoints."""
from .errors import Wav2LipError

__all__ = ["Wav2LipError"]
__version__ = "0.1.0"
