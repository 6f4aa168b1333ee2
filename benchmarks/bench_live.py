"""Latency of live lip-sync on each avatar: the full-size generator (deterministic weights) in the default
precision, real speech fed in real time in 20 ms chunks, with pauses in which the source sends nothing.

Latency of frame k = the wall time `stream()` yields it - the wall time the chunk holding the frame's first
audio sample was handed over (a chunk is handed over when its last sample would have been heard, as a
capture device delivers it). The model's floor: frame k's mel window ends 3400 samples (212.5 ms) after
the frame's first sample, 200 ms in whole 20 ms chunks (a student trained on an earlier window: less). Per avatar: p50/p95/max latency, p95 in the first
second after each pause, frames whose mouth was held (the generator behind by over --max-delay), the
generator's ms/frame, the load average. Avatars: the 720p loop made here and every video and photo in
../shared/media, or the files given.

    python benchmarks/bench_live.py [--seconds 30] [--chunk 0.02] [--avatar FILE ...] [--pause-every 6]
        [--checkpoint STUDENT.pth]
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
from wav2lip.lipsync.kernel import lead_samples
from wav2lip.lipsync.live import MAX_DELAY

AVATAR_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".png", ".jpg", ".jpeg"}

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


def realtime(wav: np.ndarray, chunk: int, handed: list[float], pause_every: float, pause: float):
    """Chunks of `chunk` samples, each handed over when its last sample would have been heard; after every
    `pause_every` seconds of audio the source sends nothing for `pause` seconds (a speaker or TTS that
    stops), and `handed` records each chunk's time (the first after a pause marked by a negative sign)."""
    start = time.perf_counter()
    every = round(pause_every * SAMPLE_RATE) if pause_every > 0 else wav.size + 1
    gap = 0.0
    for i in range(0, wav.size, chunk):
        piece = wav[i:i + chunk]
        resumed = i > 0 and i % every < chunk
        if resumed:
            gap += pause
        time.sleep(max(0.0, start + gap + (i + piece.size) / SAMPLE_RATE - time.perf_counter()))
        handed.append(-time.perf_counter() if resumed else time.perf_counter())
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


def run(avatar: Path, syncer: LipSyncer, timer: Timer, args: argparse.Namespace) -> dict[str, float | str]:
    """One avatar's live session; its latency figures."""
    t0 = time.perf_counter()
    live = LiveSyncer(avatar, syncer=syncer, blend=args.blend, max_delay=args.max_delay)
    prepare = time.perf_counter() - t0
    list(live.stream(iter([speech(1.0)])))  # warm-up: the generator's first call at each batch size is slow
    timer.calls.clear()
    chunk = round(args.chunk * SAMPLE_RATE)
    wav = speech(args.seconds)
    handed: list[float] = []
    load_before = os.getloadavg()[0]
    stamps, samples, held = [], [], []
    for frame in live.stream(realtime(wav, chunk, handed, args.pause_every, args.pause)):
        if frame.sample is not None:
            stamps.append(time.perf_counter())
            samples.append(frame.sample)
            held.append(frame.held)
    load_after = os.getloadavg()[0]
    resumed = [i for i, when in enumerate(handed) if when < 0]
    handed = [abs(when) for when in handed]
    latency = np.array([stamp - handed[sample // chunk] for stamp, sample in zip(stamps, samples)]) * 1000
    after = [k for k, sample in enumerate(samples)
             if any(0 <= sample // chunk - r < round(1.0 / args.chunk) for r in resumed)]
    gen = np.array([seconds / n for n, seconds in timer.calls]) * 1000
    return {
        "avatar": f"{avatar.name} {live.width}x{live.height}",
        "prepare (s)": f"{prepare:.1f}",
        "speech frames": f"{len(samples)}",
        "held frames": f"{sum(held)}",
        "latency p50 (ms)": f"{np.percentile(latency, 50):.0f}",
        "latency p95 (ms)": f"{np.percentile(latency, 95):.0f}",
        "latency max (ms)": f"{latency.max():.0f}",
        "p95 1 s after a pause": f"{np.percentile(latency[after], 95):.0f}" if after else "-",
        "generator ms/frame p50": f"{np.percentile(gen, 50):.1f}" if gen.size else "-",
        "load avg before/after": f"{load_before:.2f}/{load_after:.2f}",
    }


def avatars(given: list[Path] | None, work: Path) -> list[Path]:
    if given:
        return given
    loop = work / "avatar720.mp4"
    if not loop.exists():
        make_avatar(loop)
    media = sorted(p for p in (SHARED / "media").iterdir() if p.suffix.lower() in AVATAR_SUFFIXES)
    return [loop, *media]


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of speech per avatar")
    parser.add_argument("--chunk", type=float, default=0.02, help="seconds per audio chunk")
    parser.add_argument("--avatar", type=Path, nargs="+", help="avatar videos or images (default: the 720p "
                        "loop made here and every video and photo in ../shared/media)")
    parser.add_argument("--checkpoint", type=Path, help="generator (default: the full-size one, deterministic "
                        "weights); a student's recorded mel window sets the floor")
    parser.add_argument("--pause-every", type=float, default=6.0, help="seconds of audio between pauses (0: none)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds the source sends nothing in a pause")
    parser.add_argument("--max-delay", type=float, default=MAX_DELAY, help="LiveSyncer's max_delay (0: never hold)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--blend", default="paste")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wav2lip_bench_live")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[str, list[dict[str, float | str]]]:
    """Every avatar's figures, and a line saying what ran."""
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or args.work / "deterministic_full.pth"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip()))
    syncer = LipSyncer(checkpoint, precision=args.precision,
                       detector_weights=SHARED / "models" / "retinaface_mobilenet0.25.pth")
    timer = Timer(syncer.generator)
    floor = lead_samples(syncer.mel_offset) / SAMPLE_RATE
    what = (f"generator {checkpoint.name}, {syncer.precision}, {torch.get_num_threads()} torch threads, blend "
            f"{args.blend}, max_delay {args.max_delay:g} s; {args.seconds:g} s of real speech per avatar in "
            f"{1000 * args.chunk:g} ms chunks, fed in real time, a {args.pause:g} s pause every {args.pause_every:g} s; "
            f"floor {1000 * floor:.1f} ms (mel offset {syncer.mel_offset})")
    print(what, flush=True)
    results = []
    for avatar in avatars(args.avatar, args.work):
        results.append(run(avatar, syncer, timer, args))
        print(f"  {results[-1]['avatar']}: p95 {results[-1]['latency p95 (ms)']} ms", flush=True)
    return what, results


def table(results: list[dict[str, float | str]]) -> str:
    width = max(len(r["avatar"]) for r in results) + 2
    lines = [f"{'':<24}" + "".join(f"{r['avatar']:>{width}}" for r in results)]
    for name in list(results[0])[1:]:
        lines.append(f"{name:<24}" + "".join(f"{r[name]:>{width}}" for r in results))
    return "\n".join(lines)


def main() -> None:
    _, results = measure(options())
    print()
    print(table(results), flush=True)


if __name__ == "__main__":
    main()
