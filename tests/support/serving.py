"""Fixtures the server tests share: a small deterministic generator, the real RetinaFace weights and a
short speech file (module-scoped, as each test file starts its own server). A test file imports the
ones it uses (`from support.serving import checkpoint  # noqa: F401 - a fixture`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cut_wav, deterministic_generator


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return deterministic_generator(work / "small.pth", width=0.125)


@pytest.fixture(scope="module")
def weights(models_dir) -> Path:
    return models_dir / "retinaface_mobilenet0.25.pth"


@pytest.fixture(scope="module")
def speech(media, work) -> Path:
    """1.2 s of the shared speech, as a WAV file to upload."""
    return cut_wav(media / "vr_audio1.wav", work / "speech.wav", 1.2)
