"""Mouth motion in pauses with and without silence gating, with a generator trained on synthetic faces.

Each case dubs a synthetic face video (wav2lip.synth, the face talking to other words) with two other
clips' speech around a 1-1.6 s pause, whose true mouth opening is known, mixed with a background (none, white noise or
synthetic music, 10 dB under the speech) that also fills the pauses. The full pipeline runs with a
fixed box on 96 x 96 frames (the face crop), once per --silence mode, and the mouth opening of every
output frame is measured from its pixels (synth.mouth_opening). Reported per mode:
- motion: mean |change of opening| between consecutive frames inside true pauses (truth silent over
  the frame's 0.2 s audio window), in % of the crop height: what a viewer sees as a mouth that moves;
- open: mean opening there;
- r speech: Pearson r of measured vs true opening on frames with speech (sync of the speech parts).

    python benchmarks/bench_silence.py --checkpoint GEN.pth [--clips 6] [--seconds 6]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from wav2lip import LipSyncer, synth
from wav2lip.pipeline import SILENCE
from wav2lip.video_io import VideoWriter

SIZE = 96


def background(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        return rng.normal(0, 1, n).astype(np.float32)
    t = np.arange(n) / synth.SAMPLE_RATE
    out = np.zeros(n)
    for k, start in enumerate(range(0, n, synth.SAMPLE_RATE // 2)):
        tt = t[start:] - t[start]
        for f in (196 * 1.26 ** (k % 4), 294.0, 392.0):
            out[start:] += sum(np.sin(2 * np.pi * f * h * tt) / h ** 1.5 for h in (1, 2, 3)) * np.exp(-tt / 0.5)
    return out.astype(np.float32)


def true_pauses(opening: np.ndarray, fps: float = synth.FPS) -> np.ndarray:
    """Frames whose audio window (the frame and the next 0.2 s) has no speech at all."""
    ahead = int(round(0.2 * fps))
    silent = opening <= 1e-4
    return np.array([silent[i:i + ahead + 1].all() for i in range(opening.size)])


def run_case(syncer: LipSyncer, seed: int, seconds: float, kind: str, folder: Path) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    # Two stretches of speech with a pause of 1-1.6 s between them (synthetic speech's own pauses are
    # shorter than the MIN_SILENCE a frame's window needs); the true opening is 0 in the pause.
    first, second = (synth.make_clip(1000 + 2 * seed + k, seconds=seconds / 2) for k in (0, 1))
    gap = int(rng.uniform(1.0, 1.6) * synth.FPS)
    clean = np.concatenate([first.wav, rng.normal(0, 0.002, gap * synth.SAMPLE_RATE // synth.FPS), second.wav])
    opening = np.concatenate([first.opening, np.zeros(gap, np.float32), second.opening])
    face = synth.make_clip(2000 + seed, seconds=opening.size / synth.FPS)  # the video: talking to other words
    wav = clean.astype(np.float32)
    if kind != "clean":
        noise = background(kind, wav.size, rng)
        wav = wav + noise * np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10)
    audio = folder / f"dub{seed}_{kind}.wav"
    synth.write_wav(audio, np.clip(wav, -1, 1))
    video = folder / f"face{seed}.mkv"
    if not video.exists():
        with VideoWriter(video, synth.FPS, SIZE, SIZE, lossless=True) as writer:
            writer.write_many(face.frames(SIZE))
    pauses = true_pauses(opening)
    out = {}
    for mode in SILENCE:
        frames = list(syncer.frames(video, audio, box=(0, SIZE, 0, SIZE), silence=mode, cache=False))
        measured = np.array([synth.mouth_opening(f) for f in frames])[:opening.size]
        steps = np.abs(np.diff(measured))[pauses[1:] & pauses[:-1]]
        speech = ~pauses
        r = float(np.corrcoef(measured[speech], opening[speech])[0, 1])
        out[mode] = (steps, measured[pauses], r)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="generator trained on synthetic faces")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    syncer = LipSyncer(args.checkpoint, device="cpu", precision="fp32")
    start = time.perf_counter()
    print(f"generator {args.checkpoint}; {args.clips} clips of {args.seconds:g} s per background")
    print(f"{'background':<12}{'silence':<10}{'motion %':>10}{'open %':>9}{'r speech':>10}{'pause frames':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("clean", "white", "music"):
            results = [run_case(syncer, seed, args.seconds, kind, Path(tmp)) for seed in range(args.clips)]
            for mode in SILENCE:
                steps = np.concatenate([r[mode][0] for r in results])
                opened = np.concatenate([r[mode][1] for r in results])
                r = np.mean([r[mode][2] for r in results])
                print(f"{kind:<12}{mode:<10}{100 * steps.mean():>10.2f}{100 * opened.mean():>9.2f}{r:>10.3f}"
                      f"{opened.size:>14}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
