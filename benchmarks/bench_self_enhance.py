"""Issue 24's targets for the person-specific mouth enhancer (`fit-enhancer`, `--enhance self`), one table.

1. Real clips (no real generator weights exist here): the enhancer is fitted on the first 80% of each
   clip (--steps training steps, so that quality does not depend on the machine's load) and scored on the
   last 20%, where its input is the real face shrunk to the generator's 96 px,
   i.e. what a perfect generator would paint. Rows: today's paste (the 96-px face resized to the box),
   GFPGAN v1.4 on that paste (needs GFPGANv1.4.pth in the model store or --gfpgan), and the fitted
   enhancer on it, each against the real frames: PSNR and SSIM of the lower face and its sharpness
   ratio (evaluation/reconstruct.py's measures), and flicker: the mean absolute change of the mouth
   region between consecutive frames on the stillest 8-frame stretch of the held-out part (grey levels;
   the real video's own change beside it).
2. Synthetic clips whose true mouth is known (data/synth.py), face boxes at 192 px: a generator trained
   by benchmarks/bench_train.py (--train-dir, its --out folder) paints the 96-px face from the clip's
   audio as `infer` would; plain (resized) and enhanced (an enhancer fitted on the first 80% of the clip's
   own video, half its inputs that generator's faces as `--enhance self` fits; `unpainted`: without them)
   against the truth; flicker on each clip's stillest 8 held-out frames (by the true mouth), averaged over
   the clips. Also the mouth opening's correlation with the generator's own face (does the
   enhancer keep the mouth the generator painted) and the LSE-C of bench_train's judge expert on plain and
   enhanced output. Skipped, saying so, without a --train-dir holding bench_train's checkpoints.
3. Degradations: how the fitting's degraded inputs differ from their real target (blur: sharpness of
   input over target at 96 px; noise: the standard deviation of the high-pass difference; colour: the mean
   absolute per-channel mean shift), beside the same statistics of the generator's output against its
   truth on the synthetic clips: similar numbers say the pairs look like generator output.
4. Speed (2 threads): the command's own fit (`fit-enhancer`'s default time) on a 20 s 720p clip, detection
   and the full-size generator's painting (from the speech file, standing for the clip's sound) included;
   the network alone at 96 -> 192 px (faces/s); `infer` at 720p end to end with a fitted enhancer
   (a generator of the real size with the fixtures' deterministic weights; frames/s of the run, models
   loaded before).

    python benchmarks/bench_self_enhance.py                      # every clip in ../shared/media, about 10 min
    python benchmarks/bench_self_enhance.py --fast               # 300-step fits, an 8 s clip: about 3 min
    python benchmarks/bench_self_enhance.py clip.mp4 --train-dir /tmp/bench_train --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import SHARED, make_inputs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip import LipSyncer, store  # noqa: E402
from wav2lip.checkpoints import load_model, save_checkpoint  # noqa: E402
from wav2lip.errors import Wav2LipError  # noqa: E402
from wav2lip.evaluation.measures import LowerFaceScore, changes, flicker, mouth, sharpness  # noqa: E402
from wav2lip.faces import FaceTrackOptions, create_detector, track  # noqa: E402
from wav2lip.io.video import open_source  # noqa: E402
from wav2lip.lipsync import self_enhance  # noqa: E402
from wav2lip.lipsync.blend import paste  # noqa: E402
from wav2lip.lipsync.enhance import FaceEnhancer  # noqa: E402
from wav2lip.lipsync.kernel import crop_face  # noqa: E402

RETINAFACE = SHARED / "models" / "retinaface_mobilenet0.25.pth"
SPEECH = SHARED / "media" / "vr_audio1.wav"
STILL = 8  # frames of the still stretch that flicker is measured on
HELD_OUT = 0.8  # fit on frames [0, 80%), score on [80%, 100%)
SYNTH_SIZE = 192  # synthetic face box side


class Score(LowerFaceScore):
    """The reconstruction measures of lower faces against the real ones (evaluation/measures.py), and the
    mouths kept for flicker."""

    def __init__(self) -> None:
        super().__init__()
        self.mouths: list[np.ndarray] = []

    def add(self, out: np.ndarray, real: np.ndarray, box: np.ndarray) -> bool:
        self.mouths.append(mouth(out, box))
        return super().add(out, real, box)

    def row(self, still: slice) -> dict:
        return {"psnr": self.psnr, "ssim": self.mean_ssim, "sharpness": self.sharpness_ratio,
                "flicker": flicker(self.mouths[still])}


def stillest(mouths: list[np.ndarray], n: int = STILL) -> slice:
    """The n consecutive frames whose real mouth changes least."""
    sums = np.convolve(changes(mouths), np.ones(n - 1), "valid")
    start = int(np.argmin(sums))
    return slice(start, start + n)


def degradation_stats(painted: np.ndarray, truth: np.ndarray) -> dict:
    """How 96-px faces differ from their truth: blur (sharpness ratio), high-pass noise, colour shift."""
    grey = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float64)  # noqa: E731
    sharp = np.mean([sharpness(grey(p)) for p in painted]) / np.mean([sharpness(grey(t)) for t in truth])
    noise = np.mean([np.std((grey(p) - cv2.GaussianBlur(grey(p), (0, 0), 1.0))
                            - (grey(t) - cv2.GaussianBlur(grey(t), (0, 0), 1.0))) for p, t in zip(painted, truth)])
    colour = np.mean(np.abs(painted.astype(np.float64).mean(axis=(1, 2)) - truth.astype(np.float64).mean(axis=(1, 2))))
    return {"blur": float(sharp), "noise": float(noise), "colour": float(colour)}


def degraded_pairs(pairs: self_enhance.Pairs, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Degraded inputs and their truth at 96 px (the lower rows the enhancer sees)."""
    pick = np.linspace(0, len(pairs.inputs) - 1, min(n, len(pairs.inputs))).astype(int)
    x = self_enhance.Degradation()(self_enhance.to_tensor(pairs.inputs[pick]), torch.Generator().manual_seed(1))
    truth = np.stack([cv2.resize(t, (t.shape[1] // pairs.scale, t.shape[0] // pairs.scale),
                                 interpolation=cv2.INTER_AREA) for t in pairs.targets[pick]])
    return self_enhance.from_tensor(x), truth


# ---------------------------------------------------------------- 1. real clips


def real_clip(path: Path, detector, gfpgan: FaceEnhancer | None, steps: int) -> dict:
    items = list(track(open_source(path).frames(), detector, FaceTrackOptions()))
    cut = int(len(items) * HELD_OUT)
    started = time.perf_counter()  # self_enhance.fit's two steps, the pairs kept for their statistics
    pairs = self_enhance.face_pairs(path, detector, (0, cut))
    model, steps, loss, bicubic = self_enhance.train(pairs, math.inf, steps)
    sharpen, before = self_enhance.calibrate(model, pairs)
    steady = self_enhance.calibrate_steady(model, sharpen, pairs)
    fit_s = time.perf_counter() - started
    enhancer = self_enhance.SelfEnhancer(model, sharpen=sharpen, still_change=steady)
    unsharpened = self_enhance.SelfEnhancer(model)
    scores = {name: Score() for name in ("real", "paste", "gfpgan", "l1", "self") if name != "gfpgan" or gfpgan}
    for item in items[cut:]:
        if item.box is None:
            continue
        plain = paste(item.frame.copy(), item.box, crop_face(item.frame, item.box))
        outputs = {"real": item.frame, "paste": plain, "self": plain.copy(), "l1": plain.copy()}
        enhancer.enhance([outputs["self"]], [item.box], [item.landmarks], "paste", 1.0)
        unsharpened.enhance([outputs["l1"]], [item.box], [item.landmarks], "paste", 1.0)
        if gfpgan is not None:
            outputs["gfpgan"] = plain.copy()
            gfpgan.enhance([outputs["gfpgan"]], [item.box], [item.landmarks], "paste", 1.0)
        for name, score in scores.items():
            score.add(outputs[name], item.frame, item.box)
    still = stillest(scores["real"].mouths)
    print(f"{path.name}: fitted in {fit_s:.0f} s ({steps} steps), scored {len(scores['real'].mouths)} frames",
          file=sys.stderr, flush=True)
    return {"clip": path.name, "fit_s": fit_s,
            "fit": {"faces": len(pairs.inputs), "scale": pairs.scale, "steps": steps, "loss": loss,
                    "bicubic_loss": bicubic, "sharpen": sharpen, "sharpness_before": before,
                    "steady": steady},
            "rows": {name: score.row(still) for name, score in scores.items()},
            "degraded": degradation_stats(*degraded_pairs(pairs))}


# ---------------------------------------------------------------- 2. synthetic clips


def synthetic_clips(train_dir: Path, n: int, steps: int, folder: Path) -> dict:
    """Generator output on held-out synthetic clips, plain and enhanced, against the truth. The generator
    paints each clip as `infer` would lip-sync the clip's video to its own sound (`self_enhance.Painter`),
    and the fit on the first 80% sees those faces too, as `--enhance self` fits with the run's generator;
    `unpainted` is the fit without them (a face video without sound, or `fit-enhancer --checkpoint none`)."""
    from bench_train import TestClip, write_test_clips
    from wav2lip.data import synth
    from wav2lip.evaluation.sync import offset_search
    from wav2lip.faces.cache import file_digest
    from wav2lip.io import audio as audio_io
    from wav2lip.io.video import VideoWriter
    from wav2lip.train import latest_checkpoint

    generator_ckpt = latest_checkpoint(train_dir / "gen_expert") or latest_checkpoint(train_dir / "gen_gan")
    judge_ckpt = latest_checkpoint(train_dir / "judge")
    if generator_ckpt is None or judge_ckpt is None:
        return {"skipped": f"no generator or judge checkpoints under {train_dir} (run benchmarks/bench_train.py "
                           f"--out {train_dir} first)"}
    generator, judge = load_model(generator_ckpt, "wav2lip").eval(), load_model(judge_ckpt, "syncnet").eval()
    names = ("plain", "unpainted", "l1", "self")
    rows = {name: Score() for name in names}
    opening = {"generator": [], "self": []}
    lse_c = {name: [] for name in names}
    painted_all, truth_all, degraded = [], [], []
    stills = []  # per clip: its stillest STILL held-out frames by the true mouth, in the rows' frames
    box = np.array((0, 0, SYNTH_SIZE, SYNTH_SIZE))
    for k, clip_folder in enumerate(write_test_clips(folder / "test", n, 5.0, seed=3)):
        clip = TestClip(clip_folder, seed=k)
        big = np.stack(list(synth.make_clip(3 * 1_000_003 + k, 5.0).frames(SYNTH_SIZE)))
        mel = audio_io.melspectrogram(audio_io.load_audio(clip_folder / "audio.wav"))
        painter = self_enhance.Painter(generator, torch.device("cpu"), mel, 25.0, generator.mel_offset,
                                       file_digest(generator_ckpt))
        painted = painter(list(range(len(big))), np.stack([crop_face(f, box) for f in big]))
        cut = int(len(big) * HELD_OUT)
        video = folder / f"synth_{k}.mkv"
        with VideoWriter(video, 25, SYNTH_SIZE, SYNTH_SIZE, lossless=True) as writer:
            for frame in big[:cut]:
                writer.write(frame)
        enhancers = {}
        for name, source in (("unpainted", None), ("self", painter)):
            pairs = self_enhance.face_pairs(video, None, box=tuple(box), painter=source)
            model = self_enhance.train(pairs, math.inf, steps)[0]
            sharpen = self_enhance.calibrate(model, pairs)[0]
            enhancers[name] = self_enhance.SelfEnhancer(
                model, sharpen=sharpen, still_change=self_enhance.calibrate_steady(model, sharpen, pairs))
        enhancers["l1"] = self_enhance.SelfEnhancer(enhancers["self"].model)
        outs = {name: [] for name in names}
        for face, truth in zip(painted, big):
            plain = paste(np.zeros_like(truth), box, face)
            for name in names:
                out = plain.copy()
                if name != "plain":
                    enhancers[name].enhance([out], [box], [None], "paste", 1.0)
                outs[name].append(cv2.resize(out, (96, 96), interpolation=cv2.INTER_AREA))
                if len(outs[name]) > cut:
                    rows[name].add(out, truth, box)
        held = slice(len(rows["plain"].mouths) - (len(big) - cut), len(rows["plain"].mouths))
        still = stillest([mouth(f, box) for f in big[cut:]])
        stills.append(slice(held.start + still.start, held.start + still.stop))
        opening["generator"] += [synth.mouth_opening(f) for f in painted[cut:]]
        opening["self"] += [synth.mouth_opening(f) for f in outs["self"][cut:]]
        for name in names:
            audio_emb, face_emb = clip.embed(judge, np.stack(outs[name])[clip.frames])
            lse_c[name].append(offset_search(face_emb, audio_emb, 15).confidence)
        read_back = np.stack([self_enhance.painted_input(f, box) for f in painted[cut:]])
        painted_all.append(read_back[:, self_enhance.TOP:])  # as the enhancer sees the generator's face
        truth_all.append(np.stack([cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA)
                                   for f in big[cut:]])[:, self_enhance.TOP:])
        degraded.append(degraded_pairs(pairs))
    table = {name: score.row(stills[0]) for name, score in rows.items()}
    for name, score in rows.items():  # flicker: the mean over clips of each one's stillest stretch
        table[name]["flicker"] = float(np.mean([flicker(score.mouths[still]) for still in stills]))
    return {"generator": str(generator_ckpt), "judge": str(judge_ckpt), "clips": n, "rows": table,
            "mouth_r": float(np.corrcoef(opening["generator"], opening["self"])[0, 1]),
            "lse_c": {name: float(np.mean(v)) for name, v in lse_c.items()},
            "generator_vs_truth": degradation_stats(np.concatenate(painted_all), np.concatenate(truth_all)),
            "degraded": degradation_stats(np.concatenate([d[0] for d in degraded]),
                                          np.concatenate([d[1] for d in degraded]))}


# ---------------------------------------------------------------- 4. speed


def speed(folder: Path, detector, minutes: float, seconds: float) -> dict:
    from support.deterministic import fill_deterministic
    from wav2lip.models.generator import Wav2Lip

    from wav2lip.io import audio as audio_io

    video, audio = make_inputs(folder, seconds, SHARED / "media" / "vr_face2.mp4", SPEECH, 720)
    checkpoint = folder / "generator.pth"
    save_checkpoint(checkpoint, fill_deterministic(Wav2Lip()))
    syncer = LipSyncer(checkpoint, detector=detector, device="cpu")
    started = time.perf_counter()  # the fit as `--enhance self` makes it, the speech standing for the face's sound
    painter = self_enhance.Painter(syncer.generator, syncer.device, audio_io.melspectrogram(audio_io.load_audio(audio)),
                                   open_source(video).fps, syncer.mel_offset, syncer.checkpoint_digest)
    model, record = self_enhance.fit(video, detector, minutes, painter=painter)
    fit_s = time.perf_counter() - started
    fitted = self_enhance.save(folder / "speed.enhancer.pth", model, record)
    network = self_enhance.SelfEnhancer(self_enhance.MouthEnhancer(self_enhance.CHANNELS, self_enhance.BLOCKS, 2))
    faces = np.random.default_rng(0).integers(0, 256, (256, 96 - self_enhance.TOP, 96, 3), dtype=np.uint8)
    network.upscale(faces[:32])
    t0 = time.perf_counter()
    network.upscale(faces)
    faces_per_s = len(faces) / (time.perf_counter() - t0)
    runs = {name: syncer.run(video, audio, folder / f"out_{name}.mp4", enhance=value, cache=False).speed
            for name, value in (("plain", "none"), ("self", str(fitted)))}
    return {"fit_s": fit_s, "fit_steps": record.steps, "clip_s": seconds, "faces_per_s": faces_per_s,
            "infer_fps": runs}


# ---------------------------------------------------------------- the table


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    print("\n1. real clips: fit on the first 80%, scored on the last 20%; input = the real face at 96 px")
    print(f"{'clip':<14}{'row':<10}{'PSNR':>7}{'SSIM':>8}{'sharp':>7}{'flicker':>9}   targets: self above paste "
          f"and GFPGAN; sharpness 0.8..1.2; flicker <= paste")
    for clip in result["real"]:
        for name, row in clip["rows"].items():
            psnr = "" if name == "real" else fmt(row["psnr"])
            ssim_ = "" if name == "real" else fmt(row["ssim"], ".4f")
            sharp = "" if name == "real" else fmt(row["sharpness"])
            print(f"{clip['clip']:<14}{name:<10}{psnr:>7}{ssim_:>8}{sharp:>7}{fmt(row['flicker']):>9}")
        rows = clip["rows"]
        others = [r for n, r in rows.items() if n in ("paste", "gfpgan")]
        ok = all(rows["self"]["psnr"] > r["psnr"] and rows["self"]["ssim"] > r["ssim"] for r in others)
        print(f"{'':<14}fit {clip['fit_s']:.0f} s, {clip['fit']['steps']} steps, loss {clip['fit']['loss']:.2f} "
              f"(bicubic {clip['fit']['bicubic_loss']:.2f}), sharpening {clip['fit']['sharpen']:.2f}, steadying "
              f"{clip['fit']['steady']:g} (l1: the fit without either); "
              f"quality {'MET' if ok else 'NOT met'}, sharpness "
              f"{'MET' if 0.8 <= rows['self']['sharpness'] <= 1.2 else 'NOT met'}, flicker "
              f"{'MET' if rows['self']['flicker'] <= rows['paste']['flicker'] else 'NOT met'}")
    synthetic = result["synthetic"]
    print("\n2. synthetic clips: a bench_train generator's output, plain and enhanced, against the truth")
    if "skipped" in synthetic:
        print("   skipped:", synthetic["skipped"])
    else:
        for name, row in synthetic["rows"].items():
            print(f"{'synthetic':<14}{name:<10}{fmt(row['psnr']):>7}{fmt(row['ssim'], '.4f'):>8}"
                  f"{fmt(row['sharpness']):>7}{fmt(row['flicker']):>9}")
        print(f"   mouth opening r(enhanced, generator) = {synthetic['mouth_r']:.3f} (target >= 0.95); LSE-C "
              + ", ".join(f"{name} {value:.2f}" for name, value in synthetic["lse_c"].items())
              + " (target: enhanced at most 0.1 below plain)")
    print("\n3. degradations (96 px, lower face): blur = sharpness over the truth's, noise = high-pass std, "
          "colour = mean channel shift")
    lines = [(clip["clip"] + " pairs", clip["degraded"]) for clip in result["real"]]
    if "skipped" not in synthetic:
        lines += [("synthetic pairs", synthetic["degraded"]), ("generator output", synthetic["generator_vs_truth"])]
    for name, stats in lines:
        print(f"   {name:<22} blur {stats['blur']:.2f}  noise {stats['noise']:.2f}  colour {stats['colour']:.2f}")
    s = result["speed"]
    print(f"\n4. speed, {torch.get_num_threads()} threads (load average {result['load_average'][0]:.1f}): fit on a "
          f"{s['clip_s']:.0f} s 720p clip {s['fit_s']:.0f} s ({s['fit_steps']} steps; target <= 180 s); network "
          f"96 -> 192: {s['faces_per_s']:.0f} faces/s (target >= 150); infer 720p: {s['infer_fps']['plain']:.1f} "
          f"frames/s plain, {s['infer_fps']['self']:.1f} with the enhancer (target >= 20)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path, help="face videos (default: every video in ../shared/media)")
    parser.add_argument("--fast", action="store_true", help="shorter fits and runs (about 3 minutes)")
    parser.add_argument("--steps", type=int, help="training steps of each clip's fit (default 1200, --fast 300): "
                        "quality that does not depend on the machine's load; section 4 times the command's own fit")
    parser.add_argument("--gfpgan", help="GFPGAN v1.4 weights (default: the model store's, when present)")
    parser.add_argument("--train-dir", type=Path, default=Path("/tmp/bench_train"),
                        help="bench_train.py's --out folder, for the synthetic clips")
    parser.add_argument("--synthetic", type=int, help="synthetic clips (default 3, --fast 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (300 if args.fast else 1200)
    clips = args.clips or sorted(p for p in (SHARED / "media").glob("*.mp4"))
    detector = create_detector("retinaface", weights=RETINAFACE, device="cpu")
    gfpgan = None
    try:
        weights = store.resolve(args.gfpgan or "GFPGANv1.4.pth", download=False)
        gfpgan = FaceEnhancer(load_model(weights, "gfpgan"), torch.device("cpu"))
    except Wav2LipError as exc:
        print(f"GFPGAN left out: {exc}")
    result: dict = {"settings": {**vars(args), "clips": [str(c) for c in clips], "steps": steps}}
    with tempfile.TemporaryDirectory(prefix="bench_self_enhance-") as tmp:
        folder = Path(tmp)
        result["real"] = [real_clip(Path(c), detector, gfpgan, steps) for c in clips]
        result["synthetic"] = synthetic_clips(args.train_dir, args.synthetic or (1 if args.fast else 3), steps,
                                              folder)
        result["speed"] = speed(folder, detector, 0.25 if args.fast else self_enhance.DEFAULT_MINUTES,
                                8.0 if args.fast else 20.0)
    result["load_average"] = os.getloadavg()
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
