"""Sync correction and expert scoring on synthetic clips with planted offsets, and evaluation throughput.

1. `--expert PATH`: prepared clips (unseen faces and audio) whose lips lag the audio by -6..6 frames go
   through `syncfix.sync_fix` with that expert: the planted offset, the one found, its confidence and the
   offset of the corrected clip are printed per clip.
2. The same expert scores face-crop videos (H.264 + AAC) of one talker shifted by k = -6..6 through
   `evaluate_sync(model="expert:PATH")`: the offsets must differ by k.
3. Throughput of `evaluate` in frames/s on the shared clips: whole mode with SyncNet v2 (deterministic
   weights: none are published here, the arithmetic is the same), track mode, and whole mode with the expert.

    python benchmarks/bench_sync.py --expert ckpt.pth --out /tmp/bench_sync [--media ../shared/media]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip.evaluation import sync as ev
from wav2lip.data import synth
from wav2lip.data import syncfix
from support.deterministic import fill_deterministic
from wav2lip.models.syncnet_v2 import SyncNetV2
from wav2lip.io.video import VideoWriter


SHIFTS = (-6, -4, -2, 0, 2, 4, 6)


def prepared_clips(root: Path, seconds: float) -> dict[str, int]:
    names = {}
    for k, shift in enumerate(SHIFTS):
        name = f"spk{k:03d}/00000"
        folder = root / name
        if not (folder / "audio.wav").exists():
            clip = synth.make_clip(500_000 + k, seconds, shift=shift)
            folder.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(clip.frames()):
                cv2.imwrite(str(folder / f"{i}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            synth.write_wav(folder / "audio.wav", clip.wav)
        names[name] = shift
    (root / "train.txt").write_text("".join(f"{n}\n" for n in names))
    for stale in ("train.all.txt", "sync_fix.json"):
        (root / stale).unlink(missing_ok=True)
    return names


def shifted_video(path: Path, seed: int, shift: int, seconds: float) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        clip = synth.make_clip(seed, seconds, shift=shift)
        wav = path.with_suffix(".wav")
        synth.write_wav(wav, clip.wav)
        with VideoWriter(path, 25, 96, 96, audio=wav, crf=12) as writer:
            writer.write_many(clip.frames(96))
        wav.unlink()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expert", required=True, help="lip-sync expert checkpoint")
    parser.add_argument("--out", default="/tmp/bench_sync")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--media", default=str(Path(__file__).resolve().parents[2] / "shared" / "media"))
    parser.add_argument("--detector-weights", default=None)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: fix,evaluate,speed")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = f"expert:{args.expert}"
    skip = set(args.skip.split(","))

    if "fix" not in skip:
        for folder in (out / "prep").glob("spk*/*"):  # start from the planted audio every time
            if (folder / "audio.orig.wav").exists():
                (folder / "audio.orig.wav").replace(folder / "audio.wav")
                (folder / "mel.npy").unlink(missing_ok=True)
        names = prepared_clips(out / "prep", args.seconds)
        started = time.perf_counter()
        records = syncfix.sync_fix(out / "prep", model, min_confidence=0.0)
        seconds = time.perf_counter() - started
        print(f"\nsync correction ({len(records)} clips, {seconds:.1f} s, rescoring included)")
        print(f"{'clip':14} {'planted':>7} {'found':>5} {'confidence':>10} {'shifted':>7} {'after':>5}")
        for r in records:
            print(f"{r.name:14} {names[r.name]:+7d} {r.offset:+5d} {r.confidence:10.3f} {str(r.shifted):>7} "
                  f"{'' if r.offset_after is None else f'{r.offset_after:+d}':>5}")

    if "evaluate" not in skip:
        print(f"\nevaluate --model expert:PATH on one talker shifted by k ({args.seconds:g} s, 96 px face crops)")
        print(f"{'k':>3} {'offset':>6} {'offset - offset(0)':>18} {'LSE-D':>6} {'LSE-C':>6}")
        scores = {k: ev.evaluate_sync(shifted_video(out / "videos" / f"k{k:+d}.mp4", 4242, k, args.seconds),
                                      model=model) for k in (0, *range(-6, 0), *range(1, 7))}
        for k in range(-6, 7):
            s = scores[k]
            print(f"{k:+3d} {s.offset:+6d} {s.offset - scores[0].offset:+18d} {s.lse_d:6.3f} {s.lse_c:6.3f}", flush=True)

    if "speed" not in skip:
        v2 = fill_deterministic(SyncNetV2())
        detector = ev.faces.create_detector("retinaface", weights=args.detector_weights)
        print(f"\nevaluate throughput (frames/s), torch threads {torch.get_num_threads()}")
        print(f"{'video':14} {'frames':>6} {'v2 whole':>9} {'v2 track':>9} {'expert whole':>12}")
        for video in sorted(Path(args.media).glob("*.mp4")):
            row = []
            for kwargs in (dict(model=v2), dict(model=v2, mode="track", detector=detector, min_track=25),
                           dict(model=model)):
                started = time.perf_counter()
                score = ev.evaluate_sync(video, **kwargs)
                row.append(score.n_frames / (time.perf_counter() - started))
            print(f"{video.name:14} {score.n_frames:6d} {row[0]:9.1f} {row[1]:9.1f} {row[2]:12.1f}")


if __name__ == "__main__":
    main()
