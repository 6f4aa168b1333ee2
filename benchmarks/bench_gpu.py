"""GPU throughput of the generator and of the whole `wav2lip infer` chain, ready for whenever a GPU is lent.

Generator alone (inputs already on the GPU, synchronised timing): every precision the GPU runs (fp32, bf16,
fp16) x batch sizes x plain / torch.compile / torch.compile with CUDA graphs ("reduce-overhead"). End to
end: `LipSyncer.run` on 720- and 1080-line inputs (a shared clip looped, RetinaFace with the real weights),
frames/s of the run and the wall time of the whole call. Deterministic generator weights (none pretrained
here): the cost is the same as the authors' files.

    python benchmarks/bench_gpu.py                       # on a CUDA machine
    python benchmarks/bench_gpu.py --device cpu --batches 16 --seconds 2 --no-compile   # smoke run anywhere
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import SHARED, make_inputs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip import LipSyncer  # noqa: E402
from wav2lip.checkpoints import save_checkpoint  # noqa: E402
from wav2lip.device import inference_model, resolve_device  # noqa: E402
from support.deterministic import fill_deterministic  # noqa: E402
from wav2lip.models.generator import Wav2Lip  # noqa: E402


RETINAFACE = SHARED / "models" / "retinaface_mobilenet0.25.pth"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator_fps(model: torch.nn.Module, device: torch.device, batch: int, compile_mode: str | None,
                  seconds: float) -> float:
    """Frames/s of the generator on device-resident inputs, after warm-up (and compilation)."""
    if compile_mode is not None:
        model = torch.compile(model, mode=compile_mode)
    mel = torch.rand(batch, 1, 80, 16, device=device) * 8 - 4
    faces = torch.rand(batch, 6, 96, 96, device=device)
    with torch.inference_mode():
        for _ in range(3):  # kernel selection, compilation, graph capture
            model(mel, faces)
        _sync(device)
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            model(mel, faces)
            done += batch
        _sync(device)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window of each generator cell")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--lines", type=int, nargs="+", default=[720, 1080], help="end-to-end input heights")
    parser.add_argument("--video-seconds", type=float, default=20.0, help="length of the end-to-end inputs")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); --device cpu for a smoke run")
    device = resolve_device(args.device)
    precisions = [p for p in args.precisions if device.type == "cuda" or p != "fp16"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}")

    network = fill_deterministic(Wav2Lip()).eval().to(device)
    modes = {"plain": None} | ({} if args.no_compile else {"compile": "default", "compile+graphs": "reduce-overhead"})
    print("\ngenerator alone, frames/s (inputs on the device)")
    print(f"{'precision':>9} {'mode':>15} " + " ".join(f"{'batch ' + str(b):>10}" for b in args.batches))
    for precision in precisions:
        for mode, compile_mode in modes.items():
            cells = []
            for batch in args.batches:
                torch._dynamo.reset()
                model = inference_model(network, precision, device)
                cells.append(f"{generator_fps(model, device, batch, compile_mode, args.seconds):>10.0f}")
            print(f"{precision:>9} {mode:>15} " + " ".join(cells), flush=True)

    print(f"\nend to end, {args.video_seconds:g} s inputs, RetinaFace: run frames/s, whole call wall time")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = folder / "generator.pth"
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip()))
        for lines in args.lines:
            face, audio = make_inputs(folder, args.video_seconds, SHARED / "media" / "vr_face2.mp4",
                                      SHARED / "media" / "vr_audio1.wav", lines)
            for precision in precisions:
                start = time.perf_counter()
                syncer = LipSyncer(checkpoint, device=args.device, precision=precision, detector="retinaface",
                                   detector_weights=RETINAFACE)
                result = syncer.run(face, audio, folder / "out.mp4", cache=False)
                wall = time.perf_counter() - start
                print(f"  {lines:>5} lines {precision:>5}: {result.speed:7.1f} frames/s, {result.frames} frames, "
                      f"{wall:6.1f} s whole call (models loaded inside)", flush=True)


if __name__ == "__main__":
    main()
