"""`wav2lip serve` as the server tests and benchmarks run it: a real server process on 127.0.0.1."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_S = 600  # a loaded 2-core machine can take minutes to import torch and load the models
FINISHED = ("done", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m wav2lip serve` in a subprocess, ready once /api/health answers; its log beside `data`."""

    def __init__(self, data: Path, checkpoint: Path, weights: Path, *args: str, host: str = "127.0.0.1",
                 token: str | None = None, file_limit: int | None = None, timeout: float = 60) -> None:
        """`args`: more `serve` flags; `token`: WAV2LIP_TOKEN, which the client sends; `file_limit`: the
        largest file the server may write (RLIMIT_FSIZE: a disk that fills up); `timeout`: the client's."""
        self.data, self.port = data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"{data.name}-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k != "WAV2LIP_TOKEN"}
        if token:
            env["WAV2LIP_TOKEN"] = token
        command = [sys.executable, "-m", "wav2lip", "serve", "--host", host, "--port", str(self.port), "--data-dir",
                   str(data), "--checkpoint", str(checkpoint), "--detector-weights", str(weights), "--device", "cpu",
                   *args]
        limit = None if file_limit is None else lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit,) * 2)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)
        # A fresh connection per request: a kept-alive one that the server closes after its idle timeout
        # just as a test reuses it fails the request ("Server disconnected without sending a response").
        self.client = httpx.Client(base_url=self.url, timeout=timeout,
                                   limits=httpx.Limits(max_keepalive_connections=0),
                                   headers={"Authorization": f"Bearer {token}"} if token else {})
        deadline = time.monotonic() + STARTUP_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}): {self.log.read_text()[-4000:]}")
            try:
                if self.client.get("/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {self.log.read_text()[-4000:]}")
            time.sleep(0.3)

    def submit(self, face: Path, audio: Path, face_name: str | None = None, **fields) -> httpx.Response:
        """Upload a job: the two files (the face under `face_name` if given) and the form's fields."""
        with open(face, "rb") as f, open(audio, "rb") as a:
            files = {"face": (face_name or face.name, f), "audio": (audio.name, a)}
            return self.client.post("/api/jobs", files=files, data={k: str(v) for k, v in fields.items()})

    def wait(self, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 300) -> dict:
        """The job's record once its status is one of `until`."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.client.get(f"/api/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout:g} s"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)
        self.client.close()
