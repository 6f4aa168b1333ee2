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

    python benchmarks/bench_live_web.py [--seconds 30] [--avatar FILE] [--width 1.0] [--precision auto]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bench_live import SHARED, make_avatar, speech
from wav2lip.audio import SAMPLE_RATE
from wav2lip.checkpoints import save_checkpoint
from wav2lip.models.deterministic import fill_deterministic
from wav2lip.models.generator import Wav2Lip
from wav2lip.serve import JobQueue, Models, create_app

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


def write_wav(path: Path, wav: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def row(name: str, values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{name:<58} {np.percentile(v, 50):8.1f} {np.percentile(v, 95):8.1f} {v.max():8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of speech (default: 30)")
    parser.add_argument("--avatar", type=Path, help="avatar file (default: bench_live.py's 720p loop)")
    parser.add_argument("--width", type=float, default=1.0, help="generator width (default: 1.0, full size)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        avatar = args.avatar.resolve() if args.avatar else make_avatar(tmp / "avatar.mp4")
        microphone = write_wav(tmp / "microphone.wav", speech(args.seconds + 3))
        checkpoint = tmp / "generator.pth"
        save_checkpoint(checkpoint, fill_deterministic(Wav2Lip(width=args.width)))
        server, thread, port = serve(tmp / "data", checkpoint, args.precision)
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
            load_before = os.getloadavg()
            WebDriverWait(browser, args.seconds * 3 + 60).until(
                lambda b: b.execute_script(STATS)["samplesSent"] >= args.seconds * b.execute_script(STATS)["rate"]
                or b.execute_script(STATS)["error"])
            browser.find_element(By.ID, "stop").click()
            WebDriverWait(browser, args.seconds * 20 + 120).until(  # a loaded machine falls far behind
                lambda b: b.execute_script(STATS)["end"] or b.execute_script(STATS)["error"])
            stats = browser.execute_script(STATS)
            load_after = os.getloadavg()
        finally:
            browser.quit()
            server.should_exit = True
            thread.join(30)
    if stats["error"]:
        sys.exit(f"the page failed: {stats['error']}")

    ready = stats["ready"]
    own = [t - a for t, a in zip(stats["total"], stats["added"])]
    print(f"Live page: {ready['width']}x{ready['height']} avatar at {ready['fps']:g} fps, generator width "
          f"{args.width:g}, {stats['samplesSent'] / stats['rate']:.1f} s of speech from Chromium's fake microphone "
          f"(sent at {stats['rate']} Hz in 20 ms chunks)")
    print(f"{'ms':<58} {'p50':>8} {'p95':>8} {'max':>8}")
    print(row("added by the web (round trip - LiveSyncer's own)", stats["added"]))
    print(row("round trip in the browser (chunk sent -> frame received)", stats["total"]))
    print(row("LiveSyncer's own, in the server (chunk arrived -> frame made)", own))
    print(row("  of the added: server, frame made -> handed to the socket", stats["serverSend"]))
    print(f"frames {stats['end']['frames']} (speech {stats['speech']}, timed {len(stats['added'])}), pictures "
          f"dropped for a slow client {stats['end']['dropped']}, playback restarts (a frame came too late for the "
          f"{120} ms buffer) {stats['resyncs']}")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
