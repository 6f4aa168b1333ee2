"""Where `wav2lip infer` spends its time (issue 7): ms/frame per stage and end-to-end frames/s at 512, 720
and 1080 lines for each detector and precision, the generator alone as the ceiling, and the PSNR of the
bf16 face against fp32 on the real clips (the bound that decides whether "auto" may pick bf16).

Generator: deterministic weights (no pretrained ones here; same cost). RetinaFace: the real weights.
S3FD: no pretrained weights exist here, and with deterministic weights it finds hundreds of false faces
(so tracking, NMS and the end-to-end rate would measure nonsense); it appears in the detector-alone
table, which times one full-frame detection of the real network per frame size.

    python benchmarks/bench_stages.py
    python benchmarks/bench_stages.py --lines 720 --detectors retinaface --seconds 8
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import SHARED, make_inputs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip import LipSyncer  # noqa: E402
from wav2lip.io.audio import load_audio, melspectrogram  # noqa: E402
from wav2lip.lipsync.blend import to_uint8  # noqa: E402
from wav2lip.checkpoints import build_model, load_model, save_checkpoint  # noqa: E402
from wav2lip.device import cpu_has_native_bf16, inference_model, resolve_device  # noqa: E402
from wav2lip.faces import FaceTrackOptions, create_detector, track  # noqa: E402
from support.deterministic import fill_deterministic  # noqa: E402
from wav2lip.models.generator import Wav2Lip  # noqa: E402
from wav2lip.lipsync.offline import STAGES  # noqa: E402
from wav2lip.lipsync.kernel import crop_face, frame_mel_windows, generator_faces, run_generator  # noqa: E402
from wav2lip.io.video import open_source  # noqa: E402


RETINAFACE = SHARED / "models" / "retinaface_mobilenet0.25.pth"
CLIPS = ("vr_face2.mp4", "vr_face3.mp4", "vr_face5.mp4", "hdtf_kh.mp4")


def detector(name: str, device: torch.device, **options):
    if name == "retinaface":
        return create_detector("retinaface", device=device, weights=RETINAFACE, **options)
    return create_detector("s3fd", device=device, model=fill_deterministic(build_model("s3fd")), **options)


def detector_alone(name: str, frame: np.ndarray, max_size: int | None, repeats: int = 3) -> float:
    """ms for one full-frame detection (the network and its decoding; S3FD's threshold raised so the
    deterministic weights' false faces do not turn it into an NMS benchmark)."""
    det = detector(name, resolve_device("cpu"), max_size=max_size, **({"threshold": 0.99} if name == "s3fd" else {}))
    det.detect([frame])
    start = time.perf_counter()
    for _ in range(repeats):
        det.detect([frame])
    return 1000 * (time.perf_counter() - start) / repeats


def generator_alone(model: torch.nn.Module, precision: str, batch: int, frames: int) -> float:
    """Frames/s of the generator on its own (the ceiling for the whole chain)."""
    device = resolve_device("cpu")
    rng = np.random.default_rng(0)
    mel = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    faces = rng.uniform(0, 1, (batch, 6, 96, 96)).astype(np.float32)
    model = inference_model(model, precision, device)
    run_generator(model, mel[:4], faces[:4], device)  # warm-up (oneDNN picks kernels)
    start, done = time.perf_counter(), 0
    while done < frames:
        run_generator(model, mel, faces, device)
        done += batch
    return done / (time.perf_counter() - start)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def precision_psnr(model: torch.nn.Module, clip: Path, frames: int = 50) -> tuple[float, float]:
    """(overall, worst frame) PSNR of the uint8 generated faces, bf16 vs fp32, on a real clip with its
    own audio and RetinaFace boxes."""
    device = resolve_device("cpu")
    mel = melspectrogram(load_audio(clip))
    source = open_source(clip)
    tracked = [t for t in track(source.frames(frames), detector("retinaface", device), FaceTrackOptions())
               if t.box is not None]
    crops = np.stack([crop_face(t.frame, t.box) for t in tracked])
    inputs = (frame_mel_windows(mel, [t.index for t in tracked], source.fps), generator_faces(crops))
    fp32 = to_uint8(run_generator(model, *inputs, device))
    bf16 = to_uint8(run_generator(inference_model(model, "bf16", device), *inputs, device))
    return psnr(fp32, bf16), min(psnr(a, b) for a, b in zip(fp32, bf16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[512, 720, 1080])
    parser.add_argument("--detectors", nargs="+", default=["retinaface"], help="end-to-end rows")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each test input")
    parser.add_argument("--batch-size", type=int, default=None, help="generator batch (default: the pipeline's)")
    parser.add_argument("--skip-psnr", action="store_true")
    parser.add_argument("--psnr-checkpoint", type=Path, action="append", default=[],
                        help="also measure the bf16 PSNR with this (e.g. trained) generator; repeatable")
    args = parser.parse_args()
    precisions = [p for p in args.precisions if p != "bf16" or cpu_has_native_bf16()]
    device = resolve_device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = folder / "generator.pth"
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip()))
        syncers = {p: LipSyncer(checkpoint, device="cpu", precision=p) for p in precisions}
        model = syncers[precisions[0]].generator
        options = {"cache": False} | ({"batch_size": args.batch_size} if args.batch_size else {})

        print(f"\nms/frame per stage (stages overlap in threads; end-to-end is wall time), {args.seconds:g} s inputs")
        print(f"{'lines':>5} {'detector':>10} {'prec':>5} " + " ".join(f"{s:>8}" for s in STAGES)
              + f" {'e2e ms':>8} {'e2e fps':>8}")
        for lines in args.lines:
            face, audio = make_inputs(folder, args.seconds, SHARED / "media" / "vr_face2.mp4",
                                      SHARED / "media" / "vr_audio1.wav", lines)
            for name in args.detectors:
                det = detector(name, device)
                for precision in precisions:
                    syncer = syncers[precision]
                    syncer._detector = det
                    result = syncer.run(face, audio, folder / "out.mp4", **options)
                    per = {s: 1000 * result.profile.get(s, 0.0) / result.frames for s in STAGES}
                    print(f"{lines:>5} {name:>10} {precision:>5} " + " ".join(f"{per[s]:>8.1f}" for s in STAGES)
                          + f" {1000 / result.speed:>8.1f} {result.speed:>8.1f}", flush=True)

        print("\ndetector alone: ms per full-frame detection (tracking re-detects in a <=160 px region in between)")
        for lines in args.lines:
            face, _ = make_inputs(folder, args.seconds, SHARED / "media" / "vr_face2.mp4",
                                  SHARED / "media" / "vr_audio1.wav", lines)
            frame = next(iter(open_source(face).frames(1)))
            cells = []
            for name, max_size in (("retinaface", 480), ("retinaface", None), ("s3fd", 480), ("s3fd", None)):
                cells.append(f"{name} {max_size or 'full'}: {detector_alone(name, frame, max_size):7.1f}")
            print(f"  {lines:>5} lines  " + "  ".join(cells), flush=True)

        print("\ngenerator alone (the ceiling), frames/s")
        for precision in precisions:
            for batch in (32, 64, 128):
                fps = generator_alone(model, precision, batch, max(2 * batch, 128))
                print(f"  {precision:>5} batch {batch:>3}: {fps:6.1f}", flush=True)

        if not args.skip_psnr and "bf16" in precisions:
            generators = [("deterministic generator", model)]
            generators += [(str(path), load_model(path, "wav2lip")) for path in args.psnr_checkpoint]
            for name, generator in generators:
                print(f"\nbf16 vs fp32, PSNR of the generated 96x96 faces ({name}, RetinaFace boxes)")
                for clip in CLIPS:
                    overall, worst = precision_psnr(generator, SHARED / "media" / clip)
                    print(f"  {clip:<14} overall {overall:6.1f} dB, worst frame {worst:6.1f} dB", flush=True)


if __name__ == "__main__":
    main()
