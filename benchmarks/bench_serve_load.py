"""`wav2lip serve` under load and faults: one command, one table.

    python benchmarks/bench_serve_load.py [--clients 100] [--big 3] [--slow 3] [--max-queue 16] [--work DIR]

Four parts, each against a fresh `python -m wav2lip serve` process on 127.0.0.1 (the generator a narrow
network with deterministic weights, RetinaFace with its real weights: the server's work, not the
network's quality, is measured here):

- load: `--clients` clients upload a 5 s clip (vr_face5.mp4 + vr_audio1.wav) at the same moment, beside
  `--big` uploads of 100 MB (over the 64 MiB limit, without Content-Length) and `--slow` uploads that
  trickle 1 kB every 0.2 s (the server cuts them off: 408). Measured: the server's peak resident memory and the job folder's peak size
  (sampled every 50 ms), answers (201, 503 with and without Retry-After, 413), each accepted job's
  statuses until it ends (lost: not listed; twice: a status going backwards), and the time of
  /api/health and of one more upload while the slow ones trickle.
- kill -9: jobs queued and running and two uploads half sent, the server killed with SIGKILL and started
  again on the same folder: what became of each accepted job, whether a result is served for a job not
  done, and what is left in the folder that should not be (uploads of finished jobs, partial files,
  folders without a record).
- disk full: the data folder on a 12 MiB tmpfs (root) or, failing that, RLIMIT_FSIZE of 12 MiB on the
  server (writes past it fail with EFBIG instead of ENOSPC; the table says which). A lossless job whose
  result does not fit, an upload that does not fit, then a job that fits.
- security: hostile file names, oversized headers and forms, the token on a server bound to 0.0.0.0
  (missing, wrong, timing of a wrong first vs last character), CORS and other pages, other jobs' files
  by crafted paths, --allow-host.

The machine's cores may be shared with other work: times are upper bounds, not the server's own speed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # support.deterministic: the test weights
from support.deterministic import fill_deterministic  # noqa: E402
from support.server import FINISHED, ServerProcess  # noqa: E402

from wav2lip.checkpoints import save_checkpoint  # noqa: E402
from wav2lip.models.generator import Wav2Lip  # noqa: E402
from wav2lip.serve.jobs import CRASHED, JOB_FILE, MARK, Job  # noqa: E402

SHARED = ROOT.parent / "shared"
MEDIA, WEIGHTS = SHARED / "media", SHARED / "models" / "retinaface_mobilenet0.25.pth"
FACE, SPEECH = MEDIA / "vr_face5.mp4", MEDIA / "vr_audio1.wav"  # 4.9 s and 5.0 s
TOKEN = "bench-token-0123456789"
MULTIPART = "multipart/form-data; boundary=b0b0"
PART = b'--b0b0\r\nContent-Disposition: form-data; name="face"; filename="%s"\r\n\r\n'
ORDER = ("queued", "running", "done", "failed", "cancelled")


def tiny_generator(work: Path) -> Path:
    path = work / "narrow.pth"
    if not path.exists():
        save_checkpoint(path, fill_deterministic(Wav2Lip(width=0.125)))
    return path


class Server(ServerProcess):
    """The tests' server process (tests/support/server.py) with the bench's defaults, its memory and its
    folder sampled every 50 ms while it runs."""

    def __init__(self, data: Path, checkpoint: Path, *args: str, host: str = "127.0.0.1", token: str | None = None,
                 file_limit: int | None = None) -> None:
        super().__init__(data, checkpoint, WEIGHTS, *args, host=host, token=token, file_limit=file_limit, timeout=300)
        self.rss_peak = self.disk_peak = 0
        self.sampling = True
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while self.sampling and self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss_peak = max(self.rss_peak, int(line.split()[1]) * 1024)
            self.disk_peak = max(self.disk_peak, folder_bytes(self.data))
            time.sleep(0.05)

    def submit(self, face: Path = FACE, audio: Path = SPEECH, face_name: str | None = None, **fields) -> httpx.Response:
        return super().submit(face, audio, face_name, **fields)

    def accept(self, face: Path = FACE, audio: Path = SPEECH, **fields) -> str:
        """A job that must be accepted: its id."""
        response = self.submit(face, audio, **fields)
        if response.status_code != 201:
            raise SystemExit(f"{face.name} + {audio.name} {fields}: {response.status_code} {response.text[:200]}")
        return response.json()["id"]

    def wait(self, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 600) -> dict:
        return super().wait(job_id, until, timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.sampling = False
        super().stop(sig)


def print_checks(heading: str, rows: list[tuple[str, str]]) -> None:
    """Two columns, the names padded to the longest: what each benchmark part found."""
    width = max(len(name) for name, _ in rows)
    print(f"\n{heading:<{width}} | result\n{'-' * width}-|-------")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def leftovers(data: Path) -> list[str]:
    """What must not outlive a restart or a finished job: folders without a record, partial files, the
    uploads of a finished job."""
    found = []
    for folder in (data / "jobs").iterdir():
        names = {p.name for p in folder.iterdir()}
        if JOB_FILE not in names:
            found.append(f"{folder.name}: no record")
            continue
        job = Job.load(folder)
        extra = names - {MARK, JOB_FILE, job.result} - ({"face", "audio"} if job.status in ("queued", "running") else set())
        found += [f"{folder.name} ({job.status}): {name}" for name in sorted(extra)]
    return found


def raw(port: int, data: bytes, hold: float = 0.0) -> int | None:
    """Bytes sent over a plain socket: the status of the answer, or None if the connection was cut."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        answer = b""
        try:
            sock.sendall(data)
            time.sleep(hold)
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionError:
            return None
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None


def track(server: Server, ids: list[str], timeout: float) -> dict[str, list[str]]:
    """Each job's statuses as seen by polling the list, until all have ended or the time is up."""
    seen: dict[str, list[str]] = {i: [] for i in ids}
    deadline = time.monotonic() + timeout
    while any(not s or s[-1] not in FINISHED for s in seen.values()) and time.monotonic() < deadline:
        for job in server.client.get("/api/jobs").json():
            statuses = seen.get(job["id"])
            if statuses is not None and (not statuses or statuses[-1] != job["status"]):
                statuses.append(job["status"])
        time.sleep(0.2)
    return seen


# ---------------------------------------------------------------- the parts


def load(work: Path, checkpoint: Path, clients: int, big: int, slow: int, max_queue: int) -> list[tuple[str, str]]:
    server = Server(work / "load", checkpoint, "--max-queue", str(max_queue), "--max-upload-mb", "64")
    answers: list[httpx.Response] = []
    errors: list[str] = []
    go = threading.Barrier(clients, timeout=120)
    trickling = threading.Event()

    def client(k: int) -> None:
        try:
            with open(FACE, "rb") as f, open(SPEECH, "rb") as a, httpx.Client(timeout=600) as http:
                go.wait()
                answers.append(http.post(f"{server.url}/api/jobs", files={"face": (f"client{k}.mp4", f),
                                                                           "audio": ("speech.wav", a)}))
        except Exception as exc:  # a refused connection, a broken pipe: the defect this part looks for
            errors.append(f"{type(exc).__name__}: {exc}")

    def hundred_mb() -> bytes:
        yield PART % b"big.mp4"
        piece = os.urandom(2**20)
        for _ in range(100):
            yield piece

    big_answers: list[int | str] = []

    def big_upload() -> None:
        try:
            big_answers.append(httpx.post(f"{server.url}/api/jobs", content=hundred_mb(), timeout=600,
                                          headers={"Content-Type": MULTIPART}).status_code)
        except Exception as exc:
            big_answers.append(type(exc).__name__)

    def slow_body():
        yield PART % b"slow.mp4"
        trickling.set()
        for _ in range(300):
            time.sleep(0.2)
            yield b"x" * 1000
        yield b"\r\n--b0b0--\r\n"

    slow_answers: list[int | str] = []

    def slow_upload() -> None:
        try:
            slow_answers.append(httpx.post(f"{server.url}/api/jobs", content=slow_body(), timeout=600,
                                           headers={"Content-Type": MULTIPART}).status_code)
        except Exception as exc:
            slow_answers.append(type(exc).__name__)

    health_ms: list[float] = []
    bursting = threading.Event()

    def poll_health() -> None:  # the server's answer time while everything arrives
        with httpx.Client(base_url=server.url, timeout=120) as http:
            while bursting.is_set():
                t0 = time.monotonic()
                http.get("/api/health")
                health_ms.append((time.monotonic() - t0) * 1000)
                time.sleep(0.25)

    server.wait(server.accept(face_name="alone.mp4"))  # one job by itself first: the memory a job takes
    alone_peak = server.rss_peak
    slow_threads = [threading.Thread(target=slow_upload) for _ in range(slow)]
    for thread in slow_threads:
        thread.start()
    trickling.wait(60)
    time.sleep(1.0)
    began = time.monotonic()
    bursting.set()
    poller = threading.Thread(target=poll_health)
    poller.start()
    threads = [threading.Thread(target=big_upload) for _ in range(big)]  # first, so they stream beside the rest
    threads += [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    burst_s = time.monotonic() - began
    bursting.clear()
    poller.join()
    t0 = time.monotonic()
    one_more = server.submit(face_name="one-more.mp4")
    one_more_ms = (time.monotonic() - t0) * 1000
    trickle_alive = any(t.is_alive() for t in slow_threads)
    codes = Counter(r.status_code for r in answers)
    with_retry = sum(r.status_code == 503 and int(r.headers.get("Retry-After", "0")) > 0 for r in answers)
    accepted = [r.json()["id"] for r in answers if r.status_code == 201]
    if one_more.status_code == 201:
        accepted.append(one_more.json()["id"])
    seen = track(server, accepted, timeout=1800)
    for thread in slow_threads:
        thread.join()
    listed = {job["id"]: job for job in server.client.get("/api/jobs").json() if job["face"] != "alone.mp4"}
    done = sum(listed.get(i, {}).get("status") == "done" for i in accepted)
    failed = [listed[i] for i in accepted if listed.get(i, {}).get("status") == "failed"]
    lost = sum(i not in listed for i in accepted)
    twice = sum(s != sorted(s, key=ORDER.index) or s.count("running") > 1 for s in seen.values())
    unfinished = sum(not s or s[-1] not in FINISHED for s in seen.values())
    orphans = leftovers(server.data)
    server.stop()
    mib = 2**20
    return [
        ("load: clients at once", f"{clients} x 5 s clip, {big} x 100 MB (limit 64 MiB), {slow} trickling; "
                                  f"--max-queue {max_queue}"),
        ("load: answers", ", ".join(f"{code}: {n}" for code, n in sorted(codes.items())) +
         (f"; client errors: {len(errors)} ({errors[0][:60]})" if errors else "; client errors: 0")),
        ("load: 503 with Retry-After", f"{with_retry} of {codes.get(503, 0)}"),
        ("load: 100 MB uploads", ", ".join(map(str, big_answers)) + " (413: cut off at the limit)"),
        ("load: server memory peak (RSS)", f"{server.rss_peak / mib:.0f} MiB under load; {alone_peak / mib:.0f} MiB "
                                           "with one job alone before"),
        ("load: job folder peak", f"{server.disk_peak / mib:.1f} MiB (bound: --max-queue x 64 MiB uploads + jobs)"),
        ("load: accepted jobs", f"{len(accepted)}: done {done}, failed {len(failed)}, lost {lost}, twice {twice}, "
                                f"unfinished {unfinished}"),
        ("load: failed jobs' reasons", "; ".join(sorted({j['error'][:60] for j in failed})) or "-"),
        ("load: slow uploads block others?", f"all {clients + big} answered in {burst_s:.1f} s; /api/health "
                                             f"meanwhile p50 {statistics.median(health_ms):.0f} ms, max "
                                             f"{max(health_ms):.0f} ms; one more upload after: "
                                             f"{one_more.status_code} in {one_more_ms:.0f} ms; trickling still: "
                                             f"{trickle_alive}"),
        ("load: slow uploads' answers", ", ".join(map(str, slow_answers)) + " (408: cut off, slower than 32 KiB/s after 10 s)"),
        ("load: left in the job folder", f"{len(orphans)}" + (f" ({orphans[0]})" if orphans else "")),
    ]


def kill9(work: Path, checkpoint: Path) -> list[tuple[str, str]]:
    data = work / "kill9"
    first = Server(data, checkpoint, "--max-queue", "8")
    accepted = [first.accept(MEDIA / "vr_face2.mp4", MEDIA / "mt_yongen.wav", detect_every=1)]
    accepted += [first.accept() for _ in range(5)]
    first.wait(accepted[0], until=("running",))
    halves = []
    for _ in range(2):  # uploads in the middle of their body
        sock = socket.create_connection(("127.0.0.1", first.port))
        sock.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{first.port}\r\nContent-Length: 900000\r\n"
                     f"Content-Type: {MULTIPART}\r\n\r\n".encode() + PART % b"half.mp4" + b"x" * 5000)
        halves.append(sock)
    time.sleep(1.0)
    before = {job["id"]: job["status"] for job in first.client.get("/api/jobs").json()}
    first.stop(signal.SIGKILL)
    for sock in halves:
        sock.close()
    t0 = time.monotonic()
    second = Server(data, checkpoint, "--max-queue", "8")
    restart_s = time.monotonic() - t0
    after = {job_id: second.client.get(f"/api/jobs/{job_id}").json() for job_id in accepted}
    served_not_done = sum(second.client.get(f"/api/jobs/{i}/result").status_code == 200
                          for i, job in after.items() if job.get("status") != "done")
    seen = track(second, accepted, timeout=1800)
    final = {i: second.client.get(f"/api/jobs/{i}").json() for i in accepted}
    orphans = leftovers(data)
    second.stop()
    outcome = Counter(
        "finished" if before.get(i) == "done" else
        "resumed, done" if final[i]["status"] == "done" else
        "reported failed (crash)" if final[i].get("error") == CRASHED else
        f"{final[i]['status']}" for i in accepted)
    lost = sum(i not in final or "status" not in final[i] for i in accepted)
    return [
        ("kill -9: at the kill", ", ".join(f"{s}: {n}" for s, n in sorted(Counter(before.values()).items()))
         + ", 2 uploads half sent"),
        ("kill -9: after the restart", ", ".join(f"{s}: {n}" for s, n in sorted(outcome.items())) + f"; lost {lost}; "
         f"running twice {sum(s.count('running') > 1 for s in seen.values())}; restart {restart_s:.1f} s"),
        ("kill -9: results served for jobs not done", str(served_not_done)),
        ("kill -9: left in the job folder", f"{len(orphans)}" + (f" ({orphans[0]})" if orphans else "")),
    ]


@contextlib.contextmanager
def small_disk(where: Path, size_mib: int):
    """A tmpfs of `size_mib` MiB at `where` (needs root), yielding how the full disk is made."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(where)],
                             capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else "RLIMIT_FSIZE"
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)


def disk_full(work: Path, checkpoint: Path) -> list[tuple[str, str]]:
    size = 12
    with small_disk(work / "small-disk", size) as how:
        data = work / "small-disk" / "data"
        server = Server(data, checkpoint, file_limit=None if how == "tmpfs" else size * 2**20)
        job = server.submit(box="150 470 140 380", lossless="true")  # FFV1 RGB of 5 s at 524x524: ~17 MB
        failed = server.wait(job.json()["id"]) if job.status_code == 201 else {"status": job.status_code, "error": job.text}
        huge = work / "huge.mp4"
        huge.write_bytes(os.urandom((size + 8) * 2**20))
        refused = server.submit(huge, face_name="huge.mp4")
        fits = server.submit(box="150 470 140 380")
        fitted = server.wait(fits.json()["id"]) if fits.status_code == 201 else {"status": fits.status_code}
        alive = server.client.get("/api/health").status_code == 200
        orphans = leftovers(data)
        server.stop()
        huge.unlink()
    what = f"a {size} MiB tmpfs (ENOSPC)" if how == "tmpfs" else f"RLIMIT_FSIZE {size} MiB on the server (EFBIG)"
    return [
        ("disk full: how", what),
        ("disk full: a job whose result does not fit", f"{failed['status']}: {(failed.get('error') or '')[:90]}"),
        ("disk full: an upload that does not fit", f"{refused.status_code} {refused.json().get('detail', '')[:60]!r}, "
                                                   f"Retry-After {refused.headers.get('Retry-After')}"),
        ("disk full: then a job that fits", f"{fitted['status']}; /api/health {'ok' if alive else 'FAILED'}; "
                                            f"left in the folder {len(orphans)}"),
    ]


def security(work: Path, checkpoint: Path) -> list[tuple[str, str]]:
    server = Server(work / "security", checkpoint, "--allow-host", "lips.example", host="0.0.0.0", token=TOKEN)
    url, port, checks = server.url, server.port, []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((f"security: {name}", ("pass" if ok else "FAIL") + (f" ({detail})" if detail else "")))

    names = ["../../../../tmp/evil.mp4", "..", "/etc/passwd", "C:\\Windows\\win.ini", "a\x00b.mp4",
             "\u202eevil\u202d.mp4", "x" * 1000]
    shown, stored_ok = [], True
    for name in names:
        response = server.submit(face_name=name, box="150 470 140 380")
        job = response.json()
        shown.append(job.get("face", response.status_code))
        folder = server.data / "jobs" / job.get("id", "-")
        stored_ok &= response.status_code == 201 and (folder / "face").is_file()
        server.wait(job["id"])
    check("path traversal / odd upload names", stored_ok and not list(work.rglob("evil.mp4"))
          and all("/" not in str(s) and "\\" not in str(s) and len(str(s)) <= 120 for s in shown),
          f"stored as 'face', shown as {shown[0]!r}, {shown[1]!r}, {shown[3]!r}")
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    status = raw(port, f"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}X-Junk: {'y' * 200_000}\r\n"
                 "Connection: close\r\n\r\n".encode())
    check("200 kB header", status in (None, 400, 431) and server.client.get("/api/health").status_code == 200,
          f"{status or 'connection cut'}, server up")
    fields = server.submit(**{f"f{i}": 1 for i in range(100)})
    long_field = server.submit(blend="x" * 5000)
    body = PART % (b"n" * 300_000) + b"data\r\n--b0b0--\r\n"
    long_name = raw(port, f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: {MULTIPART}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    check("oversized forms", fields.status_code == 400 and long_field.status_code == 400 and long_name in (400, 413),
          f"100 fields {fields.status_code}, 5 kB field {long_field.status_code}, 300 kB part header {long_name}")
    wrong = [httpx.get(f"{url}/api/jobs", headers=h).status_code for h in
             ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {TOKEN[:-1]}"})]
    check("missing / wrong token (bound to 0.0.0.0)", wrong == [401] * 3, str(wrong))

    def median_ms(token: str) -> float:
        times = []
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as http:
            for _ in range(150):
                t0 = time.perf_counter()
                http.get(f"{url}/api/jobs")
                times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    first, last = median_ms("X" + TOKEN[1:]), median_ms(TOKEN[:-1] + "X")
    check("token compared in constant time", abs(first - last) < 0.2,
          f"hmac.compare_digest; median 401 {first:.2f} ms (first char wrong) vs {last:.2f} ms (last char wrong)")
    preflight = server.client.options("/api/jobs", headers={"Origin": "http://localhost:3000",
                                                          "Access-Control-Request-Method": "POST"})
    other_page = [server.client.get("/api/jobs", headers={"Origin": o}).status_code
                  for o in ("http://localhost:3000", f"http://127.0.0.1:{port + 1}", "http://evil.example", "null")]
    check("CORS: no page of another origin", "access-control-allow-origin" not in preflight.headers
          and other_page == [403] * 4, f"no Access-Control-Allow-Origin; other pages {other_page}")
    done = server.accept(box="150 470 140 380")
    failing = server.accept(box="0 10000 0 10")
    server.wait(done), server.wait(failing)
    crafted = [server.client.get(p).status_code for p in (
        f"/api/jobs/{failing}/result", f"/api/jobs/{done}%2F..%2F{failing}/result", f"/api/jobs/{done}/../{failing}/result",
        f"/api/jobs/{done}/face", f"/api/jobs/{done}/job.json", "/api/jobs/..%2F..%2Fetc%2Fpasswd/result")]
    check("no job's files through another id", all(c in (404, 405, 409) for c in crafted), str(crafted))
    proxied = [server.client.get("/api/jobs", headers=h).status_code for h in (
        {"Host": "lips.example", "Origin": "https://lips.example"}, {"Host": "evil.example"},
        {"Host": "lips.example", "Origin": "https://evil.example"})]
    check("--allow-host lips.example", proxied == [200, 403, 403], str(proxied))
    server.stop()
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--big", type=int, default=3, help="100 MB uploads beside the clients")
    parser.add_argument("--slow", type=int, default=3, help="trickling uploads beside the clients")
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--parts", default="load,kill9,disk,security")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_serve_load-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = tiny_generator(work)
    rows: list[tuple[str, str]] = []
    parts = args.parts.split(",")
    if "load" in parts:
        rows += load(work, checkpoint, args.clients, args.big, args.slow, args.max_queue)
    if "kill9" in parts:
        rows += kill9(work, checkpoint)
    if "disk" in parts:
        rows += disk_full(work, checkpoint)
    if "security" in parts:
        rows += security(work, checkpoint)
    print_checks("check", rows)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
