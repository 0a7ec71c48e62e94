# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The demo page in a real browser: headless Chromium, driven by Selenium, against a demo server on 127.0.0.1 that
serves the tiny pipeline (offline, CPU).

Needs Debian's `chromium` and `chromium-driver` packages (`.ci/run` installs them); without them the tests are
skipped. `DIT4SR_DEMO_SCREENSHOT=docs/demo.png` also writes the page's screenshot there (how `docs/demo.png` is made).
"""

import base64
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import PIL.Image
import pytest
import torch

gr = pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need Selenium: pip install selenium")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from diffusers_dit4sr import StableDiffusion3SRPipeline  # noqa: E402
from diffusers_dit4sr.demo import build_demo  # noqa: E402
from diffusers_dit4sr.runtime import prepare_pipeline  # noqa: E402
from diffusers_dit4sr.tiny import make_tiny_pipeline  # noqa: E402

from .utils import HEADLESS_CHROMIUM_FLAGS  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,  # a browser and a server for every test
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs headless Chromium and its driver: apt-get install chromium chromium-driver",
    ),
    # Gradio 6's queue statistics use pandas options that pandas 3 deprecates.
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_lr.png"  # 128 x 85 px: x4 is 512 x 340 px
CHROMIUM_FLAGS = (*HEADLESS_CHROMIUM_FLAGS, "--window-size=1280,1000")
TIMEOUT_S = 180
"""Generous: a loaded 2-core machine runs the tiny pipeline in seconds, but Gradio's page takes a while to start."""


class PipelineCalls:
    """Counts the denoising steps of each pipeline call the server makes; `finished` is set when one returns."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.finished = threading.Event()

    def wrap(self, call):
        calls = self

        def spy(pipe, *args, callback_on_step_end=None, **kwargs):
            steps = 0

            def counting_callback(*callback_args):
                nonlocal steps
                steps += 1
                return callback_on_step_end(*callback_args)

            try:
                return call(pipe, *args, callback_on_step_end=counting_callback, **kwargs)
            finally:
                calls.steps.append(steps)
                calls.finished.set()

        return spy


@pytest.fixture(scope="module")
def pipeline_calls():
    calls = PipelineCalls()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StableDiffusion3SRPipeline, "__call__", calls.wrap(StableDiffusion3SRPipeline.__call__))
        yield calls


@pytest.fixture(scope="module")
def server(pipeline_calls, tmp_path_factory) -> str:
    """The demo on a free port of 127.0.0.1, in this process; its URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        pipe = make_tiny_pipeline()
        prepare_pipeline(pipe, torch.device("cpu"))  # as `dit4sr-demo` does
        demo = build_demo(pipe)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture
def downloads(tmp_path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, timeout: float = TIMEOUT_S):
    return WebDriverWait(driver, timeout).until(condition)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#lr-image input[type=file]"))


def upload_sample(driver) -> None:
    driver.find_element(By.CSS_SELECTOR, "#lr-image input[type=file]").send_keys(str(SAMPLE))
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#lr-image img"))


def set_steps(driver, steps: int) -> None:
    field = driver.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(steps), Keys.TAB)


def outside_requests(driver) -> list[str]:
    """URLs the page asked for from anywhere but the demo server (or data: and blob: URLs)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != "127.0.0.1":
                urls.append(url)
    return urls


def loaded_images(driver) -> list[tuple[int, int]] | None:
    """Natural sizes of the before/after images, once both have loaded."""
    images = driver.find_elements(By.CSS_SELECTOR, "#comparison img")
    sizes = [
        driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", i) for i in images
    ]
    return [tuple(size) for size in sizes] if len(sizes) == 2 and all(width for width, _ in sizes) else None


def save_screenshot(driver, path: Path) -> None:
    """The whole page as a small PNG (256 colors)."""
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    with PIL.Image.open(io.BytesIO(base64.b64decode(shot["data"]))) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)


def test_upscale_in_the_browser(server, browser, downloads, tmp_path):
    open_page(browser, server)

    browser.find_element(By.ID, "run").click()  # nothing uploaded yet: a message, not a stack trace
    wait_for(browser, lambda d: "Upload a photo first." in d.find_element(By.CSS_SELECTOR, ".toast-body").text)
    browser.find_element(By.CSS_SELECTOR, ".toast-body .toast-close").click()

    upload_sample(browser)
    set_steps(browser, 1)
    browser.find_element(By.CSS_SELECTOR, "#caption textarea").send_keys("a tabby cat")
    browser.find_element(By.ID, "run").click()
    assert wait_for(browser, loaded_images) == [(512, 340), (512, 340)]
    info = browser.find_element(By.ID, "result-info").text
    assert "512 × 340 px (×4 from 128 × 85 px), 1 step in" in info and "seed 0" in info

    browser.find_element(By.ID, "download").click()
    downloaded = downloads / "sample_lr_dit4sr_x4.png"
    wait_for(browser, lambda _: downloaded.is_file() and not list(downloads.glob("*.crdownload")), timeout=60)
    with PIL.Image.open(downloaded) as result:
        assert result.format == "PNG" and result.size == (512, 340)

    screenshot = tmp_path / "demo.png"
    save_screenshot(browser, screenshot)
    print(f"screenshot: {screenshot}")
    if os.environ.get("DIT4SR_DEMO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["DIT4SR_DEMO_SCREENSHOT"])
    assert outside_requests(browser) == []  # the page, its fonts and its scripts all come from the demo server


def test_a_refused_photo_is_a_message_naming_the_users_file(server, browser, tmp_path):
    wide = tmp_path / "panorama.png"
    PIL.Image.new("RGB", (2100, 4)).save(wide)  # 2100 px: over the page's 2048 px limit
    open_page(browser, server)
    browser.find_element(By.CSS_SELECTOR, "#lr-image input[type=file]").send_keys(str(wide))
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#lr-image img"))
    browser.find_element(By.ID, "run").click()
    toast = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".toast-body").text)
    assert "panorama.png is 2100 × 4 px; this demo accepts photos up to 2048 px a side" in toast
    assert os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio") not in toast and "/" not in toast


def start_a_long_run(browser, server, pipeline_calls) -> None:
    """Opens the page and starts a 100-step upscale of the sample; returns once it is denoising."""
    open_page(browser, server)
    upload_sample(browser)
    set_steps(browser, 100)
    pipeline_calls.finished.clear()
    browser.find_element(By.ID, "run").click()
    wait_for(browser, lambda d: "Denoising" in d.find_element(By.ID, "comparison").text)


def test_stop_interrupts_the_pipeline(server, browser, pipeline_calls):
    start_a_long_run(browser, server, pipeline_calls)
    start = time.monotonic()
    browser.find_element(By.ID, "stop").click()
    assert pipeline_calls.finished.wait(TIMEOUT_S), "the pipeline did not stop"
    assert pipeline_calls.steps[-1] < 100
    print(f"stopped after {pipeline_calls.steps[-1]} of 100 steps, {time.monotonic() - start:.1f} s after Stop")
    wait_for(browser, lambda d: "Denoising" not in d.find_element(By.ID, "comparison").text)


def test_closing_the_page_stops_the_run(server, browser, pipeline_calls):
    start_a_long_run(browser, server, pipeline_calls)
    browser.get("about:blank")
    assert pipeline_calls.finished.wait(TIMEOUT_S), "the pipeline did not stop"
    assert pipeline_calls.steps[-1] < 100
