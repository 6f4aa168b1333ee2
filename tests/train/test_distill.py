"""`wav2lip distill`: student layouts, the loss to the teacher falls, resume is exact, the student loads and
lip-syncs with no flags, `weights inspect` names it, and every hostile --teacher is one line and exit 2.

A deterministic width-0.125 generator is the teacher (its faces are a fixed function of the input, which is
all the student needs to learn); students are narrower still. One torch thread: these run beside other tests.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cut_wav

from wav2lip import checkpoints

from wav2lip.data import synth
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.models.syncnet import SyncNet
from wav2lip.train import default_checkpoint_dir, distill, make_config
from wav2lip.io.video import probe

TEACHER_WIDTH = 0.125
STUDENT_WIDTH = 0.0625
STEPS = 20
BOX_ARGS = ["150", "470", "140", "380"]  # vr_face5.mp4's face: top, bottom, left, right
FLAGS = ["--width", str(STUDENT_WIDTH), "--no-residual", "--batch-size", "2", "--lr", "3e-3",
         "--eval-batches", "2", "--log-interval", "2", "--workers", "0", "--threads", "1", "--no-progress"]


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(work) -> Path:
    synth.write_dataset(work / "data", 12, seed=5, seconds=2.0)
    return work / "data"


@pytest.fixture(scope="module")
def teacher(work) -> Path:
    path = work / "teacher.pth"
    checkpoints.save_checkpoint(path, fill_deterministic(Wav2Lip(width=TEACHER_WIDTH)))
    return path


def _distill(teacher: Path, data: Path, out: Path, *args: str) -> int:
    return main(["distill", "--teacher", str(teacher), "--data-root", str(data), "--out", str(out), *FLAGS, *args])


@pytest.fixture(scope="module")
def student(work, data, teacher) -> Path:
    out = work / "student.pth"
    assert _distill(teacher, data, out, "--steps", str(STEPS), "--eval-interval", str(STEPS),
                    "--checkpoint-interval", str(STEPS // 2)) == 0
    return out


def test_layout_without_residual_blocks_keeps_the_teachers_key_names():
    full, lean = Wav2Lip(width=0.25), Wav2Lip(width=0.25, residual=False)
    full_keys, lean_keys = set(full.state_dict()), set(lean.state_dict())
    assert lean_keys < full_keys
    assert "audio_encoder.3.conv_block.0.weight" in lean_keys and "audio_encoder.1.conv_block.0.weight" not in lean_keys
    assert all(full.state_dict()[k].shape == v.shape for k, v in lean.state_dict().items())
    convs = [sum(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) for m in n.modules()) for n in (full, lean)]
    assert convs[1] < 0.6 * convs[0], convs
    faces, mel = torch.rand(3, 6, 96, 96), torch.randn(3, 1, 80, 16)
    assert lean.eval()(mel, faces).shape == (3, 3, 96, 96)


def test_layout_is_read_from_the_keys_when_nothing_is_recorded(tmp_path):
    """An authors'-format file (a bare state dict) of a student without residual blocks loads by its keys."""
    model = Wav2Lip(width=0.25, residual=False)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "bare.pth")
    loaded = checkpoints.load_model(tmp_path / "bare.pth", "wav2lip")
    assert (loaded.width, loaded.residual) == (0.25, False)


def test_a_student_at_the_teachers_width_starts_from_its_weights(tmp_path, data, teacher):
    config = make_config("distill", data_root=str(data), checkpoint_dir=str(tmp_path), teacher=str(teacher),
                         width=TEACHER_WIDTH, residual=False, workers=0)
    from wav2lip.train.distill import DistillRecipe

    recipe = DistillRecipe(config, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False), None)
    taught = checkpoints.load_model(teacher, "wav2lip").state_dict()
    for key, value in recipe.model.state_dict().items():
        assert torch.equal(value, taught[key]), key


def test_a_cpu_run_holds_student_and_teacher_channels_last(tmp_path, data, teacher):
    """Both networks a distillation step runs convolve in oneDNN's preferred layout (the frozen teacher
    too, which no optimizer names)."""
    config = make_config("distill", data_root=str(data), checkpoint_dir=str(tmp_path), teacher=str(teacher),
                         width=STUDENT_WIDTH, residual=False, workers=0)
    from wav2lip.train.distill import DistillRecipe
    from wav2lip.train.loop import _channels_last

    recipe = DistillRecipe(config, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False), None)
    _channels_last(recipe)
    for network in (recipe.model, recipe.teacher):
        kernels = [p for p in network.parameters() if p.dim() == 4]
        assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)


def test_an_evaluation_is_one_pass_over_the_validation_set_at_most(work, data, teacher, student):
    """--eval-batches is an upper bound: far above what this small set holds, an evaluation takes one pass
    (as many samples as the validation clips have frames: the reference's 700 batches took minutes here);
    below it, exactly that many batches."""
    frames = sum(len(list((data / name).glob("*.jpg"))) for name in (data / "val.txt").read_text().split())
    one_pass = math.ceil(frames / 8)
    folder = work / "one_pass_checkpoints"
    assert _distill(teacher, data, work / "one_pass.pth", "--steps", "2", "--eval-interval", "2", "--batch-size", "8",
                    "--eval-batches", "100000", "--checkpoint-dir", str(folder)) == 0
    val = [r for r in _log(folder) if r["split"] == "val"]
    assert [(r["step"], r["batches"]) for r in val] == [(1, one_pass), (2, one_pass)] and 2 < one_pass < 100
    capped = [r["batches"] for r in _log(default_checkpoint_dir(student)) if r["split"] == "val"]
    assert capped == [2, 2]  # the module's student: --eval-batches 2

def test_loss_to_the_teacher_falls_and_the_student_records_its_layout(student, teacher, work):
    val = [r for r in _log(default_checkpoint_dir(student)) if r["split"] == "val"]
    assert [r["step"] for r in val] == [1, STEPS]
    assert val[-1]["l1_teacher"] < 0.9 * val[0]["l1_teacher"], val
    assert (default_checkpoint_dir(student) / f"samples_step{STEPS:09d}.png").is_file()
    raw = torch.load(student, weights_only=True)
    assert raw["width"] == STUDENT_WIDTH and raw["residual"] is False and raw["global_step"] == STEPS
    assert raw["teacher"] == {"name": "teacher.pth", "sha256": checkpoints_sha(teacher)}
    assert raw["optimizer"] is None and "train_state" not in raw
    model = checkpoints.load_model(student, "wav2lip")  # no width, no residual flag
    assert (model.width, model.residual) == (STUDENT_WIDTH, False)
    saved = checkpoints.read_checkpoint(default_checkpoint_dir(student) / f"checkpoint_step{STEPS:09d}.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict.items())


def checkpoints_sha(path: Path) -> str:
    from wav2lip.store import sha256_of

    return sha256_of(path)


def test_resume_gives_the_uninterrupted_student(student, work, data, teacher):
    half = work / "half.pth"
    common = ["--eval-interval", str(STEPS), "--checkpoint-interval", str(STEPS // 2)]
    assert _distill(teacher, data, half, "--steps", str(STEPS // 2), *common) == 0
    resumed = work / "resumed.pth"
    assert _distill(teacher, data, resumed, "--steps", str(STEPS), "--resume",
                    "--checkpoint-dir", str(default_checkpoint_dir(half)), *common) == 0
    assert any(r["split"] == "resume" for r in _log(default_checkpoint_dir(half)))
    a = checkpoints.read_checkpoint(student).state_dict
    b = checkpoints.read_checkpoint(resumed).state_dict
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_inspect_names_the_student(student, capsys):
    assert main(["weights", "inspect", str(student)]) == 0
    out = capsys.readouterr().out
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["kind"] == "wav2lip" and fields["width"] == str(STUDENT_WIDTH)
    assert fields["residual"] == "no (left out)"
    assert re.fullmatch(r"distilled from teacher\.pth \(sha256 [0-9a-f]{64}\)", fields["student"])
    assert re.fullmatch(r"[\d.]+ MB", fields["size"])
    n_params = sum(p.numel() for p in Wav2Lip(width=STUDENT_WIDTH, residual=False).parameters())
    assert fields["parameters"] == f"{n_params:,}"


def test_infer_runs_the_student_with_no_layout_flags(student, media, work):
    speech = cut_wav(media / "vr_audio1.wav", work / "speech.wav", 0.4)
    out = work / "lipsynced.mp4"
    assert main(["infer", "--checkpoint", str(student), "--face", str(media / "vr_face5.mp4"), "--audio",
                 str(speech), "--outfile", str(out), "--box", *BOX_ARGS, "-q"]) == 0
    info = probe(out)
    assert info.n_frames == 10 and info.has_audio


@pytest.fixture(scope="module")
def hostile_teachers(work, teacher) -> dict[str, Path]:
    folder = work / "hostile"
    folder.mkdir()
    paths = {"zero bytes": folder / "empty.pth", "random bytes": folder / "noise.pth",
             "truncated": folder / "truncated.pth", "folder": folder / "dir.pth", "fifo": folder / "pipe.pth",
             "syncnet": folder / "syncnet.pth", "missing": folder / "nope.pth"}
    paths["zero bytes"].write_bytes(b"")
    paths["random bytes"].write_bytes(os.urandom(4096))
    paths["truncated"].write_bytes(teacher.read_bytes()[: teacher.stat().st_size // 2])
    paths["folder"].mkdir()
    os.mkfifo(paths["fifo"])
    checkpoints.save_checkpoint(paths["syncnet"], SyncNet(width=0.125))
    return paths


@pytest.mark.parametrize("case", ["zero bytes", "random bytes", "truncated", "folder", "fifo", "syncnet",
                                  "missing"])
def test_hostile_teacher_is_one_line_and_nothing_is_written(case, hostile_teachers, data, work, capsys):
    bad = hostile_teachers[case]
    out = work / f"never_{case.replace(' ', '_')}.pth"
    assert _distill(bad, data, out, "--steps", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"wav2lip: error: {bad}:"), err
    assert not out.exists() and not default_checkpoint_dir(out).exists()


def test_the_student_is_never_written_over_an_input(data, teacher, work, capsys):
    assert _distill(teacher, data, teacher, "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and checkpoints.load_model(teacher, "wav2lip").width == TEACHER_WIDTH


def test_the_api_refuses_a_config_without_a_teacher(data, work):
    config = make_config("distill", data_root=str(data), checkpoint_dir=str(work / "none"), workers=0)
    with pytest.raises(Wav2LipError, match="needs a teacher"):
        distill(config, work / "none.pth")


def test_feature_and_sync_losses_join_the_l1(work, data, teacher):
    """--feature-weight adds the attention-map term; --expert adds the sync loss once an evaluation switches
    it on (here at once: a threshold no loss is above)."""
    expert = work / "untrained_expert.pth"
    checkpoints.save_checkpoint(expert, SyncNet(width=0.125))
    settings = work / "switch.json"
    settings.write_text(json.dumps({"sync_threshold": 1e9}))
    out = work / "with_terms.pth"
    assert _distill(teacher, data, out, "--steps", "2", "--eval-interval", "1", "--log-interval", "1",
                    "--feature-weight", "0.5", "--expert", str(expert), "--config", str(settings)) == 0
    train = [r for r in _log(default_checkpoint_dir(out)) if r["split"] == "train"]
    assert "sync" not in train[0] and train[0]["features"] > 0
    assert train[1]["sync"] > 0 and train[1]["features"] > 0
    assert any("sync loss weight now" in r.get("note", "") for r in _log(default_checkpoint_dir(out)))


def test_attention_maps_match_only_for_the_same_activity():
    from wav2lip.train.distill import attention_loss

    torch.manual_seed(0)
    a = [torch.rand(2, 8, 6, 6), torch.rand(2, 4, 12, 12)]
    wider = [torch.cat([x, x], dim=1) for x in a]  # another width, the same attention per position
    assert attention_loss(a, wider).item() < 1e-6
    assert attention_loss(a, [torch.rand_like(x) for x in a]).item() > 0.01


def test_a_live_student_hears_an_earlier_window_and_records_it(work, data, teacher, capsys):
    """--mel-offset -13: the student's per-frame windows start 13 mel steps before the teacher's (which keep
    the authors' start), the file records it, and every surface reads it from there; a teacher already
    moved, an offset out of range and an expert with one are refused in one line."""
    from wav2lip.data.layout import read_file_list
    from wav2lip.train.data import GeneratorSamples

    samples = GeneratorSamples(read_file_list(data, "train"), seed=1, mel_offset=-13)
    for i in range(4):
        target, reference, per_frame, mel, moved = samples[i]
        assert moved.shape == per_frame.shape == (5, 1, 80, 16)
        assert all(np.array_equal(m[0, :, 13:], p[0, :, :3]) for m, p in zip(moved, per_frame))
    assert len(GeneratorSamples(read_file_list(data, "train"), seed=1)[0]) == 4  # the authors' recipe: as before
    out = work / "live_student.pth"
    assert _distill(teacher, data, out, "--steps", "2", "--eval-interval", "2", "--mel-offset", "-13",
                    "--checkpoint-dir", str(work / "live_student_checkpoints")) == 0
    assert torch.load(out, weights_only=True)["mel_offset"] == -13
    assert checkpoints.load_model(out, "wav2lip").mel_offset == -13
    moved_teacher = work / "moved_teacher.pth"
    checkpoints.save_checkpoint(moved_teacher, fill_deterministic(Wav2Lip(width=TEACHER_WIDTH, mel_offset=-5)))
    capsys.readouterr()
    assert _distill(moved_teacher, data, work / "never.pth", "--steps", "2", "--mel-offset", "-13") == 2
    assert "moved_teacher.pth: the teacher was trained on a mel window -5 steps" in capsys.readouterr().err
    assert _distill(teacher, data, work / "never.pth", "--steps", "2", "--mel-offset", "-60") == 2
    assert "mel_offset must be a whole number of mel steps from -48 to 16, got -60" in capsys.readouterr().err
    with pytest.raises(Wav2LipError, match="expert judges true sync"):
        make_config("expert", data_root=str(data), mel_offset=-13)
    assert not (work / "never.pth").exists() and not (work / "never_checkpoints").exists()
