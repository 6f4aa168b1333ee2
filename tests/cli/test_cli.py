"""The console entry point itself: help lists every subcommand, `python -m wav2lip` works."""
import subprocess
import sys

from wav2lip.cli import SUBCOMMANDS, main


def test_module_entry_prints_help():
    out = subprocess.run([sys.executable, "-m", "wav2lip", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name.replace("_", "-") in out.stdout


def test_no_subcommand_is_usage_error(capsys):
    assert main([]) == 2


# ---------------------------------------------------------------- one language across commands

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import cut_wav, deterministic_generator  # noqa: E402

import wav2lip  # noqa: E402
from wav2lip.lipsync import options  # noqa: E402
from wav2lip.cli import build_parser  # noqa: E402
from support.deterministic import fill_deterministic  # noqa: E402
from wav2lip.lipsync.options import SyncOptions  # noqa: E402

DETECTING = ("infer", "detect", "evaluate", "preprocess")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_version(capsys):
    with pytest.raises(SystemExit) as exiting:
        main(["--version"])
    assert exiting.value.code == 0 and capsys.readouterr().out.strip() == f"wav2lip {wav2lip.__version__}"


@pytest.mark.parametrize("command", DETECTING)
def test_detector_flags_device_and_box_are_spelled_alike(command):
    parser = _subparsers()[command]
    assert _option(parser, "--detector-weights").dest == "detector_weights"
    assert _option(parser, "--detector").choices == options.DETECTORS
    device = _option(parser, "--device")
    assert device.default == "auto" and device.choices == options.DEVICES
    if command in ("infer", "detect"):
        assert _option(parser, "--box").metavar == ("TOP", "BOTTOM", "LEFT", "RIGHT")
        assert _option(parser, "--calibration").metavar == ("DX", "DY", "SX", "SY")


@pytest.mark.parametrize("command, old", [("detect", "--retinaface-weights"), ("detect", "--s3fd-weights"),
                                          ("preprocess", "--weights")])
def test_old_weight_spellings_still_parse(command, old):
    parser = _subparsers()[command]
    required = {"detect": ["v.mp4"], "preprocess": ["--output-dir", "p"]}[command]
    args = parser.parse_args([*required, old, "w.pth"])
    assert "w.pth" in (getattr(args, "detector_weights", None), getattr(args, "retinaface_weights", None),
                       getattr(args, "s3fd_weights", None))
    assert old not in parser.format_help()


def test_every_choice_list_comes_from_options():
    """Each argparse `choices` in every subcommand is one of the tables in wav2lip.lipsync.options."""
    tables = {tuple(v) for k, v in vars(options).items() if k.isupper() and isinstance(v, tuple)}
    tables.add(tuple(wav2lip.store.KNOWN))
    seen = 0
    for name, parser in _subparsers().items():
        for action in parser._actions:
            if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
                assert tuple(action.choices) in tables, (name, action.option_strings, action.choices)
                seen += 1
    assert seen >= 12


@pytest.mark.parametrize("field, table, bad", [("smooth", options.SMOOTH_MODES, "wobbly"),
                                               ("loop", options.LOOP_MODES, "sideways"),
                                               ("blend", options.BLEND_MODES, "smudge"),
                                               ("preset", options.X264_PRESETS, "bogus")])
def test_sync_options_check_uses_the_same_lists(field, table, bad):
    for value in table:
        SyncOptions(**{field: value}).check()
    with pytest.raises(wav2lip.Wav2LipError, match=", ".join(table)):
        SyncOptions(**{field: bad}).check()


@pytest.fixture(scope="module")
def narrow_checkpoint(tmp_path_factory):
    return deterministic_generator(tmp_path_factory.mktemp("cli") / "narrow.pth", width=0.125)


def test_detect_prints_infer_flags_that_infer_takes(media, models_dir, narrow_checkpoint, tmp_path, capsys):
    """The box detect prints (top bottom left right) is the JSON's x1 y1 x2 y2 reordered, and infer runs
    with it and with the calibration `detect --compare` prints."""
    weights = models_dir / "retinaface_mobilenet0.25.pth"
    photo, doc_path = media / "st_art0.png", tmp_path / "boxes.json"
    assert main(["detect", str(photo), "--detector-weights", str(weights), "--json", str(doc_path), "-q"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(doc_path.read_text())
    assert doc["box_order"].startswith("x1 y1 x2 y2")
    x1, y1, x2, y2 = doc["frames"][0]["box"]
    printed = re.search(r"--box (\d+) (\d+) (\d+) (\d+)", out).groups()
    assert [int(v) for v in printed] == [y1, y2, x1, x2]
    assert f"--detector-weights {weights}" in out
    speech = cut_wav(media / "vr_audio1.wav", tmp_path / "speech.wav", 0.4)
    base = ["infer", "--checkpoint", str(narrow_checkpoint), "--precision", "fp32", "-q", "--face", str(photo),
            "--audio", str(speech)]
    assert main([*base, "-o", str(tmp_path / "boxed.mp4"), "--box", *printed]) == 0
    # The same detector run through infer, with and without a calibration: the crop moves.
    frames = {}
    for name, calibration in (("plain", None), ("mapped", (0.0, 0.05, 1.1, 1.1))):
        frames[name] = next(iter(wav2lip.LipSyncer(narrow_checkpoint, precision="fp32", detector_weights=weights)
                                 .frames(photo, speech, calibration=calibration, cache=False)))
    assert not np.array_equal(frames["plain"], frames["mapped"])
    flags = ["--detector-weights", str(weights), "--no-cache", "--calibration", "0", "0.05", "1.1", "1.1"]
    assert main([*base, "-o", str(tmp_path / "mapped.mp4"), *flags]) == 0


@pytest.mark.parametrize("ext, container", [(".mp4", "mov,mp4"), (".mov", "mov,mp4"), (".mkv", "matroska")])
def test_output_container_follows_the_extension(media, narrow_checkpoint, tmp_path, ext, container):
    import av

    speech = cut_wav(media / "vr_audio1.wav", tmp_path / "speech.wav", 0.2)
    out = tmp_path / f"out{ext}"
    assert main(["infer", "--checkpoint", str(narrow_checkpoint), "--precision", "fp32", "-q", "--face",
                 str(media / "st_art0.png"), "--audio", str(speech), "--box", "100", "400", "100", "400",
                 "-o", str(out)]) == 0
    with av.open(str(out)) as opened:
        assert opened.format.name.startswith(container) and opened.streams.video[0].codec_context.name == "h264"


def test_evaluate_track_takes_detector_weights_and_device_auto(media, models_dir, tmp_path, capsys):
    """`evaluate --mode track --detector-weights` reaches the detector (the store has no RetinaFace file here)."""
    import itertools

    import torch

    from wav2lip.models.syncnet_v2 import SyncNetV2
    from wav2lip.io.video import VideoWriter, open_source

    speech = cut_wav(media / "vr_audio1.wav", tmp_path / "speech.wav", 0.48)
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 25, 524, 524, audio=speech) as writer:
        writer.write_many(itertools.islice(open_source(media / "vr_face5.mp4"), 12))
    syncnet = tmp_path / "syncnet_v2.model"
    torch.save(fill_deterministic(SyncNetV2()).state_dict(), syncnet)
    weights = models_dir / "retinaface_mobilenet0.25.pth"
    args = ["evaluate", str(clip), "--mode", "track", "--syncnet", str(syncnet), "--min-track", "6", "-q",
            "--json", str(tmp_path / "scores.json")]
    assert main([*args, "--detector-weights", str(weights)]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())["mode"] == "track"
    score = wav2lip.evaluate_sync(clip, model=syncnet, mode="track", detector_weights=weights, min_track=6)
    assert f"LSE-D: {score.lse_d:.3f}" in capsys.readouterr().out
