"""Shared test fixtures: paths to ../shared (media, fixtures, real RetinaFace weights)."""
from __future__ import annotations

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


@pytest.fixture(scope="session")
def media() -> Path:
    return MEDIA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS
