"""`wav2lip infer`: original option spellings, every bad input as one line and exit 2 with nothing at OUT,
and the manifest batch mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import cut_wav

from wav2lip.checkpoints import save_checkpoint
from wav2lip.cli import main
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.io.video import probe

# vr_face5.mp4's face in the reference's --box order: top, bottom, left, right.
BOX_ARGS = ["150", "470", "140", "380"]



@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    path = work / "deterministic.pth"
    save_checkpoint(path, fill_deterministic(Wav2Lip()))
    return path


@pytest.fixture(scope="module")
def speech(media, work) -> Path:
    return cut_wav(media / "vr_audio1.wav", work / "speech.wav", 0.4)


def infer(checkpoint: Path, *args: str) -> int:
    return main(["infer", "--checkpoint", str(checkpoint), "--precision", "fp32", "-q", *args])


def test_original_spellings_work(checkpoint, media, speech, work, capsys) -> None:
    out = work / "original.mp4"
    code = main(["infer", "--checkpoint_path", str(checkpoint), "--face", str(media / "vr_face5.mp4"),
                 "--audio", str(speech), "--outfile", str(out), "--box", *BOX_ARGS, "--wav2lip_batch_size", "4",
                 "--resize_factor", "1", "--face_det_batch_size", "4", "--nosmooth", "--precision", "fp32",
                 "--profile", "-q"])
    assert code == 0
    info = probe(out)
    assert info.n_frames == 10 and info.has_audio and abs(info.duration - 0.4) <= 1 / 25
    err = capsys.readouterr().err
    assert "10 frames" in err and "0 without a face" in err and "frames/s" in err
    for stage in ("decode", "generate", "blend", "encode", "end-to-end"):
        assert stage in err


@pytest.fixture(scope="module")
def bad_inputs(media, work, speech) -> dict[str, tuple[Path, Path]]:
    text = work / "notes.mp4"
    text.write_text("this is not a video\n")
    truncated = work / "truncated.mp4"
    truncated.write_bytes((media / "vr_face2.mp4").read_bytes()[:150_000])
    return {
        "missing face": (work / "nope.mp4", speech),
        "missing audio": (media / "vr_face5.mp4", work / "nope.wav"),
        "not media": (text, speech),
        "truncated video": (truncated, speech),
        "no video stream": (media / "vr_audio1.wav", speech),
        "audio shorter than a mel window": (media / "vr_face5.mp4",
                                            cut_wav(media / "vr_audio1.wav", work / "short.wav", 0.1)),
        "silent audio": (media / "vr_face5.mp4", cut_wav(media / "vr_audio1.wav", work / "silent.wav", 1.0, 0.0)),
        "empty audio": (media / "vr_face5.mp4", cut_wav(media / "vr_audio1.wav", work / "empty.wav", 0.0)),
        "audio file without audio": (media / "vr_face5.mp4", media / "st_art0.png"),
    }


@pytest.mark.parametrize("case", [
    "missing face", "missing audio", "not media", "truncated video", "no video stream",
    "audio shorter than a mel window", "silent audio", "empty audio", "audio file without audio",
])
def test_bad_input_is_one_line_and_no_output(checkpoint, bad_inputs, work, capsys, case) -> None:
    face, audio = bad_inputs[case]
    out = work / f"{case.replace(' ', '_')}.mp4"
    code = infer(checkpoint, "--face", str(face), "--audio", str(audio), "-o", str(out), "--box", *BOX_ARGS)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("wav2lip: error: ")
    assert not out.exists() and not list(work.glob(f".{out.name}*"))


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_unwritable_output_is_one_line(checkpoint, media, speech, work, capsys, where) -> None:
    out = work / "no_such_folder" / "out.mp4" if where == "missing folder" else work
    code = infer(checkpoint, "--face", str(media / "vr_face5.mp4"), "--audio", str(speech), "-o", str(out),
                 "--box", *BOX_ARGS)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(out) in err


def test_box_outside_the_frame_is_an_error(checkpoint, media, speech, work, capsys) -> None:
    code = infer(checkpoint, "--face", str(media / "vr_face5.mp4"), "--audio", str(speech),
                 "-o", str(work / "outside.mp4"), "--box", "0", "600", "0", "100")
    assert code == 2 and "--box" in capsys.readouterr().err


def test_manifest_skips_finished_and_reports_failures(checkpoint, media, speech, work, capsys) -> None:
    folder = work / "batch"
    folder.mkdir()
    (folder / "done.mp4").write_bytes(b"finished earlier")
    (folder / "pairs.csv").write_text(
        "face,audio,output\n"
        f"{media / 'vr_face5.mp4'},{speech},a.mp4\n"
        f"{media / 'missing.mp4'},{speech},b.mp4\n"
        f"{media / 'vr_face5.mp4'},{speech},done.mp4\n"
        f"{media / 'st_art0.png'},{speech},c.mp4\n"
    )
    code = infer(checkpoint, "--manifest", str(folder / "pairs.csv"), "--box", *BOX_ARGS)
    err = capsys.readouterr().err
    assert code == 1
    assert probe(folder / "a.mp4").n_frames == 10 and probe(folder / "c.mp4").n_frames == 10
    assert not (folder / "b.mp4").exists()
    assert (folder / "done.mp4").read_bytes() == b"finished earlier"
    assert "pairs.csv:3: error:" in err and "missing.mp4" in err and "done.mp4 exists, skipped" in err
    assert "3 of 4 lines done (1 skipped: output exists), 1 failed" in err


def test_manifest_shards_its_lines_by_rank_and_world_size(checkpoint, media, speech, work, capsys,
                                                           monkeypatch) -> None:
    folder = work / "sharded"
    folder.mkdir()
    (folder / "pairs.csv").write_text(
        "face,audio,output\n"
        f"{media / 'vr_face5.mp4'},{speech},a.mp4\n"
        f"{media / 'missing.mp4'},{speech},b.mp4\n"
        f"{media / 'st_art0.png'},{speech},c.mp4\n"
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert infer(checkpoint, "--manifest", str(folder / "pairs.csv"), "--box", *BOX_ARGS) == 1
    err = capsys.readouterr().err
    assert not (folder / "a.mp4").exists() and not (folder / "c.mp4").exists()
    assert "missing.mp4" in err and "machine 2 of 2: 0 of 1 lines done" in err
    monkeypatch.setenv("RANK", "0")
    assert infer(checkpoint, "--manifest", str(folder / "pairs.csv"), "--box", *BOX_ARGS) == 0
    err = capsys.readouterr().err
    assert probe(folder / "a.mp4").n_frames == 10 and probe(folder / "c.mp4").n_frames == 10
    assert "missing.mp4" not in err and "machine 1 of 2: 2 of 2 lines done" in err
    monkeypatch.setenv("RANK", "2")
    assert infer(checkpoint, "--manifest", str(folder / "pairs.csv"), "--box", *BOX_ARGS) == 2
    assert "RANK 2 is not within WORLD_SIZE 2" in capsys.readouterr().err


def test_lossless_default_name_and_feather(checkpoint, media, speech, work, monkeypatch) -> None:
    monkeypatch.chdir(work)
    code = infer(checkpoint, "--face", str(media / "vr_face5.mp4"), "--audio", str(speech), "--box", *BOX_ARGS,
                 "--lossless", "--blend", "feather")
    assert code == 0
    info = probe(work / "results" / "result_voice.mkv")
    assert info.video_codec == "ffv1" and info.n_frames == 10
    assert np.isclose(info.fps, 25)


def test_enhance_takes_a_fitted_file_or_the_cached_fit_of_the_face(checkpoint, media, speech, work, models_dir,
                                                                   monkeypatch) -> None:
    """`--enhance PATH` runs a `fit-enhancer` file; `--enhance self` finds the fit of this face in the cache
    (by the content hashes of the face and the generator) and gives the same frames; both change only the
    lower face of the plain output."""
    from wav2lip.faces import create_detector
    from wav2lip.faces.cache import file_digest
    from wav2lip.io.video import open_source
    from wav2lip.lipsync import self_enhance

    monkeypatch.setenv("WAV2LIP_HOME", str(work / "home"))
    face = media / "vr_face5.mp4"
    detector = create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth", device="cpu")
    model, record = self_enhance.fit(face, detector, minutes=1.0, steps=6, frames=(0, 10), max_frames=6)
    fitted = self_enhance.save(work / "face5.enhancer.pth", model, record)
    cached = self_enhance.cache_path(face, file_digest(checkpoint))  # the face has sound: fitted with the generator
    cached.parent.mkdir(parents=True)
    self_enhance.save(cached, model, record)
    outputs = {}
    for name, enhance in (("plain", "none"), ("file", str(fitted)), ("self", "self")):
        out = work / f"enhanced_{name}.mkv"
        assert infer(checkpoint, "--face", str(face), "--audio", str(speech), "--box", *BOX_ARGS, "--lossless",
                     "--enhance", enhance, "-o", str(out)) == 0
        outputs[name] = np.stack(list(open_source(out).frames()))
    assert np.array_equal(outputs["file"], outputs["self"])
    changed = np.argwhere(np.abs(outputs["file"].astype(int) - outputs["plain"]).max(axis=(0, 3)) > 0)
    top, bottom, left, right = map(int, BOX_ARGS)
    assert changed.size and changed[:, 0].min() >= top + (bottom - top) // 3 and changed[:, 0].max() < bottom + 10
    assert changed[:, 1].min() >= left and changed[:, 1].max() < right
