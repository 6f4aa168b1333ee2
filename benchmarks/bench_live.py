"""Latency of live lip-sync: a 720p avatar, the full-size generator (deterministic weights) in the default
precision, real speech fed in real time in 20 ms chunks for 60 s.

Latency of frame k = the wall time `stream()` yields it - the wall time the chunk holding the frame's first
audio sample was handed over (a chunk is handed over when its last sample would have been heard, as a
capture device delivers it). The model's floor: frame k's mel window ends 3400 samples (212.5 ms) after
the frame's first sample, 200 ms in whole 20 ms chunks. Prints p50/p95/max latency, dropped and repeated
frames, output frame-interval jitter, where the time goes, and the load average.

    python benchmarks/bench_live.py [--seconds 60] [--chunk 0.02] [--avatar FILE] [--precision auto]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip import LipSyncer, LiveSyncer
from wav2lip.io.audio import SAMPLE_RATE, load_audio
from wav2lip.checkpoints import save_checkpoint
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.io.video import VideoWriter, open_source


SHARED = Path(__file__).resolve().parents[2] / "shared"


def make_avatar(path: Path, seconds: float = 4.0) -> Path:
    """A 1280x720 talking-head loop: a real 524x524 clip scaled to 720x720 on a blurred copy of itself."""
    frames = open_source(SHARED / "media" / "vr_face5.mp4").frames(round(seconds * 25))
    with VideoWriter(path, 25, 1280, 720) as writer:
        for frame in frames:
            face = cv2.resize(frame, (720, 720), interpolation=cv2.INTER_CUBIC)
            canvas = cv2.GaussianBlur(cv2.resize(frame, (1280, 720)), (0, 0), 25)
            canvas[:, 280:1000] = face
            writer.write(canvas)
    return path


def speech(seconds: float) -> np.ndarray:
    """Real speech clips of ../shared/media one after another, repeated to `seconds`."""
    clips = [load_audio(SHARED / "media" / name) for name in ("vr_audio1.wav", "mt_yongen.wav", "st_radio31.wav")]
    wav = np.concatenate(clips)
    return np.resize(wav, round(seconds * SAMPLE_RATE)).astype(np.float32)


def realtime(wav: np.ndarray, chunk: int, handed: list[float]):
    """Chunks of `chunk` samples, each handed over when its last sample would have been heard."""
    start = time.perf_counter()
    for i in range(0, wav.size, chunk):
        piece = wav[i:i + chunk]
        time.sleep(max(0.0, start + (i + piece.size) / SAMPLE_RATE - time.perf_counter()))
        handed.append(time.perf_counter())
        yield piece


class Timer:
    """Wall time of each generator call (forward hooks)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[int, float]] = []
        self._start = 0.0
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)

    def _before(self, module, args) -> None:
        self._start = time.perf_counter()

    def _after(self, module, args, output) -> None:
        self.calls.append((int(args[0].shape[0]), time.perf_counter() - self._start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunk", type=float, default=0.02, help="seconds per audio chunk")
    parser.add_argument("--avatar", type=Path, help="avatar video or image (default: a 720p loop made here)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--blend", default="paste")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wav2lip_bench_live")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.work / "deterministic_full.pth"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip()))
    avatar = args.avatar or (args.work / "avatar720.mp4")
    if not avatar.exists():
        make_avatar(avatar)
    load_before = os.getloadavg()
    syncer = LipSyncer(checkpoint, precision=args.precision,
                       detector_weights=SHARED / "models" / "retinaface_mobilenet0.25.pth")
    t0 = time.perf_counter()
    live = LiveSyncer(avatar, syncer=syncer, blend=args.blend)
    prepare = time.perf_counter() - t0
    print(f"avatar prepared in {prepare:.1f} s", flush=True)
    list(live.stream(iter([speech(1.0)])))  # warm-up: the generator's first call at each batch size is slow
    timer = Timer(syncer.generator)
    chunk = round(args.chunk * SAMPLE_RATE)
    wav = speech(args.seconds)
    handed: list[float] = []
    stamps, samples, mouths = [], [], []
    for frame in live.stream(realtime(wav, chunk, handed)):
        stamps.append(time.perf_counter())
        samples.append(frame.sample)
        mouths.append(frame.mouth)
    load_after = os.getloadavg()

    spoken = [i for i, s in enumerate(samples) if s is not None]
    first, last = spoken[0], spoken[-1]
    got = [samples[i] for i in spoken]
    per_frame = live.samples_of(1)
    expected = list(range(0, wav.size, per_frame))
    dropped = len(set(expected) - set(got))
    repeated = len(got) - len(set(got)) + sum(s is None for s in samples[first:last + 1])
    latency = np.array([stamps[i] - handed[samples[i] // chunk] for i in spoken]) * 1000
    # Steady state: the speech frames whose mel window lies inside the audio (the last ones come at its end).
    steady = np.diff([stamps[i] for i in spoken if samples[i] + 3400 <= wav.size]) * 1000
    period = 1000 / live.fps
    gen = np.array([seconds / n for n, seconds in timer.calls]) * 1000
    batch = np.array([n for n, _ in timer.calls])

    print(f"avatar {avatar.name} {live.width}x{live.height} @ {live.fps:g} fps, generator full size, "
          f"{syncer.precision}, {torch.get_num_threads()} torch threads, blend {args.blend}")
    print(f"audio {args.seconds:g} s of real speech in {1000 * args.chunk:g} ms chunks, fed in real time")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
          f" (2 cores); avatar prepared in {prepare:.1f} s")
    print()
    print(f"{'measure':<34}{'value':>12}")
    rows = [
        ("frames out", f"{len(samples)}"),
        ("speech frames", f"{len(spoken)} of {len(expected)}"),
        ("idle frames before the speech", f"{first}"),
        ("dropped frames", f"{dropped}"),
        ("repeated/inserted frames", f"{repeated}"),
        ("latency p50 (ms)", f"{np.percentile(latency, 50):.1f}"),
        ("latency p95 (ms)", f"{np.percentile(latency, 95):.1f}"),
        ("latency max (ms)", f"{latency.max():.1f}"),
        ("latency floor (ms, model)", f"{1000 * 3400 / SAMPLE_RATE:.1f} (200 in 20 ms chunks)"),
        (f"frame interval mean (ms, {period:g})", f"{steady.mean():.1f}"),
        ("frame interval jitter sd (ms)", f"{steady.std():.1f}"),
        ("frame interval p95 |dev| (ms)", f"{np.percentile(np.abs(steady - period), 95):.1f}"),
        ("frame interval max (ms)", f"{steady.max():.1f}"),
        ("generator ms/frame p50", f"{np.percentile(gen, 50):.1f}"),
        ("generator ms/frame p95", f"{np.percentile(gen, 95):.1f}"),
        ("generator calls, mean batch", f"{len(batch)}, {batch.mean():.2f}"),
    ]
    for name, value in rows:
        print(f"{name:<34}{value:>12}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
