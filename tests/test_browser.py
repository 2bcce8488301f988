"""The integrator-weights explorer (notebook 08) in a real browser: JupyterLab on loopback, headless
Chromium driven through its ChromeDriver (Debian's `chromium` and `chromium-driver`; nothing
downloads a browser). The test makes a small X-Cross run (two tiny source models, X-Cross over them
with non-zero integrator weights, its factors on 12 made test users), opens 08 over it, runs every
cell, moves the explorer's example and layer controls, checks that the plots drawn change each time,
and saves a screenshot under outputs/screenshots/. Skipped where Chromium or its driver is absent;
`.ci/run` installs both."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xcross_lib.paths import NOTEBOOKS_DIR, REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = REPO_ROOT / "outputs" / "screenshots"

pytestmark = [pytest.mark.smoke,
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (.ci/run installs them)")]


def make_xcross_run(out: Path) -> Path:
    """outputs/xcross/<run>/ with factors.parquet and xcross.json, as notebook 03 writes them."""
    import torch

    from conftest import random_domain
    from xcross_lib.data.encoding import PromptEncoder
    from xcross_lib.experiments import factor_table
    from xcross_lib.models import Scorer, ScorerConfig, load_backbone
    from xcross_lib.models.xcross import XCross, XCrossConfig

    sequences, titles = random_domain(seed=3, n_users=12)
    streams = []
    for s in range(2):
        torch.manual_seed(100 + s)
        model = Scorer(load_backbone("tiny-bert", seed=0), ScorerConfig(encoding="separate", pooling="mean"))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k:
                    p.normal_(0, 0.3)
        streams.append(model.eval())
    xcross = XCross(load_backbone("tiny-bert", seed=0), streams, XCrossConfig(top_k_layers=2)).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking integrator: factors that differ by example and layer
        for k, p in xcross.named_parameters():
            if "integrator" in k and p.dim() == 2:
                p.normal_(0, 0.5)
    import pandas as pd

    frame = pd.DataFrame({"user": list(sequences), "history": [s[:-1] for s in sequences.values()],
                          "candidates": [s[-1:] + [i for i in range(40, 44)] for s in sequences.values()],
                          "target_index": 0})
    encoder = PromptEncoder(xcross.tokenizer, {i: str(t) for i, t in titles.items()}, 64, "separate")
    factors = factor_table(xcross, encoder, frame)
    run = out / "xcross" / "Garden-Tools+Sports-test-full-K2-0000000000"
    run.mkdir(parents=True)
    factors.to_parquet(run / "factors.parquet")
    (run / "xcross.json").write_text(json.dumps({"target": "Garden", "sources": ["Tools", "Sports"]}))
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on loopback over a folder holding a copy of notebook 08; its kernels see the run."""
    out = tmp_path / "outputs"
    make_xcross_run(out)
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOKS_DIR / "08_integrator_weights.ipynb", root / "08.ipynb")
    port, token = free_port(), "xcross-browser-test"
    env = {**os.environ, "XCROSS_OUTPUTS_DIR": str(out), "PYTHONPATH": str(REPO_ROOT),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.open_browser=False", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=open(tmp_path / "lab.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        raise RuntimeError("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
    yield f"http://127.0.0.1:{port}/lab/tree/08.ipynb?token={token}"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


# the notebook's panel is open and its kernel is up and idle
KERNEL_READY = """
const panel = window.jupyterapp && Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.sessionContext);
if (!panel) return false;
window.jupyterapp.shell.activateById(panel.id);
const ctx = panel.sessionContext;
return ctx.isReady && ctx.session && ctx.session.kernel && ctx.session.kernel.status === 'idle';
"""


def explorer_images(driver) -> list[str]:
    """The src of every image inside the explorer's output widget (the plots it draws)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.widget-vbox .widget-output img')).map(i => i.src);")


def wait_for(what, timeout=120, poll=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("the browser did not show it in time")


def test_the_explorer_redraws_when_its_controls_move(lab, browser):
    try:
        drive_the_explorer(lab, browser)
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "08_explorer_failed.png"))  # what the browser showed
        print("page state:", browser.execute_script(
            "const w = Array.from(window.jupyterapp.shell.widgets('main')).map(w => [w.id, !!w.sessionContext, "
            "w.sessionContext && w.sessionContext.isReady, w.sessionContext && w.sessionContext.session && "
            "w.sessionContext.session.kernel && w.sessionContext.session.kernel.status]);"
            "return [document.title, JSON.stringify(w), document.body.innerText.slice(0, 800)];"))
        raise


def drive_the_explorer(lab, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(lab)
    wait_for(lambda: browser.execute_script(KERNEL_READY))
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    first = wait_for(lambda: [s for s in explorer_images(browser) if s.startswith("data:image/png")], timeout=180)
    selects = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".widget-vbox .widget-dropdown select"))
    labels = [s.find_element(By.XPATH, "..").text for s in selects]
    example, layer = selects[0], selects[1]
    assert "example" in labels[0] and "layer" in labels[1], labels
    assert len(Select(example).options) == 12 and len(Select(layer).options) == 2

    Select(example).select_by_index(len(Select(example).options) - 1)  # another example: its line plot changes
    after_example = wait_for(lambda: (imgs := explorer_images(browser)) and imgs != first and imgs)
    Select(layer).select_by_index(1)  # another layer: the distribution over examples changes
    after_layer = wait_for(lambda: (imgs := explorer_images(browser)) and imgs != after_example and imgs)
    assert len({tuple(first), tuple(after_example), tuple(after_layer)}) == 3

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.find_element(By.CSS_SELECTOR, ".widget-vbox").location_once_scrolled_into_view
    assert browser.save_screenshot(str(SCREENSHOTS / "08_explorer.png"))
    assert (SCREENSHOTS / "08_explorer.png").stat().st_size > 10_000
