"""Issue 26's speed table in one run: every row measured the way the issue states it, beside its target.

Rows (defaults, wall time of the real command including start-up, RetinaFace with its real weights, the
full-size generator with deterministic weights: the real network's cost):
- `infer` at 720p for 10 s and 20 s, a 1/4-width student for 20 s, 1080p for 10 s (bench_infer.py's
  inputs and command; frames/s = frames over the command's wall time);
- `wav2lip --help` (bench_startup.py, median of 5 fresh processes);
- live on every avatar (bench_live.py: real speech in 20 ms chunks in real time, with pauses): the worst
  avatar's p95, and its p95 in the first second after a pause; then the same with a low-look-ahead
  student (a 1/4-width generator whose window starts 13 mel steps early: deterministic weights, so
  latency only; its quality comes from `wav2lip distill --mel-offset -13`);
- `wav2lip distill --steps 2` on 4 tiny synthetic clips;
- `bench_train.py --minutes 60` only with --train (an hour): the generators' eval sync loss.
The authors' code has no row of its own here (it is not part of this project); `--authors DIR`, a checkout
of it, adds its `inference.py` with a fixed box for the 720p rows (it needs librosa and its own deps).

    python benchmarks/bench_speed.py [--quick] [--train] [--authors ~/Wav2Lip] [--json speed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # support.deterministic: test weights
import bench_infer  # noqa: E402
import bench_live  # noqa: E402
import bench_startup  # noqa: E402

RETINAFACE = bench_infer.SHARED / "models" / "retinaface_mobilenet0.25.pth"


def generator(path: Path, width: float, mel_offset: int = 0) -> Path:
    """A generator file with deterministic weights (the cost of trained ones)."""
    from support.deterministic import fill_deterministic
    from wav2lip.checkpoints import save_checkpoint
    from wav2lip.models.generator import Wav2Lip

    if not path.exists():
        save_checkpoint(path, fill_deterministic(Wav2Lip(width=width, mel_offset=mel_offset)))
    return path


def infer_fps(work: Path, checkpoint: Path, seconds: float, lines: int) -> float:
    """Frames over the wall time of `wav2lip infer` with default options (start-up included)."""
    face, audio = bench_infer.make_inputs(work, seconds, bench_infer.SHARED / "media" / "vr_face2.mp4",
                                          bench_infer.SHARED / "media" / "vr_audio1.wav", lines)
    out = work / "out.mp4"
    out.unlink(missing_ok=True)
    result = bench_infer.run_command([sys.executable, "-m", "wav2lip", "infer", "--face", str(face), "--audio",
                                      str(audio), "-o", str(out), "--checkpoint", str(checkpoint), "--no-cache",
                                      "--quiet", "--detector-weights", str(RETINAFACE)])
    frames = int(re.search(r"^(\d+) frames ", result["stderr"], re.M)[1])
    out.unlink(missing_ok=True)
    return frames / result["wall_s"]


def authors_fps(authors: Path, work: Path, checkpoint: Path, seconds: float, lines: int) -> float:
    """Frames over the wall time of the authors' inference.py on the same inputs, with the face box given."""
    face, audio = bench_infer.make_inputs(work, seconds, bench_infer.SHARED / "media" / "vr_face2.mp4",
                                          bench_infer.SHARED / "media" / "vr_audio1.wav", lines)
    out = work / "authors.mp4"
    box = bench_infer.fixed_box(face)[1:]  # ["--box", top, bottom, left, right] -> the four numbers
    started = time.perf_counter()
    subprocess.run([sys.executable, "inference.py", "--checkpoint_path", str(checkpoint), "--face", str(face),
                    "--audio", str(audio), "--outfile", str(out), "--box", *box], cwd=authors, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    from wav2lip.io.video import probe

    return probe(out).frames / wall


def live_worst(checkpoint: Path | None, seconds: float, work: Path) -> tuple[str, str, str]:
    """(worst p95 over the avatars, worst p95 in a second after a pause, the avatars' p95s)."""
    argv = ["--seconds", f"{seconds:g}", "--work", str(work / "live")]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    _, results = bench_live.measure(bench_live.options(argv))
    p95 = [float(r["latency p95 (ms)"]) for r in results]
    after = [float(r["p95 1 s after a pause"]) for r in results if r["p95 1 s after a pause"] != "-"]
    each = ", ".join(f"{r['avatar'].split()[0]} {r['latency p95 (ms)']}" for r in results)
    return f"{max(p95):.0f} ms", f"{max(after):.0f} ms" if after else "-", each


def distill_seconds(work: Path) -> float:
    """Wall time of `wav2lip distill --steps 2` on 4 tiny synthetic clips (evaluation included)."""
    from wav2lip.data import synth

    data = work / "distill_data"
    if not data.exists():
        synth.write_dataset(data, 4, seed=5, seconds=2.0)
    teacher = generator(work / "teacher_w0.125.pth", 0.125)
    out = work / "student.pth"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wav2lip", "distill", "--teacher", str(teacher), "--data-root", str(data),
                    "--out", str(out), "--steps", "2", "--width", "0.0625", "--checkpoint-dir",
                    str(work / f"distill_{time.time_ns()}"), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def train_sync(work: Path) -> str:
    """bench_train.py --minutes 60: the eval sync loss of the generator trained by the recipe."""
    results = work / "train.json"
    subprocess.run([sys.executable, str(HERE / "bench_train.py"), "--minutes", "60", "--json", str(results),
                    "--out", str(work / "bench_train")], check=True)
    rows = json.loads(results.read_text())["rows"]
    return f"{rows['expert']['eval_sync_loss']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="live rows on 8 s of speech instead of 30 s")
    parser.add_argument("--train", action="store_true", help="also run bench_train.py --minutes 60 (an hour)")
    parser.add_argument("--authors", type=Path, help="a checkout of the authors' Wav2Lip, for their column")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wav2lip_bench_speed")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    full = generator(work / "full.pth", 1.0)
    student = generator(work / "student_w0.25.pth", 0.25)
    live_student = generator(work / "live_student_w0.25_m-13.pth", 0.25, mel_offset=-13)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    rows: list[tuple[str, str, str, str]] = []  # case, measured, authors' code, target

    def add(case: str, value: str, target: str, authors: str = "-") -> None:
        rows.append((case, value, authors, target))
        print(f"  {case}: {value}", flush=True)

    for lines, seconds, checkpoint, label, target in (
            (720, 10, full, "infer, 720p, 10 s", ">= 30 fps"), (720, 20, full, "infer, 720p, 20 s", ">= 35 fps"),
            (720, 20, student, "infer, 720p, 20 s, 1/4-width student", ">= 80 fps"),
            (1080, 10, full, "infer, 1080p, 10 s", ">= 25 fps")):
        authors = "-"
        if args.authors and checkpoint is full and lines == 720:
            authors = f"{authors_fps(args.authors, work, full, seconds, lines):.1f} fps"
        add(label, f"{infer_fps(work, checkpoint, seconds, lines):.1f} fps", target, authors)
    times = bench_startup.wall_times(["--help"], 5)
    add("wav2lip --help", f"{statistics.median(times):.3f} s", "<= 0.3 s")
    seconds = 8.0 if args.quick else 30.0
    worst, after, each = live_worst(None, seconds, work)
    add(f"live, every avatar, worst p95 ({each})", worst, "<= 250 ms")
    add("live, worst p95 in the second after a pause", after, "<= 250 ms")
    worst, after, each = live_worst(live_student, seconds, work)
    add(f"live, low-look-ahead student, worst p95 ({each})", worst, "<= 150 ms")
    add("live, low-look-ahead student, after a pause", after, "<= 150 ms")
    add("distill --steps 2, 4 tiny clips", f"{distill_seconds(work):.1f} s", "seconds")
    if args.train:
        add("bench_train.py --minutes 60", train_sync(work), "generator sync <= 0.2")
    else:
        add("bench_train.py --minutes 60", "not run (--train)", "generator sync <= 0.2")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (2 cores: anything near 2 or above means "
          f"something else ran)")
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'case':<{width}}{'measured':>14}{'authors code':>15}{'target':>24}")
    for case, value, authors, target in rows:
        print(f"{case:<{width}}{value:>14}{authors:>15}{target:>24}")
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("case", "measured", "authors", "target"), r)) for r in rows],
                                        indent=1))


if __name__ == "__main__":
    main()
