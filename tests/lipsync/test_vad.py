"""vad.py on the shared speech with planted pauses (clean, in noise, under music) and the per-frame
speech weights the pipeline's silence modes use."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import deterministic_generator
from wav2lip.lipsync import vad
from wav2lip.io.audio import SAMPLE_RATE, load_audio
from wav2lip.lipsync.kernel import speech_weights

FS = vad.FRAME_RATE  # decisions per second


def planted(media, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """mt_yongen.wav cut into 1.5 s pieces with 0.8 s pauses (room noise at -65 dBFS) between them;
    the pauses as (start, stop) decision indices."""
    wav = load_audio(media / "mt_yongen.wav")
    parts, pauses, t = [], [], 0
    for start in range(0, wav.size, int(1.5 * SAMPLE_RATE)):
        piece = wav[start:start + int(1.5 * SAMPLE_RATE)]
        parts.append(piece)
        t += piece.size
        gap = int(0.8 * SAMPLE_RATE)
        parts.append(rng.normal(0, 10 ** (-65 / 20), gap).astype(np.float32))
        pauses.append((t // vad.HOP, (t + gap) // vad.HOP))
        t += gap
    return np.concatenate(parts), pauses


def music(n: int) -> np.ndarray:
    """Chords of decaying harmonic notes every half second."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    for k, start in enumerate(range(0, n, SAMPLE_RATE // 2)):
        tt = t[start:] - t[start]
        for f in (220 * 1.26 ** (k % 3), 330.0):
            out[start:] += np.sin(2 * np.pi * f * tt) * np.exp(-tt / 0.4)
    return out.astype(np.float32)


def clear(clean: np.ndarray) -> np.ndarray:
    """Decisions whose clean speech-band level is within 25 dB of the loudest: surely speech."""
    level = 10 * np.log10(np.concatenate([p.sum(axis=1) for p in vad._band_power(clean)]))
    return level > np.percentile(level, 99) - 25


def check(activity: np.ndarray, spoken: np.ndarray, pauses: list[tuple[int, int]], max_false: float) -> None:
    """Each planted pause is mostly silence once the hangover after speech has passed; clear speech is
    speech (the first 40 ms of each burst excepted: a burst counts once it has lasted min_speech)."""
    after = int((vad.VadOptions().hangover + 0.07) * FS)
    inside = np.concatenate([np.arange(a + after, b - int(0.12 * FS)) for a, b in pauses])
    assert activity[inside].mean() <= max_false, activity[inside].mean()
    assert activity[spoken].mean() > 0.9, activity[spoken].mean()


@pytest.mark.parametrize("background", ["clean", "white", "music"])
def test_planted_pauses_are_found(media, background) -> None:
    rng = np.random.default_rng(0)
    wav, pauses = planted(media, rng)
    spoken = clear(wav)
    speech_power = float(np.mean(wav ** 2))
    if background != "clean":
        noise = rng.normal(0, 1, wav.size).astype(np.float32) if background == "white" else music(wav.size)
        wav = wav + noise * np.sqrt(speech_power / np.mean(noise ** 2) / 10)  # 10 dB below the speech
    check(vad.speech_activity(wav), spoken, pauses, max_false=0.0 if background == "clean" else 0.2)


def test_steady_sound_or_silence_is_not_speech_everywhere() -> None:
    rng = np.random.default_rng(1)
    assert not vad.speech_activity(np.zeros(SAMPLE_RATE, np.float32)).any()
    assert not vad.speech_activity(rng.normal(0, 0.1, 2 * SAMPLE_RATE).astype(np.float32)).any()
    assert vad.speech_activity(np.zeros(0, np.float32)).size == 0


def test_hold_counts_bursts_once_long_enough_and_hangs_over() -> None:
    raw = np.zeros(200, bool)
    raw[20:60] = True
    raw[70:120] = True  # a 0.1 s gap: inside the hangover
    raw[160:164] = True  # a 40 ms burst: never counts
    held = vad.hold(raw, vad.VadOptions(min_speech=0.05, hangover=0.2))
    assert not held[:24].any() and held[24:140].all() and not held[140:].any()


def test_pieces_give_the_decisions_of_the_whole(media) -> None:
    """Causal: pushing a recording in odd pieces (live) decides exactly as pushing it whole (a file)."""
    wav = load_audio(media / "vr_audio1.wav")
    wav = np.concatenate([wav, np.zeros(SAMPLE_RATE, np.float32), wav])  # past the first renewals
    rng = np.random.default_rng(3)
    detector, forgetful = vad.SpeechDetector(), vad.SpeechDetector()  # the second drops what it has read
    read: list[np.ndarray] = []
    at = 0
    while at < wav.size:
        piece = wav[at:at + int(rng.integers(1, 3000))]
        detector.push(piece)
        start = forgetful.count
        forgetful.push(piece)
        read.append(forgetful.decisions(start, forgetful.count))
        forgetful.forget(forgetful.count)
        at += piece.size
        assert detector.count == max(0, (at + vad.WIN // 2 - vad.WIN) // vad.HOP + 1)  # no look-ahead kept back
    detector.finish()
    start = forgetful.count
    forgetful.finish()
    read.append(forgetful.decisions(start, forgetful.count))
    whole = vad.speech_activity(wav)
    assert whole.size == -(-wav.size // vad.HOP) and whole.any() and not whole.all()
    np.testing.assert_array_equal(detector.activity, whole)
    np.testing.assert_array_equal(np.concatenate(read), whole)
    with pytest.raises(ValueError, match="forgotten"):
        forgetful.decisions(0, 10)


def test_digital_silence_before_room_noise_does_not_make_the_noise_speech(media) -> None:
    """A lead-in of digital silence must not become the noise the rest is measured against."""
    rng = np.random.default_rng(4)
    wav = load_audio(media / "vr_audio1.wav")[:3 * SAMPLE_RATE]
    room = rng.normal(0, 10 ** (-60 / 20), 2 * SAMPLE_RATE).astype(np.float32)
    joined = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), wav, room, wav])
    activity = vad.speech_activity(joined)
    pause = slice((4 * SAMPLE_RATE) // vad.HOP + int(0.4 * FS), (6 * SAMPLE_RATE) // vad.HOP)
    assert not activity[pause].any(), activity[pause].mean()


def test_speech_weights_touch_only_pauses_and_ramp_across_them(media) -> None:
    wav = load_audio(media / "vr_audio1.wav")
    fps = 25.0
    silent = np.zeros(SAMPLE_RATE, np.float32)
    joined = np.concatenate([wav[:2 * SAMPLE_RATE], silent, wav[2 * SAMPLE_RATE:4 * SAMPLE_RATE]])
    n = int(np.ceil(joined.size / SAMPLE_RATE * fps))
    weights = speech_weights(joined, n, fps, crossfade=3)
    assert weights.min() == 0 and set(np.unique(weights)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # Frames whose mel window (0.2 s) holds speech, and the crossfade after them, keep their audio.
    activity = vad.speech_activity(joined)
    speaking = np.array([activity[slice(*vad.window_steps(int(j * 80 / fps), 200, 16))].any() for j in range(n)])
    after_speech = np.convolve(speaking, np.ones(4), "full")[:n] > 0
    assert (weights[after_speech] > 0).all()
    zero = np.flatnonzero(weights == 0)
    assert 2.0 * fps < zero[0] and zero[-1] < 3.0 * fps
    before, after = weights[zero[0] - 3:zero[0]], weights[zero[-1] + 1:zero[-1] + 4]
    assert list(before) == [0.75, 0.5, 0.25] and list(after) == [0.25, 0.5, 0.75]
    # The ramp up ends before the speech is heard: the window looks 0.2 s ahead of the frame.
    heard = int(3.0 * fps)  # the frame where the speech resumes
    assert (weights[heard:heard + 5] == 1).all()
    # A pause shorter than the hangover is left alone (at 3 s the speech runs on for a second).
    short = np.concatenate([wav[:3 * SAMPLE_RATE], silent[:int(0.2 * SAMPLE_RATE)], wav[3 * SAMPLE_RATE:]])
    m = int(np.ceil(short.size / SAMPLE_RATE * fps))
    assert (speech_weights(short, m, fps, 3)[:int(4 * fps)] == 1).all()
    longer = np.concatenate([wav[:3 * SAMPLE_RATE], silent[:int(0.6 * SAMPLE_RATE)], wav[3 * SAMPLE_RATE:]])
    assert speech_weights(longer, m + 10, fps, 3)[int(3 * fps):int(4 * fps)].min() < 1


def test_silence_modes_in_the_pipeline(media, models_dir, tmp_path) -> None:
    """Speech, 1.2 s of faint room noise (-50 dBFS), speech: "still" and "original" change only the pause (and its
    crossfade), "original" shows the source there, "off" lip-syncs the noise."""

    from wav2lip import LipSyncer

    from wav2lip.data import synth
    from wav2lip.io.video import open_source

    checkpoint = deterministic_generator(tmp_path / "g.pth", width=0.125)
    wav = load_audio(media / "vr_audio1.wav")
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.003, int(1.2 * SAMPLE_RATE)).astype(np.float32)
    joined = np.concatenate([wav[:int(1.5 * SAMPLE_RATE)], noise, wav[int(1.5 * SAMPLE_RATE):3 * SAMPLE_RATE]])
    audio = tmp_path / "dub.wav"
    synth.write_wav(audio, joined)
    syncer = LipSyncer(checkpoint, device="cpu", precision="fp32")
    box = (150, 470, 140, 380)  # vr_face5's face: top, bottom, left, right
    face = media / "vr_face5.mp4"
    runs = {mode: list(syncer.frames(face, audio, box=box, silence=mode)) for mode in ("still", "original", "off")}
    weights = speech_weights(joined, len(runs["off"]), 25.0, 3)
    source = list(open_source(face).frames(len(runs["off"])))
    assert (weights == 0).sum() >= 10
    for k, w in enumerate(weights):
        # "original" generates fewer frames per batch: batch-size rounding of at most 2 levels.
        diff = [np.abs(runs[m][k].astype(int) - runs["off"][k]).max() for m in ("still", "original")]
        assert (diff[0] == 0) == (w == 1) and (diff[1] <= 2) == (w == 1), (k, w, diff)
        if w == 0:
            np.testing.assert_array_equal(runs["original"][k], source[k])
    result = syncer.run(face, audio, tmp_path / "out.mp4", box=box)
    assert result.silent_frames == int((weights < 1).sum()) and "in pauses" in result.summary()
