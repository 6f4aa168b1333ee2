"""`wav2lip serve`: the HTTP API against a real server process on 127.0.0.1 (real uploads of the shared
clips, real jobs with a small deterministic generator and the real RetinaFace weights), the job queue's
retention, and the pipeline's progress and cancel hooks."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import av
import pytest

pytest.importorskip("fastapi", reason="wav2lip[serve] is not installed")
httpx = pytest.importorskip("httpx")

from conftest import cut_wav

from support.server import ServerProcess
from support.serving import checkpoint, speech, weights  # noqa: F401 - fixtures

from wav2lip import LipSyncer, Wav2LipError
from wav2lip.cli import main
from wav2lip.serve.form import parse_options
from wav2lip.serve import create_app
from wav2lip.serve.jobs import CRASHED, JOB_FILE, MARK, MAX_MODELS, Job, JobQueue, Models, make_folder, sanitize_name
from wav2lip.io.video import probe

TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOX = "150 470 140 380"  # vr_face5.mp4's face: top bottom left right


@pytest.fixture(scope="module")
def server(work, checkpoint, weights):
    srv = ServerProcess(work / "data", checkpoint, weights, "--max-queue", "2", "--max-upload-mb", "2", token=TOKEN)
    yield srv
    srv.stop()


def job_folders(server: ServerProcess) -> set[str]:
    return {p.name for p in (server.data / "jobs").iterdir()}


# ---------------------------------------------------------------- the API over HTTP


def test_health_schema_and_page(server) -> None:
    health = server.client.get("/api/health").json()
    assert health["status"] == "ok" and health["checkpoint"] == "small.pth" and health["token_required"]
    schema = server.client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/result", "/api/health"} <= set(schema["paths"])
    body = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"face", "audio", "blend", "loop", "pads", "box", "detector", "smooth", "fps", "static", "precision",
            "crf"} <= set(body["properties"])
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    page = server.client.get("/")
    assert page.status_code == 200 and "<video" in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert server.client.get(f"/static/{name}").status_code == 200


def test_page_assets_load_nothing_from_elsewhere(server) -> None:
    for path in ("/", "/docs", "/static/app.js", "/static/docs.js", "/static/style.css"):
        text = server.client.get(path).text
        assert "http://" not in text and "https://" not in text, path


def test_token_is_required(server) -> None:
    bare = httpx.get(f"{server.url}/api/jobs")
    assert bare.status_code == 401 and "Bearer" in bare.json()["detail"]
    assert httpx.get(f"{server.url}/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/api/health").status_code == 200


def test_upload_poll_download(server, media, speech, work) -> None:
    response = server.submit(media / "vr_face5.mp4", speech, blend="feather", pads="0 12 0 0", crf=23)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.json()["status"] == "queued"
    job = server.wait(job_id)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["frames"] == 30 and job["faces_missed"] == 0 and job["error"] is None
    assert job["created"] and job["finished"] and job["options"]["blend"] == "feather"
    video = server.client.get(f"/api/jobs/{job_id}/result")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    out = work / "result.mp4"
    out.write_bytes(video.content)
    info = probe(out)
    assert info.has_audio and info.has_video and abs(info.duration - 1.2) <= 1 / 25
    part = server.client.get(f"/api/jobs/{job_id}/result", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == video.content[100:200]
    # the uploads are gone once the job is over; the result and the record stay
    assert sorted(p.name for p in (server.data / "jobs" / job_id).iterdir()) == [MARK, JOB_FILE, "result.mp4"]


def test_two_jobs_at_once_both_finish(server, media, speech) -> None:
    first = server.submit(media / "vr_face5.mp4", speech, box=BOX)
    second = server.submit(media / "st_art0.png", speech, loop="pingpong")
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    ids = [first.json()["id"], second.json()["id"]]
    for job_id in ids:
        job = server.wait(job_id)
        assert job["status"] == "done" and job["frames"] == 30, job
        assert server.client.get(f"/api/jobs/{job_id}/result").status_code == 200
    listed = [job["id"] for job in server.client.get("/api/jobs").json()]
    assert listed.index(ids[1]) < listed.index(ids[0])  # newest first


def cli_error(face: Path, audio: Path, checkpoint: Path, capsys) -> str:
    assert main(["infer", "--checkpoint", str(checkpoint), "--face", str(face), "--audio", str(audio),
                 "-o", "never.mp4", "-q"]) == 2
    return capsys.readouterr().err.strip().removeprefix("wav2lip: error: ")


def test_bad_uploads_answer_400_with_the_clis_message(server, media, speech, work, checkpoint, capsys,
                                                      monkeypatch) -> None:
    monkeypatch.chdir(work)
    before = job_folders(server)
    (work / "noise.mp4").write_bytes(os.urandom(20_000))
    (work / "empty.mp4").write_bytes(b"")
    cases = [(work / "noise.mp4", speech), (work / "empty.mp4", speech), (media / "vr_face5.mp4", media / "st_art0.png"),
             (media / "vr_audio1.wav", speech)]
    for face, audio in cases:
        response = server.submit(Path(face.name) if face.parent == work else face, audio)
        assert response.status_code == 400, (face, response.text)
        detail = response.json()["detail"]
        assert "\n" not in detail and str(server.data) not in detail
        if face.parent == work:  # named as the client named it, exactly as the CLI says it
            assert detail == cli_error(Path(face.name), audio, checkpoint, capsys)
        else:
            assert detail.startswith((face.name, audio.name)), detail
    assert not (work / "never.mp4").exists()
    for fields, words in [({"blend": "smudge"}, "unknown blend"), ({"pads": "1 2"}, "4 integers"),
                          ({"crf": "high"}, "crf"), ({"colour": "red"}, "unknown option"),
                          ({"detector": "eyeball"}, "unknown face detector"),
                          ({"fps": "1e6"}, "fps must be between")]:  # a still at a million frames a second
        response = server.submit(media / "vr_face5.mp4", speech, **fields)
        assert response.status_code == 400 and words in response.json()["detail"], (fields, response.text)
    only_face = server.client.post("/api/jobs", files={"face": ("a.mp4", b"x" * 10)})
    assert only_face.status_code == 400 and "audio" in only_face.json()["detail"]
    not_multipart = server.client.post("/api/jobs", json={"face": "a.mp4"})
    assert not_multipart.status_code == 400
    assert job_folders(server) == before  # nothing kept of a refused upload


def test_uploads_over_the_limit_answer_413(server, speech, work) -> None:
    before = job_folders(server)
    big = work / "big.mp4"
    big.write_bytes(os.urandom(3 * 2**20))
    declared = server.submit(big, speech)
    assert declared.status_code == 413 and "limit" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while streaming to disk
        boundary = b"x0x0x0"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="face"; filename="f.mp4"\r\n\r\n'
        for _ in range(12):
            yield os.urandom(256 * 1024)
        yield b"\r\n--" + boundary + b"--\r\n"

    streamed = server.client.post("/api/jobs", content=chunks(),
                                  headers={"Content-Type": "multipart/form-data; boundary=x0x0x0"})
    assert streamed.status_code == 413
    assert job_folders(server) == before


def stalled_upload(server: ServerProcess, declared: int = 1_000_000) -> socket.socket:
    """A POST /api/jobs that sends its headers and the start of its body, then nothing more."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary=b0b0\r\nContent-Length: {declared}\r\n\r\n")
    part = b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="f.mp4"\r\n\r\n' + b"x" * 1000
    sock.sendall(head.encode() + part)
    return sock


def test_uploads_at_once_are_limited(server, media, speech) -> None:
    """As many uploads may stream in at once as jobs may wait (--max-queue 2 here); more get 503 with
    Retry-After at once, so slow uploads cannot fill the disk faster than the queue limit allows."""
    before = job_folders(server)
    stalled = [stalled_upload(server) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(job_folders(server) - before) < 2:  # both are being received
            assert time.monotonic() < deadline, "the stalled uploads never started"
            time.sleep(0.05)
        refused = server.submit(media / "vr_face5.mp4", speech, box=BOX)
        assert refused.status_code == 503 and "uploads" in refused.json()["detail"], refused.text
        assert int(refused.headers["Retry-After"]) > 0
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 60
    while job_folders(server) != before:  # a dropped upload leaves nothing
        assert time.monotonic() < deadline, job_folders(server) - before
        time.sleep(0.05)
    accepted = server.submit(media / "vr_face5.mp4", speech, box=BOX)
    assert accepted.status_code == 201, accepted.text
    assert server.wait(accepted.json()["id"])["status"] == "done"


def trickle(parts: int = 20):
    """A 1.3 MB multipart body sent over a second: a client still sending when the server has its answer."""
    yield b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="f.mp4"\r\n\r\n'
    for _ in range(parts):
        time.sleep(0.05)
        yield b"x" * 65536
    yield b"\r\n--b0b0--\r\n"


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b0b0"}


def test_refused_uploads_get_their_answer_not_a_broken_pipe(server) -> None:
    """A refusal reads the rest of the body first (up to a bound), so the client sees why."""
    no_token = httpx.post(f"{server.url}/api/jobs", content=trickle(), headers=MULTIPART, timeout=60)
    assert no_token.status_code == 401 and "token" in no_token.json()["detail"]
    not_multipart = server.client.post("/api/jobs", content=trickle(), headers={"Content-Type": "text/plain"})
    assert not_multipart.status_code == 400 and "multipart" in not_multipart.json()["detail"]


def test_a_job_that_fails_says_why_in_one_line(server, media, speech) -> None:
    response = server.submit(media / "vr_face5.mp4", speech, face_name="me.mp4", box="0 10000 0 10")
    assert response.status_code == 201
    job = server.wait(response.json()["id"])
    assert job["status"] == "failed" and job["error"].startswith("--box 0 10000 0 10"), job
    assert "me.mp4" in job["error"] and "\n" not in job["error"] and str(server.data) not in job["error"]
    assert server.client.get(f"/api/jobs/{job['id']}/result").status_code == 409


def test_audio_longer_than_the_servers_limit_is_refused_before_it_is_decoded(work, checkpoint, weights, media) -> None:
    """--max-audio-minutes bounds a job's memory, time and output: more audio is a 400 naming the client's
    file; the bound is read from the header, not from decoding it."""
    srv = ServerProcess(work / "short-jobs", checkpoint, weights, "--max-audio-minutes", "0.02")  # 1.2 s
    try:
        long = cut_wav(media / "vr_audio1.wav", work / "long.wav", 2.0)
        response = srv.submit(media / "st_art0.png", long, box=BOX)
        message = response.json()["detail"]
        assert response.status_code == 400 and "long.wav: 2.0 s of audio" in message, message
        assert "at most 0.02 minutes (1.2 s) a job" in message and "\n" not in message, message
        assert str(work / "short-jobs") not in message and not job_folders(srv)
        adts = work / "long.aac"  # a raw AAC stream: its length is the demuxer's estimate
        with av.open(str(long)) as source, av.open(str(adts), "w", format="adts") as out:
            stream = out.add_stream("aac", rate=16000)
            for frame in source.decode(audio=0):
                frame.pts = None
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        assert srv.submit(media / "st_art0.png", adts, box=BOX).status_code == 400
        short = cut_wav(media / "vr_audio1.wav", work / "short.wav", 0.8)
        response = srv.submit(media / "st_art0.png", short, box=BOX)
        assert response.status_code == 201 and srv.wait(response.json()["id"])["status"] == "done"
    finally:
        srv.stop()


def test_client_file_names_are_never_paths(server, media, speech) -> None:
    response = server.submit(media / "vr_face5.mp4", speech, face_name="../../escape.mp4", box=BOX)
    assert response.status_code == 201
    job = server.wait(response.json()["id"])
    assert job["status"] == "done" and job["face"] == "escape.mp4"
    assert not (server.data.parent / "escape.mp4").exists()
    assert not list(server.data.rglob("escape.mp4"))
    assert server.client.get("/api/jobs/..%2F..%2Fetc").status_code == 404


def test_cancel_running_and_queued_and_a_full_queue(server, media, work) -> None:
    long_audio = media / "mt_yongen.wav"  # 8 s: 200 frames with detection on every frame
    running = server.submit(media / "vr_face2.mp4", long_audio, detect_every=1).json()["id"]
    server.wait(running, until=("running",))
    queued = [server.submit(media / "vr_face5.mp4", long_audio, box=BOX).json()["id"] for _ in range(2)]
    full = server.submit(media / "vr_face5.mp4", long_audio, box=BOX)
    assert full.status_code == 503 and "queue is full" in full.json()["detail"]
    sending = server.client.post("/api/jobs", content=trickle(), headers=MULTIPART)  # the answer, not a broken pipe
    assert sending.status_code == 503 and "queue is full" in sending.json()["detail"]

    cancelled = server.client.delete(f"/api/jobs/{queued[0]}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stopped = server.client.delete(f"/api/jobs/{running}")
    assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled", stopped.json()
    folder = server.data / "jobs" / running
    assert sorted(p.name for p in folder.iterdir()) == [MARK, JOB_FILE]  # no result, no partial file
    assert server.client.get(f"/api/jobs/{running}/result").status_code == 409
    # the worker is free again: the next queued job runs
    server.wait(queued[1], until=("running", "done"))
    assert server.client.delete(f"/api/jobs/{queued[1]}").json()["status"] in ("cancelled", "done")
    for job_id in (running, *queued):
        assert server.client.delete(f"/api/jobs/{job_id}").status_code == 204
        assert server.client.get(f"/api/jobs/{job_id}").status_code == 404
        assert not (server.data / "jobs" / job_id).exists()


def test_restart_recovers_jobs(work, checkpoint, weights, media, speech) -> None:
    data = work / "restart"
    first = ServerProcess(data, checkpoint, weights)
    try:
        running = first.submit(media / "vr_face2.mp4", media / "mt_yongen.wav", detect_every=1).json()["id"]
        waiting = first.submit(media / "vr_face5.mp4", speech, box=BOX).json()["id"]
        first.wait(running, until=("running",))
    finally:
        first.stop(signal.SIGKILL)  # a crash: nothing is written on the way out
    cut_short = make_folder(data / "jobs" / ("0" * 32))  # an upload cut short: no job record
    (cut_short / "face").write_bytes(b"partial")
    second = ServerProcess(data, checkpoint, weights)
    try:
        crashed = second.client.get(f"/api/jobs/{running}").json()
        assert crashed["status"] == "failed" and crashed["error"] == CRASHED
        assert sorted(p.name for p in (data / "jobs" / running).iterdir()) == [MARK, JOB_FILE]  # uploads gone
        done = second.wait(waiting)
        assert done["status"] == "done", done
        assert probe_bytes(second.client.get(f"/api/jobs/{waiting}/result").content, work).has_audio
        assert not (data / "jobs" / ("0" * 32)).exists()
        # a clean stop (SIGTERM) while a job runs marks it failed with its own message
        job_id = second.submit(media / "vr_face2.mp4", media / "mt_yongen.wav", detect_every=1).json()["id"]
        second.wait(job_id, until=("running",))
    finally:
        second.stop(signal.SIGTERM)
    record = Job.load(data / "jobs" / job_id)
    assert record.status == "failed" and "shut down" in record.error


def probe_bytes(content: bytes, work: Path):
    path = work / "probe.mp4"
    path.write_bytes(content)
    return probe(path)


def test_other_sites_cannot_use_the_server(server) -> None:
    """DNS rebinding (a foreign name resolving to 127.0.0.1) and pages of other sites get 403 and a JSON reason;
    the server's own names, on its own port, and its own page's origin pass."""
    port = server.port
    for host in (f"attacker.example:{port}", f"127.0.0.1.attacker.example:{port}", f"127.0.0.1:{port + 1}",
                 "127.0.0.1", f"[::2]:{port}", "127.0.0.1:x"):
        for path in ("/api/jobs", "/", "/api/health"):
            refused = server.client.get(path, headers={"Host": host})
            assert refused.status_code == 403 and "Host" in refused.json()["detail"], (host, path, refused.text)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LocalHost:{port}", f"[::1]:{port}"):
        assert server.client.get("/api/jobs", headers={"Host": host}).status_code == 200, host
    upload = {"face": ("a.mp4", os.urandom(1_500_000)), "audio": ("a.wav", b"RIFF")}
    for origin in ("http://attacker.example", "null", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}"):
        refused = server.client.post("/api/jobs", files=upload, headers={"Origin": origin})
        assert refused.status_code == 403 and "another site" in refused.json()["detail"], (origin, refused.text)
        assert server.client.delete(f"/api/jobs/{'0' * 32}", headers={"Origin": origin}).status_code == 403
    own = server.client.post("/api/jobs", json={"face": "a"}, headers={"Origin": server.url})
    assert own.status_code == 400  # through the check: refused for what it is, not for where it comes from


def test_a_server_on_every_address_answers_to_ip_addresses_only(tmp_path) -> None:
    """--host 0.0.0.0: reached by any of the machine's IP addresses (with the token), never by a foreign name."""
    from fastapi.testclient import TestClient

    app = create_app(JobQueue(tmp_path, models=None), token=TOKEN, host="0.0.0.0")  # type: ignore[arg-type]
    with TestClient(app, base_url="http://192.168.1.5:7860", headers=AUTH) as client:
        assert client.get("/api/jobs").status_code == 200
        assert client.get("/api/jobs", headers={"Host": "[fd00::5]:7860"}).status_code == 200
        refused = client.get("/api/jobs", headers={"Host": "attacker.example:7860"})
        assert refused.status_code == 403 and "any of this machine's IP addresses" in refused.json()["detail"]


def test_other_hosts_need_a_token(capsys, monkeypatch) -> None:
    monkeypatch.delenv("WAV2LIP_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


# ---------------------------------------------------------------- in-process pieces


def test_options_use_the_clis_names_and_syncoptions_checks() -> None:
    options, detector, precision = parse_options({"blend": "feather", "pads": "0,12,0,0", "static": "true",
                                                  "resize-factor": "2", "cache": "false", "precision": "fp32"})
    assert options == {"blend": "feather", "pads": (0, 12, 0, 0), "static": True, "resize_factor": 2,
                       "cache": False}
    assert (detector, precision) == (None, "fp32")
    for fields in ({"resize_factor": "0"}, {"fps": "-1"}, {"fps": "121"}, {"smooth": "wobbly"}, {"static": "maybe"}):
        with pytest.raises(Wav2LipError):
            parse_options(fields)


def test_newer_options_take_the_clis_names_and_defaults() -> None:
    """Silence, crossfade, speaker, face index / point, mask shape, colour match and enhance reach
    SyncOptions under the CLI's names; bad values are refused by SyncOptions.check."""
    options, _, _ = parse_options({"silence": "original", "crossfade": "5", "speaker": "largest", "face_index": "1",
                                   "face-at": "320, 180", "mask": "landmarks", "mask_top": "0.5",
                                   "mask_softness": "0.2", "colour_match": "false", "enhance": "none"})
    assert options == {"silence": "original", "crossfade": 5, "speaker": "largest", "face_index": 1,
                       "face_at": (320.0, 180.0), "mask": "landmarks", "mask_top": 0.5, "mask_softness": 0.2,
                       "colour_match": False, "enhance": "none"}
    assert parse_options({"colour_match": "true"})[0] == {"colour_match": True}
    for fields in ({"silence": "quiet"}, {"crossfade": "-1"}, {"speaker": "loudest"}, {"face_index": "-1"},
                   {"face_at": "1 2 3"}, {"mask": "square"}, {"mask_top": "0.98"}, {"mask_softness": "0"},
                   {"enhance": "sharpen"}, {"crossfade": "two"}):
        with pytest.raises(Wav2LipError):
            parse_options(fields)


def test_client_names_are_sanitized() -> None:
    assert sanitize_name("../../etc/passwd", "face") == "passwd"
    assert sanitize_name("C:\\Users\\me\\clip.mp4", "face") == "clip.mp4"
    assert sanitize_name("bad\x00\nname.wav", "audio") == "badname.wav"
    assert sanitize_name("", "audio") == "audio"


def make_job(queue: JobQueue, status: str, finished: float, size: int) -> Job:
    job_id, folder = queue.new_folder()
    job = Job(job_id, folder, {}, "retinaface", "fp32", "f.mp4", "a.wav", status=status, created=finished - 1,
              finished=finished if status != "queued" else None)
    (folder / "result.mp4").write_bytes(b"\0" * size)
    job.save()
    queue.jobs[job_id] = job
    return job


def test_retention_by_age_then_total_size(tmp_path) -> None:
    queue = JobQueue(tmp_path, models=None, keep_hours=1, keep_bytes=250_000)  # type: ignore[arg-type]
    now = time.time()
    old = make_job(queue, "done", now - 7200, 1000)
    waiting = make_job(queue, "queued", now - 7200, 100_000)
    oldest = make_job(queue, "failed", now - 600, 100_000)
    newer = make_job(queue, "done", now - 300, 100_000)
    newest = make_job(queue, "cancelled", now - 60, 10)
    removed = queue.sweep(now)
    assert removed == [old.id, oldest.id]  # too old; then the oldest finished until under the limit
    assert {newer.id, newest.id, waiting.id} == set(queue.jobs)
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted(queue.jobs)


def test_a_start_deletes_only_what_the_server_made(tmp_path) -> None:
    """`--data-dir ~/work` must not cost the user ~/work/live or ~/work/jobs/notes: at start the server
    removes its own leftovers (an upload cut short, a live session's avatar) and nothing else."""
    mine = {tmp_path / "live" / "notes.txt": b"my notes", tmp_path / "live" / "talk" / "take1.wav": b"RIFF",
            tmp_path / "jobs" / "notes" / "todo.txt": b"call mum", tmp_path / "jobs" / ("0" * 32) / "face": b"mine",
            tmp_path / "jobs" / "readme.txt": b"hello"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _, cut_short = JobQueue(tmp_path, models=None).new_folder()  # type: ignore[arg-type]
    (cut_short / "face").write_bytes(b"partial")
    avatar = make_folder(tmp_path / "live" / ("f" * 32))
    (avatar / "face").write_bytes(b"an avatar")
    create_app(JobQueue(tmp_path, models=None))  # type: ignore[arg-type]
    assert {path: path.read_bytes() for path in mine} == mine
    assert not cut_short.exists() and not avatar.exists()
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == ["notes.txt", "talk"]


def test_job_messages_name_the_clients_files(tmp_path) -> None:
    job = Job("a" * 32, tmp_path / ("a" * 32), {}, "retinaface", "fp32", "me.mp4", "talk.wav")
    message = f"{job.folder / 'face'}: no face found; {job.folder / 'audio'}: silent; {job.folder / '.result.part'}"
    assert job.plain(message) == "me.mp4: no face found; talk.wav: silent; .result.part"


def test_clients_naming_models_load_at_most_max_models(tmp_path, checkpoint, weights, monkeypatch) -> None:
    """Each (detector, precision) a client names is a full generator: the server keeps its own and the
    ones used last, MAX_MODELS in all, whatever clients ask for."""
    from wav2lip.checkpoints import save_checkpoint
    from wav2lip.models.s3fd import S3FD

    monkeypatch.setenv("WAV2LIP_HOME", str(tmp_path / "cache"))  # the store's RetinaFace: the real file
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / weights.name).write_bytes(weights.read_bytes())
    s3fd = tmp_path / "s3fd-random.pth"
    save_checkpoint(s3fd, S3FD())
    models = Models(checkpoint, detector="s3fd", detector_weights=s3fd, device="cpu", precision="fp32")
    asked = [("retinaface", "fp32"), ("retinaface", "bf16"), ("s3fd", "bf16"), ("retinaface", "fp32")]
    for key in asked:
        syncer = models.get(*key)
        assert syncer.precision == key[1] and models.loaded[-1] == key
        assert len(models.loaded) <= MAX_MODELS and ("s3fd", "fp32") in models.loaded, models.loaded
    assert models.get("s3fd", "fp32") is models.default  # the server's own is never dropped
    assert models.get("retinaface", "fp32") is syncer  # the one used last is kept


def test_run_reports_progress_and_cancels_with_nothing_written(checkpoint, weights, media, speech, work) -> None:
    syncer = LipSyncer(checkpoint, detector_weights=weights, device="cpu", precision="fp32")
    seen: list[tuple[int, int]] = []
    idle = threading.Event()
    out = work / "progress.mp4"
    syncer.run(media / "vr_face5.mp4", speech, out, on_progress=lambda d, t: seen.append((d, t)), cancel=idle,
               box=tuple(int(v) for v in BOX.split()))
    assert seen[0] == (0, 30) and seen[-1] == (30, 30) and [d for d, _ in seen] == list(range(31))
    assert probe(out).n_frames == 30 and not idle.is_set()  # the run never sets the caller's event

    cancel = threading.Event()
    stopped: list[float] = []

    def progress(done: int, total: int) -> None:
        if done == 5:
            cancel.set()
            stopped.append(time.perf_counter())

    target = work / "cancelled.mp4"
    with pytest.raises(Wav2LipError, match="cancelled"):
        syncer.run(media / "vr_face5.mp4", media / "mt_yongen.wav", target, on_progress=progress, cancel=cancel,
                   batch_size=4)
    assert stopped and time.perf_counter() - stopped[0] < 2.0  # the stages stop within 0.1 s
    assert not target.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".cancelled")]
