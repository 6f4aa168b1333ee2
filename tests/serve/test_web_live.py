"""The Live page of `wav2lip serve` against a real uvicorn server on 127.0.0.1 (in this process, so that its
threads can be counted): the WebSocket protocol with a Python client (frames in order, equal to
`LiveSyncer`'s, bad input answered with one line and a clean close, a slow client's frames dropped
within the window, a dropped connection ending every thread), and the page in a real headless Chromium
fed by a fake microphone and by an uploaded file."""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="wav2lip[serve] is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="wav2lip[serve] is not installed")
pytest.importorskip("wsproto", reason="wav2lip[serve] is not installed")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
httpx = pytest.importorskip("httpx")

from support.serving import checkpoint  # noqa: F401 - a fixture
from support.server import free_port

from wav2lip import LiveSyncer
from wav2lip.io.audio import SAMPLE_RATE, frame_count_for_audio, load_audio
from wav2lip.serve import JobQueue, Models, create_app
from wav2lip.io.audio import write_wav
from wav2lip.serve.live import HARD_WINDOW, MAX_SESSIONS, START_SECONDS, WINDOW, live_threads
from wav2lip.io.video import VideoWriter, open_source

CHUNK = 320  # 20 ms at 16 kHz


class LiveServer:
    """create_app under a real uvicorn (WebSockets by wsproto) on a free port, in a thread of this process."""

    def __init__(self, data: Path, checkpoint: Path, weights: Path, token: str | None = None, **app) -> None:
        """`app`: more arguments of create_app (max_live, ...)."""
        self.queue = JobQueue(data, Models(checkpoint, detector_weights=weights, device="cpu"))
        self.app = create_app(self.queue, token=token, **app)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", ws="wsproto")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    @property
    def sessions(self) -> set:
        return self.app.state.live_sessions

    def idle(self, timeout: float = 20) -> bool:
        """Every live session and its threads have ended."""
        deadline = time.monotonic() + timeout
        while self.sessions or live_threads():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class Client:
    """The protocol from Python: the start message and the avatar, audio, frames (acknowledged)."""

    def __init__(self, server: LiveServer) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/api/live", timeout=120)

    def start(self, avatar: bytes, name: str = "face.png", fmt: str = "f32le", rate: int = SAMPLE_RATE,
              **extra) -> dict:
        self.send_start(avatar, name, fmt, rate, **extra)
        return self.control()

    def send_start(self, avatar: bytes, name: str = "face.png", fmt: str = "f32le", rate: int = SAMPLE_RATE,
                   **extra) -> None:
        """The start message and the avatar's bytes, without waiting for the answer."""
        self.ws.send(json.dumps({"type": "start", "avatar": {"name": name, "size": len(avatar)}, "format": fmt,
                                 "sample_rate": rate, **extra}))
        for at in range(0, len(avatar), 2**20):
            self.ws.send_binary(avatar[at:at + 2**20])

    def control(self) -> dict:
        kind, value = self.next(ack=False)
        assert kind == "control", (kind, value)
        return value

    def next(self, ack: bool = True) -> tuple[str, object]:
        """('frame', (header, audio, jpeg)), ('control', message) or ('close', code)."""
        opcode, data = self.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return "close", struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return "control", json.loads(data)
        length = struct.unpack("<I", data[:4])[0]
        header = json.loads(data[4:4 + length])
        audio_end = 4 + length + 4 * header["audio"]
        audio = np.frombuffer(data[4 + length:audio_end], "<f4")
        if ack:
            self.ws.send(json.dumps({"type": "ack", "index": header["index"]}))
        return "frame", (header, audio, data[audio_end:audio_end + header["image"]])

    def send_audio(self, wav: np.ndarray, chunk: int = CHUNK, fmt: str = "<f4") -> None:
        for at in range(0, wav.size, chunk):
            piece = wav[at:at + chunk]
            self.ws.send_binary((piece * 32767).astype(fmt).tobytes() if fmt == "<i2" else piece.astype(fmt).tobytes())

    def end(self) -> None:
        self.ws.send(json.dumps({"type": "end"}))

    def finish(self) -> tuple[list, dict, int]:
        """Every frame up to the end message, the end message, the close code."""
        frames, end = [], None
        while True:
            kind, value = self.next()
            if kind == "frame":
                frames.append(value)
            elif kind == "control":
                assert value["type"] == "end", value
                end = value
            else:
                return frames, end, value

    def error(self) -> tuple[str, int]:
        """After bad input: exactly one error message, then the close."""
        messages = []
        while True:
            kind, value = self.next(ack=False)
            if kind == "close":
                assert len(messages) == 1 and messages[0]["type"] == "error", messages
                return messages[0]["message"], value
            messages.append(value)


@pytest.fixture(scope="module")
def server(work, checkpoint, models_dir):
    srv = LiveServer(work / "data", checkpoint, models_dir / "retinaface_mobilenet0.25.pth")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def still_path(media, work) -> Path:
    """The shared portrait at half size (320x448): quicker to prepare, encode and decode."""
    image = cv2.imread(str(media / "st_art0.png"))
    path = work / "portrait.png"
    cv2.imwrite(str(path), cv2.resize(image, (320, 448), interpolation=cv2.INTER_AREA))
    return path


@pytest.fixture(scope="module")
def still(still_path) -> bytes:
    return still_path.read_bytes()


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    return load_audio(media / "vr_audio1.wav")[:round(1.2 * SAMPLE_RATE)]


# ---------------------------------------------------------------- the protocol from Python


def test_frames_come_in_order_and_are_the_lip_synced_frames(server, still, still_path, speech) -> None:
    client = Client(server)
    ready = client.start(still)
    assert ready == {"type": "ready", "width": 320, "height": 448, "fps": 25.0, "sample_rate": SAMPLE_RATE,
                     "avatar_frames": 1}
    client.send_audio(speech)
    client.end()
    frames, end, code = client.finish()
    assert code == 1000 and end == {"type": "end", "frames": len(frames), "dropped": 0}
    assert [h["index"] for h, _, _ in frames] == list(range(len(frames)))
    spoken = [(h, audio, jpeg) for h, audio, jpeg in frames if h["sample"] is not None]
    assert len(spoken) == frame_count_for_audio(speech.size, 25.0)  # the frame count tracks the audio's length
    assert [h["sample"] for h, _, _ in spoken] == [round(j * SAMPLE_RATE / 25) for j in range(len(spoken))]
    assert all(h["chunk"] == h["sample"] // CHUNK and h["received"] <= h["made"] <= h["sent"] for h, _, _ in spoken)

    # the same audio through LiveSyncer in this process: the same sound exactly, the same pictures but for JPEG
    live = LiveSyncer(still_path, syncer=server.queue.models.default)
    own = live._first
    expected = [f for f in live.stream([speech[i:i + CHUNK] for i in range(0, speech.size, CHUNK)])
                if f.sample is not None]
    assert len(expected) == len(spoken)
    x1, y1, x2, y2 = (int(v) for v in live.boxes[0])
    for (header, audio, jpeg), frame in zip(spoken, expected):
        assert header["mouth"] == frame.mouth
        np.testing.assert_array_equal(audio, frame.audio)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (448, 320, 3)
        error = np.abs(image.astype(int) - frame.image).mean()
        assert error < 3.0, error  # JPEG's loss only
        if frame.mouth == 1.0:  # the generated mouth, not the avatar's own
            mouth = np.abs(image[y1:y2, x1:x2].astype(int) - own[y1:y2, x1:x2]).mean()
            assert mouth > 5 * np.abs(image[y1:y2, x1:x2].astype(int) - frame.image[y1:y2, x1:x2]).mean()
    assert server.idle()


def test_a_video_avatar_loops_its_own_frames(server, media, work, speech) -> None:
    path = work / "clip8.mp4"
    with VideoWriter(path, 25, 524, 524) as writer:
        writer.write_many(open_source(media / "vr_face5.mp4").frames(8))
    client = Client(server)
    ready = client.start(path.read_bytes(), name="clip8.mp4", options={"pads": "0 10 0 0", "loop": "pingpong"})
    assert ready["avatar_frames"] == 8 and (ready["width"], ready["height"]) == (524, 524)
    client.send_audio(speech[:SAMPLE_RATE // 2])
    client.end()
    frames, end, code = client.finish()
    assert code == 1000 and sum(h["sample"] is not None for h, _, _ in frames) == 13
    assert all(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (524, 524, 3)
               for _, _, jpeg in frames)
    assert server.idle()


def test_s16_audio_at_another_rate_is_resampled(server, still, media) -> None:
    wav = load_audio(media / "vr_audio1.wav", sr=8000)[:8000]  # 1 s
    client = Client(server)
    assert client.start(still, fmt="s16le", rate=8000, options={"blend": "feather"})["type"] == "ready"
    client.send_audio(wav, chunk=160, fmt="<i2")
    client.end()
    frames, end, code = client.finish()
    spoken = [h for h, _, _ in frames if h["sample"] is not None]
    assert code == 1000 and len(spoken) == 25 and end["frames"] == len(frames)
    assert server.idle()


def garbage(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("start, expected", [
    ({"type": "begin"}, "the first message must be the JSON start message"),
    ({"format": "mp3"}, "unknown audio format 'mp3' (one of s16le, f32le"),
    ({"format": ["f32le"]}, "unknown audio format"),
    ({"avatar": "face.png"}, 'the start message needs "avatar": {"name": ..., "size": bytes}'),
    ({"sample_rate": 0}, "sample_rate must be a whole number of Hz"),
    ({"sample_rate": "16k"}, "sample_rate must be a whole number of Hz"),
    ({"sample_rate": 1}, "sample_rate must be a whole number of Hz in 8000..192000"),  # resampled 16000x larger
    ({"options": {"fps": 1e6}}, "fps must be between"),
    ({"options": {"crf": 18}}, "unknown option 'crf'"),
    ({"options": {"blend": "smudge"}}, "blend"),
    ({"options": {"pads": "1 2"}}, "pads='1 2': expected 4 integers"),
    ({"avatar": {"name": "x.png", "size": 0}}, "x.png: file is empty (0 bytes)"),
    ({"avatar": {"name": "x.png", "size": 10**12}}, "the avatar is larger than the server's limit"),
])
def test_a_bad_start_message_gets_one_line_and_a_clean_close(server, start, expected) -> None:
    client = Client(server)
    client.ws.send(json.dumps({"type": "start", "avatar": {"name": "x.png", "size": 10}, **start}))
    message, code = client.error()
    assert expected in message and code == 1008
    assert server.idle()


@pytest.mark.parametrize("name, data, expected", [
    ("holiday.png", garbage(5000), "holiday.png: "),
    ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + garbage(3000, 1), "clip.mp4: "),
    ("nobody.png", cv2.imencode(".png", np.full((200, 300, 3), 128, np.uint8))[1].tobytes(),
     "nobody.png: no face found"),
])
def test_a_garbage_avatar_gets_one_line_and_a_clean_close(server, name, data, expected) -> None:
    client = Client(server)
    client.send_start(data, name=name)
    message, code = client.error()
    assert message.startswith(expected) and "/" not in message and code == 1008, message  # no server path
    assert server.idle()
    assert not any((server.queue.root.parent / "live").iterdir())  # the avatar is gone


def test_a_long_video_avatar_is_refused_before_it_is_prepared(server, work) -> None:
    path = work / "long.mp4"
    with av.open(str(path), "w") as container:  # 64x64 at 1 frame/s: quick to write, 130 s long
        stream = container.add_stream("libx264", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(130):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    client = Client(server)
    client.send_start(path.read_bytes(), name="long.mp4")
    message, code = client.error()
    assert message.startswith("long.mp4: a 130 s video; a live avatar") and code == 1008, message
    assert server.idle()


def test_a_long_avatar_without_a_declared_length_is_refused_too(server, work) -> None:
    """A raw H.264 stream declares no duration: its length is read from its packets, not taken as short."""
    path = work / "long.h264"
    with av.open(str(path), "w", format="h264") as container:  # 64x64, 3100 frames: 124 s at the assumed 25 fps
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 90, np.uint8), format="rgb24")
        for _ in range(3100):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    client = Client(server)
    client.send_start(path.read_bytes(), name="long.h264")
    message, code = client.error()
    assert message.startswith("long.h264: a video longer than 120 s; a live avatar") and code == 1008, message
    assert server.idle()


def test_a_first_message_that_is_not_json(server) -> None:
    client = Client(server)
    client.ws.send_binary(garbage(100))
    message, code = client.error()
    assert message.startswith("the first message must be the JSON start message") and code == 1008


@pytest.mark.parametrize("send, expected", [
    (lambda c, wav: c.ws.send_binary(b"\x01\x02\x03"), "audio message 0 has 3 bytes, not a whole number of 4-byte"),
    (lambda c, wav: c.send_audio(wav, fmt="<i2"), "audio message 0 is not f32le audio in [-1, 1]"),
    (lambda c, wav: c.ws.send_binary(np.array([0.1, np.nan], "<f4").tobytes()), "is not f32le audio"),
    (lambda c, wav: c.ws.send("hello"), "unexpected message 'hello'"),
    # the audio before the end keeps the stream busy while the server reads the audio after it
    (lambda c, wav: (c.send_audio(wav), c.end(), c.send_audio(wav)), "audio after the end message"),
])
def test_bad_audio_gets_one_line_and_a_clean_close(server, still, speech, send, expected) -> None:
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    send(client, speech[:SAMPLE_RATE])
    while True:  # frames may come before the error; then exactly one error and the close
        kind, value = client.next()
        if kind != "frame":
            break
    assert kind == "control" and value["type"] == "error" and expected in value["message"], value
    assert client.next() == ("close", 1008)
    assert server.idle()


def test_a_slow_client_gets_pictures_dropped_within_the_window(server, still, media) -> None:
    wav = load_audio(media / "mt_yongen.wav")
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    client.send_audio(wav[:6 * SAMPLE_RATE], chunk=SAMPLE_RATE)  # 150 frames, read by nobody for now
    session = next(iter(server.sessions))
    deadline = time.monotonic() + 120
    while session.made < 160:  # the speech's frames, then idle ones; not one acknowledged
        assert time.monotonic() < deadline
        time.sleep(0.1)
    frames = [client.next(ack=False)[1] for _ in range(HARD_WINDOW)]
    assert [len(jpeg) > 0 for _, _, jpeg in frames] == [True] * WINDOW + [False] * (HARD_WINDOW - WINDOW)
    assert all(audio.size == 640 for _, audio, _ in frames)  # a dropped picture's sound still comes
    assert [h["index"] for h, _, _ in frames] == list(range(HARD_WINDOW))  # then nothing: whole frames dropped
    client.ws.send(json.dumps({"type": "ack", "index": frames[-1][0]["index"]}))  # caught up at last
    client.send_audio(wav[6 * SAMPLE_RATE:7 * SAMPLE_RATE])
    client.end()
    rest, end, code = client.finish()
    assert code == 1000 and rest[0][0]["index"] > HARD_WINDOW and all(len(jpeg) > 0 for _, _, jpeg in rest)
    assert end["frames"] == rest[-1][0]["index"] + 1 and end["dropped"] == end["frames"] - WINDOW - len(rest)
    assert server.idle()


def test_a_dropped_connection_mid_stream_ends_every_thread(server, still, speech) -> None:
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    client.send_audio(speech[:SAMPLE_RATE // 2])
    assert client.next()[0] == "frame"
    assert server.sessions and {t.name for t in live_threads()} >= {"wav2lip-live-session", "wav2lip-live-audio"}
    client.ws.sock.shutdown(socket.SHUT_RDWR)  # no close frame: the network went away
    client.ws.sock.close()
    assert server.idle(), [t.name for t in live_threads()]


def test_a_closed_socket_while_idle_ends_every_thread(server, still) -> None:
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    assert client.next()[1][0]["sample"] is None  # no audio: the avatar's own frames at the frame rate
    client.ws.close()
    assert server.idle(), [t.name for t in live_threads()]


def test_idle_sockets_take_no_session_and_are_closed_in_time(server, still) -> None:
    """A session's slot is taken only by a valid start message (the token checked first), and the start
    message must come within START_SECONDS: sockets that say nothing lock nobody out."""
    opened = time.monotonic()  # before the first socket opens: its START_SECONDS start later
    idle = [Client(server) for _ in range(MAX_SESSIONS + 1)]
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    client.ws.close()
    for other in idle:
        message, code = other.error()
        assert "no start message within" in message and code == 1008, message
    assert START_SECONDS <= time.monotonic() - opened < START_SECONDS + 30
    assert server.idle()


def test_a_client_leaving_during_the_avatars_preparation_frees_its_place_at_once(server, media, work) -> None:
    """The preparation stops at the next frame when the client goes, instead of holding a session (and
    the CPU) until it ends: here a 20 s avatar detected on every frame, tens of seconds of work."""
    frames = list(open_source(media / "vr_face5.mp4").frames(100))
    path = work / "long_avatar.mp4"
    with VideoWriter(path, 25, 480, 480) as writer:
        for k in range(500):
            writer.write(cv2.resize(frames[k % 100], (480, 480)))
    client = Client(server)
    client.send_start(path.read_bytes(), name="long.mp4", options={"detect_every": 1, "cache": False})
    deadline = time.monotonic() + 30
    while not live_threads() and not server.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well into the preparation
    assert server.sessions, "the session should be preparing its avatar"
    client.ws.close()
    left = time.monotonic()
    assert server.idle(timeout=5), "the session still holds its place"
    assert time.monotonic() - left < 5


@pytest.mark.parametrize("options, words", [
    ({"origin": "http://attacker.example"}, "another site"),  # a foreign page opening the socket
    ({"origin": "null"}, "another site"),
    ({"host": "attacker.example"}, "Host"),  # DNS rebinding: a foreign name for 127.0.0.1
])
def test_other_sites_cannot_open_the_live_socket(server, options, words) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/api/live", timeout=30, **options)
    assert refused.value.status_code == 403 and words in json.loads(refused.value.resp_body)["detail"]
    assert server.idle()


def test_a_server_with_a_token_wants_it_in_the_start_message(work, checkpoint, models_dir, still) -> None:
    srv = LiveServer(work / "token-data", checkpoint, models_dir / "retinaface_mobilenet0.25.pth",
                     token="sesame")
    try:
        client = Client(srv)
        client.ws.send(json.dumps({"type": "start", "token": "open", "avatar": {"name": "f.png", "size": 10}}))
        message, code = client.error()
        assert "needs its token" in message and code == 1008
        client = Client(srv)
        assert client.start(still, token="sesame")["type"] == "ready"
        client.ws.close()
        assert httpx.get(f"{srv.url}/live").status_code == 200  # the page itself is public, as / is
        assert srv.idle()
    finally:
        srv.stop()


# ---------------------------------------------------------------- the page in headless Chromium


@pytest.fixture(scope="module")
def fake_microphone(work, media) -> Path:
    return write_wav(work / "microphone.wav", load_audio(media / "vr_audio1.wav")[:3 * SAMPLE_RATE])


@pytest.fixture(scope="module")
def browser(work, fake_microphone):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service
    from test_web import CHROMIUM_FLAGS, _browser_paths

    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_microphone}%noloop"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={work / 'profile'}")
    browser = webdriver.Chrome(options=options, service=Service(driver))
    yield browser
    browser.quit()


def run_page(browser, server, avatar: Path, button: str, speech_file: Path | None = None, seconds: float | None = None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/live")
    browser.find_element(By.ID, "avatar").send_keys(str(avatar))
    if speech_file is not None:
        browser.find_element(By.ID, "speech").send_keys(str(speech_file))
    browser.find_element(By.ID, "sound").click()  # headless: nothing to hear
    browser.find_element(By.ID, button).click()
    stats = "return window.liveStats && JSON.parse(JSON.stringify(window.liveStats));"
    WebDriverWait(browser, 120).until(lambda b: (b.execute_script(stats) or {}).get("ready")
                                      or (b.execute_script(stats) or {}).get("error"))
    if seconds is not None:
        WebDriverWait(browser, 60).until(lambda b: b.execute_script(stats)["samplesSent"] >= seconds * 16000)
        browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, 120).until(lambda b: b.execute_script(stats)["end"] or b.execute_script(stats)["error"])
    WebDriverWait(browser, 30).until(lambda b: not b.find_element(By.ID, "mic").get_attribute("disabled"))
    def decoded(b) -> bool:  # pictures decode asynchronously
        now = b.execute_script(stats)
        return now["decoded"] + now.get("badImages", 0) == now["pictures"]

    WebDriverWait(browser, 30).until(decoded)
    return browser.execute_script(stats)


def check_page_frames(stats: dict, sent: int) -> None:
    assert not stats["error"], stats["error"]
    n = stats["end"]["frames"]
    assert stats["indices"] == list(range(n))  # all of them, in order
    # a browser slow to acknowledge (a loaded machine) may be sent some frames without their picture
    assert stats["decoded"] == stats["pictures"] == n - stats["end"]["dropped"] and stats["decoded"] > 0
    samples = [s for s in stats["samples"] if s is not None]
    assert samples == sorted(samples) and samples[0] == 0
    # the frame count tracks the audio's length (a stall of the source may pad one frame with silence)
    expected = frame_count_for_audio(sent, 25.0)
    assert expected <= stats["speech"] <= expected + 3, (stats["speech"], expected)
    assert stats["firstImage"]["width"] == 320 and stats["firstImage"]["height"] == 448  # the avatar's size
    assert stats["drawn"] > 0
    assert max(stats["mouths"]) == 1.0  # speech: the generated mouth is shown
    assert len(stats["added"]) > 0


def test_page_lip_syncs_the_microphone(browser, server, still_path) -> None:
    stats = run_page(browser, server, still_path, "mic", seconds=1.5)
    check_page_frames(stats, round(stats["samplesSent"] * SAMPLE_RATE / stats["rate"]))
    assert server.idle()


def test_page_lip_syncs_an_uploaded_file(browser, server, still_path, work, speech) -> None:
    path = write_wav(work / "speech.wav", speech)
    stats = run_page(browser, server, still_path, "play", speech_file=path)
    assert stats["samplesSent"] == speech.size  # the browser decoded it at 16 kHz
    check_page_frames(stats, speech.size)
    assert server.idle()


def test_page_shows_a_bad_avatar_in_plain_words(browser, server, work) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = work / "holiday.png"
    bad.write_bytes(garbage(4000))
    browser.get(f"{server.url}/live")
    browser.find_element(By.ID, "avatar").send_keys(str(bad))
    browser.find_element(By.ID, "mic").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("holiday.png: ")
    assert server.idle()
