"""Training on a small synthetic set: losses fall, checkpoints load, resume equals an uninterrupted run.

Narrow networks (width 0.125, same layer layout) keep the learning tests within budget; one test runs
the full-width networks for a step through the CLI. One torch thread: these run beside other tests.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wav2lip import checkpoints

from wav2lip.data import synth
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.train import latest_checkpoint, make_config, train
from wav2lip.data.layout import read_file_list
from wav2lip.io.audio import mel_start
from wav2lip.train.data import ExpertSamples, GeneratorSamples, StepSampler

FAST = dict(width=0.125, workers=0, threads=1, progress=False, eval_batches=2)


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def _train_losses(folder: Path, name: str) -> list[float]:
    return [r[name] for r in _log(folder) if r["split"] == "train"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synth.write_dataset(root, 12, seed=5, seconds=2.0)
    return root


@pytest.fixture(scope="module")
def expert_run(data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("expert")
    train(make_config("expert", data_root=str(data), checkpoint_dir=str(folder), steps=240, batch_size=16,
                      lr=5e-4, eval_interval=120, checkpoint_interval=120, log_interval=20, **FAST))
    return folder


def test_every_recipe_name_is_registered_with_the_loop():
    """The loop finds recipes by name in the registry that each recipe module fills."""
    from wav2lip.train.config import RECIPES as NAMES
    from wav2lip.train.parts import RECIPES

    assert sorted(RECIPES) == sorted(NAMES)


def test_expert_loss_falls_and_checkpoints_load(expert_run):
    losses = _train_losses(expert_run, "loss")
    # Each logged loss is the mean of 20 batches of 16: the median of the last three, not the last alone.
    # Falling to chance (ln 2 = 0.693, from about 0.8 at the start) is only calibration, and 120 steps gave
    # no more than that; 240 steps learn sync on every rounding path measured (both memory layouts,
    # lr 5e-4: 0.52-0.53, lr 1e-3: 0.51-0.60), so the loss must fall well under chance.
    assert np.median(losses[-3:]) < min(0.8 * losses[0], 0.65), losses
    records = _log(expert_run)
    assert [r["step"] for r in records if r["split"] == "val"] == [120, 240]
    assert all({"step", "split", "loss"} <= set(r) for r in records)
    path = latest_checkpoint(expert_run)
    assert path.name == "checkpoint_step000000240.pth"
    raw = torch.load(path, weights_only=True)
    assert {"state_dict", "optimizer", "global_step", "global_epoch"} <= set(raw)
    assert raw["global_step"] == 240
    model = checkpoints.load_model(path, "syncnet")
    assert model.width == 0.125 and not model.training


def _kernels(network: torch.nn.Module) -> list[torch.Tensor]:
    kernels = [p for p in network.parameters() if p.dim() == 4]
    assert kernels
    return kernels


def test_a_cpu_generator_run_holds_every_network_of_a_step_channels_last(data, expert_run, tmp_path):
    """Generator, discriminator and the frozen expert (which no optimizer names) convolve in oneDNN's
    preferred layout; the expert recipe's network keeps the default one (loop._channels_last says why)."""
    from wav2lip.train.loop import _channels_last, _precision
    from wav2lip.train.parts import RECIPES

    cpu = torch.device("cpu")
    config = make_config("generator", data_root=str(data), checkpoint_dir=str(tmp_path), gan=True,
                         expert=str(latest_checkpoint(expert_run)), **FAST)
    recipe = RECIPES["generator"](config, cpu, *_precision(config, cpu))
    _channels_last(recipe)
    for network in (recipe.model, recipe.disc, recipe.expert):
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in _kernels(network))
    config = make_config("expert", data_root=str(data), checkpoint_dir=str(tmp_path), **FAST)
    recipe = RECIPES["expert"](config, cpu, *_precision(config, cpu))
    _channels_last(recipe)
    assert all(p.is_contiguous() for p in _kernels(recipe.model))


@pytest.fixture(scope="module")
def generator_run(data, expert_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("generator")
    train(make_config("generator", data_root=str(data), checkpoint_dir=str(folder),
                      expert=str(latest_checkpoint(expert_run)), steps=60, batch_size=4, lr=1e-3,
                      eval_interval=60, checkpoint_interval=60, log_interval=15, **FAST))
    return folder


def test_generator_l1_falls_and_collage_is_written(generator_run):
    losses = _train_losses(generator_run, "l1")
    assert losses[-1] < 0.85 * losses[0], losses
    val = [r for r in _log(generator_run) if r["split"] == "val"]
    assert [r["step"] for r in val] == [1, 60]  # the plain recipe also evaluates after step 1
    assert {"l1", "sync"} <= set(val[0])
    collage = cv2_read(generator_run / "samples_step000000060.png")
    assert collage.shape == (2 * 5 * 96, 4 * 96, 3)  # 2 clips x 5 frames; ref | masked | generated | truth
    assert collage[48:96, 96:192].max() == 0  # the masked panel's lower half is black
    raw = torch.load(latest_checkpoint(generator_run), weights_only=True)
    assert all(t.is_contiguous() for t in raw["state_dict"].values())  # trained channels-last, written plain
    model = checkpoints.load_model(latest_checkpoint(generator_run), "wav2lip")
    assert model.width == 0.125


def cv2_read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def _gan_config(data: Path, expert: Path, folder: Path, steps: int, **extra):
    # sync_threshold 10 switches the sync loss on at the first evaluation: its weight is state too.
    return make_config("generator", data_root=str(data), checkpoint_dir=str(folder), expert=str(expert),
                       gan=True, steps=steps, batch_size=2, eval_interval=2, checkpoint_interval=2,
                       log_interval=1, sync_threshold=10.0, **{**FAST, "eval_batches": 1, **extra})


def test_resume_gives_the_same_steps_as_an_uninterrupted_run(data, expert_run, tmp_path):
    expert = latest_checkpoint(expert_run)
    train(_gan_config(data, expert, tmp_path / "a", steps=4))
    train(_gan_config(data, expert, tmp_path / "b", steps=2))
    train(_gan_config(data, expert, tmp_path / "b", steps=4, resume=True))

    def losses(folder: Path) -> dict[int, dict]:
        return {r["step"]: r for r in _log(folder) if r["split"] == "train"}

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    for step in (3, 4):
        assert "sync" in a[step] and "perceptual" in a[step]
        for name in ("l1", "sync", "perceptual", "disc_real", "disc_fake"):
            assert a[step][name] == b[step][name], (step, name)
    for prefix in ("", "disc_"):
        sa = torch.load(tmp_path / "a" / f"{prefix}checkpoint_step000000004.pth", weights_only=True)
        sb = torch.load(tmp_path / "b" / f"{prefix}checkpoint_step000000004.pth", weights_only=True)
        for key, value in sa["state_dict"].items():
            assert torch.equal(value, sb["state_dict"][key]), key
        assert sa["optimizer"]["state"][0]["step"] == sb["optimizer"]["state"][0]["step"]
    saved = torch.load(tmp_path / "b" / "checkpoint_step000000004.pth", weights_only=True)
    assert saved["train_state"]["sync_weight"] == 0.03  # the GAN recipe's weight, switched on at step 2
    assert tuple(saved["optimizer"]["param_groups"][0]["betas"]) == (0.5, 0.999)
    assert checkpoints.inspect_checkpoint(tmp_path / "b" / "checkpoint_step000000004.pth").variant == "gan"


def test_full_width_networks_train_through_the_cli(data, tmp_path):
    expert_dir, gen_dir = tmp_path / "expert", tmp_path / "gen"
    common = ["--data-root", str(data), "--steps", "1", "--eval-batches", "1", "--workers", "0",
              "--threads", "1", "--no-progress"]
    assert main(["train-expert", *common, "--checkpoint-dir", str(expert_dir), "--batch-size", "2"]) == 0
    expert = expert_dir / "checkpoint_step000000001.pth"
    assert checkpoints.inspect_checkpoint(expert).width == 1.0
    assert main(["train", *common, "--checkpoint-dir", str(gen_dir), "--batch-size", "1",
                 "--expert", str(expert), "--gan", "--precision", "bf16"]) == 0  # CPU autocast
    generator = checkpoints.load_model(gen_dir / "checkpoint_step000000001.pth", "wav2lip")
    assert generator.width == 1.0 and all(p.dtype == torch.float32 for p in generator.parameters())
    assert checkpoints.load_model(gen_dir / "disc_checkpoint_step000000001.pth", "discriminator").width == 1.0
    record = [r for r in _log(gen_dir) if r["split"] == "train"][0]
    assert all(np.isfinite(record[k]) for k in ("l1", "perceptual", "disc_real", "disc_fake"))


def test_sigterm_saves_a_checkpoint_and_resume_continues(data, tmp_path):
    folder = tmp_path / "run"
    code = ("from wav2lip.train import make_config, train; "
            f"train(make_config('expert', data_root={str(data)!r}, checkpoint_dir={str(folder)!r}, "
            "steps=100000, batch_size=2, log_interval=1, eval_interval=10**6, checkpoint_interval=10**6, "
            "width=0.125, workers=1, threads=1, progress=False))")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline and not ((folder / "log.jsonl").exists()
                                          and len(_log(folder)) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    saved = latest_checkpoint(folder)
    step = torch.load(saved, weights_only=True)["global_step"]
    assert step >= 2
    train(make_config("expert", data_root=str(data), checkpoint_dir=str(folder), steps=step + 1, batch_size=2,
                      log_interval=1, eval_interval=10**6, checkpoint_interval=10**6, resume=True, **FAST))
    assert latest_checkpoint(folder).name == f"checkpoint_step{step + 1:09d}.pth"
    assert [r for r in _log(folder) if r["split"] == "resume"][0]["step"] == step


def test_samples_follow_the_reference_recipe(data):
    clips = read_file_list(data, "train")
    samples = GeneratorSamples(clips, seed=3)
    target, reference, per_frame, mel = samples[7]
    assert target.shape == reference.shape == (5, 96, 96, 3) and target.dtype == np.uint8
    assert per_frame.shape == (5, 1, 80, 16) and mel.shape == (1, 80, 16)
    again = samples[7]
    assert all(np.array_equal(x, y) for x, y in zip(samples[7], again))
    # Find the clip and frame the sample came from, and check the mel windows against the spec.
    for clip in clips:
        full = samples.mel(clips.index(clip))
        for f in clip.frames:
            if np.array_equal(samples.window(clips.index(clip), int(f)), target):
                assert np.array_equal(mel[0], full[:, mel_start(f):mel_start(f) + 16])
                for j in range(5):
                    start = mel_start(f + j - 1)  # one frame earlier than the frame's own index
                    assert np.array_equal(per_frame[j, 0], full[:, start:start + 16])
                assert f >= 1
                break
        else:
            continue
        break
    else:
        pytest.fail("the target window is not a window of any clip")
    expert_samples = ExpertSamples(clips, seed=0)
    labels = [expert_samples[i][2] for i in range(200)]
    assert 0.4 < np.mean(labels) < 0.6  # half in sync


def test_curriculum_switches_the_sync_loss_on_by_itself(data, expert_run, tmp_path):
    """The sync weight is 0 until an evaluation's sync loss is under the threshold, then the recipe's."""
    expert = latest_checkpoint(expert_run)

    def run(folder: Path, **extra) -> list[dict]:
        train(make_config("generator", data_root=str(data), checkpoint_dir=str(folder), expert=str(expert), steps=4,
                          batch_size=2, eval_interval=2, checkpoint_interval=4, log_interval=1,
                          **{**FAST, "eval_batches": 1, **extra}))
        return _log(folder)

    never = run(tmp_path / "never", sync_threshold=0.0)  # no loss is below 0: L1 only throughout
    assert not any("note" in r for r in never)
    assert all("sync" not in r for r in never if r["split"] == "train")
    records = run(tmp_path / "switch", sync_threshold=100.0)  # below 100 at the first evaluation (step 1)
    notes = [r for r in records if "note" in r]
    assert [r["step"] for r in notes] == [1] and "sync loss weight now 0.01" in notes[0]["note"]
    train_records = [r for r in records if r["split"] == "train"]
    assert "sync" not in train_records[0] and all("sync" in r for r in train_records[1:])
    assert all(r["loss"] != r["l1"] for r in train_records[1:])
    saved = torch.load(latest_checkpoint(tmp_path / "switch"), weights_only=True)
    assert saved["train_state"]["sync_weight"] == 0.01


def test_ranks_share_one_global_batch_sequence():
    single = list(StepSampler(4, start_step=0, stop_step=6))
    ranks = [list(StepSampler(2, start_step=0, rank=r, world=2, stop_step=6)) for r in (0, 1)]
    merged = [i for s in range(6) for r in (0, 1) for i in ranks[r][2 * s:2 * s + 2]]
    assert merged == single
    assert list(StepSampler(4, start_step=3, stop_step=6)) == single[12:]


def test_clear_errors(data, tmp_path):
    with pytest.raises(Wav2LipError, match="does not exist"):
        read_file_list(tmp_path / "nowhere", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Wav2LipError, match="train.txt: file list not found"):
        read_file_list(empty, "train")
    (empty / "train.txt").write_text("spk000/00000\nghost/00001\n")
    with pytest.raises(Wav2LipError, match="2 listed clips have no folder"):
        read_file_list(empty, "train")
    config = dict(data_root=str(data), steps=1, batch_size=2, log_interval=1, **FAST)
    with pytest.raises(Wav2LipError, match="--expert"):
        train(make_config("generator", checkpoint_dir=str(tmp_path / "g"), **config))
    train(make_config("expert", checkpoint_dir=str(tmp_path / "e"), **config))
    with pytest.raises(Wav2LipError, match="wrong shape"):  # resuming with another width
        train(make_config("expert", checkpoint_dir=str(tmp_path / "e"), resume=True,
                          **{**config, "width": 0.25, "steps": 2}))
    with pytest.raises(Wav2LipError, match="expected the Wav2Lip generator"):
        train(make_config("generator", checkpoint_dir=str(tmp_path / "g"), expert=str(tmp_path / "e" /
              "checkpoint_step000000001.pth"), init=str(tmp_path / "e" / "checkpoint_step000000001.pth"),
              **config))
    with pytest.raises(Wav2LipError, match="fp16 needs a GPU"):
        train(make_config("expert", checkpoint_dir=str(tmp_path / "h"), precision="fp16", **config))
    with pytest.raises(Wav2LipError, match="unknown precision 'fp8'"):
        make_config("expert", precision="fp8")
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(Wav2LipError, match="unknown settings learning_rate"):
        make_config("expert", bad)


def test_a_malformed_world_size_is_one_line_naming_it(data, tmp_path, monkeypatch, capsys):
    """Training reads torchrun's RANK / WORLD_SIZE where sharding does (shards.rank_and_world)."""
    monkeypatch.setenv("WORLD_SIZE", "two")
    code = main(["train-expert", "--data-root", str(data), "--checkpoint-dir", str(tmp_path / "e"), "--steps", "1",
                 "--batch-size", "2", "--workers", "0", "--width", "0.125", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "WORLD_SIZE='two'" in err[0]


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("[train]\nbatch_size = 8\nlr = 0.0003\n")
    config = make_config("generator", path, gan=True, lr=None, steps=5)
    assert (config.batch_size, config.lr, config.steps) == (8, 3e-4, 5)
    assert config.betas == (0.5, 0.999) and config.sync_weight == 0.03 and config.disc_weight == 0.07
    plain = make_config("generator")
    assert plain.betas == (0.9, 0.999) and plain.batch_size == 16 and plain.eval_interval == 3000
    assert make_config("expert").batch_size == 64
    json_path = tmp_path / "c.json"
    json_path.write_text(json.dumps({"width": 0.5}))
    assert make_config("expert", json_path, width=0.25).width == 0.25



@pytest.mark.parametrize("name, text", [("deep.json", "[" * 100_000), ("deep.toml", "a = " + "[" * 100_000),
                                        ("latin.json", "{\"lr\": \"\xe9\"}"), ("list.json", "[1, 2]")])
def test_a_hostile_config_file_is_one_line(tmp_path, name, text):
    """Nesting past the parsers' recursion (found by fuzzing), bytes that are not UTF-8, a non-table."""
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(Wav2LipError, match=rf"{name}: (not a valid config file|a config file must hold)"):
        make_config("expert", path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_training_resolves_its_device_as_inference_does() -> None:
    """"auto" picks what inference picks; a device the machine lacks is one line, not a late crash."""
    from wav2lip.device import resolve_device
    from wav2lip.train.config import TrainConfig
    from wav2lip.train.loop import _setup_distributed

    assert _setup_distributed(TrainConfig(device="auto"))[1] == resolve_device("auto")
    with pytest.raises(Wav2LipError, match="not available"):
        _setup_distributed(TrainConfig(device="cuda"))
