"""The page of `wav2lip serve` in a real headless Chromium (Selenium): pick the files, start, watch the
result play; a bad file shows the server's one-line message; a reload finds the job again."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="wav2lip[serve] is not installed")
pytest.importorskip("httpx", reason="httpx is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from conftest import cut_wav, deterministic_generator
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support.server import ServerProcess


# The network is closed and no state may leak between runs: no background traffic, a fresh profile.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--autoplay-policy=no-user-gesture-required", "--window-size=1000,1400")
WAIT_S = 240


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Chromium and chromedriver are not installed (.ci/run installs Debian's chromium and "
                    "chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def browser(work):
    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={work / 'profile'}")
    from selenium.webdriver.chrome.service import Service

    browser = webdriver.Chrome(options=options, service=Service(driver))
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def server(work, models_dir):
    checkpoint = deterministic_generator(work / "small.pth", width=0.125)
    srv = ServerProcess(work / "data", checkpoint, models_dir / "retinaface_mobilenet0.25.pth")
    yield srv
    srv.stop()


def pick(browser, face: Path, audio: Path) -> None:
    browser.find_element(By.ID, "face").send_keys(str(face))
    browser.find_element(By.ID, "audio").send_keys(str(audio))


def test_page_uploads_and_plays_the_result(browser, server, media, work) -> None:
    speech = cut_wav(media / "vr_audio1.wav", work / "speech.wav", 1.2)
    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda b: "retinaface" in b.find_element(By.ID, "server").text)
    pick(browser, media / "vr_face5.mp4", speech)
    previews = browser.find_elements(By.CSS_SELECTOR, "#face-preview video, #audio-preview audio")
    assert len(previews) == 2  # both inputs previewed before starting
    browser.find_element(By.ID, "start").click()
    playing = ("const v = document.getElementById('result');"
               "return !!v.currentSrc && v.readyState >= 2 && v.currentTime > 0 && !v.error && v.videoWidth > 0;")
    WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(playing))
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    duration, width = browser.execute_script(
        "const v = document.getElementById('result'); return [v.duration, v.videoWidth];")
    assert abs(duration - 1.2) <= 0.1 and width == 524  # the picture plays, not only the sound
    assert browser.find_element(By.ID, "download").get_attribute("href")
    jobs = browser.find_elements(By.CSS_SELECTOR, "#jobs li .status")
    assert [j.text for j in jobs] == ["done"]

    # a reload finds the job again and shows its result
    browser.refresh()
    WebDriverWait(browser, 60).until(lambda b: b.execute_script(
        "const v = document.getElementById('result'); return !!v.currentSrc && v.readyState >= 1;"))


def test_page_shows_a_bad_file_in_plain_words(browser, server, media, work) -> None:
    noise = work / "holiday.mp4"
    noise.write_bytes(bytes(range(256)) * 64)
    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda b: "retinaface" in b.find_element(By.ID, "server").text)
    pick(browser, noise, media / "vr_audio1.wav")
    browser.find_element(By.ID, "start").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("holiday.mp4: not a readable video")


def test_page_deletes_a_past_job(browser, server, media) -> None:
    if not server.client.get("/api/jobs").json():
        server.wait(server.submit(media / "st_art0.png", media / "vr_audio1.wav").json()["id"])
    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#jobs li"))
    before = len(server.client.get("/api/jobs").json())
    item = browser.find_elements(By.CSS_SELECTOR, "#jobs li")[0]
    delete = [b for b in item.find_elements(By.TAG_NAME, "button") if b.text == "Delete"][0]
    delete.click()
    WebDriverWait(browser, 30).until(lambda b: len(server.client.get("/api/jobs").json()) == before - 1)


def test_docs_page_renders_the_api_offline(browser, server) -> None:
    browser.get(f"{server.url}/docs")
    WebDriverWait(browser, 60).until(lambda b: "POST /api/jobs" in b.find_element(By.ID, "api").text)
    text = browser.find_element(By.ID, "api").text
    for words in ("GET /api/jobs/{job_id}/result", "DELETE /api/jobs/{job_id}", "pads", "blend", "paste | feather"):
        assert words in text


def test_page_sends_the_mask_silence_and_face_options(browser, server, media, work) -> None:
    """The options a user sets on the page reach the job under the CLI's names; the ones left alone
    arrive as the CLI's defaults."""
    from selenium.webdriver.support.ui import Select

    from wav2lip.lipsync.options import SyncOptions

    speech = cut_wav(media / "vr_audio1.wav", work / "short.wav", 0.6)
    browser.get(server.url)
    WebDriverWait(browser, 60).until(lambda b: "retinaface" in b.find_element(By.ID, "server").text)
    browser.find_element(By.CSS_SELECTOR, "#options summary").click()
    Select(browser.find_element(By.NAME, "blend")).select_by_value("feather")
    Select(browser.find_element(By.NAME, "silence")).select_by_value("original")
    Select(browser.find_element(By.NAME, "mask")).select_by_value("landmarks")
    for name, text in (("crossfade", "5"), ("mask_top", "0.5"), ("face_index", "0")):
        field = browser.find_element(By.NAME, name)
        field.clear()
        field.send_keys(text)
    browser.find_element(By.NAME, "colour_match").click()
    before = {job["id"] for job in server.client.get("/api/jobs").json()}
    pick(browser, media / "st_art0.png", speech)
    browser.find_element(By.ID, "start").click()
    WebDriverWait(browser, 60).until(lambda b: {j["id"] for j in server.client.get("/api/jobs").json()} - before)
    job = [j for j in server.client.get("/api/jobs").json() if j["id"] not in before][0]
    assert server.wait(job["id"])["status"] == "done"
    options = job["options"]
    assert {k: options[k] for k in ("blend", "silence", "mask", "crossfade", "mask_top", "face_index",
                                    "colour_match")} == {"blend": "feather", "silence": "original", "mask": "landmarks",
                                                         "crossfade": 5, "mask_top": 0.5, "face_index": 0,
                                                         "colour_match": False}
    for name in ("speaker", "mask_softness", "enhance", "enhance_strength"):
        assert options[name] == getattr(SyncOptions, name), name
