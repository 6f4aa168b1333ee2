"""Latency the Live page adds to LiveSyncer: a real headless Chromium (Selenium) on /live of a real
`wav2lip serve` app (uvicorn on 127.0.0.1, in this process), its microphone a fake device playing real
speech, the 720p avatar and full-size generator (deterministic weights) of bench_live.py by default.

For each frame that carries speech, the page measures its round trip: from handing the audio chunk
holding the frame's first sample to the socket (`WebSocket.send`) to receiving the frame's message. The
server stamps, on its own clock, when that chunk arrived and when LiveSyncer yielded the frame; the
difference is LiveSyncer's own latency (bench_live.py's), and round trip - LiveSyncer's = the latency the
web transport adds (the page's capture-to-send path, upload, queueing to LiveSyncer's reader, JPEG,
download, the browser's message handling). Chromium and the server share this machine's CPUs, as they
would on one desktop. Prints p50/p95/max of each and the load average.

With `--client python` a Python WebSocket client (websocket-client) sends the speech in real time
instead, and receives and acknowledges the frames without decoding or playing them: the server's and the
socket's share, without the browser's.

    python benchmarks/bench_live_web.py [--seconds 30] [--client browser|python] [--avatar FILE] [--width 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bench_live import SHARED, make_avatar, speech
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.deterministic: test weights
from wav2lip.io.audio import SAMPLE_RATE
from wav2lip.checkpoints import save_checkpoint
from support.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.serve import JobQueue, Models, create_app
from wav2lip.io.audio import write_wav


FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream")
STATS = "return window.liveStats && JSON.parse(JSON.stringify(window.liveStats));"


def serve(data: Path, checkpoint: Path, precision: str) -> tuple[uvicorn.Server, threading.Thread, int]:
    queue = JobQueue(data, Models(checkpoint, detector_weights=SHARED / "models" / "retinaface_mobilenet0.25.pth",
                                  device="cpu", precision=precision))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(queue), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, port


def row(name: str, values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{name:<62} {np.percentile(v, 50):8.1f} {np.percentile(v, 95):8.1f} {v.max():8.1f}"


def browser_client(args: argparse.Namespace, port: int, avatar: Path, tmp: Path) -> dict:
    """The Live page in headless Chromium, its fake microphone playing the speech; the page's own figures."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    microphone = write_wav(tmp / "microphone.wav", speech(args.seconds + 3))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--use-file-for-fake-audio-capture={microphone}%noloop",
                 f"--user-data-dir={tmp / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        browser.get(f"http://127.0.0.1:{port}/live")
        browser.find_element(By.ID, "avatar").send_keys(str(avatar))
        browser.find_element(By.ID, "mic").click()
        WebDriverWait(browser, 600).until(lambda b: (b.execute_script(STATS) or {}).get("ready")
                                          or (b.execute_script(STATS) or {}).get("error"))
        WebDriverWait(browser, args.seconds * 3 + 60).until(
            lambda b: b.execute_script(STATS)["samplesSent"] >= args.seconds * b.execute_script(STATS)["rate"]
            or b.execute_script(STATS)["error"])
        browser.find_element(By.ID, "stop").click()
        WebDriverWait(browser, args.seconds * 20 + 120).until(  # a loaded machine falls far behind
            lambda b: b.execute_script(STATS)["end"] or b.execute_script(STATS)["error"])
        return browser.execute_script(STATS)
    finally:
        browser.quit()


def python_client(args: argparse.Namespace, port: int, avatar: Path) -> dict:
    """The same protocol from Python (websocket-client): the speech sent in real time in 20 ms chunks from
    one thread, frames received and acknowledged on this one; no JPEG decoding, no playback."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/live", timeout=600)
    data = avatar.read_bytes()
    ws.send(json.dumps({"type": "start", "avatar": {"name": avatar.name, "size": len(data)}, "format": "f32le",
                        "sample_rate": SAMPLE_RATE}))
    for at in range(0, len(data), 2**20):
        ws.send_binary(data[at:at + 2**20])
    ready = json.loads(ws.recv())
    if ready["type"] != "ready":
        sys.exit(f"the server refused: {ready}")
    wav = speech(args.seconds)
    chunk = round(0.02 * SAMPLE_RATE)
    sent_at: list[float] = []

    def send() -> None:
        start = time.perf_counter()
        for i in range(0, wav.size, chunk):
            piece = wav[i:i + chunk]
            time.sleep(max(0.0, start + (i + piece.size) / SAMPLE_RATE - time.perf_counter()))
            sent_at.append(time.perf_counter())
            ws.send_binary(piece.astype("<f4").tobytes())
        ws.send(json.dumps({"type": "end"}))

    sender = threading.Thread(target=send)
    sender.start()
    stats = {"ready": ready, "rate": SAMPLE_RATE, "samplesSent": wav.size, "added": [], "total": [],
             "serverSend": [], "speech": 0, "resyncs": "n/a", "end": None, "error": ""}
    while stats["end"] is None and not stats["error"]:
        message = ws.recv()
        received = time.perf_counter()
        if isinstance(message, str):
            control = json.loads(message)
            stats["end" if control["type"] == "end" else "error"] = control
            continue
        length = int.from_bytes(message[:4], "little")
        h = json.loads(message[4:4 + length])
        ws.send(json.dumps({"type": "ack", "index": h["index"]}))
        stats["speech"] += h["sample"] is not None
        if h["chunk"] is not None:
            total = (received - sent_at[h["chunk"]]) * 1000
            stats["total"].append(total)
            stats["added"].append(total - (h["made"] - h["received"]) * 1000)
            stats["serverSend"].append((h["sent"] - h["made"]) * 1000)
    sender.join()
    ws.close()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of speech (default: 30)")
    parser.add_argument("--avatar", type=Path, help="avatar file (default: bench_live.py's 720p loop)")
    parser.add_argument("--width", type=float, default=1.0, help="generator width (default: 1.0, full size)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--client", choices=("browser", "python"), default="browser",
                        help="headless Chromium on the page (default), or a Python WebSocket client")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        avatar = args.avatar.resolve() if args.avatar else make_avatar(tmp / "avatar.mp4")
        checkpoint = tmp / "generator.pth"
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip(width=args.width)))
        server, thread, port = serve(tmp / "data", checkpoint, args.precision)
        load_before = os.getloadavg()
        try:
            if args.client == "browser":
                stats = browser_client(args, port, avatar, tmp)
            else:
                stats = python_client(args, port, avatar)
        finally:
            server.should_exit = True
            thread.join(30)
        load_after = os.getloadavg()
    if stats["error"]:
        sys.exit(f"the stream failed: {stats['error']}")

    ready = stats["ready"]
    own = [t - a for t, a in zip(stats["total"], stats["added"])]
    source = "Chromium's fake microphone" if args.client == "browser" else "a Python client"
    print(f"Live page: {ready['width']}x{ready['height']} avatar at {ready['fps']:g} fps, generator width "
          f"{args.width:g}, {stats['samplesSent'] / stats['rate']:.1f} s of speech from {source} "
          f"(sent at {stats['rate']} Hz in 20 ms chunks)")
    print(f"{'ms':<62} {'p50':>8} {'p95':>8} {'max':>8}")
    print(row("added by the web (round trip - LiveSyncer's own)", stats["added"]))
    print(row("round trip at the client (chunk sent -> frame received)", stats["total"]))
    print(row("LiveSyncer's own, in the server (chunk arrived -> frame made)", own))
    print(row("  of the added: in the server, frame made -> handed to the socket", stats["serverSend"]))
    print(f"frames {stats['end']['frames']} (speech {stats['speech']}, timed {len(stats['added'])}), frames "
          f"without their picture for a slow client {stats['end']['dropped']}, playback restarts (a frame too "
          f"late for the page's 120 ms buffer) {stats['resyncs']}")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
