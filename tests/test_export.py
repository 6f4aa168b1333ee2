"""ONNX export of the generator: dynamic batch, same output as PyTorch within 1e-4 (onnxruntime)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_close_to_fixture
from wav2lip.checkpoints import load_model, save_checkpoint
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.export import OnnxGenerator, export_onnx, onnx_generator
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip

_EXTRA = "pip install 'wav2lip[onnx]'"
pytest.importorskip("onnx", reason=f"ONNX export needs the optional package onnx ({_EXTRA})")
pytest.importorskip("onnxscript", reason=f"ONNX export needs the optional package onnxscript ({_EXTRA})")
ort = pytest.importorskip("onnxruntime", reason=f"comparing outputs needs onnxruntime ({_EXTRA})")


def _session(path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return np.load(fixtures_dir / "wav2lip_generator.npz")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = fill_deterministic(Wav2Lip())
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "wav2lip.onnx")
    return model, _session(path), path


def test_graph_has_named_inputs_with_a_dynamic_batch(exported):
    _, session, _ = exported
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["mel", "face"]
    assert inputs["mel"][1:] == [1, 80, 16] and inputs["face"][1:] == [6, 96, 96]
    assert isinstance(inputs["mel"][0], str) and inputs["mel"][0] == inputs["face"][0]


def test_onnxruntime_matches_pytorch_and_the_fixture(exported, fixture):
    model, session, _ = exported
    out = session.run(None, {"mel": fixture["mel"], "face": fixture["faces"]})[0]
    with torch.inference_mode():
        expected = model(torch.from_numpy(fixture["mel"]), torch.from_numpy(fixture["faces"])).numpy()
    assert np.abs(out - expected).max() < 1e-4
    assert_close_to_fixture(out, fixture["out"])


def test_other_batch_sizes_run(exported, fixture):
    _, session, _ = exported
    one = session.run(None, {"mel": fixture["mel"][:1], "face": fixture["faces"][:1]})[0]
    assert one.shape == (1, 3, 96, 96)
    assert_close_to_fixture(one, fixture["out"][:1])
    # The sequence fixture folded frame-major is a batch of 10 frames.
    mel = fixture["mel_seq"].transpose(1, 0, 2, 3, 4).reshape(10, 1, 80, 16)
    face = fixture["face_seq"].transpose(2, 0, 1, 3, 4).reshape(10, 6, 96, 96)
    ten = session.run(None, {"mel": np.ascontiguousarray(mel), "face": np.ascontiguousarray(face)})[0]
    assert_close_to_fixture(ten.reshape(5, 2, 3, 96, 96).transpose(1, 2, 0, 3, 4), fixture["out_seq"])


def test_cli_exports_a_checkpoint(tmp_path, fixture):
    torch.manual_seed(0)
    checkpoint, out = tmp_path / "small.pth", tmp_path / "small.onnx"
    save_checkpoint(checkpoint, Wav2Lip(width=0.25))
    assert main(["export", "--onnx", str(out), "--checkpoint", str(checkpoint)]) == 0
    result = _session(out).run(None, {"mel": fixture["mel"], "face": fixture["faces"]})[0]
    model = load_model(checkpoint, "wav2lip")
    with torch.inference_mode():
        expected = model(torch.from_numpy(fixture["mel"]), torch.from_numpy(fixture["faces"])).numpy()
    assert np.abs(result - expected).max() < 1e-4


def test_cli_refuses_a_checkpoint_of_another_network(tmp_path, capsys):
    checkpoint, out = tmp_path / "disc.pth", tmp_path / "x.onnx"
    torch.save({"binary_pred.0.weight": torch.zeros(1, 512, 1, 1)}, checkpoint)
    assert main(["export", "--onnx", str(out), "--checkpoint", str(checkpoint)]) == 2
    assert "visual quality discriminator" in capsys.readouterr().err
    assert not out.exists()


def test_onnx_generator_is_called_like_the_pytorch_one(exported, fixture, tmp_path):
    _, _, path = exported
    out = OnnxGenerator(path)(torch.from_numpy(fixture["mel"]), torch.from_numpy(fixture["faces"]))
    assert isinstance(out, torch.Tensor)
    assert_close_to_fixture(out.numpy(), fixture["out"])
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(Wav2LipError, match="junk.onnx: not a usable ONNX model"):
        OnnxGenerator(tmp_path / "junk.onnx")


def test_onnx_generator_exports_a_checkpoint_once_into_the_cache(tmp_path, fixture):
    checkpoint, cache = tmp_path / "small.pth", tmp_path / "cache"
    save_checkpoint(checkpoint, Wav2Lip(width=0.25))
    first = onnx_generator(checkpoint, weights_dir=cache)
    stamp = first.path.stat().st_mtime_ns
    second = onnx_generator(checkpoint, weights_dir=cache)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert list(cache.rglob("*.onnx")) == [first.path]
    mel, faces = torch.from_numpy(fixture["mel"]), torch.from_numpy(fixture["faces"])
    with torch.inference_mode():
        expected = load_model(checkpoint, "wav2lip")(mel, faces)
    assert (second(mel, faces) - expected).abs().max() < 1e-4
