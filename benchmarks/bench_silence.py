"""Mouth motion in pauses per --silence mode, with a generator trained on synthetic faces.

Each case dubs a synthetic face video (wav2lip.data.synth, the face talking to other words) with two other
clips' speech around a 1-1.6 s pause, whose true mouth opening is known, mixed with a background (none,
white noise or synthetic music, at a given SNR under the speech) that also fills the pause. The full
pipeline runs with a fixed box on 96 x 96 frames (the face crop), once per --silence mode, and the mouth
opening of every output frame is measured from its pixels (synth.mouth_opening). Reported per mode:
- motion: mean |change of opening| between consecutive frames inside true pauses (truth silent over
  the frame's 0.2 s audio window), in % of the crop height: what a viewer sees as a mouth that moves;
- open: mean opening there;
- upper err: mean |output - source| of the crop's upper half (eyes, nose: what the generator should
  copy) in pauses, in 8-bit levels: a mouth held still by freezing the face shows up here;
- r speech: Pearson r of measured vs true opening on frames with speech (sync of the speech parts).

    python benchmarks/bench_silence.py --checkpoint GEN.pth [--clips 6] [--seconds 6]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from wav2lip import LipSyncer

from wav2lip.data import synth
from wav2lip.lipsync.options import SILENCE_MODES as SILENCE
from wav2lip.io.video import VideoWriter

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


def run_case(syncer: LipSyncer, seed: int, seconds: float, kind: str, snr: float, folder: Path) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    # Two stretches of speech with a pause of 1-1.6 s between them (synthetic speech's own pauses are
    # shorter than the detector's hangover); the true opening is 0 in the pause.
    first, second = (synth.make_clip(1000 + 2 * seed + k, seconds=seconds / 2) for k in (0, 1))
    gap = int(rng.uniform(1.0, 1.6) * synth.FPS)
    clean = np.concatenate([first.wav, rng.normal(0, 0.002, gap * synth.SAMPLE_RATE // synth.FPS), second.wav])
    opening = np.concatenate([first.opening, np.zeros(gap, np.float32), second.opening])
    face = synth.make_clip(2000 + seed, seconds=opening.size / synth.FPS)  # the video: talking to other words
    wav = clean.astype(np.float32)
    if kind != "clean":
        noise = background(kind, wav.size, rng)
        wav = wav + noise * np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (snr / 10))
    audio = folder / f"dub{seed}_{kind}{snr:g}.wav"
    synth.write_wav(audio, np.clip(wav, -1, 1))
    video = folder / f"face{seed}.mkv"
    source = np.stack(list(face.frames(SIZE)))
    if not video.exists():
        with VideoWriter(video, synth.FPS, SIZE, SIZE, lossless=True) as writer:
            writer.write_many(source)
    pauses = true_pauses(opening)
    upper = slice(0, SIZE // 2)
    out = {}
    for mode in SILENCE:
        frames = np.stack(list(syncer.frames(video, audio, box=(0, SIZE, 0, SIZE), silence=mode, cache=False)))
        n = min(len(frames), opening.size)
        frames, truth, still = frames[:n], opening[:n], pauses[:n]
        measured = np.array([synth.mouth_opening(f) for f in frames])
        steps = np.abs(np.diff(measured))[still[1:] & still[:-1]]
        err = np.abs(frames[still][:, upper].astype(np.int16) - source[:n][still][:, upper]).mean(axis=(1, 2, 3))
        r = float(np.corrcoef(measured[~still], truth[~still])[0, 1])
        out[mode] = (steps, measured[still], err, r)
    return out


BACKGROUNDS = (("clean", 0.0), ("white", 10.0), ("white", 0.0), ("music", 10.0), ("music", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="generator trained on synthetic faces")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    syncer = LipSyncer(args.checkpoint, device="cpu", precision="fp32")
    start = time.perf_counter()
    print(f"generator {args.checkpoint}; {args.clips} clips of {args.seconds:g} s per background")
    print(f"{'background':<14}{'silence':<10}{'motion %':>10}{'open %':>9}{'upper err':>11}{'r speech':>10}"
          f"{'pause frames':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, snr in BACKGROUNDS:
            label = kind if kind == "clean" else f"{kind} {snr:g} dB"
            results = [run_case(syncer, seed, args.seconds, kind, snr, Path(tmp)) for seed in range(args.clips)]
            for mode in SILENCE:
                steps, opened, err = (np.concatenate([r[mode][k] for r in results]) for k in range(3))
                r = np.mean([r[mode][3] for r in results])
                print(f"{label:<14}{mode:<10}{100 * steps.mean():>10.2f}{100 * opened.mean():>9.2f}{err.mean():>11.2f}"
                      f"{r:>10.3f}{opened.size:>14}", flush=True)
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
