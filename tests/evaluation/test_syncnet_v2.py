"""SyncNet v2 evaluator network: checkpoint layout and forward parity with the published model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_close_to_fixture
from support.deterministic import fill_deterministic
from wav2lip.models.syncnet_v2 import SyncNetV2


@pytest.fixture(scope="module")
def model() -> SyncNetV2:
    return fill_deterministic(SyncNetV2())


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return np.load(fixtures_dir / "syncnet_v2_evaluator.npz")


def test_state_dict_matches_released_format(fixtures_dir):
    formats = json.loads((fixtures_dir / "state_dict_formats.json").read_text())["syncnet_v2_evaluator"]
    ours = [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in SyncNetV2().state_dict().items()]
    assert ours == formats


def test_forward_matches_fixture(model, fixture):
    with torch.inference_mode():
        aud = model.forward_aud(torch.from_numpy(fixture["mfcc_in"]))
        lip = model.forward_lip(torch.from_numpy(fixture["lips"]).float())
    assert_close_to_fixture(aud.numpy(), fixture["aud_emb"])
    assert_close_to_fixture(lip.numpy(), fixture["lip_emb"])


def test_batch_items_are_independent(model, fixture):
    """Eval-mode BatchNorm: one item embeds the same alone as in a batch."""
    with torch.inference_mode():
        both = model.forward_aud(torch.from_numpy(fixture["mfcc_in"]))
        second = model.forward_aud(torch.from_numpy(fixture["mfcc_in"][1:]))
    torch.testing.assert_close(second[0], both[1], rtol=1e-5, atol=1e-4)
