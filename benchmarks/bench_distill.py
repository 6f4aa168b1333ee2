"""Distilled students: how much faster the generator runs, and what distillation costs in quality.

speed: generator-only frames/s on this CPU, as the pipeline runs it (`inference_model` at the default
precision: BatchNorm folded, bf16 where the CPU has it natively, else fp32; the 720p batch of 46 frames),
for the full-size teacher (width 1.0, the authors' layout) and students at widths 1, 1/2, 1/4, 1/8 with
and without residual blocks. Weights are the deterministic fill: speed does not depend on their values.

quality: students distilled (`wav2lip.train.distill`, L1 to the teacher + the expert's sync loss) from a
generator trained on synthetic data, at fractions of ITS width, scored on held-out synthetic clips against
the teacher: lower-half PSNR to the teacher's faces, mouth-opening correlation with the truth
(synth.mouth_opening), and the expert's sync loss. The teacher, expert, data and held-out clips come from
benchmarks/bench_train.py's run (its generators are width 0.125; a wider teacher is trained on the same
data with `wav2lip train --width 0.5 --precision bf16`, the README gives the commands). The speed
acceptance (a 1/4-width student >= 4x the teacher) is about the full-size layouts; the quality gap
about the synthetic teacher: two different teachers, stated in the table titles.

e2e: the real command, `python -m wav2lip infer --checkpoint X.pth --face 720p.mp4 --audio speech.wav
--outfile out.mp4 --profile` in a fresh process, for the full-size teacher and a full-size student layout
(deterministic weights): the wall time of the whole command (start-up, model load, detection, encoding)
and the steady rate the command reports (frames over the pipeline's own seconds).

    python benchmarks/bench_distill.py speed [--json speed.json]
    python benchmarks/bench_distill.py e2e [--width 0.25 --no-residual] [--seconds 20]
    python benchmarks/bench_distill.py quality --teacher GEN.pth --expert EXPERT.pth --data PREP \
        --test TEST_DIR --out /tmp/bench_distill [--steps 600] [--json quality.json]
    python benchmarks/bench_distill.py quality ... --students 1/1 --mel-offset -13 --judge JUDGE.pth
        # a low-look-ahead student for live at the teacher's width, against the teacher: sync loss, LSE-C
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import TestClip, _psnr, score, sync_losses  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip.data import synth  # noqa: E402
from wav2lip.checkpoints import load_model, save_checkpoint  # noqa: E402
from wav2lip.device import inference_model, resolve_precision  # noqa: E402
from support.deterministic import fill_deterministic  # noqa: E402
from wav2lip.models.generator import Wav2Lip  # noqa: E402
from wav2lip.lipsync.offline import MAX_BATCH_BYTES  # noqa: E402
from wav2lip.train import default_checkpoint_dir, distill, make_config  # noqa: E402
from wav2lip.data.layout import IMG_SIZE  # noqa: E402


FRAME_720P = 1280 * 720 * 3  # bytes of one decoded 720p frame
FRACTIONS = (1.0, 0.5, 0.25, 0.125)


def _layouts(base: float) -> list[tuple[str, float, bool]]:
    """(name, width, residual): the teacher, then each fraction of `base` with and without residual blocks."""
    rows = [("teacher", base, True)]
    for fraction in FRACTIONS:
        for residual in (True, False):
            if fraction == 1.0 and residual:
                continue  # that is the teacher
            rows.append((f"1/{round(1 / fraction)}{'' if residual else ' no-res'}", base * fraction, residual))
    return rows


@torch.inference_mode()
def generator_rate(model: torch.nn.Module, batch: int, seconds: float) -> float:
    """Frames/s of `model` on batches of `batch` random inputs: one warm-up batch, then `seconds` of batches."""
    mel = torch.randn(batch, 1, 80, 16)
    faces = torch.rand(batch, 6, IMG_SIZE, IMG_SIZE)
    model(mel, faces)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or frames < 2 * batch:
        model(mel, faces)
        frames += batch
    return frames / (time.perf_counter() - start)


def speed(args) -> dict:
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    batch = args.batch or MAX_BATCH_BYTES // FRAME_720P
    load = os.getloadavg()
    rows, models = {}, {}
    for name, width, residual in _layouts(1.0):
        network = fill_deterministic(Wav2Lip(width=width, residual=residual))
        models[name] = inference_model(network, precision, device)
        rows[name] = {"width": width, "residual": residual, "params": sum(p.numel() for p in network.parameters()),
                      "rounds": []}
    for _ in range(args.rounds):  # interleaved rounds, best kept: a busy neighbour slows some rounds, never speeds one
        for name, model in models.items():
            rows[name]["rounds"].append(generator_rate(model, batch, args.seconds))
            print(f"{name:>12}: {rows[name]['rounds'][-1]:8.1f} frames/s", flush=True)
    for row in rows.values():
        row["frames_per_s"] = max(row["rounds"])
    teacher = rows["teacher"]["frames_per_s"]
    print(f"\nGenerator only, full-size layouts (teacher = the authors' width 1.0), {precision}, batch {batch}, "
          f"{torch.get_num_threads()} threads, best of {args.rounds} rounds; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}\n")
    print("| layout | width | residual blocks | parameters | frames/s | x teacher |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['width']:g} | {'yes' if row['residual'] else 'no'} | {row['params'] / 1e6:.2f} M | "
              f"{row['frames_per_s']:.1f} | {row['frames_per_s'] / teacher:.2f} |")
    return {"precision": precision, "batch": batch, "threads": torch.get_num_threads(),
            "load_before": load, "load_after": os.getloadavg(), "rows": rows}


def end_to_end(args) -> dict:
    """Wall time of the whole `wav2lip infer` command and its own frames/s, teacher and chosen student."""
    from bench_infer import SHARED, make_inputs

    load = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        face, audio = make_inputs(folder, args.seconds, SHARED / "media" / "vr_face2.mp4",
                                  SHARED / "media" / "vr_audio1.wav", 720)
        student = f"student {args.width:g}{'' if args.residual else ' no-res'}"
        for name, width, residual in (("teacher 1", 1.0, True), (student, args.width, args.residual)):
            checkpoint = folder / f"{name.replace(' ', '_')}.pth"
            save_checkpoint(checkpoint, fill_deterministic(Wav2Lip(width=width, residual=residual)))
            out = folder / "out.mp4"
            cmd = [sys.executable, "-m", "wav2lip", "infer", "--checkpoint", str(checkpoint), "--face", str(face),
                   "--audio", str(audio), "--outfile", str(out), "--profile",
                   "--detector-weights", str(SHARED / "models" / "retinaface_mobilenet0.25.pth")]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{name}: wav2lip infer failed: {done.stderr.strip()[-500:]}")
            frames = int(re.search(r"(\d+) frames \(", done.stderr).group(1))
            steady = float(re.search(r"([\d.]+) frames/s", done.stderr).group(1))
            rows[name] = {"width": width, "residual": residual, "frames": frames, "wall_s": wall,
                          "frames_per_s_wall": frames / wall, "frames_per_s_steady": steady,
                          "profile": done.stderr.strip().splitlines()[-9:]}
            print(f"{name}: {frames} frames, {wall:.1f} s wall, {frames / wall:.1f} frames/s with start-up, "
                  f"{steady:.1f} steady", flush=True)
    print(f"\nwav2lip infer end to end, {args.seconds:g} s of 720p (vr_face2 looped), default settings "
          f"(RetinaFace + tracking, auto precision); load average before {load[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}\n")
    print("| generator | frames | wall time of the command | frames/s, start-up included | steady frames/s |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['frames']} | {row['wall_s']:.1f} s | {row['frames_per_s_wall']:.1f} | "
              f"{row['frames_per_s_steady']:.1f} |")
    return {"seconds": args.seconds, "load_before": load, "load_after": os.getloadavg(), "rows": rows}


def _train_student(args, name: str, width: float, residual: bool) -> Path:
    """Distil one student (resuming if its checkpoints exist); the path of the finished student."""
    out = Path(args.out) / f"student_{name.replace('/', '_').replace(' ', '_')}_m{args.mel_offset}.pth"
    if out.exists():
        return out
    config = make_config("distill", data_root=args.data, checkpoint_dir=str(default_checkpoint_dir(out)),
                         teacher=args.teacher, expert=args.expert, width=width, residual=residual,
                         mel_offset=args.mel_offset,
                         steps=args.steps, lr=args.lr, batch_size=args.batch_size, eval_interval=args.eval_interval,
                         checkpoint_interval=args.eval_interval, eval_batches=args.eval_batches, log_interval=50,
                         workers=args.workers, threads=args.threads, precision=args.precision, progress=False,
                         resume=True)
    started = time.time()
    distill(config, out)
    print(f"{name}: {args.steps} steps in {(time.time() - started) / 60:.1f} min", flush=True)
    return out


def quality(args) -> dict:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    teacher = load_model(args.teacher, "wav2lip")
    expert = load_model(args.expert, "syncnet")
    clips = [TestClip(folder, seed=k) for k, folder in enumerate(sorted(p for p in Path(args.test).iterdir()
                                                                         if (p / "mouth.npy").exists()))]
    names = [n for n in args.students.split(",")]
    layouts = {name: (width, residual) for name, width, residual in _layouts(teacher.width)}
    layouts["1/1"] = (teacher.width, True)  # the teacher's own layout: a student of another mel window
    judge = load_model(args.judge, "syncnet") if args.judge else None
    outputs = {"truth": [clip.truth for clip in clips], "teacher": [clip.generate(teacher) for clip in clips]}
    info = {"teacher": {"width": teacher.width, "residual": teacher.residual,
                        "params": sum(p.numel() for p in teacher.parameters())}}
    for name in names:
        width, residual = layouts[name]
        path = _train_student(args, name, width, residual)
        student = load_model(path, "wav2lip")
        outputs[name] = [clip.generate(student) for clip in clips]
        info[name] = {"width": width, "residual": residual, "params": sum(p.numel() for p in student.parameters()),
                      "checkpoint": str(path), "steps": args.steps}
    rows = {}
    for name, generated in outputs.items():
        measured = [synth.mouth_opening(f) for frames in generated for f in frames]
        truth = [v for clip in clips for v in clip.opening.tolist()]
        psnr = [_psnr(g[:, IMG_SIZE // 2:], t[:, IMG_SIZE // 2:]) for g, t in zip(generated, outputs["teacher"])]
        sync = sync_losses(clips, generated, expert, args.batch_size)
        rows[name] = {**info.get(name, {}), "mouth_r": float(np.corrcoef(measured, truth)[0, 1]),
                      "psnr_lower_vs_teacher": float(np.mean(psnr)) if np.isfinite(np.mean(psnr)) else None,
                      "sync_loss": sync["train"], "sync_loss_eval_bn": sync["eval"]}
        if judge is not None:
            judged = score(clips, generated, expert, judge, args.vshift, "train", args.batch_size)
            rows[name].update(lse_d=judged["judge_lse_d"], lse_c=judged["judge_lse_c"],
                              offset_ok=judged["judge_offset_accuracy"])
    base = rows["teacher"]["mouth_r"]
    print(f"\nQuality gap: students distilled from the synthetic teacher {args.teacher} (width {teacher.width:g}, "
          f"students at fractions of ITS width, mel window offset {args.mel_offset}), {args.steps} steps each, "
          f"lr {args.lr:g}, batch {args.batch_size}; {len(clips)} held-out synthetic clips\n")
    print("| row | width | residual | parameters | mouth r | mouth r - teacher's | PSNR lower vs teacher (dB) "
          "| sync loss (BN train) | sync loss (BN eval) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        psnr = "-" if row["psnr_lower_vs_teacher"] is None else f"{row['psnr_lower_vs_teacher']:.2f}"
        width = f"{row['width']:g}" if "width" in row else "-"
        residual = ("yes" if row["residual"] else "no") if "residual" in row else "-"
        params = f"{row['params'] / 1e3:.1f} k" if "params" in row else "-"
        print(f"| {name} | {width} | {residual} | {params} | {row['mouth_r']:.3f} | {row['mouth_r'] - base:+.3f} | "
              f"{psnr} | {row['sync_loss']:.3f} | {row['sync_loss_eval_bn']:.3f} |")
    if judge is not None:
        print(f"\nThe judge ({args.judge}, an expert trained on other data) on the same clips:\n")
        print("| row | LSE-D | LSE-C | offset found 0 |")
        print("|---|---|---|---|")
        for name, row in rows.items():
            print(f"| {name} | {row['lse_d']:.3f} | {row['lse_c']:.3f} | {row['offset_ok']:.0%} |")
    return {"rows": rows, "settings": vars(args), "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    modes = parser.add_subparsers(dest="mode", required=True)
    fast = modes.add_parser("speed", help="generator frames/s of the full-size teacher and students")
    fast.add_argument("--precision", default="auto", help="as `wav2lip infer --precision`")
    fast.add_argument("--batch", type=int, default=0, help="frames per batch (0: the pipeline's 720p batch)")
    fast.add_argument("--seconds", type=float, default=4.0, help="timed seconds per layout and round")
    fast.add_argument("--rounds", type=int, default=3, help="rounds over all layouts; the best of each is kept")
    whole = modes.add_parser("e2e", help="end-to-end wav2lip infer at 720p, teacher and a student layout")
    whole.add_argument("--width", type=float, default=0.25, help="the student's width (full-size units)")
    whole.add_argument("--no-residual", dest="residual", action="store_false", help="the student has no residual blocks")
    whole.add_argument("--seconds", type=float, default=20.0, help="input length")
    whole.add_argument("--workdir", help="keep the inputs here (default: a temporary folder)")
    good = modes.add_parser("quality", help="distil students from a synthetic teacher and score them")
    good.add_argument("--teacher", required=True)
    good.add_argument("--expert", required=True)
    good.add_argument("--data", required=True, help="the teacher's prepared training data")
    good.add_argument("--test", required=True, help="held-out clips (folders with frames, audio.wav, mouth.npy)")
    good.add_argument("--out", default="/tmp/bench_distill")
    good.add_argument("--students", default="1/2,1/4,1/4 no-res,1/8", help="comma-separated rows (see speed)")
    good.add_argument("--steps", type=int, default=600)
    good.add_argument("--mel-offset", type=int, default=0, help="the students' mel window, in mel steps from the "
                      "authors' (-13: a live student needing 50 ms of audio after a frame)")
    good.add_argument("--judge", help="an independent expert (bench_train.py's judge): adds LSE-D / LSE-C")
    good.add_argument("--vshift", type=int, default=15, help="the judge's offset search range, frames")
    good.add_argument("--lr", type=float, default=1e-3)
    good.add_argument("--batch-size", type=int, default=16)
    good.add_argument("--eval-interval", type=int, default=100)
    good.add_argument("--eval-batches", type=int, default=4)
    good.add_argument("--workers", type=int, default=1)
    good.add_argument("--threads", type=int, default=0, help="torch threads while distilling (0: torch's default)")
    good.add_argument("--precision", default="auto", help="as `wav2lip distill --precision` (bf16: CPU autocast)")
    args = parser.parse_args()
    result = {"speed": speed, "e2e": end_to_end, "quality": quality}[args.mode](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
