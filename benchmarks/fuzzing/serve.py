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


def run_case(role: str, mutant: Path, face: Path, audio: Path, verdict: Path) -> int:
    """In the forked child: build and send the body for `role`, write the verdict; exit code 0."""
    data = mutant.read_bytes()
    if role == "form":
        body = data
    elif role == "face":
        body = form_body((mutant.name, data), (audio.name, audio.read_bytes()))
    else:
        body = form_body((face.name, face.read_bytes()), (mutant.name, data))
    verdict.write_text(json.dumps(submit(int(os.environ[PORT_VARIABLE]), body)))
    return 0
