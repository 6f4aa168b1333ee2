"""The names and numbers the command line shows (choices, defaults, output containers) whose modules need
torch, OpenCV or PyAV to do their work.

Standard library only, so that the option table, and with it `wav2lip --help` and every usage error, loads
without those libraries. Each value is defined here once; the module that does the work imports it from here.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import Wav2LipError

# device
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# faces
DETECTORS = ("retinaface", "s3fd")  # the names `faces.create_detector` takes, the default first
SMOOTH_MODES = ("centered", "mean5", "none")
DETECT_EVERY = 25  # frames: full-frame detection period; 1 = every frame, 0 = only when the track is lost
MAX_GAP = 5  # frames without a face bridged by interpolation (0: never)

# io
SAMPLE_RATE = 16000  # Hz: everything is decoded and resampled to this
# Audio below this rate is refused (files, live PCM, the live socket): no speech is recorded lower, and
# resampling 1 Hz to SAMPLE_RATE would turn one second of samples into 16,000 times as many.
MIN_SAMPLE_RATE = 8000  # Hz (telephone speech)
LOOP_MODES = ("repeat", "pingpong", "none")
# libx264 preset chosen with benchmarks/bench_encode.py on 2 CPU cores: "superfast" encodes 1080p in ~50 ms/frame
# (720p ~20, 512x512 ~5), below the generator's time per frame; "veryfast" makes ~30% smaller files but takes
# ~2x longer (~90-140 ms at 1080p), as long as the whole rest of inference, so it would dominate.
DEFAULT_PRESET = "superfast"
DEFAULT_CRF = 18  # visually lossless for x264, so lip detail survives the encode
# Output video extension -> container. H.264 + AAC go in any of these; FFV1 + FLAC (lossless) only in Matroska.
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
LOSSLESS_CONTAINERS = {".mkv": "matroska"}
# Output file extension -> container, for `io.streams.LiveOutput` (H.264 + AAC muxed as frames come).
STREAM_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts", ".flv": "flv"}

# models: where a generator's mel window may start, in mel steps (12.5 ms) from its frame's start (the
# authors' 0; a live student's negative, needing less audio after the frame: Wav2Lip.mel_offset)
MEL_OFFSETS = range(-48, 17)

# evaluation, "track" mode: the reference evaluator's pipeline (run_pipeline.py defaults, spec section 10)
MIN_TRACK = 100  # frames: shots and face tracks must be this long (the reference's --min_track)
MIN_FACE_SIZE = 100  # pixels: a track's mean box width or height must exceed this (--min_face_size)


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
