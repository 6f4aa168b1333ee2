"""The three Wav2Lip networks compute the published functions (deterministic fill vs fixtures)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_close_to_fixture
from support.deterministic import deterministic_state_dict, fill_deterministic
from wav2lip.models.discriminator import QualityDiscriminator
from wav2lip.models.generator import Wav2Lip
from wav2lip.models.syncnet import SyncNet, sync_probability

NETWORKS = {
    "wav2lip_generator": Wav2Lip, "syncnet_expert": SyncNet, "quality_discriminator": QualityDiscriminator,
}


@pytest.fixture(scope="module")
def formats(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "state_dict_formats.json").read_text())


@pytest.fixture(scope="module")
def generator() -> Wav2Lip:
    return fill_deterministic(Wav2Lip())


@pytest.mark.parametrize("name", NETWORKS)
def test_state_dict_matches_the_authors_keys_and_shapes(name, formats):
    state = NETWORKS[name]().state_dict()
    expected = formats[name]
    assert list(state) == [key for key, _, _ in expected]
    for key, shape, dtype in expected:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key


def test_deterministic_fill_matches_checksums(fixtures_dir):
    sums = json.loads((fixtures_dir / "wav2lip_generator.weights_checksum.json").read_text())
    filled = deterministic_state_dict(Wav2Lip())
    checked = {k: v for k, v in filled.items() if not k.endswith("num_batches_tracked")}
    assert set(checked) == set(sums)
    for key, value in checked.items():
        assert value.double().sum().item() == pytest.approx(sums[key], rel=1e-9, abs=1e-9), key


def test_generator_per_frame_matches_fixture(generator, fixtures_dir):
    ref = np.load(fixtures_dir / "wav2lip_generator.npz")
    with torch.inference_mode():
        out = generator(torch.from_numpy(ref["mel"]), torch.from_numpy(ref["faces"]))
    assert_close_to_fixture(out.numpy(), ref["out"])


def test_generator_sequence_matches_fixture(generator, fixtures_dir):
    ref = np.load(fixtures_dir / "wav2lip_generator.npz")
    with torch.inference_mode():
        out = generator(torch.from_numpy(ref["mel_seq"]), torch.from_numpy(ref["face_seq"]))
    assert_close_to_fixture(out.numpy(), ref["out_seq"])


def test_syncnet_matches_fixture(fixtures_dir):
    ref = np.load(fixtures_dir / "syncnet_expert.npz")
    model = fill_deterministic(SyncNet())
    with torch.inference_mode():
        audio_emb, face_emb = model(torch.from_numpy(ref["mel"]), torch.from_numpy(ref["faces"]))
    assert_close_to_fixture(audio_emb.numpy(), ref["audio_emb"])
    assert_close_to_fixture(face_emb.numpy(), ref["face_emb"])
    assert_close_to_fixture(sync_probability(audio_emb, face_emb).numpy(), ref["cosine"])


def test_discriminator_matches_fixture_and_sees_only_the_lower_half(fixtures_dir):
    ref = np.load(fixtures_dir / "quality_discriminator.npz")
    model = fill_deterministic(QualityDiscriminator())
    faces = torch.from_numpy(ref["faces"])
    scrambled = faces.clone()
    scrambled[..., :48, :] = torch.rand_like(scrambled[..., :48, :])
    with torch.inference_mode():
        out = model(faces)
        assert torch.equal(model(scrambled), out)
        loss = model.perceptual_loss(faces)
    assert_close_to_fixture(out.numpy(), ref["out"])
    assert loss.item() == pytest.approx(-np.log(ref["out"].astype(np.float64)).mean(), rel=1e-5)


@pytest.mark.parametrize("name", NETWORKS)
def test_narrow_models_keep_the_key_layout(name):
    full, small = NETWORKS[name]().state_dict(), NETWORKS[name](width=0.25).state_dict()
    assert list(small) == list(full)
    assert sum(v.numel() for v in small.values()) < sum(v.numel() for v in full.values()) / 10


def test_narrow_generator_runs_both_forms_and_folds_frame_major():
    torch.manual_seed(0)
    model = Wav2Lip(width=0.25).eval()
    mel, faces = torch.randn(2, 3, 1, 80, 16), torch.rand(2, 6, 3, 96, 96)
    with torch.inference_mode():
        seq = model(mel, faces)
        frames = [model(mel[:, t], faces[:, :, t]) for t in range(3)]
    assert seq.shape == (2, 3, 3, 96, 96)
    torch.testing.assert_close(seq, torch.stack(frames, dim=2))
    assert 0 < seq.min() and seq.max() < 1


def test_narrow_syncnet_and_discriminator_run():
    sync, disc = SyncNet(width=0.25).eval(), QualityDiscriminator(width=0.25).eval()
    with torch.inference_mode():
        audio_emb, face_emb = sync(torch.randn(3, 1, 80, 16), torch.rand(3, 15, 48, 96))
        prob = disc(torch.rand(2, 3, 4, 96, 96))
    assert audio_emb.shape == face_emb.shape == (3, 128)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(3))
    assert prob.shape == (8, 1)


def test_discriminator_folds_frames_like_the_generator():
    torch.manual_seed(0)
    disc = QualityDiscriminator(width=0.25).eval()
    faces = torch.rand(2, 3, 4, 96, 96)
    with torch.inference_mode():
        folded = disc(faces).reshape(4, 2)
        per_frame = torch.stack([disc(faces[:, :, t:t + 1]).reshape(2) for t in range(4)])
    torch.testing.assert_close(folded, per_frame)
