"""Checkpoints in the authors' formats load, save and identify; every broken file gets a clear error."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from wav2lip.checkpoints import (
    MODEL_NAMES, build_model, identify, infer_width, inspect_checkpoint, load_model, read_checkpoint,
    save_checkpoint,
)
from wav2lip.errors import Wav2LipError
from wav2lip.models.discriminator import QualityDiscriminator
from wav2lip.models.generator import Wav2Lip
from wav2lip.models.syncnet import SyncNet

FORMAT_KINDS = {
    "wav2lip_generator": "wav2lip", "syncnet_expert": "syncnet", "quality_discriminator": "discriminator",
    "s3fd": "s3fd", "syncnet_v2_evaluator": "syncnet_v2",
}


class NotATensor:
    """A custom class: a pickle holding it needs code from outside torch to load."""


@pytest.fixture(scope="module")
def small_generator() -> Wav2Lip:
    torch.manual_seed(0)
    return Wav2Lip(width=0.25)


@pytest.fixture(scope="module")
def formats(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "state_dict_formats.json").read_text())


def _authors_file(path, state: dict, prefix: str = "", **entries) -> None:
    """Write a file the way the reference training scripts do."""
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}, **entries}, path)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_authors_format_loads_with_or_without_module_prefix(tmp_path, small_generator, prefix):
    path = tmp_path / "gen.pth"
    _authors_file(path, small_generator.state_dict(), prefix, optimizer=None, global_step=7, global_epoch=1)
    model = load_model(path, "wav2lip")
    assert isinstance(model, Wav2Lip) and model.width == 0.25 and not model.training
    assert _same_weights(model, small_generator)


def test_optimizer_entry_absent_and_counters_absent(tmp_path, small_generator):
    path = tmp_path / "gen.pth"
    _authors_file(path, small_generator.state_dict())
    assert _same_weights(load_model(path, "wav2lip"), small_generator)
    info = inspect_checkpoint(path)
    assert (info.kind, info.step, info.epoch, info.variant, info.width) == ("wav2lip", None, None, None, 0.25)


def test_bare_state_dict_of_the_real_retinaface_weights(models_dir):
    path = models_dir / "retinaface_mobilenet0.25.pth"
    model = load_model(path, "retinaface")
    info = inspect_checkpoint(path)
    assert info.kind == "retinaface" and info.step is None and info.width is None
    assert info.n_params == sum(p.numel() for p in model.parameters())


def test_save_round_trip_in_the_authors_format(tmp_path, small_generator):
    path = tmp_path / "gen.pth"
    optimizer = torch.optim.Adam(small_generator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    wrapped = nn.DataParallel(small_generator)
    save_checkpoint(path, wrapped, optimizer, step=3000, epoch=12, extra={"note": "x"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "optimizer", "global_step", "global_epoch", "note", "width"}
    assert list(raw["state_dict"]) == list(small_generator.state_dict())
    checkpoint = read_checkpoint(path)
    assert (checkpoint.step, checkpoint.epoch, checkpoint.extra) == (3000, 12, {"note": "x", "width": 0.25})
    optimizer.load_state_dict(checkpoint.optimizer)
    assert _same_weights(load_model(path, "wav2lip"), small_generator)
    info = inspect_checkpoint(path)
    assert (info.kind, info.step, info.epoch, info.variant) == ("wav2lip", 3000, 12, "gan")
    assert info.n_params == sum(p.numel() for p in small_generator.parameters())


def test_plain_generator_variant_from_default_betas(tmp_path, small_generator):
    path = tmp_path / "gen.pth"
    save_checkpoint(path, small_generator, torch.optim.Adam(small_generator.parameters(), lr=1e-4))
    assert inspect_checkpoint(path).variant == "plain"


def test_failed_save_leaves_no_file(tmp_path, small_generator):
    path = tmp_path / "gen.pth"
    with pytest.raises(Exception):
        save_checkpoint(path, small_generator, extra={"unpicklable": lambda: 0})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "cls,kind", [(Wav2Lip, "wav2lip"), (SyncNet, "syncnet"), (QualityDiscriminator, "discriminator")]
)
def test_narrow_models_round_trip(tmp_path, cls, kind):
    model = cls(width=0.3)  # 0.3 rounds channel counts differently per layer: the saved width decides
    path = tmp_path / f"{kind}.pth"
    save_checkpoint(path, model, step=5)
    loaded = load_model(path, kind)
    assert isinstance(loaded, cls) and loaded.width == 0.3 and _same_weights(loaded, model)
    assert inspect_checkpoint(path).kind == kind


def test_a_generator_trained_on_an_earlier_window_records_it(tmp_path, small_generator, capsys):
    """The mel window goes with the weights: saved only when not the authors', loaded without flags,
    shown by `weights inspect`; a file recording a nonsense window is refused in one line."""
    from wav2lip.cli import main

    plain = tmp_path / "plain.pth"
    save_checkpoint(plain, small_generator)
    assert "mel_offset" not in torch.load(plain, weights_only=True)
    assert load_model(plain, "wav2lip").mel_offset == 0 and inspect_checkpoint(plain).mel_offset == 0
    early = tmp_path / "early.pth"
    save_checkpoint(early, Wav2Lip(width=small_generator.width, mel_offset=-13))
    assert load_model(early, "wav2lip").mel_offset == -13 and inspect_checkpoint(early).mel_offset == -13
    assert main(["weights", "inspect", str(early)]) == 0
    assert "-13 mel steps (-162.5 ms): needs 50 ms of audio after a frame's start" in capsys.readouterr().out
    for bad in (True, 1.5, "-13", -49, 17):
        path = tmp_path / "bad.pth"
        payload = torch.load(early, weights_only=True)
        payload["mel_offset"] = bad
        torch.save(payload, path)
        with pytest.raises(Wav2LipError, match=r"bad\.pth: mel_offset must be a whole number of mel steps"):
            load_model(path, "wav2lip")


@pytest.mark.parametrize("name", FORMAT_KINDS)
def test_identify_every_network_from_its_keys(formats, name):
    state = {key: torch.zeros(0) for key, _, _ in formats[name]}
    assert identify(state) == FORMAT_KINDS[name]
    assert identify({"module." + k: v for k, v in state.items()}) == FORMAT_KINDS[name]


def test_width_of_the_authors_shapes_is_one(formats):
    state = {key: torch.empty(shape) for key, shape, _ in formats["wav2lip_generator"] if len(shape) == 4}
    assert infer_width("wav2lip", state) == 1.0
    assert infer_width("s3fd", state) is None


def _error(path, kind="wav2lip") -> str:
    with pytest.raises(Wav2LipError) as caught:
        load_model(path, kind)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_and_empty_files(tmp_path):
    assert "no such file" in _error(tmp_path / "absent.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.pth")


def test_truncated_file(tmp_path, small_generator):
    path = tmp_path / "gen.pth"
    save_checkpoint(path, small_generator)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _error(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(range(256)) * 16)
    assert "not a PyTorch checkpoint" in _error(path)


def test_a_pickle_that_needs_custom_code_is_refused(tmp_path, small_generator):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_generator.state_dict(), "payload": NotATensor()}, path)
    message = _error(path)
    assert "refused" in message and "NotATensor" in message


class RunsACommand:
    """Unpickling this calls os.system: torch blocks the whole module, with its own wording."""

    def __reduce__(self):
        return (os.system, ("touch should-never-exist",))


def test_a_pickle_that_would_run_a_command_is_refused_as_such(tmp_path, small_generator, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "system.pth"
    torch.save({"state_dict": small_generator.state_dict(), "payload": RunsACommand()}, path)
    message = _error(path)
    assert "would run code" in message and "system" in message and "corrupt" not in message
    assert not (tmp_path / "should-never-exist").exists()


def test_an_object_that_is_no_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    assert "not a checkpoint" in _error(path)


def test_s3fd_file_given_as_generator(tmp_path, formats):
    path = tmp_path / "s3fd.pth"
    torch.save({key: torch.zeros(1) for key, _, _ in formats["s3fd"]}, path)
    message = _error(path)
    assert MODEL_NAMES["wav2lip"] in message and MODEL_NAMES["s3fd"] in message
    _authors_file(path, {"encoder.weight": torch.zeros(1)})
    with pytest.raises(Wav2LipError, match="holds none of the known networks"):
        inspect_checkpoint(path)


def test_missing_keys(tmp_path, small_generator):
    state = small_generator.state_dict()
    del state["output_block.1.bias"]
    path = tmp_path / "gen.pth"
    _authors_file(path, state, "module.")
    message = _error(path)
    assert "missing 1 of" in message and "output_block.1.bias" in message


def test_wrong_shapes(tmp_path, small_generator):
    path = tmp_path / "gen.pth"
    save_checkpoint(path, small_generator)
    first = r"face_encoder_blocks\.0\.0\.conv_block\.0\.weight"
    with pytest.raises(Wav2LipError, match=rf"wrong shape, e\.g\. {first}"):
        load_model(path, "wav2lip", width=0.5)
    state = small_generator.state_dict()
    state["output_block.1.weight"] = torch.zeros(3, 9, 1, 1)
    _authors_file(path, state)
    assert "output_block.1.weight is (3, 9, 1, 1)" in _error(path)


@pytest.mark.parametrize("kind", ["s3fd", "syncnet_v2"])
def test_bare_state_dicts_of_the_other_networks(tmp_path, kind):
    model = build_model(kind)
    path = tmp_path / f"{kind}.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    assert _same_weights(load_model(path, kind), model)
    assert inspect_checkpoint(path).kind == kind


def test_the_torch_floor_is_one_whose_weights_only_load_runs_no_code() -> None:
    """torch.load(weights_only=True) could still be made to run code before torch 2.6 (CVE-2025-32434):
    the declared floor may not allow those versions."""
    import re

    from conftest import ROOT

    floor = re.search(r'"torch>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert floor, "pyproject.toml declares no torch floor"
    assert tuple(int(p) for p in floor[1].split(".")[:2]) >= (2, 6), floor[0]
