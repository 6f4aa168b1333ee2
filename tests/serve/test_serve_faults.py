"""`wav2lip serve` under faults, against a real server process on 127.0.0.1: `kill -9` in the middle of
uploads and jobs then a restart, a disk that fills up (RLIMIT_FSIZE on the server: writes past the limit
fail with EFBIG, as they would with ENOSPC), hostile names, headers and forms, the token, other sites'
pages, names behind a proxy (--allow-host), and a detector without its weights."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="wav2lip[serve] is not installed")
httpx = pytest.importorskip("httpx")

from test_serve import AUTH, BOX, TOKEN, job_folders

from support.server import ServerProcess
from support.serving import checkpoint, speech, weights  # noqa: F401 - fixtures

from wav2lip import Wav2LipError
from wav2lip.cli import main
from wav2lip.serve import JobQueue, Models, create_app
from wav2lip.serve.jobs import CRASHED, JOB_FILE, MARK, Job


@pytest.fixture(scope="module")
def server(work, checkpoint, weights):
    srv = ServerProcess(work / "data", checkpoint, weights, "--max-queue", "3", "--max-upload-mb", "3", token=TOKEN)
    yield srv
    srv.stop()


def leftovers(data: Path) -> list[str]:
    """Anything in the job folders that should not outlive a restart: partial files, folders without a
    record, the uploads of finished jobs."""
    found = []
    for folder in (data / "jobs").iterdir():
        names = {p.name for p in folder.iterdir()}
        if JOB_FILE not in names:
            found.append(f"{folder.name}: no record")
            continue
        job = Job.load(folder)
        extra = names - {MARK, JOB_FILE, job.result}
        if job.status in ("queued", "running"):
            extra -= {"face", "audio"}
        found += [f"{folder.name} ({job.status}): {name}" for name in sorted(extra)]
    return found


def test_kill_9_in_the_middle_of_uploads_and_jobs_then_a_restart(work, checkpoint, weights, media, speech) -> None:
    """Every job accepted before the kill is finished, queued again or reported failed after the restart;
    a crashed job keeps no upload and no result, whole or partial; an upload cut short leaves nothing."""
    data = work / "kill9"
    first = ServerProcess(data, checkpoint, weights, "--max-queue", "4")
    accepted: list[str] = []
    stalled = socket.create_connection(("127.0.0.1", first.port))
    try:
        running = first.submit(media / "vr_face2.mp4", media / "mt_yongen.wav", detect_every=1).json()["id"]
        accepted.append(running)
        for _ in range(2):
            response = first.submit(media / "vr_face5.mp4", speech, box=BOX)
            assert response.status_code == 201, response.text
            accepted.append(response.json()["id"])
        first.wait(running, until=("running",))
        stalled.sendall(  # an upload in the middle of its body
            f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{first.port}\r\nContent-Length: 900000\r\n"
            "Content-Type: multipart/form-data; boundary=b0b0\r\n\r\n".encode()
            + b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="f.mp4"\r\n\r\n' + b"x" * 5000)
        deadline = time.monotonic() + 30
        while len(job_folders(first)) < len(accepted) + 1:
            assert time.monotonic() < deadline, "the stalled upload never started"
            time.sleep(0.05)
    finally:
        first.stop(signal.SIGKILL)
    stalled.close()
    # what a kill between a result's rename and its record leaves: a whole result of a job still "running"
    (data / "jobs" / running / "result.mp4").write_bytes(b"\0" * 1000)
    (data / "jobs" / running / ".result.mp4.0a1b2c3d.part.mp4").write_bytes(b"\0" * 1000)
    second = ServerProcess(data, checkpoint, weights, "--max-queue", "4")
    try:
        assert set(accepted) <= job_folders(second) and len(job_folders(second)) == len(accepted)
        crashed = second.client.get(f"/api/jobs/{running}").json()
        assert crashed["status"] == "failed" and crashed["error"] == CRASHED and crashed["result"] is None
        assert second.client.get(f"/api/jobs/{running}/result").status_code == 409
        for job_id in accepted[1:]:
            assert second.wait(job_id)["status"] == "done"
        listed = [job["id"] for job in second.client.get("/api/jobs").json()]
        assert sorted(listed) == sorted(accepted)  # none lost, none twice
        assert leftovers(data) == []
        assert sorted(p.name for p in (data / "jobs" / running).iterdir()) == [MARK, JOB_FILE]
    finally:
        second.stop()


def test_a_full_disk_fails_the_job_with_a_reason_and_the_server_keeps_serving(work, checkpoint, weights, media,
                                                                              speech) -> None:
    """Files past 4 MB cannot be written: a lossless result fails its job with the reason, an upload that
    does not fit is a 507 with Retry-After, and the next job that fits is done."""
    data = work / "full"
    srv = ServerProcess(data, checkpoint, weights, file_limit=4 * 2**20)
    try:
        big = srv.submit(media / "vr_face5.mp4", speech, box=BOX, lossless="true")  # FFV1 RGB: ~13 MB
        assert big.status_code == 201, big.text
        failed = srv.wait(big.json()["id"])
        assert failed["status"] == "failed" and "File too large" in failed["error"], failed
        assert "\n" not in failed["error"] and str(data) not in failed["error"]
        huge = work / "huge.mp4"
        huge.write_bytes(os.urandom(5 * 2**20))
        refused = srv.submit(huge, speech)
        assert refused.status_code == 507 and "cannot store this upload" in refused.json()["detail"], refused.text
        assert int(refused.headers["Retry-After"]) > 0
        fits = srv.submit(media / "vr_face5.mp4", speech, box=BOX)
        assert fits.status_code == 201 and srv.wait(fits.json()["id"])["status"] == "done"
        assert srv.client.get("/api/health").json()["status"] == "ok"
        assert leftovers(data) == []
        assert not [p for p in data.rglob("*") if ".part" in p.name or p.name.endswith(".tmp")]
    finally:
        srv.stop()


def raw_request(port: int, head: str) -> int | None:
    """One request over a plain socket (headers no HTTP library would send): the status, or None when the
    server cut the connection (uvicorn closes on a header past its 16 KiB bound, unread bytes and all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        answer = b""
        try:
            sock.sendall(head.encode("latin-1"))
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionError:
            return None
    return int(answer.split(b" ", 2)[1])


def test_hostile_names_headers_and_forms(server, media, speech) -> None:
    before = job_folders(server)
    for name in ("../../../../tmp/evil.mp4", "..", "/etc/passwd", "C:\\Windows\\win.ini", "a\x00b.mp4",
                 "\u202eevil\u202d.mp4", "x" * 1000, "%2e%2e%2fescape.mp4"):
        response = server.submit(media / "vr_face5.mp4", speech, face_name=name, box=BOX)
        assert response.status_code == 201, (name, response.text)
        job = response.json()
        assert "/" not in job["face"] and "\\" not in job["face"] and "\x00" not in job["face"], job["face"]
        assert len(job["face"]) <= 120 and job["face"] not in ("..", ".")
        assert server.wait(job["id"])["status"] == "done"
        assert sorted(p.name for p in (server.data / "jobs" / job["id"]).iterdir()) == \
            [MARK, JOB_FILE, "result.mp4"]
        server.client.delete(f"/api/jobs/{job['id']}")
    assert not list(server.data.parent.rglob("evil.mp4")) and not Path("/tmp/evil.mp4").exists()
    port = server.port
    huge_header = (f"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                   f"X-Junk: {'y' * 200_000}\r\nConnection: close\r\n\r\n")
    assert raw_request(port, huge_header) in (None, 400, 431)
    many = "".join(f"X-H{i}: v\r\n" for i in range(50_000))  # 600 kB of small headers
    assert raw_request(port, f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{many}Connection: close\r\n\r\n") \
        in (None, 400, 431)
    fields = {f"f{i}": "1" for i in range(100)}
    too_many = server.submit(media / "vr_face5.mp4", speech, **fields)
    assert too_many.status_code == 400 and "too many form fields" in too_many.json()["detail"]
    long_field = server.submit(media / "vr_face5.mp4", speech, blend="x" * 5000)
    assert long_field.status_code == 400 and "longer than" in long_field.json()["detail"]
    part_header = (b"--b0b0\r\nContent-Disposition: form-data; name=\"face\"; filename=\"" + b"n" * 300_000 + b"\"\r\n\r\n"
                   b"data\r\n--b0b0--\r\n")
    response = server.client.post("/api/jobs", content=part_header,
                                  headers={"Content-Type": "multipart/form-data; boundary=b0b0"})
    assert response.status_code in (400, 413) and response.json()["detail"]
    assert job_folders(server) == before
    assert server.client.get("/api/health").json()["status"] == "ok"


def test_the_token_other_pages_and_other_jobs(server, media, speech) -> None:
    """401 for a missing, wrong, longer or shorter token (compared in constant time); no CORS header for any
    page, and 403 for a page of another site, another port of this machine included; no job's files
    through another job's id."""
    url = f"{server.url}/api/jobs"
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN.upper()}"}):
        assert httpx.get(url, headers=headers).status_code == 401, headers
        assert httpx.delete(f"{url}/{'0' * 32}", headers=headers).status_code == 401, headers
    for origin in ("http://localhost:3000", f"http://127.0.0.1:{server.port + 1}", "http://evil.example", "null"):
        preflight = server.client.options("/api/jobs", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers, origin
        read = server.client.get("/api/jobs", headers={"Origin": origin})
        assert read.status_code == 403 and "access-control-allow-origin" not in read.headers, origin
    done = server.submit(media / "vr_face5.mp4", speech, box=BOX).json()["id"]
    failing = server.submit(media / "vr_face5.mp4", speech, box="0 10000 0 10").json()["id"]
    assert server.wait(done)["status"] == "done" and server.wait(failing)["status"] == "failed"
    for path in (f"/api/jobs/{failing}/result", f"/api/jobs/{done}%2F..%2F{failing}/result",
                 f"/api/jobs/{done}/../{failing}/result", f"/api/jobs/{done[:-1]}./result",
                 f"/api/jobs/{done}/result/../../{failing}/face", f"/api/jobs/{done}/face", f"/api/jobs/{done}/job.json"):
        response = server.client.get(path)
        assert response.status_code in (404, 405, 409) and not response.content.startswith(b"\0\0\0"), (path, response)
    assert server.client.get(f"/api/jobs/{done}/result").status_code == 200


def test_allow_host_answers_to_a_proxys_name_only(tmp_path, capsys, monkeypatch) -> None:
    """--allow-host NAME: requests naming NAME (on the proxy's port, by http or https) pass, with an Origin of
    that name; other names and origins are refused. The flag needs a token and a bare name."""
    from fastapi.testclient import TestClient

    app = create_app(JobQueue(tmp_path, models=None), token=TOKEN, allow_hosts=("lips.example",))  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1:7860", headers=AUTH) as client:
        for host, origin in (("lips.example", "https://lips.example"), ("lips.example:8443", "https://lips.example:8443"),
                             ("LIPS.example", None), ("127.0.0.1:7860", None)):
            headers = {"Host": host, **({"Origin": origin} if origin else {})}
            assert client.get("/api/jobs", headers=headers).status_code == 200, headers
        for host, origin in (("evil.example", None), ("lips.example.evil.example", None),
                             ("lips.example", "https://evil.example"), ("lips.example", "https://lips.example:8080"),
                             ("lips.example", "null")):
            headers = {"Host": host, **({"Origin": origin} if origin else {})}
            assert client.get("/api/jobs", headers=headers).status_code == 403, headers
    monkeypatch.delenv("WAV2LIP_TOKEN", raising=False)
    assert main(["serve", "--allow-host", "lips.example"]) == 2
    assert "--allow-host lips.example lets other machines in: give --token" in capsys.readouterr().err
    assert main(["serve", "--allow-host", "https://lips.example:443", "--token", "t"]) == 2
    assert "give a host name alone" in capsys.readouterr().err
    assert main(["serve", "--max-live", "0"]) == 2 and "--max-live must be at least 1" in capsys.readouterr().err
    from wav2lip.cli.serve import MAX_LIVE
    from wav2lip.serve.live import MAX_SESSIONS

    assert MAX_LIVE == MAX_SESSIONS  # the flag's default, spelt in the CLI so that --help loads no server


def test_a_detector_without_weights_is_refused_before_a_generator_loads(tmp_path, checkpoint, weights,
                                                                        monkeypatch) -> None:
    """The detector's file is looked for first: the error names it, and no generator is loaded for nothing
    (the generator's file is gone here, so loading it would fail with another message)."""
    monkeypatch.setenv("WAV2LIP_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("WAV2LIP_OFFLINE", "1")
    generator = tmp_path / "gen.pth"
    shutil.copy(checkpoint, generator)
    models = Models(generator, detector_weights=weights, device="cpu", precision="fp32")
    generator.unlink()
    with pytest.raises(Wav2LipError, match="s3fd.pth"):
        models.get("s3fd", "fp32")
    assert models.loaded == [("retinaface", "fp32")]
    with pytest.raises(Wav2LipError, match="missing.pth"):
        Models(generator, detector_weights=tmp_path / "missing.pth", device="cpu")


def test_a_stalled_upload_is_cut_off_and_frees_its_place(server) -> None:
    """Headers and 1 kB of a declared 1 MB, then nothing: a 408 with the reason once the body lags
    UPLOAD_GRACE_S + bytes / UPLOAD_RATE behind, its folder removed, its upload place free again."""
    from wav2lip.serve.app import UPLOAD_GRACE_S

    before = job_folders(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: multipart/form-data; boundary=b0b0\r\nContent-Length: 1000000\r\n\r\n".encode()
                     + b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="f.mp4"\r\n\r\n' + b"x" * 1000)
        began = time.monotonic()
        time.sleep(1.0)
        assert server.client.get("/api/health").json()["uploading"] == 1
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    waited = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408 ") and b"came too slowly (1" in answer, answer[:300]
    assert UPLOAD_GRACE_S - 0.5 < waited < UPLOAD_GRACE_S + 15, waited
    assert server.client.get("/api/health").json()["uploading"] == 0 and job_folders(server) == before


def test_clients_name_enhancers_never_files_on_the_server(server, media, speech) -> None:
    """`enhance` may name a fitted enhancer file on the command line; from a job form or a live start message
    a path would make the server read its own files as weights: only the names pass."""
    from wav2lip.serve.form import parse_client_options

    for value in ("/etc/passwd", "../../weights/enhancer.pth", "C:\\enhancer.pth", "~/.cache/wav2lip/x.pth"):
        response = server.submit(media / "vr_face5.mp4", speech, enhance=value)
        assert response.status_code == 400 and "this server takes one of none, gfpgan" in response.json()["detail"]
        with pytest.raises(Wav2LipError, match="this server takes one of none, gfpgan"):
            parse_client_options({"enhance": value}, "live_socket")  # what the live socket calls
    assert parse_client_options({"enhance": "none"}, "live_socket")[0] == {"enhance": "none"}


def test_job_records_that_cannot_be_written_stop_no_worker(work, checkpoint, weights, media, speech) -> None:
    """A job's record cannot be written (its temporary file's name taken by a folder: a write that fails, as on
    a full disk) when a running job ends and when a waiting one starts: both end failed or cancelled with a
    reason in the API, the worker lives on, and the next job is done."""
    srv = ServerProcess(work / "unwritable", checkpoint, weights, "--max-queue", "4")
    try:
        running = srv.submit(media / "vr_face2.mp4", media / "mt_yongen.wav", detect_every=1).json()["id"]
        waiting = srv.submit(media / "vr_face5.mp4", speech, box=BOX).json()["id"]
        srv.wait(running, until=("running",))
        for job_id in (running, waiting):
            (srv.data / "jobs" / job_id / f".{JOB_FILE}.tmp").mkdir()
        assert srv.client.delete(f"/api/jobs/{running}").json()["status"] == "cancelled"
        failed = srv.wait(waiting)
        assert failed["status"] == "failed" and "could not write this job's files" in failed["error"], failed
        after = srv.submit(media / "vr_face5.mp4", speech, box=BOX)
        assert after.status_code == 201 and srv.wait(after.json()["id"])["status"] == "done"
    finally:
        srv.stop()


def test_a_long_field_name_is_echoed_short(server, media, speech) -> None:
    response = server.submit(media / "vr_face5.mp4", speech, **{"o" * 5000: "1"})
    assert response.status_code == 400 and len(response.json()["detail"]) < 200, response.text[:300]
