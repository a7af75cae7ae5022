"""The web page of ``poflow serve`` in a real browser (Debian's headless Chromium through selenium).

The test starts ``poflow serve`` as a user would, enters a token on the page, uploads a sample PDF with the
page's form and runs that PO in this process (the API never runs Dagster jobs) on the same database and
Redis namespace; the page follows it through ``EventSource``. Everything asserted is read from the rendered
DOM: the progress bar reaches 100 %, stage messages and an ETA were shown. A screenshot is kept in the
test's tmp dir (``poflow-serve.png``).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
import redis

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REDIS_URL = os.environ.get("POFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Installed in the page before the upload: records every text the ETA, message and status cells and every
#: percent the bar showed (a MutationObserver sees each change, however fast the run).
_RECORDER = """
window.__seen = {eta: [], message: [], percent: [], status: []};
const record = (cell, value) => { if (value) window.__seen[cell].push(value); };
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const el = m.target.nodeType === Node.TEXT_NODE ? m.target.parentElement : m.target;
    if (!el || !el.closest) continue;
    if (m.type === "attributes" && el.classList.contains("progress-bar")) record("percent", el.dataset.percent);
    for (const cell of ["eta", "message", "status"]) {
      if (el.classList.contains(cell)) record(cell, el.textContent);
    }
  }
}).observe(document.getElementById("uploads"),
           {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["data-percent"]});
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser_env(tmp_path: Path, shop, monkeypatch) -> dict[str, str]:
    """POFLOW_HOME, a SQLite app database, the local Redis under a namespace of its own, the emulator shop."""
    namespace = f"poflow-browser:{secrets.token_hex(6)}"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("POFLOW_HOME", str(home))
    monkeypatch.setenv("POFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'app.sqlite3'}")
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("POFLOW_REDIS_NAMESPACE", namespace)
    for name in ("OPENAI_API_KEY", "DAGSTER_HOME", "POFLOW_API_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    yield dict(os.environ)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def serve(browser_env: dict[str, str], tmp_path: Path):
    """``poflow serve`` on a free port in its own process group; yields its base URL."""
    from poflow_dagster.store.db import close_database, get_database

    get_database(browser_env["POFLOW_DATABASE_URL"])  # migrated once, before the server starts
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "poflow_dagster.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=browser_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"poflow serve exited: {(tmp_path / 'serve.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "poflow serve did not answer /healthz"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        close_database(browser_env["POFLOW_DATABASE_URL"])


@pytest.fixture
def driver():
    """Headless Chromium. Missing Chromium is a failure, not a skip: CI installs it (``.ci/run``)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed for the browser test: "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield browser
    finally:
        browser.quit()


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_page_shows_a_po_run_live_to_100_percent_with_eta(serve: str, driver, samples, tmp_path: Path):
    from selenium.webdriver.common.by import By

    from poflow_dagster import config
    from poflow_dagster.definitions import defs
    from poflow_dagster.pipeline.local import run_upload
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.tokens import issue_token

    db = get_database(config.database_url())
    token = issue_token(db, "shop-browser", label="browser test").token

    driver.get(serve + "/")
    driver.find_element(By.ID, "token-input").send_keys(token)
    driver.find_element(By.ID, "token-save").click()
    _wait(lambda: driver.find_element(By.ID, "app").is_displayed(), 15, "the page to accept the token")
    _wait(lambda: driver.find_element(By.ID, "connection").text == "live", 15, "the event stream to open")
    driver.execute_script(_RECORDER)

    sample = samples["acme-supplies-po-1001.pdf"]
    driver.find_element(By.ID, "file-input").send_keys(str(sample))
    driver.find_element(By.ID, "upload-button").click()
    upload_id = _wait(lambda: driver.find_element(By.ID, "upload-form").get_attribute("data-last-upload-id"),
                      30, "the upload to be accepted")
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-upload-id="{upload_id}"]')
    assert row.find_element(By.CLASS_NAME, "file").text == sample.name
    assert row.find_element(By.CLASS_NAME, "progress-bar").get_attribute("data-percent") == "0"

    with dg.instance_for_test() as instance:  # the run the upload sensor would start, in this process
        result = run_upload(defs, instance, db, upload_id, with_images=False, log_level="WARNING")
    assert result.success, result.error

    bar = row.find_element(By.CLASS_NAME, "progress-bar")
    _wait(lambda: bar.get_attribute("data-percent") == "100" and row.get_attribute("data-status") == "completed",
          30, "the bar to reach 100 % and the row to say completed")
    driver.save_screenshot(str(tmp_path / "poflow-serve.png"))
    assert (tmp_path / "poflow-serve.png").stat().st_size > 1000
    assert bar.value_of_css_property("width") == row.find_element(By.CLASS_NAME, "progress").value_of_css_property(
        "width")  # drawn full, not only labelled
    assert row.find_element(By.CLASS_NAME, "pct").text == "100 %"
    assert row.find_element(By.CLASS_NAME, "status").text == "completed"
    assert row.find_element(By.CLASS_NAME, "error").text == ""

    seen = driver.execute_script("return window.__seen")
    percents = [int(p) for p in seen["percent"]]
    assert percents[-1] == 100 and percents == sorted(percents), percents  # only ever forwards
    assert len(set(percents)) >= 4, percents  # it moved in steps while the PO ran, not 0 then 100
    assert any(text.startswith("ETA ~") for text in seen["eta"]), seen["eta"]
    assert any("remaining" in text for text in seen["message"]), seen["message"]
