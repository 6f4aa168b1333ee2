"""Seed files: one small, deterministic file per format and kind of file the commands read.

Media come from the shared clips, cut to 15 frames at 96 x 96 and 0.6 s of speech, in every container and
codec at hand (H.264/AAC in mp4 with the index first and last, FFV1/FLAC in Matroska, mov, VP8/Opus in
WebM, MJPEG/PCM in AVI, GIF, PNG, JPEG, BMP; WAV at two rates, MP3, FLAC, Opus, AAC). Weights are the
deterministic fill at 1/32 of the authors' width (the generator in our layout and in the authors', with
`module.` keys), a narrow expert, the real RetinaFace file and a narrow GFPGAN. Plus a manifest, training
configs, a prepared data folder, a raw clip for `preprocess` and a detection-cache entry made by a real run.
Small seeds keep each case at a fraction of a second and the saved regression cases small.
"""
from __future__ import annotations

import json
import shutil
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
MEDIA = SHARED / "media"
RETINAFACE = SHARED / "models" / "retinaface_mobilenet0.25.pth"

SIZE = 96  # seed frames are SIZE x SIZE
FRAMES = 15  # 0.6 s at 25 fps
SECONDS = 0.6  # seed speech length
WIDTH = 1 / 32  # channel scale of the seed networks (the generator is 147 kB)
BOX = ["8", "88", "8", "88"]  # --box TOP BOTTOM LEFT RIGHT inside the seed frames


@dataclass(frozen=True)
class Seed:
    """A seed file (or folder, for `dataset` and `raw`) and the kind of input it is."""

    name: str
    path: Path
    kind: str  # video, image, audio, generator, expert, detector, enhancer, manifest, config, cache, dataset


def _frames() -> list[np.ndarray]:
    import cv2

    from wav2lip.io.video import open_source

    frames = []
    for image in open_source(MEDIA / "vr_face5.mp4").frames(25, loop="none"):
        frames.append(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
        if len(frames) == FRAMES:
            return frames
    return frames


def _speech(path: Path, rate: int = 16000, channels: int = 1) -> Path:
    from wav2lip.io.audio import load_audio

    wav = load_audio(MEDIA / "vr_audio1.wav", rate)[: round(SECONDS * rate)]
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return path


def _encode(path: Path, frames: list[np.ndarray] | None, vcodec: str | None, pix_fmt: str, speech: Path | None,
            acodec: str | None, options: dict | None = None) -> Path:
    """A small file written with PyAV directly (containers and codecs our writer does not make)."""
    import av

    from wav2lip.io.audio import load_audio

    with av.open(str(path), "w", options=options or {}) as out:
        video = audio = None
        if vcodec:
            video = out.add_stream(vcodec, rate=25, options={"threads": "1"})
            video.width = video.height = SIZE
            video.pix_fmt = pix_fmt
        if acodec and speech is not None:
            rate = 48000 if acodec == "libopus" else 16000
            audio = out.add_stream(acodec, rate=rate)
            audio.layout = "mono"
            samples = (load_audio(speech, rate) * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts, frame.time_base = 0, Fraction(1, rate)
            for packet in audio.encode(frame):
                out.mux(packet)
            out.mux(audio.encode(None))
        for i, image in enumerate(frames or [] if video else []):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(video.encode(frame))
        if video:
            out.mux(video.encode(None))
    return path


def _still(path: Path, image: np.ndarray) -> Path:
    import cv2

    cv2.imwrite(str(path), image)
    return path


def _media(root: Path) -> list[Seed]:
    from wav2lip.io.video import VideoWriter

    frames = _frames()
    speech = _speech(root / "speech.wav")
    seeds = [Seed("speech.wav", speech, "audio"), Seed("speech44.wav", _speech(root / "speech44.wav", 44100, 2), "audio")]
    for name, lossless in (("face.mp4", False), ("face.mkv", True), ("face.mov", False)):
        with VideoWriter(root / name, 25, SIZE, SIZE, audio=speech, lossless=lossless) as writer:
            for image in frames:
                writer.write(image)
        seeds.append(Seed(name, root / name, "video"))
    for name, vcodec, pix, acodec in (("face_tail.mp4", "libx264", "yuv420p", "aac"),
                                      ("face.webm", "libvpx", "yuv420p", "libopus"),
                                      ("face.avi", "mjpeg", "yuvj420p", "pcm_s16le"),
                                      ("face.gif", "gif", "rgb8", None)):
        seeds.append(Seed(name, _encode(root / name, frames, vcodec, pix, speech, acodec), "video"))
    for name, acodec in (("speech.mp3", "libmp3lame"), ("speech.flac", "flac"), ("speech.opus", "libopus"),
                         ("speech.m4a", "aac")):
        seeds.append(Seed(name, _encode(root / name, None, None, "", speech, acodec), "audio"))
    for name in ("still.png", "still.jpg", "still.bmp"):
        seeds.append(Seed(name, _still(root / name, frames[0]), "image"))
    return seeds


def _weights(root: Path) -> list[Seed]:
    import torch

    from wav2lip.checkpoints import save_checkpoint
    from wav2lip.models.generator import Wav2Lip
    from wav2lip.models.gfpgan import GFPGAN
    from wav2lip.models.syncnet import SyncNet

    from support.deterministic import fill_deterministic  # tests/ is on sys.path (benchmarks/fuzz.py)

    generator = fill_deterministic(Wav2Lip(width=WIDTH))
    save_checkpoint(root / "generator.pth", generator)
    authors = {"state_dict": {f"module.{k}": v for k, v in generator.state_dict().items()},
               "optimizer": None, "global_step": 0, "global_epoch": 0}
    torch.save(authors, root / "generator_authors.pth")
    save_checkpoint(root / "expert.pth", fill_deterministic(SyncNet(width=WIDTH)))
    torch.save({"params_ema": fill_deterministic(GFPGAN(narrow=1 / 16)).state_dict()}, root / "enhancer.pth")
    shutil.copyfile(RETINAFACE, root / "retinaface.pth")
    return [Seed("generator.pth", root / "generator.pth", "generator"),
            Seed("generator_authors.pth", root / "generator_authors.pth", "generator"),
            Seed("expert.pth", root / "expert.pth", "expert"),
            Seed("enhancer.pth", root / "enhancer.pth", "enhancer"),
            Seed("retinaface.pth", root / "retinaface.pth", "detector")]


def _texts(root: Path) -> list[Seed]:
    manifest = root / "manifest.csv"
    manifest.write_text("face,audio,output\nface.mp4,speech.wav,../out/one.mp4\n# a comment\n"
                        "still.png,speech.mp3,../out/two.mp4\n", encoding="utf-8")
    config = {"lr": 0.001, "batch_size": 2, "steps": 1, "width": WIDTH, "eval_interval": 1, "eval_batches": 1,
              "checkpoint_interval": 1, "log_interval": 1, "workers": 0, "threads": 1, "seed": 3}
    (root / "train.json").write_text(json.dumps(config, indent=1))
    (root / "train.toml").write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
    return [Seed("manifest.csv", manifest, "manifest"), Seed("train.json", root / "train.json", "config"),
            Seed("train.toml", root / "train.toml", "config")]


def _data(root: Path) -> list[Seed]:
    from wav2lip.data import synth

    from wav2lip.io.audio import load_audio, melspectrogram

    synth.write_dataset(root / "dataset", 3, seed=4, seconds=1.0, clips_per_speaker=3, val_fraction=0.34,
                        test_fraction=0.0)
    for wav in sorted((root / "dataset").rglob("audio.wav")):  # as preprocess leaves it: the mel beside the audio
        np.save(wav.with_name("mel.npy"), melspectrogram(load_audio(wav)).astype(np.float32))
    synth.write_dataset(root / "raw", 1, layout="videos", seed=6, seconds=1.0)
    for extra in (root / "raw").rglob("*.npy"):
        extra.unlink()
    return [Seed("dataset", root / "dataset", "dataset"), Seed("raw", root / "raw", "raw")]


def _cache(root: Path) -> list[Seed]:
    """The detection-cache entries written by a real `infer` run on face.mp4 (detection on, in `home`)."""
    import os

    from wav2lip.cli import main

    home = root / "home"
    os.environ["WAV2LIP_HOME"] = str(home)
    code = main(["infer", "--face", str(root / "face.mp4"), "--audio", str(root / "speech.wav"),
                 "-o", str(root / "cached.mp4"), "--checkpoint", str(root / "generator.pth"),
                 "--detector-weights", str(root / "retinaface.pth"), "--device", "cpu", "--precision", "fp32", "-q"])
    entries = sorted((home / "detections").glob("*.npz"), key=lambda p: (p.stat().st_mtime_ns, p.name))  # as written
    if code != 0 or not entries:
        raise RuntimeError(f"the detection-cache seed run failed (exit {code}, {len(entries)} entries)")
    (root / "cached.mp4").unlink()
    # Named by the order they were written, not by their file names: those are cache keys, and they differ
    # between machines (an AVX-512 one wrote other names than the saved cases'), so a saved case found none.
    return [Seed(f"detection-cache-{i}.npz", entry, "cache") for i, entry in enumerate(entries)]


def build(root: Path) -> dict[str, Seed]:
    """Write every seed under `root` (made empty first) and an index, seeds.json; return them by name."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    seeds = _media(root) + _weights(root) + _texts(root) + _data(root)
    seeds += _cache(root)
    from .serve import write_live_seeds, write_seed

    seeds.append(write_seed(root, {s.name: s for s in seeds}))
    seeds += write_live_seeds(root, {s.name: s for s in seeds})
    (root / "seeds.json").write_text(json.dumps([[s.name, str(s.path), s.kind] for s in seeds], indent=1))
    return {s.name: s for s in seeds}


def load(root: Path) -> dict[str, Seed]:
    """The seeds a `build` wrote under `root`."""
    return {name: Seed(name, Path(path), kind) for name, path, kind in json.loads((root / "seeds.json").read_text())}
