"""The web page of ``poflow serve`` in a real browser (Debian's headless Chromium through selenium).

The test starts ``poflow serve`` as a user would, enters a token on the page, uploads a sample PDF with the
page's form and runs that PO in this process (the API never runs Dagster jobs) on the same database and
Redis namespace; the page follows it through ``EventSource``. Everything asserted is read from the rendered
DOM: the progress bar reaches 100 %, stage messages and an ETA were shown. A screenshot is kept in the
test's tmp dir (``poflow-serve.png``).

The other tests drive the page's catch-up paths: a server that crashes and comes back while the upload ended
unannounced (reconcile when the stream reopens), an ``event: reset`` frame, and a failed upload beside one
that needs review (told apart on screen).
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


def _start_serve(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    """``poflow serve`` on ``port`` in its own process group, once it answers ``/healthz``."""
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "poflow_dagster.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()  # the child has its own copy
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"poflow serve exited: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            _stop_serve(process, signal.SIGKILL)
            raise AssertionError("poflow serve did not answer /healthz")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)


def _stop_serve(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Server:
    """A running ``poflow serve`` that a test can crash and start again on the same port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path, self.port = env, log_path, _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = _start_serve(env, self.port, log_path)

    def crash(self) -> None:
        """SIGKILL: every open connection drops at once, nothing is said to the clients."""
        _stop_serve(self.process, signal.SIGKILL)

    def restart(self) -> None:
        self.process = _start_serve(self.env, self.port, self.log_path)

    def stop(self) -> None:
        _stop_serve(self.process)


@pytest.fixture
def server(browser_env: dict[str, str], tmp_path: Path):
    """A :class:`Server` on a free port; stopped (its process group) after the test."""
    from poflow_dagster.store.db import close_database, get_database

    get_database(browser_env["POFLOW_DATABASE_URL"])  # migrated once, before the server starts
    running = Server(browser_env, tmp_path / "serve.log")
    try:
        yield running
    finally:
        running.stop()
        close_database(browser_env["POFLOW_DATABASE_URL"])


@pytest.fixture
def serve(server: Server) -> str:
    """``poflow serve``'s base URL."""
    return server.base


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


def _open_page(driver, base: str, merchant: str) -> None:
    """Open ``/`` with a fresh token of ``merchant``; return once the event stream is live."""
    from selenium.webdriver.common.by import By

    from poflow_dagster import config
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.tokens import issue_token

    token = issue_token(get_database(config.database_url()), merchant, label="browser test").token
    driver.get(base + "/")
    driver.find_element(By.ID, "token-input").send_keys(token)
    driver.find_element(By.ID, "token-save").click()
    _wait(lambda: driver.find_element(By.ID, "app").is_displayed(), 15, "the page to accept the token")
    _wait(lambda: driver.find_element(By.ID, "connection").text == "live", 15, "the event stream to open")


def _running_upload(sample: Path, merchant: str) -> str:
    """An upload of ``merchant`` whose run is in its parsing stage (workflow row ``processing``)."""
    from poflow_dagster import config
    from poflow_dagster.domain.stages import Stage
    from poflow_dagster.intake import store_file
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.uploads import register_upload
    from poflow_dagster.store.workflow import stage_started

    db = get_database(config.database_url())
    upload_id = register_upload(db, merchant, store_file(config.poflow_home(), sample), source="api").id
    stage_started(db, upload_id, "run-browser", Stage.AI_PARSING, 1)
    return upload_id


def _shown(driver, upload_id: str) -> tuple[str | None, str | None]:
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By

    try:
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-upload-id="{upload_id}"]')
        return row.get_attribute("data-status"), row.find_element(By.CLASS_NAME, "progress-bar").get_attribute(
            "data-percent")
    except NoSuchElementException:
        return None, None


def _live_at_40_percent(driver, upload_id: str) -> None:
    """Publish a progress event (40 %) until the page's row shows it: the page follows the stream. (The browser
    reports the stream open with the response headers, a moment before the server fixes its read position:
    an event published in that moment is not sent, so it is published again until one arrives.)"""
    from poflow_dagster import config
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.progress_bus import publish_upload_event
    from poflow_dagster.store.workflow import set_progress

    db = get_database(config.database_url())
    set_progress(db, upload_id, 40)
    deadline = time.monotonic() + 15
    while _shown(driver, upload_id) != ("processing", "40"):
        assert time.monotonic() < deadline, f"no live event reached the row: {_shown(driver, upload_id)}"
        assert publish_upload_event(db, upload_id, "progress", run_id="run-browser", stage="ai_parsing",
                                    message="Parsing page 2/5", percent=40) is not None
        time.sleep(0.5)
    assert driver.execute_script("return lastEventId"), "the row moved without a live event"


def _complete_silently(upload_id: str) -> None:
    """The run ends while no event reaches the page: the workflow row says completed, nothing is published."""
    from poflow_dagster import config
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.workflow import mark_completed

    mark_completed(get_database(config.database_url()), upload_id, "run-browser")


def test_page_catches_up_from_the_list_when_the_stream_reopens(server: Server, driver, samples):
    """The server goes away mid-run (SIGKILL), the run completes meanwhile and its end is never published; when
    the server is back the browser reconnects and the row shows completed, 100 %: only the page's reconcile
    (the uploads list re-read when the stream opens) can tell it."""
    upload_id = _running_upload(samples["acme-supplies-po-1001.pdf"], "shop-reconcile")
    _open_page(driver, server.base, "shop-reconcile")
    _live_at_40_percent(driver, upload_id)

    server.crash()
    _wait(lambda: driver.execute_script("return document.getElementById('connection').textContent") != "live",
          15, "the page to notice the stream dropped")
    _complete_silently(upload_id)
    time.sleep(1)  # the browser retries against the dead port meanwhile; the row must not move on its own
    assert _shown(driver, upload_id) == ("processing", "40")

    server.restart()
    _wait(lambda: _shown(driver, upload_id) == ("completed", "100"), 30, "the row to catch up from the list")
    from selenium.webdriver.common.by import By

    assert driver.find_element(By.ID, "connection").text == "live"
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-upload-id="{upload_id}"]')
    assert row.find_element(By.CLASS_NAME, "status").text == "completed"
    assert row.find_element(By.CLASS_NAME, "pct").text == "100 %"
    assert row.find_element(By.CLASS_NAME, "eta").text == "done"


def test_page_rereads_the_list_on_a_reset_frame(serve: str, driver, samples):
    """``event: reset`` (the server's kept history no longer reaches the page's position) makes the page re-read
    the uploads list. The frame is dispatched on the page's own EventSource as the server would deliver it."""
    upload_id = _running_upload(samples["acme-supplies-po-1001.pdf"], "shop-reset")
    _open_page(driver, serve, "shop-reset")
    _live_at_40_percent(driver, upload_id)
    _complete_silently(upload_id)
    time.sleep(1)  # nothing was published: the row stays where the stream left it
    assert _shown(driver, upload_id) == ("processing", "40")

    driver.execute_script(
        "source.dispatchEvent(new MessageEvent('reset', {data: JSON.stringify("
        "{reason: 'history_trimmed', oldest_id: '1-0'})}));")
    _wait(lambda: _shown(driver, upload_id) == ("completed", "100"), 15, "the row to catch up after the reset")


def test_page_tells_a_failure_from_a_review(serve: str, driver, samples):
    """A failed upload shows why in red (``.error``); one that needs review shows what to review in amber
    (``.review``), with its own status and bar colour; neither says "done"."""
    from selenium.webdriver.common.by import By

    from poflow_dagster import config
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.workflow import mark_needs_review, record_run_failure

    db = get_database(config.database_url())
    failed = _running_upload(samples["acme-supplies-po-1001.pdf"], "shop-outcomes")
    record_run_failure(db, failed, "run-browser", "ai_parsing", "unreadable file")
    review = _running_upload(samples["acme-po-1001.csv"], "shop-outcomes")
    mark_needs_review(db, review, "run-browser", ["line 2: price missing"])
    _open_page(driver, serve, "shop-outcomes")

    def cells(upload_id: str) -> dict[str, str]:
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-upload-id="{upload_id}"]')
        found = {name: row.find_element(By.CLASS_NAME, name) for name in ("status", "error", "review", "eta",
                                                                           "message", "progress-bar")}
        texts = {name: el.text for name, el in found.items()}
        texts["data-status"] = row.get_attribute("data-status")
        texts["error-colour"] = found["error"].value_of_css_property("color")
        texts["review-colour"] = found["review"].value_of_css_property("color")
        texts["bar-colour"] = found["progress-bar"].value_of_css_property("background-color")
        return texts

    shown_failed, shown_review = cells(failed), cells(review)
    assert shown_failed["data-status"] == "failed" and shown_failed["status"] == "failed"
    assert "unreadable file" in shown_failed["error"] and shown_failed["review"] == ""
    assert shown_failed["message"] == "Failed" and shown_failed["eta"] == ""
    assert shown_review["data-status"] == "needs_review" and shown_review["status"] == "needs review"
    assert shown_review["review"] == "To review: line 2: price missing" and shown_review["error"] == ""
    assert shown_review["message"] == "Waiting for a review" and shown_review["eta"] == ""
    assert shown_failed["error-colour"] != shown_review["review-colour"]
    assert shown_failed["bar-colour"] != shown_review["bar-colour"]
