"""Generator throughput: ONNX Runtime vs PyTorch on this CPU (fp32), deterministic weights.

    python benchmarks/bench_onnx.py [--batch 32] [--repeats 3]

Prints frames/s and ms/frame per backend, and the largest output difference from PyTorch.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip.export import export_onnx
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip



def _best_seconds(backends: dict, repeats: int) -> dict[str, float]:
    """Best wall time per backend, taking turns so that load from other processes hits all alike."""
    best = {name: float("inf") for name in backends}
    for _ in range(repeats):
        for name, fn in backends.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort

    threads = torch.get_num_threads()
    model = fill_deterministic(Wav2Lip())
    rng = np.random.default_rng(0)
    mel = rng.uniform(-4, 4, (args.batch, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (args.batch, 6, 96, 96)).astype(np.float32)
    mel_t, face_t = torch.from_numpy(mel), torch.from_numpy(face)

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "wav2lip.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run_torch(m: torch.nn.Module, channels_last: bool = False) -> np.ndarray:
        with torch.inference_mode():
            f = face_t.contiguous(memory_format=torch.channels_last) if channels_last else face_t
            return m(mel_t, f).numpy()

    reference = run_torch(model)
    model_cl = fill_deterministic(Wav2Lip()).to(memory_format=torch.channels_last)
    backends = {
        "pytorch fp32": lambda: run_torch(model),
        "pytorch fp32 channels_last": lambda: run_torch(model_cl, channels_last=True),
        "onnxruntime fp32": lambda: session.run(None, {"mel": mel, "face": face})[0],
    }
    print(f"generator, batch {args.batch}, {threads} threads, best of {args.repeats}, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"{'backend':<28} {'frames/s':>9} {'ms/frame':>9} {'max |diff|':>11}")
    # The first call of each backend is its warm-up (kernel selection, allocator) and parity check.
    diffs = {name: float(np.abs(np.asarray(fn()) - reference).max()) for name, fn in backends.items()}
    for name, seconds in _best_seconds(backends, args.repeats).items():
        diff = diffs[name]
        print(f"{name:<28} {args.batch / seconds:>9.1f} {1000 * seconds / args.batch:>9.1f} {diff:>11.2e}")


if __name__ == "__main__":
    main()
