"""Milliseconds per frame of libx264 presets at the sizes lip-sync outputs come in; picks video_io's default.

Frames are a real talking-head clip (../shared/media/hdtf_kh.mp4) resized to each size, encoded through
wav2lip.io.video.VideoWriter exactly as inference does (yuv420p, CRF 18, x264 threads on every core).

    python benchmarks/bench_encode.py [--frames 48] [--presets ultrafast,veryfast,medium]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from wav2lip.io.video import DEFAULT_CRF, VideoWriter, open_source

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
SIZES = {"512": (512, 512), "720p": (1280, 720), "1080p": (1920, 1080)}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def encode(frames: list, width: int, height: int, preset: str, folder: Path) -> tuple[float, float, float]:
    """(wall ms per frame, CPU ms per frame, kbit/s) for one preset, the file finalised like a real output.

    CPU time (all threads) is the steadier number on a shared machine; wall time is what a user waits.
    """
    path = folder / f"{preset}_{width}x{height}.mp4"
    start, cpu_start = time.perf_counter(), time.process_time()
    with VideoWriter(path, 25, width, height, crf=DEFAULT_CRF, preset=preset) as writer:
        writer.write_many(frames)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    kbps = path.stat().st_size * 8 / 1000 / (len(frames) / 25)
    return 1000 * wall / len(frames), 1000 * cpu / len(frames), kbps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=MEDIA / "hdtf_kh.mp4")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--sizes", default=",".join(SIZES))
    args = parser.parse_args()
    presets = args.presets.split(",")
    source = list(open_source(args.clip).frames(args.frames))
    print(f"{len(source)} frames of {args.clip.name}, CRF {DEFAULT_CRF}, {os.cpu_count()} CPU cores")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':>6} {'preset':>10} {'ms/frame':>9} {'fps':>7} {'cpu ms':>7} {'kbit/s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            width, height = SIZES[name]
            frames = [cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in source]
            for preset in presets:
                ms, cpu_ms, kbps = encode(frames, width, height, preset, Path(tmp))
                print(f"{name:>6} {preset:>10} {ms:9.1f} {1000 / ms:7.1f} {cpu_ms:7.1f} {kbps:8.0f}")


if __name__ == "__main__":
    main()
