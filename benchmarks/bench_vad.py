"""Voice activity detectors compared on the shared speech with planted pauses, clean and noisy.

Each shared recording is cut into pieces of 0.8-2.0 s with pauses of 0.3-1.2 s planted between them
(room noise at -65 dBFS), then mixed with white noise or synthetic music (chords of decaying harmonic
notes, a bass line, hi-hat bursts) at a given speech-to-background ratio. Every detector's raw 10 ms
decisions go through the same hold rule (wav2lip.lipsync.vad.hold) and are scored on two kinds of frame only:
- planted pause frames more than 0.1 s before speech and past the hold's hangover after it: a "speech"
  decision is a false alarm;
- clearly spoken frames (clean band level within 25 dB of the recording's loudest): "silence" is a miss.
Frames in between (the speakers' own short pauses, soft consonants) are not scored: no detector-free
truth exists for them. Frame error = (false alarms + misses) / scored frames.

    python benchmarks/bench_vad.py [--seeds 3]

Detectors: ours (always); webrtc (pip install webrtcvad-wheels), silero (pip install silero-vad): each
only when importable.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from wav2lip.lipsync import vad
from wav2lip.io.audio import SAMPLE_RATE, load_audio

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
HOP = vad.HOP
HANGOVER = int(round((vad.VadOptions().hangover + 0.03) * vad.FRAME_RATE))  # steps (with the 30 ms smoothing)


def plant_pauses(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Speech pieces with pauses between them; (audio, per-10 ms label: 1 speech material, 0 pause)."""
    pieces, labels = [], []
    t = 0
    while t < wav.size:
        n = int(rng.uniform(0.8, 2.0) * SAMPLE_RATE)
        piece = wav[t:t + n]
        pause = int(rng.uniform(0.3, 1.2) * SAMPLE_RATE)
        pieces += [piece, rng.normal(0, 10 ** (-65 / 20), pause).astype(np.float32)]
        labels += [np.ones(piece.size, bool), np.zeros(pause, bool)]
        t += n
    audio, label = np.concatenate(pieces), np.concatenate(labels)
    frames = -(-audio.size // HOP)
    label = np.pad(label, (0, frames * HOP - label.size))
    return audio, label.reshape(frames, HOP).mean(axis=1) > 0.5


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic music: a chord every 0.5 s (decaying harmonic notes), a bass line, hi-hat bursts."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    beat = int(0.5 * SAMPLE_RATE)
    roots = [220.0, 196.0, 174.6, 246.9]
    for k, start in enumerate(range(0, n, beat)):
        stop = min(n, start + 2 * beat)
        tt = t[start:stop] - t[start]
        root = roots[(k // 4) % len(roots)]
        for ratio in (1.0, 1.26, 1.5):
            f = root * ratio * rng.choice([1, 2])
            note = sum(np.sin(2 * np.pi * f * h * tt) / h ** 1.5 for h in range(1, 6))
            out[start:stop] += 0.3 * note * np.exp(-tt / 0.6)
        out[start:stop] += 0.5 * np.sin(2 * np.pi * root / 2 * tt) * np.exp(-tt / 0.3)
        hat = min(n, start + beat // 2)
        out[hat:hat + 800] += rng.normal(0, 0.3, min(800, n - hat)) * np.exp(-np.arange(min(800, n - hat)) / 150)
    return out.astype(np.float32)


def mix(speech: np.ndarray, background: np.ndarray, label: np.ndarray, snr_db: float) -> np.ndarray:
    """Background scaled so that speech material's power over it is `snr_db`."""
    active = np.repeat(label, HOP)[:speech.size]
    p_speech = float(np.mean(speech[active] ** 2))
    p_back = float(np.mean(background ** 2))
    gain = np.sqrt(p_speech / (p_back * 10 ** (snr_db / 10)))
    return np.clip(speech + gain * background, -1, 1).astype(np.float32)


def clear_speech(clean: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Frames of speech material whose band level is within 25 dB of the loudest: surely speech."""
    level = 10 * np.log10(np.concatenate([p.sum(axis=1) for p in vad._band_power(clean)]))
    return label[:level.size] & (level > np.percentile(level, 99) - 25)


def far_pause(label: np.ndarray, before: int = 10, after: int = HANGOVER) -> np.ndarray:
    """Pause frames more than `before` frames (0.1 s) before speech material and `after` frames after it
    (the hold's hangover: every detector's decisions go through it)."""
    speech = label.astype(np.int32)
    kernel = np.ones(before + after + 1, np.int32)
    near = np.convolve(speech, kernel)[before:before + label.size] > 0  # speech in [t - after, t + before]
    return ~near


def ours(wav: np.ndarray) -> np.ndarray:
    return vad.speech_activity(wav)


def webrtc(wav: np.ndarray, mode: int = 2) -> np.ndarray:
    import webrtcvad

    detector = webrtcvad.Vad(mode)
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    n = pcm.size // HOP
    raw = np.array([detector.is_speech(pcm[i * HOP:(i + 1) * HOP].tobytes(), SAMPLE_RATE) for i in range(n)])
    return vad.hold(np.pad(raw, (0, -(-wav.size // HOP) - n)))


_SILERO = None


def silero(wav: np.ndarray) -> np.ndarray:
    import torch
    from silero_vad import load_silero_vad

    global _SILERO
    if _SILERO is None:
        _SILERO = load_silero_vad(onnx=True)
    _SILERO.reset_states()
    chunk = 512
    probs = []
    padded = np.pad(wav, (0, -wav.size % chunk))
    for i in range(0, padded.size, chunk):
        probs.append(float(_SILERO(torch.from_numpy(padded[i:i + chunk]), SAMPLE_RATE)))
    per_hop = np.repeat(np.array(probs) > 0.5, chunk)[:wav.size]
    frames = -(-wav.size // HOP)
    per_hop = np.pad(per_hop, (0, frames * HOP - per_hop.size))
    return vad.hold(per_hop.reshape(frames, HOP).mean(axis=1) > 0.5)


def available() -> dict:
    detectors = {"ours": ours}
    try:
        import webrtcvad  # noqa: F401

        detectors["webrtc-2"] = webrtc
        detectors["webrtc-3"] = lambda w: webrtc(w, 3)
    except ImportError:
        pass
    try:
        import silero_vad  # noqa: F401

        detectors["silero"] = silero
    except ImportError:
        pass
    return detectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="pause plantings per recording")
    args = parser.parse_args()
    detectors = available()
    conditions = [("clean", None, None), ("white 10 dB", "white", 10.0), ("white 0 dB", "white", 0.0),
                  ("music 10 dB", "music", 10.0), ("music 0 dB", "music", 0.0)]
    totals = {(d, c[0]): np.zeros(4) for d in detectors for c in conditions}  # fa, pauses, miss, speech
    seconds = {d: 0.0 for d in detectors}
    audio_seconds = 0.0
    for path in sorted(MEDIA.glob("*.wav")):
        wav = load_audio(path)
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            clean, label = plant_pauses(wav, rng)
            speech_frames = clear_speech(clean, label)
            pause_frames = far_pause(label)
            for name, kind, snr in conditions:
                if kind is None:
                    audio = clean
                else:
                    back = rng.normal(0, 1, clean.size).astype(np.float32) if kind == "white" else music(clean.size, rng)
                    audio = mix(clean, back, label, snr)
                audio_seconds += audio.size / SAMPLE_RATE / len(conditions)
                for det, fn in detectors.items():
                    t0 = time.perf_counter()
                    said = fn(audio)[:label.size]
                    seconds[det] += time.perf_counter() - t0
                    totals[(det, name)] += [np.sum(said & pause_frames), pause_frames.sum(),
                                            np.sum(~said & speech_frames), speech_frames.sum()]
    print(f"{audio_seconds / len(detectors) * len(conditions):.0f} s of audio per detector; "
          f"false alarm = planted pause called speech, miss = clear speech called silence")
    header = f"{'detector':<10}" + "".join(f"{c[0]:>26}" for c in conditions) + f"{'ms per s':>10}"
    print(header)
    print(f"{'':<10}" + "".join(f"{'error  (FA / miss)':>26}" for _ in conditions))
    total_audio = audio_seconds * len(conditions) / len(conditions)
    for det in detectors:
        cells = []
        for c in conditions:
            fa, pauses, miss, speech = totals[(det, c[0])]
            err = (fa + miss) / (pauses + speech)
            cells.append(f"{100 * err:6.1f}%  ({100 * fa / pauses:4.1f} / {100 * miss / speech:4.1f})")
        rate = 1000 * seconds[det] / (total_audio * len(conditions))
        print(f"{det:<10}" + "".join(f"{cell:>26}" for cell in cells) + f"{rate:>10.2f}")


if __name__ == "__main__":
    main()
