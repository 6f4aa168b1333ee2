"""Preprocessing synthetic videos with the real RetinaFace weights; sync filtering with a trained expert."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from wav2lip.io import audio

from wav2lip.data import preprocess

from wav2lip.data import synth
from wav2lip.checkpoints import load_model
from wav2lip.errors import Wav2LipError


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    synth.write_dataset(root, 3, layout="videos", seconds=1.2, clips_per_speaker=2)
    return root


@pytest.fixture(scope="module")
def weights(models_dir) -> str:
    return str(models_dir / "retinaface_mobilenet0.25.pth")


def test_videos_become_the_training_layout_and_reruns_skip(videos, weights, tmp_path):
    out = tmp_path / "prep"
    results = preprocess.preprocess(videos, out, weights=weights, workers=2, val_fraction=0.0,
                                    test_fraction=0.0, progress=False)
    assert sorted(r.name for r in results) == ["spk000/00000", "spk000/00001", "spk001/00000"]
    assert all(r.error is None and r.frames == 30 and r.faces >= 27 for r in results)
    clip = out / "spk000" / "00001"
    crops = sorted(clip.glob("*.jpg"), key=lambda p: int(p.stem))
    face = cv2.imread(str(crops[0]))
    assert 60 < face.shape[0] < 120 and 50 < face.shape[1] < 120  # the raw box around a ~96 px face
    assert abs(len(audio.load_audio(clip / "audio.wav")) - 1.2 * 16000) < 400
    assert np.allclose(np.load(clip / "mel.npy"), audio.melspectrogram(audio.load_audio(clip / "audio.wav")),
                       atol=1e-4)
    assert json.loads((clip / ".done").read_text())["frames"] == 30
    assert (out / "train.txt").read_text().split() == [r.name for r in sorted(results, key=lambda r: r.name)]

    # An interrupted clip (no marker) is redone; complete ones are skipped.
    (clip / ".done").unlink()
    (clip / "0.jpg").unlink()
    again = {r.name: r for r in preprocess.preprocess(videos, out, weights=weights, progress=False)}
    assert again["spk000/00000"].skipped and not again["spk000/00001"].skipped
    assert (clip / "0.jpg").is_file() and (clip / ".done").is_file()


def test_machines_share_the_videos(videos, weights, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    names = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        names.append([r.name for r in preprocess.preprocess(videos, tmp_path, weights=weights, progress=False)])
    assert names == [["spk000/00000", "spk001/00000"], ["spk000/00001"]]
    assert len(preprocess.complete_clips(tmp_path)) == 3


def test_errors(tmp_path, weights):
    with pytest.raises(Wav2LipError, match="does not exist"):
        preprocess.preprocess(tmp_path / "none", tmp_path / "out")
    (tmp_path / "raw").mkdir()
    with pytest.raises(Wav2LipError, match="no video files"):
        preprocess.preprocess(tmp_path / "raw", tmp_path / "out")
    silent = tmp_path / "raw" / "spk" / "mute.mp4"
    silent.parent.mkdir()
    from wav2lip.io.video import VideoWriter
    with VideoWriter(silent, 25, 64, 64) as writer:
        writer.write_many(np.zeros((64, 64, 3), np.uint8) for _ in range(5))
    [result] = preprocess.preprocess(tmp_path / "raw", tmp_path / "out", weights=weights, progress=False)
    assert result.error and "audio" in result.error


def test_sync_filter_drops_shifted_clips_and_finds_their_offset(tmp_path, tiny_expert):
    expert_path = tiny_expert
    # Unseen faces and audio: in sync, and with the lips 6 frames late.
    synth.write_dataset(tmp_path / "good", 4, seed=9, seconds=2.0, consonants=False)
    synth.write_dataset(tmp_path / "late", 4, seed=9, seconds=2.0, shift=6, consonants=False)
    expert = load_model(expert_path, "syncnet")
    for kind, shift in (("good", 0), ("late", 6)):
        for clip in sorted((tmp_path / kind).glob("spk*/*")):
            assert preprocess.clip_sync(expert, clip, max_offset=8).offset == shift, (kind, clip)
    kept = preprocess.filter_sync(tmp_path / "good", expert_path, 0.53, max_offset=8)
    assert kept == {"train": [], "val": [], "test": []}
    dropped = preprocess.filter_sync(tmp_path / "late", expert_path, 0.53, max_offset=8)
    assert sum(len(v) for v in dropped.values()) == 4
    assert (tmp_path / "late" / "train.txt").read_text() == ""
    assert (tmp_path / "late" / "train.all.txt").read_text().split() == ["spk000/00000", "spk000/00001"]
    scores = json.loads((tmp_path / "late" / "sync_scores.json").read_text())["clips"]
    assert all(s["offset"] == 6 for s in scores.values())


def _write_prepared_clip(folder: Path, seed: int, shift: int, seconds: float = 2.0, still: bool = False) -> None:
    """One prepared clip (96 px face crops, audio.wav) whose lips lag the audio by `shift` frames
    (`still`: every crop is the first, so no lip moves to the speech)."""
    clip = synth.make_clip(seed, seconds, shift=shift)
    folder.mkdir(parents=True)
    frames = list(clip.frames())
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.jpg"), frames[0] if still else frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    synth.write_wav(folder / "audio.wav", clip.wav)


def test_sync_fix_recovers_planted_offsets_and_corrects_them(tmp_path, tiny_expert):
    from wav2lip.data import syncfix

    root = tmp_path / "prep"
    # One unseen talker (the tiny expert is exact on it, see test_evaluate) with the lips shifted.
    shifts = {"spk000/00000": 0, "spk001/00000": -4, "spk002/00000": 3}
    for name, shift in shifts.items():
        _write_prepared_clip(root / name, 4242, shift, seconds=2.4)
    (root / "train.txt").write_text("".join(f"{n}\n" for n in shifts))
    before = {n: (root / n / "audio.wav").read_bytes() for n in shifts}
    records = {r.name: r for r in syncfix.sync_fix(root, f"expert:{tiny_expert}", min_confidence=0.0)}
    for name, shift in shifts.items():
        r = records[name]
        assert r.offset == shift, (name, r)
        assert r.shifted == (shift != 0) and r.kept
        if shift:
            assert r.offset_after == 0, (name, r)
            assert (root / name / "audio.orig.wav").read_bytes() == before[name]
            moved = audio.load_audio(root / name / "audio.wav")
            original = audio.load_audio(root / name / "audio.orig.wav")
            assert moved.size == original.size
            np.testing.assert_allclose(syncfix.shift_audio(original, shift), moved, atol=2e-4)
            assert np.allclose(np.load(root / name / "mel.npy"), audio.melspectrogram(moved), atol=1e-4)
        else:
            assert (root / name / "audio.wav").read_bytes() == before[name]
    saved = json.loads((root / "sync_fix.json").read_text())
    assert saved["model"].startswith("lip-sync expert") and len(saved["clips"]) == 3
    # A threshold no clip reaches: everything leaves the list, and the re-run starts from the originals.
    again = syncfix.sync_fix(root, f"expert:{tiny_expert}", min_confidence=1e9)
    assert [r.offset for r in again] == list(shifts.values()) and not any(r.kept or r.shifted for r in again)
    assert (root / "train.txt").read_text() == "" and (root / "train.all.txt").read_text().split() == list(shifts)
    assert all((root / n / "audio.wav").read_bytes() == before[n] for n in shifts)
    assert not any((root / n / "audio.orig.wav").exists() for n in shifts)


def test_sync_fix_and_filter_in_one_run_both_shape_the_lists(tmp_path, tiny_expert):
    """`--sync-fix` with `--filter-sync`: a clip either step drops leaves the lists, and a later run of
    one step replaces only that step's decisions."""
    from wav2lip.cli import main

    root = tmp_path / "prep"
    _write_prepared_clip(root / "spk000/00000", 4242, 0, seconds=2.4)  # in sync: both keep it
    _write_prepared_clip(root / "spk001/00000", 4242, 3, seconds=2.4)  # lips 3 frames late: corrected, kept
    _write_prepared_clip(root / "spk002/00000", 4242, 0, seconds=2.4, still=True)  # sync-fix sees no sync
    _write_prepared_clip(root / "spk003/00000", 123, 0, seconds=0.48)  # 12 frames: no window the filter can score
    names = ["spk000/00000", "spk001/00000", "spk002/00000", "spk003/00000"]
    (root / "train.txt").write_text("".join(f"{n}\n" for n in names))
    args = ["preprocess", "--output-dir", str(root), "--quiet"]
    assert main([*args, "--sync-fix", f"expert:{tiny_expert}", "--min-confidence", "0.15",
                 "--filter-sync", str(tiny_expert), "--min-sync", "0.3"]) == 0
    fixed = {c["name"]: c for c in json.loads((root / "sync_fix.json").read_text())["clips"]}
    filtered = json.loads((root / "sync_scores.json").read_text())["clips"]
    assert [n for n in names if not fixed[n]["kept"]] == ["spk002/00000"] and fixed["spk001/00000"]["shifted"]
    assert [n for n in names if "error" in filtered[n] or filtered[n]["score"] < 0.3] == ["spk003/00000"]
    assert (root / "train.txt").read_text().split() == ["spk000/00000", "spk001/00000"]
    assert (root / "train.all.txt").read_text().split() == names
    # The filter alone again: sync-fix's drop stands.
    assert main([*args, "--filter-sync", str(tiny_expert), "--min-sync", "0"]) == 0
    assert (root / "train.txt").read_text().split() == ["spk000/00000", "spk001/00000"]
    # Sync-fix alone, keeping every clip it can score: only the filter's drop is left.
    assert main([*args, "--sync-fix", f"expert:{tiny_expert}", "--min-confidence", "0"]) == 0
    assert (root / "train.txt").read_text().split() == ["spk000/00000", "spk001/00000", "spk002/00000"]


def test_scene_cuts_and_face_losses_split_a_clip(tmp_path, weights):
    """40 frames of one face, 30 without any face, 40 more of it, then a cut to another face (40)."""
    from wav2lip.io.video import VideoWriter

    a, b = synth.make_clip(1, 3.2), synth.make_clip(2, 1.6)
    frames_a = [cv2.copyMakeBorder(f, 0, 0, 32, 32, cv2.BORDER_REPLICATE) for f in a.frames(160, zoom=0.8)]
    frames_b = [cv2.copyMakeBorder(f, 0, 0, 32, 32, cv2.BORDER_REPLICATE) for f in b.frames(160, zoom=0.8)]
    empty = np.full_like(frames_a[0], [int(v) for v in a.identity.background])
    frames = frames_a[:40] + [empty] * 30 + frames_a[40:80] + frames_b[:40]
    raw = tmp_path / "raw" / "spk"
    raw.mkdir(parents=True)
    synth.write_wav(tmp_path / "speech.wav", np.concatenate([a.wav[:80 * 640], b.wav[:40 * 640], np.zeros(30 * 640)]))
    with VideoWriter(raw / "talk.mp4", 25, 224, 160, audio=tmp_path / "speech.wav") as writer:
        writer.write_many(frames)
    out = tmp_path / "prep"
    [result] = preprocess.preprocess(tmp_path / "raw", out, weights=weights, progress=False)
    assert result.error is None and result.frames == 150
    assert result.clips == ["spk/talk_s00", "spk/talk_s01", "spk/talk_s02"], result.notes
    assert any("no face for" in n for n in result.notes) and "split at a scene cut at frame 110" in result.notes
    spans = []
    for name in result.clips:
        folder = out / name
        start, end = json.loads((folder / ".done").read_text())["span"]
        spans.append((start, end))
        assert 15 < len(list(folder.glob("*.jpg"))) <= end - start
        assert abs(audio.load_audio(folder / "audio.wav").size - (end - start) * 640) <= 1
    assert spans[0][0] == 0 and 30 <= spans[0][1] <= 40 and 70 <= spans[1][0] <= 80 and spans[1][1] == 110
    assert spans[2] == (110, 150)
    report = json.loads((out / "report.json").read_text())
    frames = sum(e - s for s, e in spans)
    assert report["totals"] == {"videos": 1, "failed": 0, "split": 1, "dropped": 0, "clips": 3, "frames": frames,
                                "face_frames": result.faces, "hours": round(frames / 25 / 3600, 4)}
    assert report["changed"]["spk/talk"]["notes"] == result.notes
    # One speaker: the lists fall back to a clip-level split, and say so; no list is empty.
    assert "only 1 speaker" in report["split_note"]
    assert all((out / f"{s}.txt").read_text().split() for s in ("train", "val", "test"))
    assert preprocess.preprocess(tmp_path / "raw", out, weights=weights, progress=False)[0].skipped


def test_lists_fall_back_to_clips_when_speakers_are_too_few(tmp_path):
    for name in ("a/1", "a/2", "a/3", "a/4", "b/1"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / ".done").write_text("{}")
    splits, note = preprocess.write_lists(tmp_path, 0.1, 0.1)
    assert "only 2 speaker(s)" in note
    assert all(splits[s] for s in ("train", "val", "test"))
    assert sorted(sum(splits.values(), [])) == ["a/1", "a/2", "a/3", "a/4", "b/1"]
    for name in ("a/2", "a/3", "a/4", "b/1"):
        (tmp_path / name / ".done").unlink()
    splits, note = preprocess.write_lists(tmp_path, 0.1, 0.1)
    assert splits == {"train": ["a/1"], "val": ["a/1"], "test": ["a/1"]} and "every split lists the same" in note
    assert (tmp_path / "val.txt").read_text() == "a/1\n"
    splits, note = preprocess.write_lists(tmp_path, 0.0, 0.0)  # no held-out data asked for: none made
    assert splits == {"train": ["a/1"], "val": [], "test": []} and note is None


def test_clips_preprocessed_after_a_sync_step_join_the_lists_and_its_drops_stand(tmp_path):
    from wav2lip.data import layout

    for name in ("a/1", "a/2"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / ".done").write_text("{}")
    preprocess.write_lists(tmp_path, 0.0, 0.0)
    assert layout.drop(tmp_path, "filter_sync", ["a/1"]) == {"train": ["a/2"], "val": [], "test": []}
    (tmp_path / "a/3").mkdir()
    (tmp_path / "a/3" / ".done").write_text("{}")
    preprocess.write_lists(tmp_path, 0.0, 0.0)
    assert (tmp_path / "train.all.txt").read_text().split() == ["a/1", "a/2", "a/3"]
    assert (tmp_path / "train.txt").read_text().split() == ["a/2", "a/3"]
    (tmp_path / layout.DROPPED).write_text("[1, 2]")
    with pytest.raises(Wav2LipError, match="dropped.json: not a record of dropped clips"):
        preprocess.write_lists(tmp_path, 0.0, 0.0)


def test_failed_videos_leave_nothing_and_the_cli_says_so(tmp_path, videos, weights, capsys):
    import shutil

    from wav2lip.cli import main

    raw = tmp_path / "raw"
    shutil.copytree(videos, raw)
    (raw / "spk009").mkdir()
    (raw / "spk009" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (raw / "spk000" / "00001.mp4").write_bytes((raw / "spk000" / "00001.mp4").read_bytes()[:3000])
    out = tmp_path / "prep"
    code = main(["preprocess", "--input-dir", str(raw), "--output-dir", str(out), "--weights", weights])
    err = capsys.readouterr().err
    assert code == 1 and "2 videos failed" in err
    assert not (out / "spk009").exists() and not (out / "spk000" / "00001").exists()
    assert not list(out.glob("spk*/.*.part"))
    assert preprocess.complete_clips(out) == ["spk000/00000", "spk001/00000"]
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["failed"]) == ["spk000/00001", "spk009/broken"]
    # An output folder that is a file, or under a file: one line, exit 2.
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["preprocess", "--input-dir", str(raw), "--output-dir", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(target) in err[0] and "Traceback" not in err[0]
