# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The shipped example workflow in ComfyUI's own web page: headless Chromium, driven by Selenium, opens the page of
the test server (`conftest.py`), loads the UI-format example and checks that the page knows its nodes and turns it
into the shipped API-format example (the two files describe one workflow).

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the test skips.
`DIT4SR_COMFYUI_SCREENSHOT=docs/comfyui.png` also writes the page's screenshot there, and a smaller copy as the
example's preview (`comfyui/example_workflows/dit4sr_upscale.jpg`): how those images are made.
"""

import json
import os
import shutil
import time
from pathlib import Path

import PIL.Image
import pytest

from ..utils import HEADLESS_CHROMIUM_FLAGS
from .server import REPOSITORY

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need Selenium: pip install selenium")

from selenium.webdriver.chrome.service import Service  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None or shutil.which("chromedriver") is None,
        reason="needs headless Chromium and its driver: apt-get install chromium chromium-driver",
    ),
]

EXAMPLES = REPOSITORY / "comfyui" / "example_workflows"
SAMPLE = REPOSITORY / "assets" / "sample_lr.png"
PREVIEW_WIDTH = 800
TIMEOUT_S = 120
CHROMIUM_FLAGS = (*HEADLESS_CHROMIUM_FLAGS, "--window-size=1400,900")


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, what: str):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        result = driver.execute_script(script)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"the page did not {what} within {TIMEOUT_S} s")


def test_the_example_workflow_loads_in_comfyuis_page(comfyui, browser, tmp_path):
    workflow = json.loads((EXAMPLES / "dit4sr_upscale.json").read_text())
    api = json.loads((EXAMPLES / "api" / "dit4sr_upscale.json").read_text())
    (input_name,) = [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "LoadImage"]
    comfyui.upload(PIL.Image.open(SAMPLE), input_name)
    # A first visit opens the template browser, and the minimap covers a corner: as a returning user has them.
    for setting, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
        assert comfyui.post(f"/settings/{setting}", value)[0] == 200

    browser.get(comfyui.url + "/")
    wait_for(browser, "return !!(window.app && window.app.graph)", "start ComfyUI's app")
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.app.loadGraphData(arguments[0], true, true, 'dit4sr_upscale').then(() => done(true));",
        workflow,
    )
    wait_for(
        browser,
        "const node = window.app.graph._nodes.find(n => n.type === 'LoadImage');"
        "return node && node.imgs && node.imgs.length > 0 && node.imgs[0].complete;",
        "show the input image",
    )

    types = browser.execute_script("return window.app.graph._nodes.map(n => n.type)")
    assert sorted(types) == ["DiT4SRLoader", "DiT4SRUpscale", "LoadImage", "SaveImage"]
    registered = browser.execute_script("return arguments[0].map(t => !!LiteGraph.registered_node_types[t])", types)
    assert all(registered)  # no "missing node" stand-ins: the page got our nodes from the server
    prompt = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];window.app.graphToPrompt().then(p => done(p.output));"
    )
    assert {key: (node["class_type"], node["inputs"]) for key, node in prompt.items()} == {
        key: (node["class_type"], node["inputs"]) for key, node in api.items()
    }

    screenshot = tmp_path / "comfyui.png"
    browser.save_screenshot(str(screenshot))
    assert PIL.Image.open(screenshot).size[0] >= 1200
    target = os.environ.get("DIT4SR_COMFYUI_SCREENSHOT")
    if target:
        shutil.copyfile(screenshot, target)
        page = PIL.Image.open(screenshot).convert("RGB")
        preview = page.resize((PREVIEW_WIDTH, round(page.height * PREVIEW_WIDTH / page.width)), PIL.Image.LANCZOS)
        preview.save(Path(EXAMPLES / "dit4sr_upscale.jpg"), quality=85)
