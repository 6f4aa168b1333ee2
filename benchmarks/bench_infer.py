"""Frames/s and peak memory of `wav2lip infer` for 10 s, 60 s and 600 s inputs (issue 4).

Each input is a shared clip looped (and scaled to --lines) to the length, with speech looped to the
same length; every run happens in a fresh process whose peak RSS (VmHWM) is read at its end. Streaming
means the 600 s run must peak within 1.3x of the 10 s run. Generator: deterministic weights (no
pretrained ones here), same cost as the real ones; face detection: the real RetinaFace weights.

    python benchmarks/bench_infer.py                  # 10, 60, 600 s at 720 lines
    python benchmarks/bench_infer.py --lengths 10 60 --lines 1080
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_frame(image: np.ndarray, lines: int) -> np.ndarray:
    """Scale to `lines` rows and centre on a 16:9 canvas (a landscape talking-head video)."""
    h, w = image.shape[:2]
    width = lines * 16 // 9 // 2 * 2
    scaled = cv2.resize(image, (round(w * lines / h), lines), interpolation=cv2.INTER_AREA)
    canvas = np.full((lines, width, 3), 40, np.uint8)
    x = (width - scaled.shape[1]) // 2
    canvas[:, x:x + scaled.shape[1]] = scaled[:, : width - x]
    return canvas


def make_inputs(folder: Path, seconds: float, clip: Path, speech: Path, lines: int) -> tuple[Path, Path]:
    from wav2lip.video_io import VideoWriter, open_source

    video = folder / f"face_{seconds:g}s_{lines}p.mp4"
    audio = folder / f"speech_{seconds:g}s.wav"
    if not video.exists():
        source = open_source(clip, loop="repeat")
        n = round(seconds * source.fps)
        first = fit_frame(next(iter(source.frames(1))), lines)
        with VideoWriter(video, source.fps, first.shape[1], first.shape[0]) as writer:
            for frame in source.frames(n):
                writer.write(fit_frame(frame, lines))
    if not audio.exists():
        with wave.open(str(speech)) as w:
            params, data = w.getparams(), w.readframes(w.getnframes())
        samples = np.frombuffer(data, np.int16).reshape(-1, params.nchannels)
        total = round(seconds * params.framerate)
        looped = np.resize(samples, (total, params.nchannels))
        with wave.open(str(audio), "wb") as w:
            w.setparams(params)
            w.writeframes(looped.tobytes())
    return video, audio


def child(args: argparse.Namespace) -> None:
    """One run in this fresh process; prints a JSON line."""
    import torch

    from wav2lip import LipSyncer
    from wav2lip.checkpoints import save_checkpoint
    from wav2lip.models.deterministic import fill_deterministic
    from wav2lip.models.generator import Wav2Lip

    checkpoint = Path(args.out).with_suffix(".pth")
    save_checkpoint(checkpoint, fill_deterministic(Wav2Lip(width=args.width)))
    torch.set_num_threads(torch.get_num_threads())
    syncer = LipSyncer(checkpoint, device="cpu", precision=args.precision,
                       detector_weights=SHARED / "models" / "retinaface_mobilenet0.25.pth")
    options = {"cache": False}
    if args.fixed_box:
        from wav2lip.video_io import open_source

        first = next(iter(open_source(args.face).frames(1)))
        x1, y1, x2, y2 = syncer.detector.detect([first])[0][0].box.astype(int)
        options["box"] = (max(0, y1), min(first.shape[0], y2 + 10), max(0, x1), min(first.shape[1], x2))
    start = time.perf_counter()
    result = syncer.run(args.face, args.audio, args.out, **options)
    seconds = time.perf_counter() - start
    print(json.dumps({"frames": result.frames, "seconds": seconds, "fps": result.frames / seconds,
                      "missed": result.faces_missed, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 600], help="seconds")
    parser.add_argument("--lines", type=int, default=720, help="video height (16:9 canvas)")
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "vr_face2.mp4")
    parser.add_argument("--speech", type=Path, default=SHARED / "media" / "vr_audio1.wav")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--width", type=float, default=1.0, help="generator width (1.0 = the real network)")
    parser.add_argument("--fixed-box", action="store_true",
                        help="detect the face once and pass it as --box (measures the chain without detection)")
    parser.add_argument("--workdir", type=Path, help="keep inputs here between runs (default: a temp folder)")
    parser.add_argument("--child", nargs=3, metavar=("FACE", "AUDIO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.face, args.audio, args.out = args.child
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for seconds in args.lengths:
            face, audio = make_inputs(folder, seconds, args.clip, args.speech, args.lines)
            out = folder / f"out_{seconds:g}s.mp4"
            cmd = [sys.executable, __file__, "--child", str(face), str(audio), str(out),
                   "--precision", args.precision, "--width", str(args.width)] + (["--fixed-box"] * args.fixed_box)
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append((seconds, json.loads(line)))
            out.unlink(missing_ok=True)
            out.with_suffix(".pth").unlink(missing_ok=True)
            print(f"  {seconds:g} s done: {rows[-1][1]}", file=sys.stderr)
    print(f"\nwav2lip infer, {args.lines} lines 16:9, {args.clip.name} looped, precision {args.precision}, "
          f"generator width {args.width:g}, " + ("fixed box" if args.fixed_box else "RetinaFace detection + tracking"))
    print(f"{'input':>8} {'frames':>7} {'time s':>8} {'frames/s':>9} {'peak RSS MB':>12} {'vs 10 s':>8}")
    base = rows[0][1]["peak_rss_mb"]
    for seconds, r in rows:
        print(f"{seconds:>7g}s {r['frames']:>7} {r['seconds']:>8.1f} {r['fps']:>9.1f} {r['peak_rss_mb']:>12.0f} "
              f"{r['peak_rss_mb'] / base:>7.2f}x")


if __name__ == "__main__":
    main()
