"""Shared test fixtures: paths to ../shared (media, fixtures, real RetinaFace weights)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MEDIA = SHARED / "media"
FIXTURES = SHARED / "fixtures"
MODELS = SHARED / "models"

torch.set_num_threads(max(1, torch.get_num_threads()))


def assert_close_to_fixture(out: np.ndarray, ref: np.ndarray) -> None:
    """The tolerance of ../shared/fixtures/README.md: rtol 1e-4, atol 1e-4 * max |ref|."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    atol = 1e-4 * float(np.abs(ref).max())
    worst = float(np.abs(out - ref).max())
    assert np.allclose(out, ref, rtol=1e-4, atol=atol), f"max abs diff {worst} (atol {atol})"


def cut_wav(source: Path, target: Path, seconds: float, scale: float = 1.0) -> Path:
    """The first `seconds` of a PCM wav (any channels/rate), optionally scaled (0 = digital silence)."""
    with wave.open(str(source)) as w:
        params = w.getparams()
        data = np.frombuffer(w.readframes(round(seconds * w.getframerate())), dtype=np.int16)
    with wave.open(str(target), "wb") as w:
        w.setparams(params)
        w.writeframes((data * scale).astype(np.int16).tobytes())
    return target


def deterministic_generator(path: Path, width: float = 1.0) -> Path:
    """A generator checkpoint with the fixtures' deterministic weights (no pretrained ones exist here):
    the full layout where frames are compared with the authors' code, narrower where only speed matters."""
    from wav2lip.checkpoints import save_checkpoint
    from support.deterministic import fill_deterministic
    from wav2lip.models.generator import Wav2Lip

    save_checkpoint(path, fill_deterministic(Wav2Lip(width=width)))
    return path


def cpu_syncer(checkpoint: Path, **extra):
    """A LipSyncer as most tests want it: the checkpoint, the real RetinaFace weights, the CPU, fp32 (the
    arithmetic the parity fixtures use); `extra` adds or overrides LipSyncer arguments."""
    from wav2lip import LipSyncer

    return LipSyncer(checkpoint, **{"detector_weights": MODELS / "retinaface_mobilenet0.25.pth", "device": "cpu",
                                    "precision": "fp32", **extra})


@pytest.fixture(scope="session")
def media() -> Path:
    return MEDIA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="module")
def work(request, tmp_path_factory) -> Path:
    """A folder shared by one test file's tests (its inputs, checkpoints and outputs), named after it."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))


@pytest.fixture(scope="module")
def restorer(work) -> Path:
    """A filled GFPGAN in the released file's layout, 16x narrower (the same code path, fast)."""
    import torch

    from support.deterministic import fill_deterministic
    from wav2lip.models.gfpgan import GFPGAN

    path = work / "gfpgan_narrow.pth"
    torch.save({"params_ema": fill_deterministic(GFPGAN(narrow=1 / 16)).state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def tiny_expert(tmp_path_factory) -> Path:
    """A narrow lip-sync expert trained here on synthetic faces (about a minute on 2 cores): enough to see
    sync on unseen synthetic clips. Shared by the sync filtering, sync correction and evaluation tests."""
    from wav2lip.data import synth
    from wav2lip.train import latest_checkpoint, make_config, train

    root = tmp_path_factory.mktemp("tiny_expert")
    synth.write_dataset(root / "data", 12, seed=5, seconds=2.0, consonants=False)  # vowels: quick to learn
    train(make_config("expert", data_root=str(root / "data"), checkpoint_dir=str(root / "expert"),
                      steps=400, batch_size=16, lr=1e-3, eval_interval=400, checkpoint_interval=400,
                      log_interval=50, width=0.125, workers=0, threads=1, progress=False, eval_batches=2))
    return latest_checkpoint(root / "expert")
