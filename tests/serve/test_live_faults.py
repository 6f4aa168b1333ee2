"""The live socket under faults, against a real uvicorn server on 127.0.0.1 in this process (its threads
and sessions counted): a client leaving at every phase, an avatar trickled after the start message, a
client that stops reading, oversized and malformed messages, audio that stalls and resumes, and several
sessions at once each getting its own frames."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="wav2lip[serve] is not installed")
pytest.importorskip("uvicorn", reason="wav2lip[serve] is not installed")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")

from support.serving import checkpoint  # noqa: F401 - a fixture
from test_web_live import Client, LiveServer, speech, still, still_path  # noqa: F401 - fixtures

from wav2lip.io.audio import SAMPLE_RATE, frame_count_for_audio
from wav2lip.serve.live import AVATAR_PIECE, AVATAR_SECONDS, HARD_WINDOW, WINDOW

SESSIONS = 3  # at once in the test of several sessions; benchmarks/bench_serve_load.py --live runs 20


@pytest.fixture(scope="module")
def server(work, checkpoint, models_dir):  # noqa: F811 - the fixture imported above
    srv = LiveServer(work / "data", checkpoint, models_dir / "retinaface_mobilenet0.25.pth", max_live=SESSIONS)
    yield srv
    srv.stop()


def avatars_left(server: LiveServer) -> list[Path]:
    live = server.queue.root.parent / "live"
    return list(live.iterdir()) if live.is_dir() else []


def cut(client: Client, abrupt: bool) -> None:
    """The client goes: a close frame, or the network gone without one."""
    if abrupt:
        client.ws.sock.shutdown(socket.SHUT_RDWR)
        client.ws.sock.close()
    else:
        client.ws.close()


PHASES = ("connected", "start sent", "half the avatar", "ready", "audio flowing", "end sent, nothing read")


@pytest.mark.parametrize("abrupt", [False, True], ids=["close", "network"])
def test_a_client_leaving_at_every_phase_frees_everything(server, still, speech, abrupt) -> None:  # noqa: F811
    for phase in PHASES:
        client = Client(server)
        if phase != "connected":
            client.ws.send(json.dumps({"type": "start", "avatar": {"name": "f.png", "size": len(still)}}))
        if phase == "half the avatar":
            client.ws.send_binary(still[:len(still) // 2])
        elif phase not in ("connected", "start sent"):
            client.ws.send_binary(still)
            assert client.control()["type"] == "ready"
        if phase in ("audio flowing", "end sent, nothing read"):
            client.send_audio(speech[:SAMPLE_RATE // 2])
        if phase == "end sent, nothing read":
            client.end()
        cut(client, abrupt)
        assert server.idle(), (phase, server.sessions)
        assert avatars_left(server) == [], phase


def test_a_trickled_avatar_is_cut_off_and_frees_its_place(server, still) -> None:  # noqa: F811
    """The start message takes a place; the avatar must then arrive at AVATAR_RATE after AVATAR_SECONDS:
    a client that sends a few bytes and waits is closed with one line instead of holding the place."""
    client = Client(server)
    client.ws.send(json.dumps({"type": "start", "avatar": {"name": "f.png", "size": len(still)}}))
    client.ws.send_binary(still[:100])
    began = time.monotonic()
    time.sleep(0.5)
    assert len(server.sessions) == 1  # it holds a place while it may still be sending
    message, code = client.error()
    waited = time.monotonic() - began
    assert message.startswith("the avatar came too slowly (100 of") and code == 1008, message
    assert AVATAR_SECONDS - 0.5 <= waited < AVATAR_SECONDS + 10, waited
    assert server.idle() and avatars_left(server) == []


def test_a_client_that_stops_reading_costs_a_bounded_window(server, still, speech) -> None:  # noqa: F811
    """Nothing read and nothing acknowledged for 7 s (175 frames at 25 fps): the server holds at most
    HARD_WINDOW frame messages for it, WINDOW of them with pictures, and counts the rest as dropped."""
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    client.send_audio(speech)
    session = next(iter(server.sessions))
    deadline = time.monotonic() + 120
    while session.made < HARD_WINDOW + 50:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    dropped = session.dropped
    assert len(session.in_flight) == HARD_WINDOW and session.made - dropped in (WINDOW, WINDOW + 1)
    frames = [client.next(ack=False)[1] for _ in range(HARD_WINDOW)]
    assert sum(len(jpeg) > 0 for _, _, jpeg in frames) == WINDOW
    assert frames[-1][0]["dropped"] == HARD_WINDOW - WINDOW  # counted in each frame, as documented
    client.ws.close()
    assert server.idle()


@pytest.mark.parametrize("send, expected", [
    (lambda c, still: c.ws.send_binary(b"\0" * (AVATAR_PIECE + 1)), "at most 1048576 bytes each"),
    (lambda c, still: c.ws.send(json.dumps({"type": "ack", "index": "0"})), "unexpected message"),
    (lambda c, still: c.ws.send("{" * 100_000), "unexpected message"),
    (lambda c, still: c.ws.send(json.dumps({"type": "start"})), "unexpected message"),
])
def test_malformed_messages_get_one_line_and_a_close(server, still, send, expected) -> None:  # noqa: F811
    client = Client(server)
    if "1048576" in expected:  # in the middle of the avatar
        client.ws.send(json.dumps({"type": "start", "avatar": {"name": "f.png", "size": 10 * AVATAR_PIECE}}))
    else:
        assert client.start(still)["type"] == "ready"
    send(client, still)
    while True:
        kind, value = client.next()
        if kind != "frame":
            break
    assert kind == "control" and value["type"] == "error" and expected in value["message"], value
    assert client.next() == ("close", 1008)
    assert server.idle()


def test_an_oversized_message_closes_the_socket_with_1009(server, still) -> None:  # noqa: F811
    """A message past uvicorn's 16 MiB is refused as it arrives (never buffered whole): close 1009."""
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    code = None  # cut while still sending: no close code to read
    with contextlib.suppress(websocket.WebSocketException, ConnectionError):
        client.ws.send_binary(b"\0" * (17 * 2**20))
        while (item := client.next())[0] != "close":
            pass
        code = item[1]
    assert code in (1009, None)
    assert server.idle()


def test_audio_that_stalls_and_resumes(server, still, speech) -> None:  # noqa: F811
    """0.6 s of speech, 1.5 s of nothing (the avatar's own frames keep coming), 0.6 s more: every sample is
    lip-synced once, in order, and the frame count follows the speech."""
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    half = speech.size // 2
    client.send_audio(speech[:half])
    stalled = time.monotonic()
    frames = []
    while time.monotonic() - stalled < 1.5:
        kind, value = client.next()
        assert kind == "frame"
        frames.append(value)
    client.send_audio(speech[half:])
    client.end()
    rest, end, code = client.finish()
    frames += rest
    assert code == 1000 and [h["index"] for h, _, _ in frames] == list(range(len(frames)))
    samples = [h["sample"] for h, _, _ in frames if h["sample"] is not None]
    assert samples == sorted(samples) and samples[0] == 0 and len(samples) == len(set(samples))
    expected = frame_count_for_audio(speech.size, 25.0)
    assert expected <= len(samples) <= expected + 2, (len(samples), expected)  # a stall may pad one frame
    assert end["dropped"] == 0
    assert server.idle()


def test_sessions_at_once_each_get_their_own_frames(server, still, speech) -> None:  # noqa: F811
    """SESSIONS clients at once, each with its own speech (scaled differently): each gets all its frames
    in order with its own sound; one more is told the server is busy (1013)."""
    results: dict[int, tuple] = {}
    ready = threading.Barrier(SESSIONS + 1, timeout=120)

    def session(k: int) -> None:
        client = Client(server)
        assert client.start(still)["type"] == "ready"
        ready.wait()
        client.send_audio(speech * (0.3 + 0.2 * k))
        client.end()
        results[k] = client.finish()

    threads = [threading.Thread(target=session, args=(k,)) for k in range(SESSIONS)]
    for thread in threads:
        thread.start()
    ready.wait()
    extra = Client(server)
    extra.ws.send(json.dumps({"type": "start", "avatar": {"name": "f.png", "size": len(still)}}))
    message, code = extra.error()
    assert code == 1013 and "live sessions already" in message
    for thread in threads:
        thread.join(300)
    expected = frame_count_for_audio(speech.size, 25.0)
    for k in range(SESSIONS):
        frames, end, code = results[k]
        spoken = [(h, audio) for h, audio, _ in frames if h["sample"] is not None]
        assert code == 1000 and len(spoken) == expected and end["frames"] == len(frames)
        sound = np.concatenate([audio for _, audio in spoken])[:speech.size]
        np.testing.assert_allclose(sound, (speech * (0.3 + 0.2 * k))[:sound.size], atol=1e-4)
    assert server.idle()


@pytest.mark.parametrize("options", [{"[" * 200_000: 1}, {"blend": "x" * 200_000}])
def test_errors_echo_a_clients_text_short(server, options) -> None:
    """A start message's option names and values come back in the one-line error cut short, not 200 kB
    (found by the fuzzer)."""
    client = Client(server)
    client.ws.send(json.dumps({"type": "start", "avatar": {"name": "a.png", "size": 10}, "options": options}))
    message, code = client.error()
    assert code == 1008 and len(message) < 200, len(message)
    assert server.idle()


def test_an_avatar_with_tags_that_are_not_utf8_is_measured(work) -> None:
    """A video avatar's length counted from its packets: tags that are not UTF-8 are ignored, not a
    UnicodeDecodeError (found by reading after the fuzzer found it in io/audio)."""
    import av

    from wav2lip.serve.live import _longer_than

    path = work / "tags.mkv"
    with av.open(str(path), "w", options={"write_crc32": "0"}) as container:
        container.metadata["title"] = "ZZZZZZZZ"
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(60):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    assert data.count(b"ZZZZZZZZ") == 1
    path.write_bytes(data.replace(b"ZZZZZZZZ", b"\xff\xfe\xfd\xfc" * 2))
    assert _longer_than(path, 2.0, 25.0) and not _longer_than(path, 3.0, 25.0)


NESTED = '{"type": "start", "avatar": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}"  # past json's depth


def test_json_nested_past_the_parsers_depth_is_a_bad_message(server, still) -> None:  # noqa: F811
    """A start message (or a later text message) nested 100,000 deep is refused in one line with 1008, not
    a RecursionError traceback and 1011 (found by the fuzzer)."""
    client = Client(server)
    client.ws.send(NESTED)
    message, code = client.error()
    assert message.startswith("the first message must be the JSON start message") and code == 1008, message
    client = Client(server)
    assert client.start(still)["type"] == "ready"
    client.ws.send(NESTED)
    while (item := client.next())[0] == "frame":
        pass
    assert item[0] == "control" and item[1]["message"].startswith("unexpected message"), item
    assert client.next() == ("close", 1008)
    assert server.idle()
