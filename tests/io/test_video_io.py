"""video_io on the real clips of ../shared/media and on small videos written here with known timestamps."""
from __future__ import annotations

import hashlib
import os
import shutil
import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import cut_wav

from wav2lip.io import video as video_io
from wav2lip.io.audio import load_audio
from wav2lip.errors import Wav2LipError
from wav2lip.io.video import VideoWriter, encoded_size, open_source, probe

STEP = 12  # grey-level step per frame index: survives the YUV round trip (a few levels)


def write_indexed(path: Path, times_ms: list[int], size: tuple[int, int] = (32, 48), rotation: float | None = None,
                  gop: int | None = None) -> None:
    """An H.264 mp4 whose frame i is grey level 20 + STEP*i, shown from times_ms[i] (ms)."""
    h, w = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        if gop:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times_ms):
            image = np.full((h, w, 3), 20 + STEP * i, np.uint8)
            if rotation is not None:
                image[:, : w // 2] = 255  # white left half: shows which way the frame was turned
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def index_of(image: np.ndarray) -> int:
    return round((float(np.median(image)) - 20) / STEP)


def decoded_samples(path: Path, index: int = 0) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=index))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video_io")


@pytest.fixture(scope="module")
def clip20(tmp) -> Path:
    """20 frames at 25 fps with a keyframe every 4 frames, so seeks land mid-stream."""
    path = tmp / "clip20.mp4"
    write_indexed(path, [40 * i for i in range(20)], gop=4)
    return path


def test_probe_real_clips(media):
    for name, side, n in [("vr_face2.mp4", 844, 125), ("vr_face3.mp4", 590, 125), ("vr_face5.mp4", 524, 122)]:
        info = probe(media / name)
        assert (info.video_codec, info.audio_codec) == ("h264", "aac")
        assert (info.width, info.height, info.fps, info.n_frames) == (side, side, 25.0, n)
        assert info.has_video and info.has_audio and not info.is_still and info.rotation == 0
    hdtf = probe(media / "hdtf_kh.mp4")
    assert (hdtf.video_codec, hdtf.width, hdtf.fps, hdtf.n_frames) == ("mpeg4", 512, 25.0, 200)
    still = probe(media / "st_art0.png")
    assert still.is_still and (still.width, still.height, still.n_frames, still.fps) == (640, 896, 1, None)
    wav = probe(media / "vr_audio1.wav")
    assert not wav.has_video and wav.has_audio and abs(wav.duration - 5.0155) < 1e-3


def test_decodes_every_frame_like_opencv(media):
    """Same pixels as cv2.VideoCapture (what the reference reads), every frame, none missing."""
    source = open_source(media / "vr_face5.mp4")
    capture = cv2.VideoCapture(str(media / "vr_face5.mp4"))
    count = 0
    for frame in source:
        ok, ref = capture.read()
        assert ok and frame.shape == (524, 524, 3) and frame.dtype == np.uint8
        if count % 30 == 0:
            np.testing.assert_array_equal(frame, ref)
        count += 1
    assert count == 122 and not capture.read()[0]
    assert (source.width, source.height, source.fps, source.n_frames_estimate) == (524, 524, 25.0, 122)


def test_constant_rate_rounding():
    assert video_io.constant_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    assert video_io.constant_rate(Fraction(2997, 100)) == Fraction(30000, 1001)
    assert video_io.constant_rate(Fraction(29.87)) == 30
    assert video_io.constant_rate(Fraction(700, 27)) == 26
    assert video_io.constant_rate(None) == 25


@pytest.mark.parametrize("fps", [None, 25, 50])
def test_variable_frame_rate_picks_frames_by_timestamp(tmp, fps):
    times = [0, 40, 70, 150, 160, 200, 330, 370]
    path = tmp / "vfr.mp4"
    if not path.exists():
        write_indexed(path, times)
    source = open_source(path, fps=fps)
    rate = source.rate
    got = [index_of(image) for image in source.frames(20, loop="none")]
    # The frame on screen at the middle of each output interval, for every sample before the last frame starts.
    sample_ms = [1000 * (k + Fraction(1, 2)) / rate for k in range(len(got))]
    expected = [max(i for i, t in enumerate(times) if t <= s) for s in sample_ms if s < times[-1]]
    assert got[: len(expected)] == expected
    assert 3 not in got or fps == 50  # frame 3 is on screen only 10 ms: a 25 fps output never shows it


def test_rotation_metadata_and_forced_rotate(tmp):
    path = tmp / "rotated.mp4"
    write_indexed(path, [0, 40, 80], size=(32, 48), rotation=90)  # display matrix: 90 degrees counterclockwise
    plain = np.zeros((32, 48), bool)
    plain[:, :24] = True
    upright = np.rot90(plain, 1)
    assert probe(path).rotation == 270 and (probe(path).width, probe(path).height) == (32, 48)
    source = open_source(path)
    assert (source.width, source.height) == (32, 48)
    first = next(iter(source))
    assert first.shape == (48, 32, 3)
    np.testing.assert_array_equal(first.min(axis=2) > 128, upright)
    forced = open_source(path, rotate=True)
    first = next(iter(forced))
    assert (forced.width, forced.height) == (48, 32) and first.shape == (32, 48, 3)
    np.testing.assert_array_equal(first.min(axis=2) > 128, np.rot90(upright, -1))


def test_legacy_rotate_tag(tmp):
    """Old phones wrote a `rotate` tag (clockwise degrees); FFmpeg keeps it as a plain tag in Matroska."""
    path = tmp / "tagged.mkv"
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, :24] = 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "bgr0"
        stream.metadata["rotate"] = "90"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert probe(path).rotation == 90
    np.testing.assert_array_equal(next(iter(open_source(path))), np.rot90(image, -1))


def test_still_decided_by_content(tmp, media):
    disguised = tmp / "photo.mp4"
    shutil.copyfile(media / "st_art0.png", disguised)
    source = open_source(disguised, fps=30)
    assert source.is_still and source.fps == 30.0 and (source.width, source.height) == (640, 896)
    frames = list(source.frames(4))
    assert len(frames) == 4 and len(list(source)) == 1
    reference = cv2.imread(str(media / "st_art0.png"))
    for frame in frames:
        np.testing.assert_array_equal(frame, reference)
    frames[0][:] = 0  # callers may draw on a frame without touching the next ones
    np.testing.assert_array_equal(next(iter(source)), reference)
    assert open_source(media / "st_art0.png").fps == 25.0
    image = reference[::8, ::8]
    for ext in (".bmp", ".webp", ".tiff", ".ppm", ".jp2"):
        path = tmp / f"image{ext}.mov"
        path.write_bytes(cv2.imencode(ext, image)[1].tobytes())
        assert open_source(path).is_still, ext
        np.testing.assert_array_equal(next(iter(open_source(path))), cv2.imread(str(path)))  # what the reference reads


def test_jpeg_exif_orientation_and_one_frame_video(tmp):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    path = tmp / "phone_photo.bin"
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])
    source = open_source(path)  # orientation 6: turn 90 degrees clockwise to show upright
    assert source.is_still and (source.width, source.height) == (20, 40)
    assert np.abs(next(iter(source)).astype(int) - np.rot90(image, -1)).max() < 40
    one = tmp / "one_frame.mp4"
    write_indexed(one, [0])
    assert probe(one).is_still and open_source(one).is_still


def test_repeat_and_pingpong_order(clip20, monkeypatch):
    monkeypatch.setattr(video_io, "_REVERSE_BLOCK_BYTES", 1)  # smallest blocks: backward passes seek many times
    source = open_source(clip20)
    assert [index_of(f) for f in source] == list(range(20))
    assert [index_of(f) for f in source.frames(45, loop="repeat")] == [k % 20 for k in range(45)]
    period = 2 * 20 - 2
    pingpong = [k % period if k % period < 20 else period - k % period for k in range(60)]
    assert [index_of(f) for f in source.frames(60, loop="pingpong")] == pingpong
    assert len(list(source.frames(30, loop="none"))) == 20
    assert len(list(source.frames(7))) == 7


def test_pingpong_shorter_than_the_clip_on_a_fresh_source(clip20):
    """The pass length is still unknown when n ends the first pass early."""
    assert [index_of(f) for f in open_source(clip20).frames(7, loop="pingpong")] == list(range(7))


def test_pingpong_on_a_real_clip_matches_forward_frames(media, monkeypatch):
    """Backward passes seek to keyframes (every 12 frames in this mpeg4 clip) and decode blocks of 8."""
    monkeypatch.setattr(video_io, "_REVERSE_BLOCK_BYTES", 1)
    source = open_source(media / "hdtf_kh.mp4")
    forward = [hashlib.sha1(frame.tobytes()).digest() for frame in source]
    assert len(forward) == 200
    got = [hashlib.sha1(frame.tobytes()).digest() for frame in source.frames(230, loop="pingpong")]
    assert got == forward + forward[-2:-32:-1]


def test_frame_at_seeks_to_the_frame_playing_would_give(clip20, media):
    """A preview's single frame: seeking to the keyframe before it gives the frame a full decode gives,
    on a real clip (keyframes every 12 frames) and past the first pass in both loop modes."""
    source = open_source(media / "hdtf_kh.mp4")
    forward = [hashlib.sha1(frame.tobytes()).digest() for frame in source.frames(30)]
    for k in (0, 11, 12, 13, 29):
        assert hashlib.sha1(open_source(media / "hdtf_kh.mp4").frame_at(k).tobytes()).digest() == forward[k]
    short = open_source(clip20)
    assert [index_of(short.frame_at(k)) for k in (0, 19, 25)] == [0, 19, 5]
    assert index_of(short.frame_at(25, loop="pingpong")) == 13


def test_lossless_round_trip_is_bit_exact(tmp, media):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (21, 33, 3), dtype=np.uint8) for _ in range(5)]
    path = tmp / "exact.mkv"
    with VideoWriter(path, 25, 33, 21, audio=media / "vr_audio1.wav", lossless=True) as writer:
        writer.write_many(frames)
    info = probe(path)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("ffv1", "flac", 33, 21)
    for got, want in zip(open_source(path), frames, strict=True):
        np.testing.assert_array_equal(got, want)
    assert decoded_samples(path) == decoded_samples(media / "vr_audio1.wav")


@pytest.mark.parametrize("audio", ["vr_audio1.wav", "vr_face3.mp4"])
def test_h264_output_carries_the_whole_audio(tmp, media, audio):
    path = tmp / f"out_{audio}.mp4"
    assert encoded_size(35, 21) == (36, 22)
    with VideoWriter(path, 30000 / 1001, 35, 21, audio=media / audio) as writer:
        assert (writer.encoded_width, writer.encoded_height) == (36, 22)
        for i in range(10):
            writer.write(np.full((21, 35, 3), 20 + STEP * i, np.uint8))
    info = probe(path)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 36, 22)
    assert info.fps == pytest.approx(30000 / 1001) and info.n_frames == 10
    assert [index_of(f) for f in open_source(path)] == list(range(10))
    assert abs(decoded_samples(path) - decoded_samples(media / audio)) <= 1024


def test_h264_keeps_colours(tmp):
    """Flat colours come back within 2 levels (swscale's default BGR->YUV path was 5 levels off on grey)."""
    colours = [(100, 100, 100), (30, 160, 220), (200, 60, 90)]
    path = tmp / "colours.mp4"
    with VideoWriter(path, 25, 32, 32) as writer:
        writer.write_many(np.full((32, 32, 3), colour, np.uint8) for colour in colours)
    for frame, colour in zip(open_source(path), colours, strict=True):
        assert np.abs(frame.astype(int) - colour).max() <= 2, (frame[0, 0], colour)
    with av.open(str(path)) as container:  # tagged BT.601 limited range, so HD players do not assume BT.709
        codec = container.streams.video[0].codec_context
        assert (codec.colorspace, codec.color_primaries, codec.color_trc, codec.color_range) == (6, 6, 6, 1)


def test_audio_start_skips_the_beginning(tmp, media):
    path = tmp / "later.mp4"
    with VideoWriter(path, 25, 16, 16, audio=media / "vr_audio1.wav", audio_start=1.0) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert abs(decoded_samples(path) - (decoded_samples(media / "vr_audio1.wav") - 44100)) <= 1024


def test_failure_leaves_nothing_and_keeps_old_file(tmp):
    folder = tmp / "fail"
    folder.mkdir()
    old = folder / "old.mp4"
    old.write_bytes(b"previous result")
    for target in (old, folder / "new.mp4"):
        with pytest.raises(RuntimeError):
            with VideoWriter(target, 25, 16, 16) as writer:
                writer.write(np.zeros((16, 16, 3), np.uint8))
                raise RuntimeError("inference failed")
    with pytest.raises(ValueError):
        with VideoWriter(folder / "empty.mp4", 25, 16, 16):
            pass
    assert sorted(os.listdir(folder)) == ["old.mp4"] and old.read_bytes() == b"previous result"


def error_for(action) -> str:
    with pytest.raises(Wav2LipError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_inputs_have_one_line_errors_naming_the_file(tmp, media):
    missing = tmp / "missing.mp4"
    assert str(missing) in error_for(lambda: open_source(missing)) and "not found" in error_for(lambda: probe(missing))
    text = tmp / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    assert str(text) in error_for(lambda: open_source(text))
    assert "no video stream" in error_for(lambda: open_source(media / "vr_audio1.wav"))
    empty = tmp / "empty.mp4"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()
    assert "no video frames" in error_for(lambda: open_source(empty))
    assert "no audio stream" in error_for(lambda: VideoWriter(tmp / "o.mp4", 25, 16, 16, audio=media / "st_art0.png"))
    assert "does not exist" in error_for(lambda: VideoWriter(tmp / "nowhere" / "o.mp4", 25, 16, 16))
    assert "not found" in error_for(lambda: VideoWriter(tmp / "o.mp4", 25, 16, 16, audio=missing))

    def write_past_the_audio():
        with VideoWriter(tmp / "silent.mp4", 25, 16, 16, audio=media / "vr_audio1.wav", audio_start=6.0) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))

    assert "no audio samples" in error_for(write_past_the_audio) and not (tmp / "silent.mp4").exists()


def test_truncated_video_is_refused_not_passed_off_as_shorter(tmp, clip20, media):
    whole = tmp / "faststart.mp4"  # moov first, as our writer makes it: a cut file still opens
    speech = cut_wav(media / "vr_audio1.wav", tmp / "speech08.wav", 0.8)
    with VideoWriter(whole, 25, 48, 32, audio=speech) as writer:
        writer.write_many(open_source(clip20))
    assert len(list(open_source(whole))) == 20 and load_audio(whole).size == 0.8 * 16000  # the whole file passes the check
    data = whole.read_bytes()
    mdat = data.find(b"mdat")
    for tenths in (3, 6, 8):
        cut = tmp / f"cut{tenths}.mp4"
        cut.write_bytes(data[: mdat + (len(data) - mdat) * tenths // 10])
        source = open_source(cut)  # the first frames decode: the damage shows at the end of the data
        message = error_for(lambda: list(source.frames()))
        assert str(cut) in message and "truncated" in message and "of the 0.80 s the file declares" in message
        assert "truncated" in error_for(lambda: list(open_source(cut).frames(50, loop="pingpong")))
        assert "truncated" in error_for(lambda: load_audio(cut)) and str(cut) in error_for(lambda: load_audio(cut))
    data = whole.read_bytes()
    header_only = tmp / "header_only.mp4"
    header_only.write_bytes(data[: mdat + 8])
    assert str(header_only) in error_for(lambda: open_source(header_only))
    video_only = tmp / "video_only.mkv"  # Matroska declares the duration of the file, not of each stream
    with VideoWriter(video_only, 25, 48, 32, lossless=True) as writer:
        writer.write_many(open_source(clip20))
    data = video_only.read_bytes()
    cut = tmp / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in error_for(lambda: list(open_source(cut)))
    no_index = tmp / "no_index.mp4"  # moov at the end (like the shared clips): nothing to read when cut
    no_index.write_bytes((media_clip := Path(clip20).read_bytes())[: len(media_clip) // 2])
    assert str(no_index) in error_for(lambda: open_source(no_index))


def test_non_regular_files_are_refused_up_front(tmp):
    """A FIFO would block FFmpeg's open forever; a device or folder is never a video."""
    fifo = tmp / "pipe.mp4"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp):
        for action in (lambda: open_source(path), lambda: probe(path), lambda: load_audio(path),
                       lambda: VideoWriter(tmp / "o.mp4", 25, 16, 16, audio=path)):
            message = error_for(action)
            assert str(path) in message and ("regular file" in message or "folder" in message)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG declaring width x height with a few rows of data: cheap to write, costly to decode."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"".join(b"\x00" + bytes(width * 3) for _ in range(2)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def test_huge_images_are_refused_from_their_header(tmp):
    """16000x16000 would take gigabytes inside FFmpeg's open; 20000x20000 is too large, not "corrupt"."""
    jpeg = tmp / "huge.jpg"  # SOI, then a baseline start-of-frame declaring 9000 x 8000
    jpeg.write_bytes(b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 9000, 8000) + b"\x03" + bytes(9) + b"\xff\xd9")
    for path, size in ((png_header_only(tmp / "huge.png", 16000, 16000), "16000x16000"),
                       (png_header_only(tmp / "huger.png", 20000, 20000), "20000x20000"), (jpeg, "8000x9000")):
        for action in (lambda: open_source(path), lambda: probe(path)):
            message = error_for(action)
            assert str(path) in message and size in message and "too large" in message
    fine = tmp / "fine.png"
    cv2.imwrite(str(fine), np.zeros((64, 80, 3), np.uint8))
    assert (probe(fine).width, probe(fine).height) == (80, 64)


def test_constant_rate_is_never_zero():
    """A damaged header's rate of a millionth of a frame a second (found by benchmarks/fuzz.py: it rounded to
    0 and the first frame time divided by it, a ZeroDivisionError) is held at 1/100 fps."""
    assert video_io.constant_rate(Fraction(1, 10**6)) == Fraction(1, 100)
    assert video_io.constant_rate(Fraction(1, 2)) == Fraction(1, 2)
