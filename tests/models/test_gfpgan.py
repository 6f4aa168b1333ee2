"""GFPGAN v1.4 computes the published function (deterministic fill vs ../shared/fixtures/gfpgan_v14.npz),
loads the released file layout unmodified, and is deterministic with its stored noise."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_to_fixture
from wav2lip import store
from wav2lip.checkpoints import identify, inspect_checkpoint, load_model, load_state, read_checkpoint
from wav2lip.lipsync.enhance import from_network, to_network
from wav2lip.errors import Wav2LipError
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.models.gfpgan import GFPGAN, ModulatedConv2d

NARROW = 1 / 16  # a small model with the same layout, for the cheap tests


@pytest.fixture(scope="module")
def released_format(fixtures_dir) -> list:
    return json.loads((fixtures_dir / "gfpgan_v14_state_dict_format.json").read_text())["gfpgan_v1.4_params_ema"]


@pytest.fixture(scope="module")
def small() -> GFPGAN:
    return fill_deterministic(GFPGAN(narrow=NARROW))


def test_state_dict_is_the_released_files_keys_shapes_and_order(released_format) -> None:
    state = GFPGAN().state_dict()
    assert list(state) == [key for key, _, _ in released_format]
    for key, shape, dtype in released_format:
        assert list(state[key].shape) == shape and str(state[key].dtype) == f"torch.{dtype}", key
    # The loader accepts exactly that layout (strict: no key missing or left over).
    released = {key: torch.zeros(shape) for key, shape, _ in released_format}
    assert identify(released) == "gfpgan"
    load_state(GFPGAN(), released, "GFPGANv1.4.pth", "gfpgan")


def test_filled_network_matches_the_fixture(fixtures_dir) -> None:
    ref = np.load(fixtures_dir / "gfpgan_v14.npz")
    model = fill_deterministic(GFPGAN())
    with torch.inference_mode():
        out, rgbs = model(to_network(ref["face_bgr"][None]), return_rgb=True)
    assert_close_to_fixture(out.numpy(), ref["out"])
    for i in range(4):
        assert_close_to_fixture(rgbs[i].numpy(), ref[f"out_rgb_{i}"])
    image = from_network(out)[0]
    diff = np.abs(image.astype(int) - ref["out_bgr_uint8"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # rounding of values a hair from .5


def test_modulated_conv_is_the_per_sample_grouped_conv() -> None:
    """The batch-shared form equals the reference's per-sample modulated weight in one grouped conv."""
    torch.manual_seed(0)
    for demodulate, upsample, kernel in ((True, False, 3), (True, True, 3), (False, False, 1)):
        layer = ModulatedConv2d(6, 5, kernel, demodulate=demodulate, upsample=upsample).eval()
        x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 512)
        s = layer.modulation(style)
        weight = layer.weight * s[:, None, :, None, None]  # (B, out, in, k, k)
        if demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
        if upsample:
            x_up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            x_up = x
        ref = F.conv2d(x_up.reshape(1, -1, *x_up.shape[2:]), weight.reshape(-1, 6, kernel, kernel),
                       padding=kernel // 2, groups=3).reshape(3, 5, *x_up.shape[2:])
        torch.testing.assert_close(layer(x, style), ref, rtol=1e-5, atol=1e-5)


def test_stored_noise_is_deterministic_and_batching_changes_nothing(small) -> None:
    torch.manual_seed(1)
    faces = torch.rand(2, 3, 512, 512) * 2 - 1
    with torch.inference_mode():
        both = small(faces)
        again = small(faces[1:])
        fresh = small(faces[1:], fresh_noise=True)
    torch.testing.assert_close(both[1:], again, rtol=1e-4, atol=1e-4)
    assert (fresh - again).abs().max() > 1e-3  # fresh noise (the reference default) changes the face


def test_released_layout_loads_through_the_checkpoint_loader(tmp_path, small) -> None:
    state = small.state_dict()
    for entry in ("params_ema", "params"):
        path = tmp_path / f"{entry}.pth"
        torch.save({entry: state}, path)
        model = load_model(path, "gfpgan")
        assert isinstance(model, GFPGAN) and model.width == NARROW and not model.training
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    both = tmp_path / "both.pth"
    torch.save({"params": {k: v + 1 for k, v in state.items()}, "params_ema": state}, both)
    assert torch.equal(read_checkpoint(both).state_dict["final_linear.bias"], state["final_linear.bias"])
    info = inspect_checkpoint(both)
    assert info.kind == "gfpgan" and info.n_params == sum(v.numel() for v in state.values()) and info.width == NARROW


def test_wrong_or_broken_files_are_one_line_errors(tmp_path) -> None:
    generator = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": Wav2Lip(width=0.125).state_dict()}, generator)
    with pytest.raises(Wav2LipError, match="expected the GFPGAN v1.4 face restorer, but the file holds the Wav2Lip"):
        load_model(generator, "gfpgan")
    empty = tmp_path / "empty.pth"
    torch.save({"params_ema": {"note": "no tensors"}}, empty)
    with pytest.raises(Wav2LipError, match="'params_ema' entry holds no tensors"):
        read_checkpoint(empty)
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(Wav2LipError, match="not a PyTorch checkpoint"):
        load_model(random_bytes, "gfpgan")


def test_the_model_store_knows_the_release() -> None:
    entry = store.KNOWN["GFPGANv1.4.pth"]
    assert entry.kind == "gfpgan" and entry.size == 348_632_874
    assert entry.urls[0] == "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
