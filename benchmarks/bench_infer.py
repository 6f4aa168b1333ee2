"""Frames/s, wall time and peak memory of the `wav2lip infer` command for 10 s, 60 s and 600 s inputs.

What a user measures with `/usr/bin/time`: each input is a shared clip looped (and scaled to --lines) to the
length, with speech looped to the same length, and each run is the real command in a fresh process
(`python -m wav2lip infer ...`, default options, no detection cache). The parent reads the child's peak
RSS from the kernel (wait4, as /usr/bin/time does) and times the whole command, start-up and model loading
included; the steady rate is the one the command's own summary line prints (frames over the run itself).
Streaming means the 600 s run must peak within 1.3x of the 10 s run. Generator: deterministic weights
(no pretrained ones here), same cost as the real ones (or a narrower student with --width); face
detection: the real RetinaFace weights.

    python benchmarks/bench_infer.py                  # 10, 60, 600 s at 720 lines
    python benchmarks/bench_infer.py --lengths 10 60 --lines 1080
    python benchmarks/bench_infer.py --checkpoint student.pth --lengths 10 60
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import cv2
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


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
    from wav2lip.io.video import VideoWriter, open_source

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


def run_command(cmd: list[str]) -> dict:
    """Run one command; its wall time, peak RSS (MB, from wait4 like /usr/bin/time) and stderr."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({process.returncode}):\n{stderr}")
    return {"wall_s": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "stderr": stderr}


def fixed_box(face: Path) -> list[str]:
    """--box for the face in the first frame (top bottom left right), found once by RetinaFace."""
    from wav2lip.faces import create_detector
    from wav2lip.io.video import open_source

    first = next(iter(open_source(face).frames(1)))
    detector = create_detector("retinaface", weights=SHARED / "models" / "retinaface_mobilenet0.25.pth")
    x1, y1, x2, y2 = detector.detect([first])[0][0].box.astype(int)
    return ["--box", str(max(0, y1)), str(min(first.shape[0], y2 + 10)), str(max(0, x1)), str(min(first.shape[1], x2))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 600], help="seconds")
    parser.add_argument("--lines", type=int, default=720, help="video height (16:9 canvas)")
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "vr_face2.mp4")
    parser.add_argument("--speech", type=Path, default=SHARED / "media" / "vr_audio1.wav")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--width", type=float, default=1.0, help="generator width (1.0 = the real network)")
    parser.add_argument("--checkpoint", type=Path, help="generator weights to run (default: deterministic, --width)")
    parser.add_argument("--fixed-box", action="store_true",
                        help="detect the face once and pass it as --box (measures the chain without detection)")
    parser.add_argument("--workdir", type=Path, help="keep inputs here between runs (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from wav2lip.checkpoints import save_checkpoint
            from support.deterministic import fill_deterministic
            from wav2lip.models.generator import Wav2Lip

            checkpoint = folder / f"generator_w{args.width:g}.pth"
            save_checkpoint(checkpoint, fill_deterministic(Wav2Lip(width=args.width)))
        rows = []
        for seconds in args.lengths:
            face, audio = make_inputs(folder, seconds, args.clip, args.speech, args.lines)
            out = folder / f"out_{seconds:g}s.mp4"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "wav2lip", "infer", "--face", str(face), "--audio", str(audio), "-o", str(out),
                   "--checkpoint", str(checkpoint), "--precision", args.precision, "--no-cache", "--quiet",
                   "--detector-weights", str(SHARED / "models" / "retinaface_mobilenet0.25.pth")]
            result = run_command(cmd + (fixed_box(face) if args.fixed_box else []))
            summary = re.search(r"^(\d+) frames .*, ([\d.]+) s, ([\d.]+) frames/s", result["stderr"], re.M)
            result.update(frames=int(summary[1]), run_s=float(summary[2]), steady_fps=float(summary[3]))
            rows.append((seconds, result))
            out.unlink(missing_ok=True)
            print(f"  {seconds:g} s done: {summary[0]}", file=sys.stderr)
    print(f"\nwav2lip infer, {args.lines} lines 16:9, {args.clip.name} looped, precision {args.precision}, "
          f"generator {args.checkpoint or f'width {args.width:g}'}, "
          + ("fixed box" if args.fixed_box else "RetinaFace detection + tracking"))
    print(f"{'input':>8} {'frames':>7} {'steady fps':>11} {'command s':>10} {'fps incl. start-up':>19} "
          f"{'peak RSS MB':>12} {'vs 10 s':>8}")
    base = rows[0][1]["peak_rss_mb"]
    for seconds, r in rows:
        print(f"{seconds:>7g}s {r['frames']:>7} {r['steady_fps']:>11.1f} {r['wall_s']:>10.1f} "
              f"{r['frames'] / r['wall_s']:>19.1f} {r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] / base:>7.2f}x")


if __name__ == "__main__":
    main()
