"""One lip-sync job through `wav2lip serve` against the same job through `wav2lip infer`.

    python benchmarks/bench_serve.py [--seconds 10] [--lines 720] [--repeats 1] [--work DIR]

The face is hdtf_kh.mp4 (512x512, 25 fps) scaled to `--lines` rows and centred on a black 16:9 frame,
played back and forth to `--seconds`; the speech is mt_yongen.wav, repeated to the same length. The
generator is the full-size network with the deterministic fill (the cost does not depend on the
weights), the detector RetinaFace with its real weights.

Server: time from the start of the upload (POST /api/jobs) to the end of the download of the result,
polling the job every 0.1 s, against a server whose models were loaded before. CLI: wall time of
`python -m wav2lip infer` (process start, model loading, the run), and the run alone as it reports it.
Both run without the detection cache (`no_cache` / `--no-cache`), so each detects every face.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip.checkpoints import save_checkpoint
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.io.video import VideoWriter, open_source, probe


SHARED = Path(__file__).resolve().parents[2] / "shared"
MEDIA, WEIGHTS = SHARED / "media", SHARED / "models" / "retinaface_mobilenet0.25.pth"
FPS = 25


def make_inputs(work: Path, seconds: float, lines: int) -> tuple[Path, Path]:
    face, speech = work / f"face_{lines}p.mp4", work / f"speech_{seconds:g}s.wav"
    if not face.exists():
        width = (lines * 16 // 9) // 2 * 2
        with VideoWriter(face, FPS, width, lines) as writer:
            for frame in open_source(MEDIA / "hdtf_kh.mp4").frames(round(seconds * FPS), loop="pingpong"):
                canvas = np.zeros((lines, width, 3), np.uint8)
                left = (width - lines) // 2
                canvas[:, left:left + lines] = cv2.resize(frame, (lines, lines), interpolation=cv2.INTER_CUBIC)
                writer.write(canvas)
    if not speech.exists():
        with wave.open(str(MEDIA / "mt_yongen.wav")) as r:
            params, data = r.getparams(), np.frombuffer(r.readframes(r.getnframes()), np.int16)
        need = round(seconds * params.framerate) * params.nchannels
        with wave.open(str(speech), "wb") as w:
            w.setparams(params)
            w.writeframes(np.resize(data, need).tobytes())
    return face, speech


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def through_server(url: str, face: Path, speech: Path, out: Path) -> float:
    with httpx.Client(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        with open(face, "rb") as f, open(speech, "rb") as a:
            response = client.post("/api/jobs", files={"face": (face.name, f), "audio": (speech.name, a)},
                                   data={"no_cache": "true"})
        response.raise_for_status()
        job_id = response.json()["id"]
        while (job := client.get(f"/api/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(0.1)
        if job["status"] != "done":
            raise SystemExit(f"server job {job['status']}: {job['error']}")
        out.write_bytes(client.get(f"/api/jobs/{job_id}/result").content)
        elapsed = time.perf_counter() - start
        client.delete(f"/api/jobs/{job_id}")
    return elapsed


def through_cli(checkpoint: Path, face: Path, speech: Path, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wav2lip", "infer", "--checkpoint", str(checkpoint),
                           "--detector-weights", str(WEIGHTS), "--face", str(face), "--audio", str(speech),
                           "-o", str(out), "-q", "--no-cache"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    run = float(re.search(r"without a face, ([0-9.]+) s", done.stderr).group(1))
    return elapsed, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lines", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("bench_serve_work"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    face, speech = make_inputs(args.work, args.seconds, args.lines)
    checkpoint = args.work / "deterministic_full.pth"
    if not checkpoint.exists():
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip()))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "wav2lip", "serve", "--port", str(port),
                               "--data-dir", str(args.work / "data"), "--checkpoint", str(checkpoint),
                               "--detector-weights", str(WEIGHTS)], stderr=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        ready = time.perf_counter() - started
        rows = []
        for _ in range(args.repeats):
            # both without the detection cache, so neither reuses the other's boxes
            served = through_server(url, face, speech, args.work / "served.mp4")
            cli_wall, cli_run = through_cli(checkpoint, face, speech, args.work / "cli.mp4")
            rows.append((served, cli_wall, cli_run))
    finally:
        server.terminate()
        server.wait(60)
    frames = probe(args.work / "served.mp4").n_frames
    print(f"{args.seconds:g} s {args.lines}p clip, {frames} frames; server ready in {ready:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'server upload->result s':>24}{'CLI wall s':>12}{'CLI run s':>11}")
    for served, cli_wall, cli_run in rows:
        print(f"{served:>24.1f}{cli_wall:>12.1f}{cli_run:>11.1f}")


if __name__ == "__main__":
    main()
