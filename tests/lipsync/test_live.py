"""live.py and audio.MelStream on real media: the incremental mel equals the whole-signal mel; frames
streamed from audio fed in pieces equal the offline pipeline's; idle, silence, stalls, early stops;
`wav2lip live` from a file and from stdin PCM."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import cpu_syncer, cut_wav, deterministic_generator
from wav2lip import LipSyncer, LiveSyncer, Wav2LipError
from wav2lip.io.audio import SAMPLE_RATE, MelStream, load_audio, melspectrogram, write_wav
from wav2lip.lipsync.kernel import SILENT_MEL, frame_mel_windows
from wav2lip.lipsync.live import LEAD
from wav2lip.io.streams import file_chunks, pcm_chunks
from wav2lip.io.video import VideoWriter, open_source, probe

ROOT = Path(__file__).resolve().parents[2]
FRAME = 640  # samples per frame at 25 fps


# ---------------------------------------------------------------- MelStream


@pytest.mark.parametrize("size", [1, 77, 199, 200, 320, 401, 3333, 20000, 10**6])
def test_mel_stream_equals_the_whole_signal_mel(media, size) -> None:
    wav = load_audio(media / "vr_audio1.wav")[:2 * 16000 + 137]
    mel = MelStream()
    parts = [mel.push(wav[i:i + size]) for i in range(0, wav.size, size)]
    streamed = np.concatenate(parts + [mel.finish()], axis=1)
    assert np.array_equal(streamed, melspectrogram(wav))
    # Each column comes out as soon as the samples it is made of have arrived, not later.
    final = sum(p.shape[1] for p in parts)
    assert final == (wav.size - 400) // 200 + 1


def test_mel_stream_copy_is_independent_and_short_input_is_refused(media) -> None:
    wav = load_audio(media / "vr_audio1.wav")[:8000]
    mel = MelStream()
    head = mel.push(wav[:5000])
    ahead = mel.copy().push(np.zeros(3000))
    rest = mel.push(wav[5000:])
    assert ahead.shape[1] == rest.shape[1] and not np.array_equal(ahead, rest)
    assert np.array_equal(np.concatenate((head, rest, mel.finish()), axis=1), melspectrogram(wav))
    short = MelStream()
    assert short.push(np.ones(400, np.float32)).shape == (80, 0)
    with pytest.raises(ValueError, match="too short"):
        short.finish()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Generator calls here are small (a few frames); on a shared, loaded machine two OpenMP threads spend
    most of such a call waiting for each other, so this module runs torch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return deterministic_generator(work / "deterministic.pth", width=0.25)


@pytest.fixture(scope="module")
def syncer(checkpoint) -> LipSyncer:
    return cpu_syncer(checkpoint)


@pytest.fixture(scope="module")
def clip(media, work) -> Path:
    """16 frames of a real talking-head video: shorter than the audio, so both pipelines loop it."""
    frames = list(open_source(media / "vr_face5.mp4").frames(16))
    path = work / "clip16.mkv"
    with VideoWriter(path, 25, frames[0].shape[1], frames[0].shape[0], lossless=True) as writer:
        writer.write_many(frames)
    return path


@pytest.fixture(scope="module")
def speech(media, work) -> Path:
    """1.5 s of 44.1 kHz stereo speech (37.5 frames: the last one is partial)."""
    return cut_wav(media / "vr_audio1.wav", work / "speech.wav", 1.5)


@pytest.fixture(scope="module")
def live_exact(syncer, clip) -> LiveSyncer:
    return LiveSyncer(clip, syncer=syncer, silence="off", batch_size=64, max_delay=0)


@pytest.fixture(scope="module")
def avatar(syncer, media) -> LiveSyncer:
    """A still portrait whose pauses show its own mouth, faded over 4 frames (and the default stall)."""
    return LiveSyncer(media / "st_art0.png", syncer=syncer, silence="original", crossfade=4)


def pieces(wav: np.ndarray, size: int):
    for i in range(0, wav.size, size):
        yield wav[i:i + size]


def paced(parts, seconds_per_part: float):
    """Each array part handed over when its last sample would have been heard (as a live capture
    would); a float part is a pause of that many seconds with nothing sent."""
    start = time.perf_counter()
    elapsed = 0.0
    for part in parts:
        elapsed += part if isinstance(part, float) else seconds_per_part
        time.sleep(max(0.0, start + elapsed - time.perf_counter()))
        if not isinstance(part, float):
            yield part


# ---------------------------------------------------------------- parity with the offline pipeline


@pytest.mark.parametrize("size", [77, 320, 20000])
def test_streamed_frames_equal_the_offline_frames(syncer, live_exact, clip, speech, size) -> None:
    wav = load_audio(speech)
    offline = list(syncer.frames(clip, speech))
    out = list(live_exact.stream(pieces(wav, size)))
    assert len(out) == len(offline) == 38
    assert [f.index for f in out] == list(range(38))
    assert [f.time for f in out] == [k / 25 for k in range(38)]
    assert [f.sample for f in out] == [k * FRAME for k in range(38)]
    assert all(f.mouth == 1.0 for f in out)
    worst = max(int(np.abs(f.image.astype(np.int16) - ref).max()) for f, ref in zip(out, offline))
    assert worst <= 1, worst
    audio = np.concatenate([f.audio for f in out])
    assert audio.size == 38 * FRAME
    assert np.array_equal(audio[:wav.size], wav) and not audio[wav.size:].any()


def test_a_stream_that_starts_with_speech_starts_as_the_file_does(syncer, media, speech) -> None:
    """No idle frame came before the speech, so there is nothing to fade from: the mouth is the file's
    from the first frame (the fade-in after idle frames is test_no_audio_then_speech_...)."""
    live = LiveSyncer(media / "st_art0.png", syncer=syncer, silence="original", crossfade=4, max_delay=0)
    offline = list(syncer.frames(media / "st_art0.png", speech, silence="original", crossfade=4))
    out = list(live.stream(pieces(load_audio(speech), 320)))
    assert len(out) == len(offline) and all(f.mouth == 1.0 for f in out)
    assert max(int(np.abs(f.image.astype(np.int16) - ref).max()) for f, ref in zip(out, offline)) <= 1


# ---------------------------------------------------------------- a generator trained on an earlier window


@pytest.fixture(scope="module")
def early(work) -> Path:
    """A narrow generator whose checkpoint records a window 13 mel steps early (a live student's)."""
    from support.deterministic import fill_deterministic
    from wav2lip.checkpoints import save_checkpoint
    from wav2lip.models.generator import Wav2Lip

    path = work / "early.pth"
    save_checkpoint(path, fill_deterministic(Wav2Lip(width=0.25, mel_offset=-13)))
    return path


def test_the_window_a_checkpoint_records_is_the_one_offline_and_live_use(early, clip, paused) -> None:
    """Offline: frame j hears mel steps [3.2 j - 13, 3.2 j + 3), digital silence before the audio; live gives the
    same frames bit for bit (the pauses judged on that window too), from the checkpoint alone."""
    syncer = cpu_syncer(early)
    assert syncer.mel_offset == -13
    mel = melspectrogram(load_audio(paused))
    windows = frame_mel_windows(mel, [0, 5, 10**6], 25, syncer.mel_offset)
    assert np.array_equal(windows[0, 0, :, :13], np.full((80, 13), SILENT_MEL))
    assert np.array_equal(windows[0, 0, :, 13:], mel[:, :3])
    assert np.array_equal(windows[1, 0], mel[:, 3:19]) and np.array_equal(windows[2, 0], mel[:, -16:])
    given = {"silence": "still", "batch_size": 1}
    offline = list(syncer.frames(clip, paused, **given))
    live = LiveSyncer(clip, syncer=syncer, max_delay=0, **given)
    assert live.lead == 800
    out = list(live.stream(pieces(load_audio(paused), 320)))
    assert len(out) == len(offline) == 78
    assert all(np.array_equal(f.image, b) for f, b in zip(out, offline))
    assert min(f.mouth for f in out) == 0 and max(f.mouth for f in out) == 1


@pytest.mark.parametrize("offset, lead", [(-13, 800), (0, 3400)])
def test_a_live_frame_needs_only_the_audio_its_window_ends_on(work, media, offset, lead) -> None:
    """Frame j (a multiple of 5: its window starts on a mel step) comes once samples 640 j + lead have
    arrived, not one sample sooner, with no more audio (no stall): 50 ms after the frame's start for a
    window 13 steps early, 212.5 ms for the authors'."""
    from support.deterministic import fill_deterministic
    from wav2lip.checkpoints import save_checkpoint
    from wav2lip.models.generator import Wav2Lip

    path = work / f"lead{offset}.pth"
    save_checkpoint(path, fill_deterministic(Wav2Lip(width=0.125, mel_offset=offset)))
    live = LiveSyncer(media / "st_art0.png", syncer=cpu_syncer(path), silence="off", stall=600, max_delay=0)
    assert live.lead == lead
    wav = load_audio(media / "vr_audio1.wav")[:16000]
    got: list[int] = []
    arrived = threading.Condition()
    early_ok, late_missing = [], []

    def source():
        sent = 0
        for j in (5, 10, 15):
            need = j * FRAME + lead
            yield wav[sent:need - 1]
            sent = need - 1
            with arrived:  # one sample short of the window: frame j must not come
                late_missing.append(not arrived.wait_for(lambda: len(got) > j, timeout=0.3))
            yield wav[sent:need]
            sent = need
            with arrived:
                early_ok.append(arrived.wait_for(lambda: len(got) > j, timeout=30))

    frames = live.stream(source())
    for frame in frames:
        with arrived:
            got.append(frame.sample)
            arrived.notify_all()
    assert early_ok == [True] * 3 and late_missing == [True] * 3


# ---------------------------------------------------------------- live behaviour


def test_no_audio_then_speech_then_nothing_keeps_the_frame_rate_with_the_avatars_frames(avatar, media) -> None:
    own = next(iter(open_source(media / "st_art0.png").frames(1)))
    wav = load_audio(media / "vr_audio1.wav")[:16000]
    caught_up = threading.Event()  # the output has every frame whose window the speech completes

    def source():
        yield from paced([0.6, *pieces(wav, 320)], 0.02)
        caught_up.wait(600)  # on a slow machine the pause must not be hidden behind the generator's lag
        time.sleep(1.0)

    stamps, out = [], []
    for frame in avatar.stream(source()):
        stamps.append(time.perf_counter())
        out.append(frame)
        if frame.sample == 19 * FRAME:
            caught_up.set()
    speech = [i for i, f in enumerate(out) if f.sample is not None]
    first, last = speech[0], speech[-1]
    assert [f.index for f in out] == list(range(len(out)))
    assert first >= 1 and speech == list(range(first, last + 1))  # idle, then every speech frame in a row
    assert [f.sample for f in out if f.sample is not None] == [j * FRAME for j in range(25)]
    # Before the speech and after it ends: the avatar's own frames, yielded at the frame rate (never faster).
    assert all(np.array_equal(f.image, own) and f.mouth == 0 and not f.audio.any() for f in out[:first])
    idle_gaps = np.diff(stamps[:first])
    assert idle_gaps.min() >= 0.03, idle_gaps
    after = out[last + 1:]
    assert len(after) >= 4 and all(f.sample is None for f in after)  # the source paused before it ended
    # Speech fades in, and out again over the idle frames after it; then the avatar's own frames.
    assert [f.mouth for f in out[first:first + 5]] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [f.mouth for f in after[:4]] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert not np.array_equal(after[0].image, own)
    assert all(f.mouth == 0 and np.array_equal(f.image, own) for f in after[4:])


def test_digital_silence_shows_the_avatars_own_mouth(avatar, media) -> None:
    own = next(iter(open_source(media / "st_art0.png").frames(1)))
    out = list(avatar.stream(pieces(np.zeros(16000, np.float32), 320)))
    assert len(out) == 25 and all(f.sample is not None and f.mouth == 0 for f in out)
    assert all(np.array_equal(f.image, own) for f in out)


def test_a_source_that_stalls_and_resumes(avatar, media) -> None:
    wav = load_audio(media / "vr_audio1.wav")[:2 * 9600]
    caught_up = threading.Event()

    def source():
        yield from paced(pieces(wav[:9600], 320), 0.02)
        caught_up.wait(600)  # the pause starts once the output has every frame the audio so far completes
        time.sleep(1.5)  # long enough for idle frames inside it on a loaded machine (0.7 s gave 4 at load 4)
        yield from paced(pieces(wav[9600:], 320), 0.02)

    out = []
    for frame in avatar.stream(source()):
        out.append(frame)
        if frame.sample == 9 * FRAME:
            caught_up.set()
    assert [f.index for f in out] == list(range(len(out)))
    kinds = "".join("s" if f.sample is not None else "i" for f in out)
    assert kinds.strip("i").count("i") >= 5 and kinds.strip("i").count("si") == 1, kinds  # one pause, idle inside
    # The source's samples all play, once, in order: the first part's last frame is padded with silence.
    samples = [f.sample for f in out if f.sample is not None]
    assert samples == [j * FRAME for j in range(15)] + [9600 + j * FRAME for j in range(15)]
    played = np.concatenate([f.audio for f in out if f.sample is not None])
    assert np.array_equal(played, wav)


def test_a_consumer_that_stops_early_ends_every_thread(avatar, media) -> None:
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield np.zeros(320, np.float32)
                time.sleep(0.02)
        finally:
            closed.set()

    before = set(threading.enumerate())
    frames = avatar.stream(endless())
    got = [next(frames) for _ in range(3)]
    frames.close()
    assert [f.index for f in got] == [0, 1, 2]
    deadline = time.time() + 5
    while time.time() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.05)
    assert not set(threading.enumerate()) - before
    assert closed.is_set()


def test_a_generator_slower_than_real_time_holds_mouths_and_keeps_the_latency_bounded(work, media) -> None:
    """A still at 120 frames/s with the full-size generator: no CPU paints 120 faces a second, so without
    holding, frame k would come ever later. Held frames keep every sample and the mouth's weight; the
    latency stays near the floor plus max_delay plus one painted frame."""
    syncer = cpu_syncer(deterministic_generator(work / "full.pth", width=1.0))
    live = LiveSyncer(media / "st_art0.png", syncer=syncer, fps=120, silence="off", max_delay=0.2)
    list(live.stream([np.zeros(8000, np.float32)]))  # warm-up: the generator's first calls are slow
    wav = load_audio(media / "vr_audio1.wav")[:2 * SAMPLE_RATE]
    handed: list[float] = []

    def source():
        for part in paced(pieces(wav, 320), 0.02):
            handed.append(time.perf_counter())
            yield part

    out, lateness = [], []
    for frame in live.stream(source()):
        out.append(frame)
        lateness.append(time.perf_counter() - handed[frame.sample // 320])
    assert [f.sample for f in out] == [live.samples_of(j) for j in range(240)]
    assert np.array_equal(np.concatenate([f.audio for f in out])[:wav.size], wav)
    held = sum(f.held for f in out)
    assert 0 < held < 240 and all(f.mouth == 1.0 for f in out)
    # Painting all 240 would take over 5 s more than the 2 s of speech (the fastest 2-core CPU paints a
    # full-size face in ~30 ms, 240 x (30 - 8.3) ms); held, no frame is even 2 s late.
    assert max(lateness) < 2.0, (max(lateness), held)


def test_audio_that_waited_in_a_buffer_counts_late_from_its_arrival(syncer, media) -> None:
    """Chunks given as (samples, arrived) with arrived 5 s back (a server that buffered them): every frame is
    already past max_delay, so all but the first whose windows lie inside the audio show a held mouth (the
    last ones could not be made before the end was known); the stall rule counts from the
    handover, so the speech is not cut by silence either (every sample plays once, in order)."""
    live = LiveSyncer(media / "st_art0.png", syncer=syncer, silence="off", max_delay=0.2)
    wav = load_audio(media / "vr_audio1.wav")[:16000]

    def buffered():
        for part in paced(pieces(wav, 320), 0.02):
            yield part, time.perf_counter() - 5.0

    out = list(live.stream(buffered()))
    assert [f.sample for f in out] == [j * FRAME for j in range(25)]
    assert np.array_equal(np.concatenate([f.audio for f in out]), wav)
    inside = [f for f in out if f.sample + LEAD <= wav.size]  # windows complete before the end was known
    assert len(inside) == 20 and not inside[0].held and all(f.held for f in inside[1:])


def test_source_errors_and_bad_options_are_clear(avatar, syncer, media) -> None:
    with pytest.raises(Wav2LipError, match="1-D"):
        list(avatar.stream([np.zeros((2, 320), np.float32)]))

    def failing():
        yield np.zeros(320, np.float32)
        raise Wav2LipError("the microphone went away")

    with pytest.raises(Wav2LipError, match="microphone"):
        list(avatar.stream(failing()))
    for bad in ({"crossfade": -1}, {"stall": 0}, {"max_delay": -0.1}, {"loop": "bounce"}):
        with pytest.raises(Wav2LipError):
            LiveSyncer(media / "st_art0.png", syncer=syncer, **bad)
    with pytest.raises(Wav2LipError, match="box"):
        LiveSyncer(media / "st_art0.png", syncer=syncer, box=(0, 5000, 0, 10))


def test_other_sample_rates_are_resampled(avatar, media) -> None:
    wav16 = load_audio(media / "vr_audio1.wav")[:16000]
    wav48 = load_audio(media / "vr_audio1.wav", sr=48000)[:48000]
    out = list(avatar.stream(pieces(wav48, 960), sample_rate=48000))
    assert len(out) == 25 and [f.sample for f in out] == [j * FRAME for j in range(25)]
    played = np.concatenate([f.audio for f in out])
    assert np.corrcoef(played[:15000], wav16[:15000])[0, 1] > 0.99


# ---------------------------------------------------------------- audio sources


def test_file_chunks_play_in_real_time_and_match_load_audio(speech) -> None:
    start = time.perf_counter()
    parts = list(file_chunks(speech, 0.05))
    assert time.perf_counter() - start >= 1.5 - 0.06
    assert {p.size for p in parts[:-1]} == {800}
    assert np.array_equal(np.concatenate(parts), load_audio(speech))


def test_pcm_chunks_from_a_pipe_keep_split_samples_together() -> None:
    values = (np.arange(-3000, 3000, 7) * 5).astype("<i2")
    read, write = os.pipe()
    data = values.tobytes()
    for i in range(0, len(data), 333):  # odd pieces split samples across reads
        os.write(write, data[i:i + 333])
    os.close(write)
    got = np.concatenate(list(pcm_chunks(read, "s16le", block=333)))
    os.close(read)
    assert np.array_equal(got, values.astype(np.float32) / 32768)


@pytest.mark.parametrize("content", [b"", os.urandom(3000), "folder", "missing"])
def test_file_chunks_hostile_input(work, content) -> None:
    path = work / f"bad_{len(content) if isinstance(content, bytes) else content}.wav"
    if content == "folder":
        path.mkdir(exist_ok=True)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(Wav2LipError, match=str(path.name)):
        list(file_chunks(path, realtime=False))


# ---------------------------------------------------------------- the command


def _cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "wav2lip", "live", *args], env=env, capture_output=True,
                          timeout=600, **kwargs)


def test_cli_live_refuses_stdin_pcm_below_telephone_rate(checkpoint, media, work) -> None:
    """Raw PCM declared at 1 Hz would be resampled 16,000-fold (found by fuzzing files): one line, no output."""
    out = work / "never.mp4"
    done = subprocess.run([sys.executable, "-m", "wav2lip", "live", "--face", str(media / "st_art0.png"),
                           "--audio", "-", "--sample-rate", "1", "-o", str(out), "--checkpoint", str(checkpoint)],
                          input=b"\0" * 640, capture_output=True, timeout=120)
    assert done.returncode == 2 and b"sample rate must be at least 8000, got 1" in done.stderr, done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1 and not out.exists()


def test_cli_live_from_a_file_and_from_stdin_pcm(checkpoint, media, speech, work) -> None:
    common = ["--face", str(media / "st_art0.png"), "--checkpoint", str(checkpoint), "--device", "cpu",
              "--precision", "fp32", "--detector-weights", str(media.parent / "models" / "retinaface_mobilenet0.25.pth")]
    target = work / "live_file.mp4"
    done = _cli([*common, "--audio", str(speech), "-o", str(target)])
    assert done.returncode == 0, done.stderr.decode()
    info = probe(target)
    assert info.width == 640 and info.height == 896 and abs(info.duration - 1.5) < 0.1
    with av.open(str(target)) as container:
        assert len(container.streams.audio) == 1

    pcm = (load_audio(speech) * 32767).astype("<i2").tobytes()
    target = work / "live_stdin.ts"  # MPEG-TS: what `live --help` offers (once refused by a check made for infer)
    done = _cli([*common, "--audio", "-", "-o", str(target)], input=pcm)
    assert done.returncode == 0, done.stderr.decode()
    assert abs(probe(target).duration - 1.5) < 0.1


def test_cli_live_bad_input_one_line_exit_2(checkpoint, media, work) -> None:
    empty = work / "empty.wav"
    empty.write_bytes(b"")
    common = ["--face", str(media / "st_art0.png"), "--checkpoint", str(checkpoint), "--box", "100", "400", "100", "400"]
    cases = [
        (["--audio", str(empty), "-o", str(work / "x.mp4")], "empty"),
        (["--audio", str(work / "nothing.wav"), "-o", str(work / "x.mp4")], "no such file"),
        (["--audio", str(work), "-o", str(work / "x.mp4")], "not a regular file"),
        (["--audio", str(media / "vr_audio1.wav"), "-o", str(work / "no" / "x.mp4")], "does not exist"),
        (["--audio", str(media / "vr_audio1.wav"), "-o", str(media / "vr_audio1.wav")], "the output is the input file"),
        (["--audio", str(media / "vr_audio1.wav"), "-o", str(work / "x.avi")], "cannot stream video into .avi"),
    ]
    for args, message in cases:
        done = _cli([*common, *args])
        err = done.stderr.decode().strip()
        assert done.returncode == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (work / "x.mp4").exists()


@pytest.fixture(scope="module")
def paused(media, work) -> Path:
    """Speech, 0.9 s of room noise (-60 dBFS), speech: a pause for the silence modes to act on."""
    wav = load_audio(media / "vr_audio1.wav")
    room = np.random.default_rng(5).normal(0, 10 ** (-60 / 20), int(0.9 * SAMPLE_RATE)).astype(np.float32)
    path = work / "paused.wav"
    write_wav(path, np.concatenate([wav[:int(1.2 * SAMPLE_RATE)], room, wav[int(3 * SAMPLE_RATE):int(4 * SAMPLE_RATE)]]))
    return path


@pytest.mark.parametrize("options", [
    {"silence": "still"},
    {"silence": "original", "crossfade": 5},
    {"silence": "still", "crossfade": 0, "blend": "feather", "mask": "landmarks"},
    {"blend": "feather"},
    {"blend": "feather", "mask": "landmarks", "mask_top": 0.5, "mask_softness": 0.2},
    {"blend": "feather", "colour_match": False},
    {"calibration": (0.02, -0.03, 1.1, 0.95), "pads": (0, 20, 5, 5)},
    {"face_index": 0, "speaker": "largest"},
    {"enhance": "gfpgan", "enhance_strength": 0.7, "blend": "feather"},
], ids=["still", "original", "still-no-crossfade", "feather", "landmarks", "no-colour-match", "calibration",
        "face-index", "enhance"])
def test_live_frames_equal_offline_frames_for_each_option_group(checkpoint, restorer, clip, speech,
                                                                paused, options) -> None:
    """The same avatar, audio and options give the same frames live as offline, bit for bit (one frame per
    generator call on both sides, so no batch shape can change a sum's rounding); the silence modes on
    audio with a pause, which both take from the same voice-activity detector."""
    syncer = cpu_syncer(checkpoint, enhancer_weights=restorer)
    given = {"silence": "off", **options, "batch_size": 1}
    audio = paused if "silence" in options else speech
    offline = list(syncer.frames(clip, audio, **given))
    live = LiveSyncer(clip, syncer=syncer, max_delay=0, **given)
    out = list(live.stream(pieces(load_audio(audio), 320)))
    assert len(out) == len(offline) == (78 if audio == paused else 38) and not any(f.held for f in out)
    assert all(np.array_equal(f.image, b) for f, b in zip(out, offline))
    if "silence" in options:  # the pause was seen: some frames are the avatar's own mouth
        assert min(f.mouth for f in out) == 0 and max(f.mouth for f in out) == 1
