"""The live socket of `wav2lip serve` under load and faults: one command, two tables.

    python benchmarks/bench_live_socket.py [--sessions 20] [--seconds 5] [--no-read 30] [--work DIR]

Against one `python -m wav2lip serve --max-live SESSIONS` process on 127.0.0.1 (a narrow generator with
deterministic weights, RetinaFace with its real weights; the avatar st_art0.png at 320x448):

- `--sessions` clients at once, each sending `--seconds` of vr_audio1.wav as f32le in 20 ms messages at
  real-time pace and acknowledging every frame. Per session: frames, spoken frames, the latency of each
  spoken frame (the client's clock from sending the audio message that holds the frame's first sample to
  receiving the frame) as p50 / p95, LiveSyncer's part of it (the server's clock from the audio message's
  arrival to the frame's making) as p95, and the frames the server dropped. One more client is refused (1013).
- faults: a client leaving at each phase (by a close frame, by the network going away) and the time
  until the server holds no session; a client that reads nothing for `--no-read` seconds (the server's
  memory before and after, the frames dropped and counted); malformed and oversized messages (the close
  code each gets); audio that stalls 2 s and resumes; an avatar trickled after the start message.

The machine's cores may be shared with other work (and 20 sessions on 2 cores are far past real time):
latencies are upper bounds, not the server's own speed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve_load import MEDIA, Server, print_checks, tiny_generator  # noqa: E402

from wav2lip.io.audio import SAMPLE_RATE, frame_count_for_audio, load_audio  # noqa: E402
from wav2lip.serve.live import HARD_WINDOW  # noqa: E402

CHUNK = 320  # 20 ms at 16 kHz


class Client:
    """One live session from Python: start, avatar, audio at real-time pace, frames read and acknowledged."""

    def __init__(self, port: int) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/live", timeout=600)
        self.sent: list[float] = []  # when each audio message was sent

    def start(self, avatar: bytes, send_avatar: bool = True) -> dict | None:
        self.ws.send(json.dumps({"type": "start", "avatar": {"name": "avatar.png", "size": len(avatar)},
                                 "format": "f32le", "sample_rate": SAMPLE_RATE}))
        if not send_avatar:
            return None
        self.ws.send_binary(avatar)
        return json.loads(self.ws.recv())

    def send_audio(self, wav: np.ndarray, paced: bool = True) -> None:
        began = time.monotonic()
        for k, at in enumerate(range(0, wav.size, CHUNK)):
            if paced:
                time.sleep(max(0.0, began + at / SAMPLE_RATE - time.monotonic()))
            self.sent.append(time.monotonic())
            self.ws.send_binary(wav[at:at + CHUNK].astype("<f4").tobytes())

    def read(self, ack: bool = True) -> tuple[str, object]:
        opcode, data = self.ws.recv_data(control_frame=True)
        while opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):  # uvicorn's keepalive (answered)
            opcode, data = self.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return "close", struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return "control", json.loads(data)
        length = struct.unpack("<I", data[:4])[0]
        header = json.loads(data[4:4 + length])
        if ack:
            self.ws.send(json.dumps({"type": "ack", "index": header["index"]}))
        return "frame", (header, time.monotonic())

    def finish(self) -> tuple[list, dict | None, int | None]:
        frames, end = [], None
        while True:
            kind, value = self.read()
            if kind == "frame":
                frames.append(value)
            elif kind == "control":
                end = value
            else:
                return frames, end, value


def session(port: int, avatar: bytes, wav: np.ndarray, go: threading.Barrier, out: dict, k: int) -> None:
    try:
        client = Client(port)
        ready = client.start(avatar)
        go.wait()
        if ready.get("type") != "ready":
            out[k] = {"error": ready.get("message", str(ready))}
            return
        result: dict = {}
        reader = threading.Thread(target=lambda: result.update(zip(("frames", "end", "code"), client.finish())))
        reader.start()
        client.send_audio(wav)
        client.ws.send(json.dumps({"type": "end"}))
        reader.join()
        spoken = [(h, t) for h, t in result["frames"] if h["sample"] is not None and h["chunk"] is not None]
        latency = [(t - client.sent[h["chunk"]]) * 1000 for h, t in spoken]
        server = [(h["made"] - h["received"]) * 1000 for h, _ in spoken]  # LiveSyncer's part, the server's clock
        out[k] = {"frames": len(result["frames"]), "spoken": len(spoken), "code": result["code"],
                  "dropped": (result["end"] or {}).get("dropped"), "latency": latency, "server": server}
    except Exception as exc:  # the defect this benchmark looks for: report it in the table
        out[k] = {"error": f"{type(exc).__name__}: {exc}"}
        go.abort()  # nobody waits for this session any more


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def many_sessions(server: Server, avatar: bytes, wav: np.ndarray, sessions: int) -> tuple[list[str], list[tuple]]:
    out: dict[int, dict] = {}
    go = threading.Barrier(sessions + 1, timeout=600)
    threads = [threading.Thread(target=session, args=(server.port, avatar, wav, go, out, k)) for k in range(sessions)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        go.wait()
    extra = Client(server.port)
    extra.start(avatar, send_avatar=False)
    refused = extra.read(ack=False)
    refused_code = extra.read(ack=False)
    for thread in threads:
        thread.join()
    expected = frame_count_for_audio(wav.size, 25.0)
    rows = []
    for k in range(sessions):
        r = out.get(k, {"error": "no result"})
        if "error" in r:
            rows.append((k, "-", "-", "-", "-", "-", "-", r["error"][:60]))
            continue
        rows.append((k, r["frames"], f"{r['spoken']}/{expected}", f"{percentile(r['latency'], 50):.0f}",
                     f"{percentile(r['latency'], 95):.0f}", f"{percentile(r['server'], 95):.0f}", r["dropped"],
                     r["code"]))
    every = [x for r in out.values() for x in r.get("latency", [])]
    summary = [f"sessions at once: {sessions}; each got all its spoken frames: "
               f"{all(r.get('spoken') == expected for r in out.values())}",
               f"latency over all sessions: p50 {percentile(every, 50):.0f} ms, p95 {percentile(every, 95):.0f} ms",
               f"one more session: {refused[1].get('message', refused)[:70] if refused[0] == 'control' else refused} "
               f"-> close {refused_code[1]}"]
    return summary, rows


def wait_idle(server: Server, timeout: float = 60) -> float | None:
    """Seconds until the server holds no live session, or None if it still does after `timeout`."""
    began = time.monotonic()
    while server.client.get("/api/health").json()["live"]:
        if time.monotonic() - began > timeout:
            return None
        time.sleep(0.05)
    return time.monotonic() - began


def cut(client: Client, abrupt: bool) -> None:
    if abrupt:
        client.ws.sock.shutdown(socket.SHUT_RDWR)
        client.ws.sock.close()
    else:
        client.ws.close()


def leaving(server: Server, avatar: bytes, wav: np.ndarray) -> list[tuple[str, str]]:
    rows = []
    for abrupt in (False, True):
        freed = []
        for phase in ("connected", "start sent", "half the avatar", "ready", "audio flowing", "end sent, unread"):
            client = Client(server.port)
            if phase != "connected":
                client.start(avatar, send_avatar=False)
            if phase == "half the avatar":
                client.ws.send_binary(avatar[:len(avatar) // 2])
            elif phase not in ("connected", "start sent"):
                client.ws.send_binary(avatar)
                client.ws.recv()
            if phase in ("audio flowing", "end sent, unread"):
                client.send_audio(wav[:SAMPLE_RATE // 2], paced=False)
            if phase == "end sent, unread":
                client.ws.send(json.dumps({"type": "end"}))
            cut(client, abrupt)
            took = wait_idle(server)
            freed.append(f"{phase} {'NOT FREED' if took is None else f'{took:.2f} s'}")
        rows.append((f"leaving ({'network gone' if abrupt else 'close frame'})", "; ".join(freed)))
    return rows


def rss(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def not_reading(server: Server, avatar: bytes, wav: np.ndarray, seconds: float) -> list[tuple[str, str]]:
    client = Client(server.port)
    client.start(avatar)
    before = rss(server)
    client.send_audio(np.resize(wav, round(seconds * SAMPLE_RATE)), paced=True)  # speech all along, nothing read
    after = rss(server)
    held = [client.read(ack=False)[1][0] for _ in range(HARD_WINDOW)]  # what the server kept for it
    client.ws.send(json.dumps({"type": "ack", "index": held[-1]["index"]}))
    back = [client.read()[1][0] for _ in range(25)]
    client.ws.close()
    wait_idle(server)
    return [(f"reads nothing for {seconds:g} s",
             f"server RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB; {round(seconds * 25)} frames made; kept "
             f"for it {len(held)} ({sum(h['image'] > 0 for h in held)} with pictures), the rest dropped: 'dropped' "
             f"{back[0]['dropped']} when it reads again (counted, as documented); pictures back after its ack: "
             f"{sum(h['image'] > 0 for h in back)}/25")]


def malformed(server: Server, avatar: bytes) -> list[tuple[str, str]]:
    cases = {
        "binary first message": lambda c: c.ws.send_binary(b"\x00" * 100),
        "start without avatar": lambda c: c.ws.send(json.dumps({"type": "start"})),
        "sample_rate 1": lambda c: c.ws.send(json.dumps({"type": "start", "avatar": {"name": "a", "size": 9},
                                                         "sample_rate": 1})),
        "avatar piece > 1 MiB": lambda c: (c.start(b"\0" * 3 * 2**20, send_avatar=False),
                                           c.ws.send_binary(b"\0" * (2**20 + 1))),
        "3-byte audio": lambda c: (c.start(avatar), c.ws.send_binary(b"abc")),
        "s16 bytes as f32": lambda c: (c.start(avatar), c.ws.send_binary(np.full(320, 20000, "<i2").tobytes())),
        "text junk after ready": lambda c: (c.start(avatar), c.ws.send("{" * 100_000)),
        "17 MiB message": lambda c: (c.start(avatar), c.ws.send_binary(b"\0" * (17 * 2**20))),
    }
    rows = []
    for name, send in cases.items():
        client = Client(server.port)
        code, message = None, ""
        try:
            send(client)
            while True:
                kind, value = client.read()
                if kind == "control" and value.get("type") == "error":
                    message = value["message"]
                if kind == "close":
                    code = value
                    break
        except (websocket.WebSocketException, ConnectionError) as exc:
            message = message or f"cut while sending ({type(exc).__name__})"
        took = wait_idle(server)
        rows.append((f"malformed: {name}", f"close {code}: {message[:70]!r}; session freed: {took is not None}"))
    return rows


def stall_and_resume(server: Server, avatar: bytes, wav: np.ndarray) -> list[tuple[str, str]]:
    client = Client(server.port)
    client.start(avatar)
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(zip(("frames", "end", "code"), client.finish())))
    reader.start()
    client.send_audio(wav[:SAMPLE_RATE])
    time.sleep(2.0)
    client.send_audio(wav[SAMPLE_RATE:2 * SAMPLE_RATE])
    client.ws.send(json.dumps({"type": "end"}))
    reader.join()
    samples = [h["sample"] for h, _ in result["frames"] if h["sample"] is not None]
    expected = frame_count_for_audio(2 * SAMPLE_RATE, 25.0)
    in_order = samples == sorted(samples) and len(set(samples)) == len(samples)
    return [("audio stalls 2 s, resumes", f"{len(result['frames'])} frames ({len(samples)} spoken of {expected} "
             f"expected; in order, once each: {in_order}); dropped {result['end']['dropped']}; close {result['code']}")]


def trickled_avatar(server: Server, avatar: bytes) -> list[tuple[str, str]]:
    client = Client(server.port)
    client.start(avatar, send_avatar=False)
    client.ws.send_binary(avatar[:100])
    began = time.monotonic()
    message = ""
    while True:
        kind, value = client.read(ack=False)
        if kind == "control":
            message = value.get("message", "")
        if kind == "close":
            break
    return [("avatar trickled after start", f"closed {value} after {time.monotonic() - began:.1f} s: {message[:80]!r}; "
             f"session freed: {wait_idle(server) is not None}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0, help="speech each session sends")
    parser.add_argument("--no-read", type=float, default=30.0, help="seconds a client reads nothing")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_live_socket-"))
    work.mkdir(parents=True, exist_ok=True)
    image = cv2.imread(str(MEDIA / "st_art0.png"))
    avatar = cv2.imencode(".png", cv2.resize(image, (320, 448), interpolation=cv2.INTER_AREA))[1].tobytes()
    wav = np.resize(load_audio(MEDIA / "vr_audio1.wav"), round(args.seconds * SAMPLE_RATE)).astype(np.float32)
    server = Server(work / "live", tiny_generator(work), "--max-live", str(args.sessions))
    try:
        summary, rows = many_sessions(server, avatar, wav, args.sessions)
        faults = leaving(server, avatar, wav)
        faults += not_reading(server, avatar, wav, args.no_read)
        faults += malformed(server, avatar)
        faults += stall_and_resume(server, avatar, wav)
        faults += trickled_avatar(server, avatar)
        faults.append(("server memory peak (RSS)", f"{server.rss_peak / 2**20:.0f} MiB over the whole run"))
    finally:
        server.stop()
    print(f"\n{args.sessions} sessions at once, {args.seconds:g} s of speech each at real-time pace")
    print("session | frames | spoken | latency p50 ms | p95 ms | of which LiveSyncer p95 ms | dropped | close")
    print("--------|--------|--------|----------------|--------|----------------------------|---------|------")
    for row in rows:
        print(" | ".join(str(v) for v in row))
    for line in summary:
        print(line)
    print_checks("fault", faults)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
