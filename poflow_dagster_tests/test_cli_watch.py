"""``poflow watch``, ``poflow uploads`` and ``poflow samples`` as users run them (subprocesses, real runs)."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from poflow_dagster_tests.conftest import REDIS_TEST_URL

POFLOW = [sys.executable, "-m", "poflow_dagster.cli"]


def _env(home: Path, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "REDIS_URL", "OPENAI_", "DAGSTER_HOME"))}
    return {**env, "POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": db_url, **extra}


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(POFLOW + args, capture_output=True, text=True, env=env, timeout=timeout)


def _here(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The command in this process with exactly ``env`` (click's runner): for the many quick calls of one test,
    which would otherwise pay an interpreter start (2-4 s under load) each; every test runs the real one too."""
    from click.testing import CliRunner

    from poflow_dagster.cli import main

    result = CliRunner().invoke(main, args, env={**{k: None for k in os.environ if k not in env}, **env})
    return subprocess.CompletedProcess(POFLOW + args, result.exit_code, result.stdout, result.stderr)


def _upload(path: Path, merchant: str, env: dict[str, str], *, run=_run) -> str:
    done = run(["upload", str(path), "--merchant", merchant], env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _watch_a_real_run(home: Path, db_url: str, samples: dict[str, Path], env: dict[str, str]) -> list[dict]:
    """Start ``poflow watch --format json`` first, then ``poflow run``; return the watch's events."""
    upload_id = _upload(samples["acme-po-1001.csv"], "acme", env)
    watcher = subprocess.Popen(POFLOW + ["watch", upload_id, "--format", "json", "--timeout", "240"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = watcher.stdout.readline()  # the watch is following the upload before its run starts
        assert json.loads(first)["status"] == "queued"
        ran = _run(["run", upload_id], env)
        assert ran.returncode == 0, ran.stderr
        rest, errors = watcher.communicate(timeout=240)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, errors
    events = [json.loads(first)] + [json.loads(line) for line in rest.splitlines()]
    assert all(e["upload_id"] == upload_id for e in events)
    last = events[-1]
    assert last["status"] == "completed" and last["percent"] == 100
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents)  # progress only goes forward

    # Watching a finished upload ends at once with its outcome, as a bar and a final line.
    bar = _run(["watch", upload_id], env)
    assert bar.returncode == 0 and f"{upload_id}: 100% completed" in bar.stdout, bar.stdout + bar.stderr
    return events


def test_watch_follows_a_real_run_to_100_percent_without_redis(home, db_url, samples):
    events = _watch_a_real_run(home, db_url, samples, _env(home, db_url))
    assert len(events) >= 2 and events[0]["percent"] == 0


def test_watch_follows_a_real_run_with_redis(home, db_url, samples):
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).ping()
    namespace = f"poflow-test-watch:{secrets.token_hex(4)}"
    env = _env(home, db_url, REDIS_URL=REDIS_TEST_URL, POFLOW_REDIS_NAMESPACE=namespace)
    events = _watch_a_real_run(home, db_url, samples, env)
    from_bus = [e for e in events if e.get("source") != "database"]
    assert from_bus, "no event came from the progress bus"
    seqs = [e["seq"] for e in from_bus]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # monotonic per upload
    assert any(e["stage"] == "shopify_sync" for e in from_bus)


def test_watch_exit_codes_timeout_needs_review_failed_and_unknown(home, db_url, db, samples):
    from poflow_dagster.store.workflow import mark_needs_review, record_run_failure

    env = _env(home, db_url)
    waiting = _upload(samples["acme-po-1001.csv"], "acme", env)
    timed_out = _run(["watch", waiting, "--timeout", "1", "--format", "json"], env)
    assert timed_out.returncode == 4 and timed_out.stderr.startswith("error: watch_timeout: ")
    assert json.loads(timed_out.stdout.splitlines()[-1])["status"] == "queued"

    review = _upload(samples["iberia-pedido-4004.csv"], "acme", env)
    mark_needs_review(db, review, "run-review", ["line 2: price missing"])
    assert _run(["watch", review], env).returncode == 3

    failed = _upload(samples["nordwind-bestellung-2002.tsv"], "acme", env)
    record_run_failure(db, failed, "run-failed", "ai_parsing", "unreadable file")
    done = _run(["watch", failed, "--format", "json"], env)
    assert done.returncode == 1
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["status"] == "failed" and "unreadable file" in last["message"]

    duplicate = _upload(samples["acme-po-1001.csv"], "acme", env)  # same bytes: nothing to run
    assert _run(["watch", duplicate], env).returncode == 0

    unknown = _run(["watch", "up-nope"], env)
    assert unknown.returncode == 2 and unknown.stderr == "error: unknown_upload: no upload with id 'up-nope'\n"


def test_uploads_lists_newest_first_with_filters(home, db_url, db, samples):
    from poflow_dagster.store.workflow import record_run_failure

    env = _env(home, db_url)
    first = _upload(samples["acme-po-1001.csv"], "acme", env)
    second = _upload(samples["lumiere-commande-3003.xlsx"], "lumiere", env, run=_here)
    duplicate = _upload(samples["acme-po-1001.csv"], "acme", env, run=_here)
    record_run_failure(db, second, "run-x", "ai_parsing", "bad sheet")

    def listed(*args: str) -> list[dict]:
        done = (_here if args else _run)(["uploads", "--format", "json", *args], env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    rows = listed()
    assert [r["upload_id"] for r in rows] == [duplicate, second, first]
    by_id = {r["upload_id"]: r for r in rows}
    assert by_id[first]["status"] == "received" and by_id[first]["file"] == "acme-po-1001.csv"
    assert by_id[duplicate]["status"] == "duplicate" and by_id[duplicate]["duplicate_of"] == first
    assert by_id[second]["status"] == "failed" and by_id[second]["error_message"] == "bad sheet"
    assert [r["upload_id"] for r in listed("--merchant", "acme")] == [duplicate, first]
    assert [r["upload_id"] for r in listed("--status", "failed")] == [second]
    assert [r["upload_id"] for r in listed("--status", "duplicate", "--merchant", "lumiere")] == []
    assert [r["upload_id"] for r in listed("--limit", "1")] == [duplicate]
    assert len(listed("--since", "1h")) == 3
    assert len(listed("--since", "2000-01-01")) == 3
    later = (dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)).isoformat()  # after all three were made
    assert listed("--since", later) == []

    table = _here(["uploads", "--merchant", "lumiere"], env)
    assert table.returncode == 0 and second in table.stdout and "bad sheet" in table.stdout
    assert first not in table.stdout
    bad = _here(["uploads", "--since", "yesterday"], env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid_since: ")


def test_samples_writes_files_that_upload_accepts(home, db_url, tmp_path):
    from poflow_dagster.samples import SAMPLE_EXPECTATIONS

    env = _env(home, db_url)
    written = _run(["samples", str(tmp_path / "samples")], env)
    assert written.returncode == 0, written.stderr
    paths = [Path(line) for line in written.stdout.splitlines()]
    assert {p.name for p in paths} == set(SAMPLE_EXPECTATIONS) and all(p.is_file() for p in paths)
    # The README's example, as written: `poflow samples ./samples && poflow upload samples/acme-po-1001.csv ...`
    readme = subprocess.run(POFLOW + ["samples", "./samples"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert readme.returncode == 0
    ids = [_upload(path, "acme", env, run=_run if n == 0 else _here) for n, path in enumerate(paths)]
    assert len(set(ids)) == len(paths) and all(i.startswith("up-") for i in ids)
    rows = json.loads(_run(["uploads", "--format", "json"], env).stdout)
    assert {r["status"] for r in rows} == {"received"}  # distinct files, none a duplicate
    not_a_dir = _here(["samples", str(paths[0])], env)
    assert not_a_dir.returncode == 2


def test_uploads_shows_names_and_messages_that_look_like_rich_markup_as_written(home, db_url, db, samples, tmp_path):
    from poflow_dagster.intake import store_file
    from poflow_dagster.store.uploads import register_upload
    from poflow_dagster.store.workflow import record_run_failure

    env = _env(home, db_url)
    content = samples["acme-po-1001.csv"].read_bytes()
    names = ["PO [/] final.csv", "[red]x[/red].csv", "PO [final].csv"]
    ids = []
    for n, name in enumerate(names):  # as the API stores a merchant's upload: the client's file name, as sent
        path = tmp_path / f"po-{n}.csv"
        path.write_bytes(content + b"\n" * (n + 1))  # distinct bytes, so none is a duplicate of another
        ids.append(register_upload(db, "acme", store_file(home, path, original_filename=name), source="api").id)
    record_run_failure(db, ids[0], "run-x", "ai_parsing", "bad [/] cell [bold]B7[/bold]")

    table = _run(["uploads"], env)
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    for upload_id, name in zip(ids, names, strict=True):
        assert upload_id in table.stdout and name in table.stdout, table.stdout
    assert "bad [/] cell [bold]B7[/bold]" in table.stdout


def test_watch_ctrl_c_exits_130_quietly(home, db_url, samples):
    upload_id = _upload(samples["acme-po-1001.csv"], "acme", _env(home, db_url))
    for fmt in ("json", "bar"):
        env = _env(home, db_url, TTY_COMPATIBLE="1")  # the bar draws on the pipe as on a terminal
        watcher = subprocess.Popen(POFLOW + ["watch", upload_id, "--format", fmt, "--timeout", "120"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert os.read(watcher.stdout.fileno(), 1)  # its first output: it is watching
            watcher.send_signal(signal.SIGINT)
            _, errors = watcher.communicate(timeout=60)
        finally:
            if watcher.poll() is None:
                watcher.kill()
        text = errors.decode()
        assert watcher.returncode == 130, (fmt, text)
        assert "Traceback" not in text and "Aborted" not in text, text


def test_watch_json_into_a_closed_pipe_exits_141_quietly(home, db_url, db, samples):
    from poflow_dagster.store.workflow import record_run_failure

    env = _env(home, db_url)
    upload_id = _upload(samples["acme-po-1001.csv"], "acme", env)
    watcher = subprocess.Popen(POFLOW + ["watch", upload_id, "--format", "json", "--timeout", "120"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert json.loads(watcher.stdout.readline())["status"] == "queued"
        watcher.stdout.close()  # `| head -1`: the reader is gone
        record_run_failure(db, upload_id, "run-x", "ai_parsing", "unreadable file")  # the next line has nowhere to go
        errors = watcher.stderr.read()
        watcher.wait(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 141, errors
    assert errors == "", errors



@pytest.mark.parametrize(("silent", "sig", "code", "fmt"), [
    ("database", signal.SIGINT, 130, "json"), ("database", signal.SIGTERM, 143, "bar"),
    ("bus", signal.SIGINT, 130, "json"), ("bus", signal.SIGTERM, 143, "json"),
])
def test_watch_stopped_during_start_up_exits_quietly(home, db_url, samples, silent, sig, code, fmt):
    """Stopped while it still connects: its database (PostgreSQL) or its bus (Redis) is a server that accepts
    and never answers, so start-up blocks where it would on a slow service. Same quiet exit code as later (130
    Ctrl-C, 143 SIGTERM), no "Aborted!", no traceback."""
    upload_id = _upload(samples["acme-po-1001.csv"], "acme", _env(home, db_url))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(60)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        env = (_env(home, f"postgresql+psycopg2://poflow@{address}/test") if silent == "database" else
               _env(home, db_url, REDIS_URL=f"redis://{address}/0",
                    POFLOW_REDIS_NAMESPACE=f"poflow-test-watch:{secrets.token_hex(4)}"))
        watcher = subprocess.Popen(POFLOW + ["watch", upload_id, "--format", fmt, "--timeout", "120"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(60)
                assert connection.recv(1), f"the watch connected to its {silent} but sent nothing"  # now it waits
                os.killpg(watcher.pid, sig)
                output, errors = watcher.communicate(timeout=60)
        finally:
            if watcher.poll() is None:
                os.killpg(watcher.pid, signal.SIGKILL)
                watcher.wait()
    assert watcher.returncode == code, errors.decode()
    assert errors.decode() == ""  # no "Aborted!", no traceback, no note
    if fmt == "json":
        assert output == b""  # it was still starting: not one state had been shown
