"""audio.py: decoding real and written media, the mel against the published front end, frame <-> window maps."""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from wav2lip.io import audio
from wav2lip.errors import Wav2LipError


def write_audio(path: Path, signal: np.ndarray, rate: int, codec: str, layout: str) -> Path:
    """Encode `signal` (channels, n) float in [-1, 1] with PyAV; the container is chosen by the extension."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)

        def encode(frames):
            for frame in frames:
                for packet in stream.encode(frame):
                    out.mux(packet)

        for start in range(0, signal.shape[1], 1024):
            block = np.ascontiguousarray(signal[:, start:start + 1024], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            encode(resampler.resample(frame))
        encode(resampler.resample(None))
        encode([None])
    return path


def tone(rate: int, seconds: float, channels: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.repeat((amplitude * np.sin(2 * np.pi * hz * t))[None], channels, axis=0)


def dominant_hz(wav: np.ndarray, sr: int = audio.SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
    return float(np.fft.rfftfreq(wav.size, 1 / sr)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def mel_fixture(fixtures_dir: Path):
    return np.load(fixtures_dir / "audio_mel.npz")


def test_load_audio_matches_fixture_wav(fixtures_dir, mel_fixture):
    wav = audio.load_audio(fixtures_dir / "speech_16k.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1
    np.testing.assert_allclose(wav, mel_fixture["wav"], atol=1e-7, rtol=0)


def test_melspectrogram_matches_reference(mel_fixture):
    mel = audio.melspectrogram(mel_fixture["wav"])
    assert mel.dtype == np.float32
    assert mel.shape == mel_fixture["mel"].shape == (audio.N_MELS, 1 + mel_fixture["wav"].size // audio.HOP)
    assert np.abs(mel - mel_fixture["mel"]).max() < 1e-3


def test_melspectrogram_of_decoded_file_matches_reference(fixtures_dir, mel_fixture):
    mel = audio.melspectrogram(audio.load_audio(fixtures_dir / "speech_16k.wav"))
    assert np.abs(mel - mel_fixture["mel"]).max() < 1e-3


def test_mel_filters_are_slaney_normalised():
    filters = audio.mel_filters()
    assert filters.shape == (audio.N_MELS, audio.N_FFT // 2 + 1)
    freqs = np.linspace(0, audio.SAMPLE_RATE / 2, audio.N_FFT // 2 + 1)
    occupied = freqs[filters.sum(axis=0) > 0]
    assert occupied.min() >= audio.FMIN and occupied.max() <= audio.FMAX
    # Slaney area normalisation: every triangle integrates to 1 over Hz (HTK-style peaks of 1 would not).
    bin_hz = audio.SAMPLE_RATE / audio.N_FFT
    np.testing.assert_allclose(filters.sum(axis=1) * bin_hz, 1.0, atol=0.05)


@pytest.mark.parametrize("fps, key", [(25, "chunk_starts_25fps"), (30, "chunk_starts_30fps"),
                                      (29.97, "chunk_starts_29_97fps"), (30000 / 1001, "chunk_starts_29_97fps")])
def test_reference_chunk_starts(mel_fixture, fps, key):
    assert audio.reference_chunk_starts(mel_fixture["mel"].shape[1], fps) == mel_fixture[key].tolist()


@pytest.mark.parametrize("fps", [25, 30, 29.97, 24, 60])
def test_frame_windows_extend_the_reference(mel_fixture, fps):
    n_samples = mel_fixture["wav"].size
    n_mel = 1 + n_samples // audio.HOP
    reference = audio.reference_chunk_starts(n_mel, fps)
    n = audio.frame_count_for_audio(n_samples, fps)
    assert n == int(np.ceil(n_samples / audio.SAMPLE_RATE * fps)) >= len(reference)
    starts = [audio.mel_window_start(i, fps, n_mel) for i in range(n)]
    assert starts[:len(reference)] == reference
    assert all(s == n_mel - audio.MEL_STEP for s in starts[len(reference):])


def test_frame_count_covers_audio_the_reference_drops():
    # Spec section 3: 6.0 s at 25 fps gives the reference 147 frames; the whole audio needs 150.
    n_samples = 6 * audio.SAMPLE_RATE
    assert len(audio.reference_chunk_starts(1 + n_samples // audio.HOP, 25)) == 147
    assert audio.frame_count_for_audio(n_samples, 25) == 150


def test_mel_windows(mel_fixture):
    mel = mel_fixture["mel"]
    starts = [0, 3, 341]
    windows = audio.mel_windows(mel, starts)
    assert windows.shape == (3, 1, 80, 16) and windows.dtype == np.float32
    for k, start in enumerate(starts):
        np.testing.assert_array_equal(windows[k, 0], mel[:, start:start + 16])
    with pytest.raises(ValueError):
        audio.mel_windows(mel, [342])
    with pytest.raises(ValueError):
        audio.reference_chunk_starts(15, 25)


def test_stereo_wav_is_the_mean_of_its_channels(media):
    path = media / "st_radio31.wav"  # 16 kHz stereo: no resampling, so the down-mix is seen exactly
    with av.open(str(path)) as container:
        raw = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in container.decode(audio=0)])
    wav = audio.load_audio(path)
    np.testing.assert_allclose(wav, raw.astype(np.float64).mean(axis=1) / 32768, atol=1e-6)


@pytest.mark.parametrize("name", ["vr_audio1.wav", "mt_yongen.wav", "vr_face2.mp4", "hdtf_kh.mp4"])
def test_real_media_resampled_to_16k(media, name):
    with av.open(str(media / name)) as container:
        stream = container.streams.audio[0]
        seconds = float(stream.duration * stream.time_base)
    wav = audio.load_audio(media / name)
    assert wav.dtype == np.float32 and wav.ndim == 1
    # MP4 audio is cut to its recorded length: no AAC padding at the end.
    assert abs(wav.size / audio.SAMPLE_RATE - seconds) < 0.001
    assert 0.05 < np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("name, codec, rate, layout", [
    ("tone.mp3", "libmp3lame", 44100, "stereo"),
    ("tone.m4a", "aac", 48000, "stereo"),
    ("tone_u8.wav", "pcm_u8", 22050, "mono"),
    ("tone_s24.wav", "pcm_s24le", 44100, "stereo"),
    ("tone_f32.wav", "pcm_f32le", 8000, "mono"),
])
def test_written_formats_decode_to_the_same_tone(tmp_path, name, codec, rate, layout):
    channels = 2 if layout == "stereo" else 1
    path = write_audio(tmp_path / name, tone(rate, 1.0, channels), rate, codec, layout)
    wav = audio.load_audio(path)
    assert abs(wav.size - audio.SAMPLE_RATE) <= 1  # encoder delay and padding removed (MP4 table, LAME tag)
    assert abs(dominant_hz(wav) - 440) < 2
    middle = wav[4000:12000]
    expected = tone(audio.SAMPLE_RATE, 1.0, 1)[0, 4000:12000]
    lossless = codec.startswith("pcm")
    assert np.abs(middle - expected).max() < (0.01 if lossless else 0.1)


def test_resampling_keeps_time(tmp_path):
    """A click half a second into a 44.1 kHz file lands at sample 8000 of the 16 kHz output."""
    signal = np.zeros((2, 44100))
    signal[:, 22050] = 0.9
    wav = audio.load_audio(write_audio(tmp_path / "click.wav", signal, 44100, "pcm_s16le", "stereo"))
    assert wav.size == 16000 and int(np.argmax(np.abs(wav))) == 8000


def test_opposite_channels_cancel(tmp_path):
    left = np.random.default_rng(0).uniform(-0.5, 0.5, 48000)
    wav = audio.load_audio(write_audio(tmp_path / "anti.wav", np.stack([left, -left]), 48000, "pcm_s16le",
                                       "stereo"))
    assert np.abs(wav).max() < 1e-4


@pytest.fixture(scope="module")
def video_without_audio(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "silent_video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8),
                                                                   format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_errors_name_the_file_and_problem(tmp_path, video_without_audio):
    missing = tmp_path / "missing.wav"
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    cases = [(missing, "no such file"), (tmp_path, "not a regular file"), (text, "not a readable media file"),
             (zero, "empty"), (empty, "empty"), (video_without_audio, "no audio stream")]
    for path, problem in cases:
        with pytest.raises(Wav2LipError, match=problem) as err:
            audio.load_audio(path)
        assert str(path) in str(err.value)
        if problem != "empty" or path == zero:  # a header-only WAV has a length (0 s): not an error for this
            with pytest.raises(Wav2LipError, match=problem) as err:
                audio.audio_seconds(path)
            assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert audio.audio_seconds(empty) == 0


def test_audio_seconds_reads_the_length_without_decoding(media, tmp_path):
    assert audio.audio_seconds(media / "vr_audio1.wav") == pytest.approx(audio.load_audio(media / "vr_audio1.wav").size
                                                                       / audio.SAMPLE_RATE, abs=0.01)
    assert audio.audio_seconds(media / "hdtf_kh.mp4") == pytest.approx(8.0, abs=0.05)  # a video's track


def test_truncated_files(tmp_path):
    full = write_audio(tmp_path / "full.mp3", tone(44100, 1.0, 2), 44100, "libmp3lame", "stereo").read_bytes()
    half = tmp_path / "half.mp3"
    half.write_bytes(full[: len(full) // 2])
    with pytest.raises(Wav2LipError, match="truncated: its audio ends at 0.5. s of the 1.0. s"):
        audio.load_audio(half)  # its Xing header declares the length: a half file is not passed off as whole
    stub = tmp_path / "stub.mp3"
    stub.write_bytes(full[:300])
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(write_audio(tmp_path / "w.wav", tone(16000, 0.5, 1), 16000, "pcm_s16le",
                                        "mono").read_bytes()[:44])
    for path in (stub, header_only):
        with pytest.raises(Wav2LipError, match=str(path)):
            audio.load_audio(path)


def test_a_few_samples_give_frames_not_an_stft_error():
    """400 samples or fewer are reflected like np.pad does; callers then say the audio is too short."""
    for n in (1, 2, 399, 400, 401):
        wav = np.sin(np.arange(n) / 3).astype(np.float32) * 0.5
        assert audio.melspectrogram(wav).shape == (audio.N_MELS, 1 + n // audio.HOP)


def test_tags_that_are_not_utf8_do_not_stop_the_sound(tmp_path):
    """A WAV whose INFO title holds bytes that are not UTF-8 (found by benchmarks/fuzz.py: PyAV raised
    UnicodeDecodeError on opening it) is decoded like the same file without the tag, by load_audio and by
    the live command's file_chunks."""
    import struct

    from wav2lip.io.streams import file_chunks

    plain = tmp_path / "plain.wav"
    with wave.open(str(plain), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(8000) / 9) * 8000).astype("<i2").tobytes())
    data = plain.read_bytes()
    tag = b"INAM" + struct.pack("<I", 6) + b"\xff\xfebad"
    body = data[12:] + b"LIST" + struct.pack("<I", 4 + len(tag)) + b"INFO" + tag
    tagged = tmp_path / "tagged.wav"
    tagged.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    expected = audio.load_audio(plain)
    assert np.array_equal(audio.load_audio(tagged), expected)
    assert audio.audio_seconds(tagged) == audio.audio_seconds(plain)
    assert np.array_equal(np.concatenate(list(file_chunks(tagged, realtime=False))), expected)


def test_a_header_rate_too_low_for_speech_is_refused(tmp_path):
    """A WAV whose header says 1 Hz (found by benchmarks/fuzz.py: 16,000 samples resampled from 1 Hz to 16 kHz
    became 256 million, a 1.9 GiB allocation in training) is refused in one line by every reader; 8 kHz, the
    floor, still loads."""
    import struct

    from wav2lip.io.streams import file_chunks

    for rate in (8000, 1):
        path = tmp_path / f"rate{rate}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(np.zeros(8000, "<i2").tobytes())
        data = bytearray(path.read_bytes())
        data[24:32] = struct.pack("<II", rate, rate * 2)  # fmt chunk: sample rate, byte rate
        path.write_bytes(bytes(data))
        if rate == 8000:
            assert audio.load_audio(path).size == 16000
            continue
        for read in (audio.load_audio, audio.audio_seconds, lambda p: list(file_chunks(p, realtime=False))):
            with pytest.raises(Wav2LipError, match=f"^{path}: audio at 1 Hz; speech needs at least 8000 Hz"):
                read(path)
