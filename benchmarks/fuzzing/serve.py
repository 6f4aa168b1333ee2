"""The HTTP upload as a fuzz target: one real `wav2lip serve` on 127.0.0.1 for the whole campaign, and each
case a multipart body POSTed to /api/jobs by a forked child: the mutated body itself (`serve:form`: boundaries,
part headers, field values, truncation) or a well-formed body around a mutated face or audio file.

The child writes its verdict to `verdict.json`: success (201 and the job done), refused (a 4xx with a JSON
`detail`, or a job that failed with a one-line error), or a defect: a 5xx, a dropped connection, a reply that
is not JSON, a job still unfinished after the time limit. After each case the parent also looks for a
traceback in the server's log; at the end, for job folders nobody asked for.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .seeds import BOX, Seed

BOUNDARY = b"fuzzboundary7MA4YWxkTrZu0gW"
FIELDS = {"box": " ".join(BOX), "blend": "feather", "precision": "fp32", "crf": "30"}
JOB_LIMIT_S = 60.0  # an accepted job on the seed files takes about a second


def available() -> bool:
    """Whether a server and a WebSocket client can run here (the `serve` extra and websocket-client)."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn", "multipart", "websocket"))


def form_body(face: tuple[str, bytes], audio: tuple[str, bytes], fields: dict[str, str] = FIELDS) -> bytes:
    """A multipart/form-data body as a browser sends it."""
    parts = [b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + k.encode() + b"\"\r\n\r\n"
             + v.encode() + b"\r\n" for k, v in fields.items()]
    for name, (filename, data) in (("face", face), ("audio", audio)):
        parts.append(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + name.encode()
                     + b"\"; filename=\"" + filename.encode() + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                     + data + b"\r\n")
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def write_seed(root: Path, seeds: dict[str, Seed]) -> Seed:
    """The form seed: the seed face and speech with a few options, as one body."""
    body = form_body(("face.mp4", seeds["face.mp4"].path.read_bytes()),
                     ("speech.wav", seeds["speech.wav"].path.read_bytes()))
    (root / "form.bin").write_bytes(body)
    return Seed("form.bin", root / "form.bin", "form")


class Server:
    """`python -m wav2lip serve` with the seed generator, in its own process and folder."""

    def __init__(self, work: Path, seeds: dict[str, Seed]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = work / "serve-data"
        self.log = work / "serve.log"
        self._seen = 0
        self.accepted: set[str] = set()  # job ids the server answered 201 for
        self.peak_mb = 0.0
        command = [sys.executable, "-m", "wav2lip", "serve", "--port", str(self.port), "--data-dir", str(self.data),
                   "--checkpoint", str(seeds["generator.pth"].path), "--detector-weights",
                   str(seeds["retinaface.pth"].path), "--device", "cpu", "--max-upload-mb", "4",
                   "--max-queue", "64", "--keep-hours", "1"]
        env = dict(os.environ, WAV2LIP_HOME=str(work / "serve-home"), WAV2LIP_OFFLINE="1")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"fuzz: the server exited at start (see {self.log})")
            try:
                status, _ = request(self.port, "GET", "/api/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"fuzz: the server did not answer within 300 s (see {self.log})")

    def new_tracebacks(self) -> str:
        """The server log's tracebacks since the last call (its last line), or ''."""
        text = self.log.read_text(errors="replace")
        new, self._seen = text[self._seen:], len(text)
        at = new.find("Traceback (most recent call last)")
        return new[at:].strip().splitlines()[-1][-300:] if at >= 0 else ""

    def stray_folders(self, accepted: set[str]) -> list[str]:
        """Job folders in the data folder that no 201 answered for (a refused upload's leftovers)."""
        jobs = self.data / "jobs"
        if not jobs.is_dir():
            return []
        return sorted(p.name for p in jobs.iterdir() if p.name not in accepted)

    def stop(self) -> None:
        """End the server, noting its peak resident memory first."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            self.peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        except (OSError, IndexError, ValueError):
            pass
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _verdict(outcome: str, detail: str, job: str | None = None) -> dict:
    return {"outcome": outcome, "detail": detail[:600], "job": job}


def submit(port: int, body: bytes, limit_s: float = JOB_LIMIT_S) -> dict:
    """POST one body and follow its job to the end; the verdict."""
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
    try:
        status, reply = request(port, "POST", "/api/jobs", body, headers)
    except (ConnectionError, http.client.HTTPException, socket.timeout) as exc:
        return _verdict("crash", f"the connection dropped: {type(exc).__name__}: {exc}")
    try:
        data = json.loads(reply)
    except ValueError:
        return _verdict("noisy refusal" if status < 500 else "traceback", f"{status}, not JSON: {reply[:200]!r}")
    if status >= 500 and status != 503:
        return _verdict("traceback", f"{status}: {data}")
    if status != 201:
        detail = data.get("detail") if isinstance(data, dict) else None
        one_line = isinstance(detail, str) and "\n" not in detail and detail
        return _verdict("refused" if one_line else "noisy refusal", f"{status}: {detail if one_line else data}")
    job = data["id"]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status, reply = request(port, "GET", f"/api/jobs/{job}")
        state = json.loads(reply)
        if state["status"] == "done":
            return _verdict("success", "done", job)
        if state["status"] in ("failed", "cancelled"):
            error = state.get("error") or ""
            clean = error and "\n" not in error and "Traceback" not in error
            return _verdict("refused" if clean else "noisy refusal", f"job {state['status']}: {error}", job)
        time.sleep(0.1)
    return _verdict("hang", f"job {job} unfinished after {limit_s:.0f} s", job)


PORT_VARIABLE = "WAV2LIP_FUZZ_PORT"  # the campaign's server, for the forked children
LIVE_CHUNK = 1600  # samples per audio message (0.1 s at 16 kHz)


def start_message(avatar_size: int, options: dict | None = None) -> bytes:
    """The live socket's start message as the Live page sends it."""
    return json.dumps({"type": "start", "avatar": {"name": "avatar.png", "size": avatar_size}, "format": "s16le",
                       "sample_rate": 16000, "options": options or {"box": " ".join(BOX), "blend": "feather"}},
                      indent=1).encode()


def write_live_seeds(root: Path, seeds: dict[str, Seed]) -> list[Seed]:
    """The start message (for the still avatar) and the speech as the raw PCM the socket carries."""
    from wav2lip.io.audio import load_audio

    (root / "live_start.json").write_bytes(start_message(seeds["still.png"].path.stat().st_size))
    pcm = (load_audio(seeds["speech.wav"].path) * 32767).astype("<i2").tobytes()
    (root / "speech.pcm").write_bytes(pcm)
    return [Seed("live_start.json", root / "live_start.json", "start"), Seed("speech.pcm", root / "speech.pcm", "pcm")]


def _live_session(port: int, start: bytes, avatar: bytes, pcm: bytes, limit_s: float = JOB_LIMIT_S) -> dict:
    """One session on /api/live: start, avatar, audio, end; read to the close. The verdict."""
    import struct

    import websocket

    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/live", timeout=limit_s)
    except (OSError, websocket.WebSocketException) as exc:
        return _verdict("crash", f"no connection: {type(exc).__name__}: {exc}")
    ready, frames, error = False, 0, None
    try:
        # a start message that is no UTF-8 text cannot go as a text message: it goes as binary, as a client could
        ws.send(start, opcode=websocket.ABNF.OPCODE_TEXT if _utf8(start) else websocket.ABNF.OPCODE_BINARY)
        for at in range(0, len(avatar), 2**20):
            ws.send_binary(avatar[at:at + 2**20])
        for at in range(0, len(pcm), 2 * LIVE_CHUNK):
            ws.send_binary(pcm[at:at + 2 * LIVE_CHUNK])
        ws.send(json.dumps({"type": "end"}))
    except (OSError, websocket.WebSocketException):
        pass  # the server may close early on a bad start; what it said is read below
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                break
            if opcode == websocket.ABNF.OPCODE_TEXT:
                message = json.loads(data)
                ready = ready or message.get("type") == "ready"
                if message.get("type") == "error":
                    error = message.get("message")
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                frames += 1
                index = json.loads(data[4:4 + struct.unpack("<I", data[:4])[0]])["index"]
                ws.send(json.dumps({"type": "ack", "index": index}))
    except websocket.WebSocketTimeoutException:
        return _verdict("hang", f"no close within {limit_s:.0f} s ({frames} frames)")
    except (OSError, websocket.WebSocketException) as exc:
        return _verdict("crash", f"the connection dropped: {type(exc).__name__}: {exc}")
    finally:
        ws.close()
    if code == 1000 and ready and error is None:
        return _verdict("success", f"{frames} frames")
    if code in (1008, 1013) and isinstance(error, str) and error and "\n" not in error:
        return _verdict("refused", f"{code}: {error}")
    if code == 1011:
        return _verdict("traceback", f"closed 1011 (the server's fault): {error}")
    return _verdict("noisy refusal", f"closed {code}, error {error!r}, ready {ready}, {frames} frames")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def run_case(role: str, mutant: Path, face: Path, audio: Path, verdict: Path) -> int:
    """In the forked child: build and send the body for `role`, write the verdict; exit code 0."""
    data = mutant.read_bytes()
    port = int(os.environ[PORT_VARIABLE])
    if role.startswith("live-"):
        still = face.with_name("still.png").read_bytes()
        pcm = face.with_name("speech.pcm").read_bytes()
        if role == "live-start":
            verdict.write_text(json.dumps(_live_session(port, data, still, pcm)))
        elif role == "live-avatar":
            verdict.write_text(json.dumps(_live_session(port, start_message(len(data)), data, pcm)))
        else:
            verdict.write_text(json.dumps(_live_session(port, start_message(len(still)), still, data)))
        return 0
    if role == "form":
        body = data
    elif role == "face":
        body = form_body((mutant.name, data), (audio.name, audio.read_bytes()))
    else:
        body = form_body((face.name, face.read_bytes()), (mutant.name, data))
    verdict.write_text(json.dumps(submit(port, body)))
    return 0
