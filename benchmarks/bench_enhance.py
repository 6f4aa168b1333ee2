"""`--enhance gfpgan` (issue 15): what GFPGAN v1.4 costs per frame and what it does to the mouth over time.

Tables:
1. network: ms per 512 face, fp32 and bf16, one face and a batch; PSNR of the bf16 face against fp32 on
   aligned faces of the real clips (the bound that decides whether the enhancer may follow the generator
   into bf16);
2. pipeline: the enhance stage's ms/frame and end-to-end frames/s with and without --enhance at 512 and
   720 lines;
3. stability: on a still talking head (st_art0.png) and a talking-head video (hdtf_kh.mp4), the mouth
   region's flicker (mean absolute difference between consecutive frames, grey levels) and sharpness
   (variance of the Laplacian), plain, enhanced with the stored noise maps, enhanced with fresh noise
   per call (the reference's default), and, on the video, enhanced without landmark smoothing.

Weights: the Wav2Lip generator and GFPGAN are filled by the fixtures' deterministic recipe (no released
weights here; same cost); RetinaFace is real. With filled GFPGAN weights the "restored" face is a fixed
random function of its input, not a face: flicker and sharpness then measure the stability of the
mechanism (noise, alignment, smoothing, masks), not restoration quality.

    python benchmarks/bench_enhance.py
    python benchmarks/bench_enhance.py --frames 8 --lines 512 --skip-pipeline
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import SHARED, make_inputs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip import LipSyncer  # noqa: E402
from wav2lip.checkpoints import save_checkpoint  # noqa: E402
from wav2lip.device import cpu_has_native_bf16  # noqa: E402
from wav2lip.evaluation.measures import MOUTH  # noqa: E402
from wav2lip.lipsync.enhance import ENHANCE_BATCH, FaceEnhancer, align, similarity  # noqa: E402
from wav2lip.faces import FaceTrackOptions, create_detector, track  # noqa: E402
from support.deterministic import fill_deterministic  # noqa: E402
from wav2lip.models.generator import Wav2Lip  # noqa: E402
from wav2lip.models.gfpgan import GFPGAN  # noqa: E402
from wav2lip.io.video import open_source  # noqa: E402


RETINAFACE = SHARED / "models" / "retinaface_mobilenet0.25.pth"
SPEECH = SHARED / "media" / "vr_audio1.wav"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def real_aligned_faces(n: int) -> np.ndarray:
    """n aligned 512 faces from the real clips (RetinaFace landmarks, the enhancer's own alignment)."""
    det = create_detector("retinaface", weights=RETINAFACE)
    faces = []
    for clip in ("hdtf_kh.mp4", "vr_face2.mp4", "vr_face3.mp4", "vr_face5.mp4"):
        frame = next(iter(open_source(SHARED / "media" / clip).frames(1)))
        found = det.detect([frame])[0]
        faces.append(align(frame, similarity(found[0].landmarks)))
    return np.stack([faces[i % len(faces)] for i in range(n)])


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def network_table(model: nn.Module, repeats: int, n_faces: int) -> None:
    faces = real_aligned_faces(n_faces)
    cpu = torch.device("cpu")
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    outputs = {}
    print(f"\n1. GFPGAN v1.4 network, 512 x 512, CPU ({torch.get_num_threads()} threads)")
    print(f"{'precision':<10}{'ms/face (1)':>13}{f'ms/face ({n_faces})':>14}{'PSNR vs fp32 (worst face)':>27}")
    for name in precisions:
        network = model if name == "fp32" else copy.deepcopy(model)  # the cast happens in place
        enhancer = FaceEnhancer(network, cpu, torch.float32 if name == "fp32" else torch.bfloat16)
        one = timed(lambda e=enhancer: e.restore(faces[:1]), repeats)
        start = time.perf_counter()
        outputs[name] = np.concatenate([enhancer.restore(faces[i:i + ENHANCE_BATCH])
                                        for i in range(0, n_faces, ENHANCE_BATCH)])
        many = (time.perf_counter() - start) / n_faces
        value = min(psnr(o, r) for o, r in zip(outputs[name], outputs["fp32"])) if name != "fp32" else float("inf")
        print(f"{name:<10}{1000 * one:>13.0f}{1000 * many:>14.0f}{value:>27.1f}")
    if "bf16" not in precisions:
        print("(no native bf16 on this CPU: bf16 is emulated, never chosen)")


def pipeline_table(syncer: LipSyncer, folder: Path, seconds: float, lines: list[int]) -> None:
    print(f"\n2. pipeline on hdtf_kh.mp4, {seconds:g} s, precision {syncer.precision}")
    print(f"{'lines':<7}{'enhance':<9}{'frames':>7}{'enhance ms/frame':>18}{'frames/s':>10}")
    for n_lines in lines:
        video, audio = make_inputs(folder, seconds, SHARED / "media" / "hdtf_kh.mp4", SPEECH, n_lines)
        for enhance in ("none", "gfpgan"):
            result = syncer.run(video, audio, folder / f"out_{n_lines}_{enhance}.mp4", enhance=enhance, cache=False)
            ms = 1000 * result.profile.get("enhance", 0.0) / result.frames
            print(f"{n_lines:<7}{enhance:<9}{result.frames:>7}{ms:>18.0f}{result.speed:>10.2f}")


class FreshNoise(nn.Module):
    """The network with fresh StyleGAN noise at every call, as the reference's inference does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, fresh_noise=True)


def mouth_metrics(frames: list[np.ndarray], boxes: list[np.ndarray]) -> tuple[float, float]:
    """(flicker, sharpness) of the mouth region: mean |I_t - I_t-1| and mean variance of the Laplacian."""
    flicker, sharp = [], []
    for t, (frame, box) in enumerate(zip(frames, boxes)):
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        rx1, ry1, rx2, ry2 = (int(x1 + MOUTH[0] * w), int(y1 + MOUTH[1] * h), int(x1 + MOUTH[2] * w),
                              int(y1 + MOUTH[3] * h))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float64)
        sharp.append(cv2.Laplacian(grey[ry1:ry2, rx1:rx2], cv2.CV_64F).var())
        if t:
            previous = cv2.cvtColor(frames[t - 1], cv2.COLOR_BGR2GRAY).astype(np.float64)
            flicker.append(np.abs(grey[ry1:ry2, rx1:rx2] - previous[ry1:ry2, rx1:rx2]).mean())
    return float(np.mean(flicker)), float(np.mean(sharp))


def stability_table(syncer: LipSyncer, folder: Path, frames: int) -> None:
    seconds = frames / 25
    video, audio = make_inputs(folder, seconds, SHARED / "media" / "hdtf_kh.mp4", SPEECH, 512)
    still = SHARED / "media" / "st_art0.png"
    print(f"\n3. mouth region over {frames} frames (blend feather; filled weights: stability, not quality)")
    print(f"{'input':<14}{'variant':<28}{'flicker':>9}{'x plain':>9}{'sharpness':>11}{'x plain':>9}")
    stored = syncer.enhancer.model
    for name, face in (("st_art0.png", still), ("hdtf_kh.mp4", video)):
        source = list(open_source(face, fps=25).frames(1 if face == still else frames))
        tracked = list(track(source, syncer.detector, FaceTrackOptions()))
        boxes = [tracked[min(t, len(tracked) - 1)].box for t in range(frames)]
        variants = [("plain", {}, stored), ("enhanced, stored noise", {"enhance": "gfpgan"}, stored),
                    ("enhanced, fresh noise", {"enhance": "gfpgan"}, FreshNoise(stored))]
        if face != still:
            variants.append(("enhanced, no smoothing", {"enhance": "gfpgan", "smooth": "none"}, stored))
        base = None
        for label, options, network in variants:
            syncer.enhancer.model = network
            out = list(syncer.frames(face, audio, blend="feather", cache=False, **options))
            flicker, sharp = mouth_metrics(out, boxes)
            base = base or (flicker, sharp)
            print(f"{name:<14}{label:<28}{flicker:>9.2f}{flicker / base[0]:>9.2f}{sharp:>11.1f}{sharp / base[1]:>9.2f}")
        syncer.enhancer.model = stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12, help="frames for the stability table")
    parser.add_argument("--seconds", type=float, default=0.48, help="clip length for the pipeline table")
    parser.add_argument("--lines", type=int, nargs="+", default=[512, 720])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--faces", type=int, default=ENHANCE_BATCH, help="real faces for the batch time and PSNR")
    parser.add_argument("--precision", default="auto", help="the syncer's (and so the enhancer's) precision")
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-stability", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = fill_deterministic(GFPGAN())
        if not args.skip_network:
            network_table(model, args.repeats, args.faces)
        generator, restorer = folder / "generator.pth", folder / "gfpgan.pth"
        save_checkpoint(generator, fill_deterministic(Wav2Lip()))
        torch.save({"params_ema": model.state_dict()}, restorer)
        del model
        syncer = LipSyncer(generator, detector_weights=RETINAFACE, device="cpu", precision=args.precision,
                           enhancer_weights=restorer)
        if not args.skip_pipeline:
            pipeline_table(syncer, folder, args.seconds, args.lines)
        if not args.skip_stability:
            stability_table(syncer, folder, args.frames)


if __name__ == "__main__":
    main()
