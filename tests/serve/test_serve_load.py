"""`wav2lip serve` under a small load, the fast seeded subset of benchmarks/bench_serve_load.py: 10 clients
uploading at once beside a slow trickling upload and one over the size limit, against a real server
process on 127.0.0.1. Every answer is 201 or a 503 with Retry-After; every accepted job ends done, none
lost, none run twice; the slow upload blocks nobody; the one over the limit leaves nothing on disk."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="wav2lip[serve] is not installed")
httpx = pytest.importorskip("httpx")

from conftest import cut_wav
from support.server import ServerProcess
from test_serve import AUTH, BOX, TOKEN, job_folders
from support.serving import checkpoint  # noqa: F401 - a fixture

CLIENTS = 10
MAX_QUEUE = 4


def peak_memory(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def test_ten_clients_at_once_beside_a_slow_and_an_oversized_upload(work, checkpoint, models_dir, media) -> None:
    speech = cut_wav(media / "vr_audio1.wav", work / "speech.wav", 1.2)
    srv = ServerProcess(work / "data", checkpoint, models_dir / "retinaface_mobilenet0.25.pth", "--max-queue",
                 str(MAX_QUEUE), "--max-upload-mb", "3", token=TOKEN)
    try:
        answers: list[httpx.Response] = []
        start = threading.Barrier(CLIENTS + 1, timeout=60)
        trickling = threading.Event()

        def client(k: int) -> None:
            with open(media / "vr_face5.mp4", "rb") as face, open(speech, "rb") as audio, \
                    httpx.Client(base_url=srv.url, headers=AUTH, timeout=120) as http:
                start.wait()
                answers.append(http.post("/api/jobs", files={"face": (f"c{k}.mp4", face), "audio": ("a.wav", audio)},
                                          data={"box": BOX}))

        def slow_body():
            yield b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="slow.mp4"\r\n\r\n'
            trickling.set()
            for _ in range(40):
                time.sleep(0.1)
                yield b"x" * 1000
            yield b"\r\n--b0b0--\r\n"

        def over_limit():  # 4 MiB with no Content-Length: cut off at 3 MiB as it streams in
            yield b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="big.mp4"\r\n\r\n'
            for _ in range(16):
                yield os.urandom(2**18)

        headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=b0b0"}
        big = httpx.post(f"{srv.url}/api/jobs", content=over_limit(), headers=headers, timeout=120)
        assert big.status_code == 413 and not job_folders(srv)  # cut off as it streamed in, nothing kept
        slow: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: slow.append(
            httpx.post(f"{srv.url}/api/jobs", content=slow_body(), headers=headers, timeout=120)))]
        threads[0].start()
        assert trickling.wait(60)
        deadline = time.monotonic() + 60
        while not job_folders(srv):  # the slow upload holds one of the upload places now
            assert time.monotonic() < deadline
            time.sleep(0.05)
        threads += [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for thread in threads[1:]:
            thread.start()
        start.wait()
        began = time.monotonic()
        assert srv.client.get("/api/health").status_code == 200
        health_s = time.monotonic() - began
        for thread in threads:
            thread.join(300)

        assert health_s < 5.0, health_s  # the trickling upload holds up no one (a loaded 2-core machine: generous)
        assert slow[0].status_code == 400  # garbage, found out once it had all come
        accepted = [r.json()["id"] for r in answers if r.status_code == 201]
        refused = [r for r in answers if r.status_code != 201]
        assert len(answers) == CLIENTS and accepted
        for r in refused:
            assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0 and r.json()["detail"], r.text
        seen: dict[str, list[str]] = {job_id: [] for job_id in accepted}
        deadline = time.monotonic() + 300
        while any(not s or s[-1] not in ("done", "failed") for s in seen.values()):
            assert time.monotonic() < deadline, seen
            for job in srv.client.get("/api/jobs").json():
                if job["id"] in seen and (not seen[job["id"]] or seen[job["id"]][-1] != job["status"]):
                    seen[job["id"]].append(job["status"])
            time.sleep(0.1)
        for job_id, statuses in seen.items():  # each ran once: queued, running, done, in that order
            assert statuses[-1] == "done" and statuses == sorted(statuses, key=("queued", "running", "done").index)
        listed = [job["id"] for job in srv.client.get("/api/jobs").json()]
        assert sorted(listed) == sorted(accepted) and job_folders(srv) == set(accepted)  # nothing lost or left
        assert peak_memory(srv.process.pid) < 3 * 2**30
    finally:
        srv.stop()
