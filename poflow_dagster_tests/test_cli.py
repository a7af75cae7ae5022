"""The poflow command as users run it: one line on stdout, clear one-line errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

POFLOW = [sys.executable, "-m", "poflow_dagster.cli"]


def _run(
    args: list[str], env_home: Path, db_url: str, env_extra: dict | None = None, **kw
) -> subprocess.CompletedProcess:
    env = {**os.environ, "POFLOW_HOME": str(env_home), "POFLOW_DATABASE_URL": db_url, **(env_extra or {})}
    return subprocess.run(POFLOW + args, capture_output=True, text=True, env=env, timeout=120, **kw)


def test_upload_status_and_duplicate(home, db_url, samples):
    first = _run(["upload", str(samples["acme-po-1001.csv"]), "--merchant", "acme"], home, db_url)
    assert first.returncode == 0, first.stderr
    upload_id = first.stdout.strip()
    assert upload_id.startswith("up-") and "\n" not in upload_id
    second = _run(["upload", str(samples["acme-po-1001.csv"]), "--merchant", "acme"], home, db_url)
    assert second.returncode == 0 and f"same bytes as upload {upload_id}" in second.stderr
    status = _run(["status", upload_id, "--format", "json"], home, db_url)
    data = json.loads(status.stdout)
    assert data["upload_id"] == upload_id and data["upload_status"] == "received" and data["workflow"] is None
    dup = json.loads(_run(["status", second.stdout.strip(), "--format", "json"], home, db_url).stdout)
    assert dup["duplicate_of"] == upload_id and dup["upload_status"] == "duplicate"


def test_run_then_status_shows_stage_durations(home, db_url, samples):
    upload_id = _run(["upload", str(samples["lumiere-commande-3003.xlsx"]), "--merchant", "lum"], home, db_url).stdout.strip()
    ran = _run(["run", upload_id], home, db_url)
    assert ran.returncode == 0, ran.stderr
    assert "checks 2/2" in ran.stdout
    table = _run(["status", upload_id], home, db_url).stdout
    assert "workflow    completed  100%" in table
    for stage in ("ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"):
        assert stage in table


@pytest.mark.parametrize(
    "args, code",
    [
        (["status", "up-nope"], "unknown_upload"),
        (["upload", "/nonexistent/po.csv", "--merchant", "acme"], "file_not_found"),
        (["upload", "/etc/hostname", "--merchant", "../../root"], "invalid_merchant"),
        (["merchant", "set", "acme", "--markup", "lots"], "invalid_markup"),
    ],
)
def test_errors_are_one_line_with_a_stable_code(home, db_url, args, code):
    result = _run(args, home, db_url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {code}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_extract_json_contract_and_bad_document(home, db_url, samples, tmp_path):
    result = _run(["extract", str(samples["nordwind-bestellung-2002.tsv"]), "--format", "json"], home, db_url)
    data = json.loads(result.stdout)
    assert set(data) == {"po_number", "supplier_name", "order_date", "currency", "document_type",
                         "prices_include_tax", "subtotal", "discount", "charges", "tax", "shipping", "total", "lines",
                         "issues"}
    assert set(data["lines"][0]) == {"sku", "barcode", "description", "quantity", "unit_cost", "line_total", "unit",
                                     "discount", "image_urls"}
    assert isinstance(data["subtotal"], str) and all(isinstance(l["unit_cost"], str) for l in data["lines"])
    junk = tmp_path / "po.csv"
    junk.write_bytes(bytes(range(256)) * 20)
    bad = _run(["extract", str(junk)], home, db_url)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unsupported_format: ")
    assert bad.stderr.count("\n") == 1 and bad.stdout == ""


def test_merchant_settings(home, db_url):
    out = _run(["merchant", "set", "acme", "--markup", "37.5", "--no-sync", "--token-env", "POFLOW_SHOPIFY_TOKEN_ACME"],
               home, db_url)
    assert out.returncode == 0, out.stderr
    assert "markup 37.50%" in out.stdout and "shopify sync off" in out.stdout and "POFLOW_SHOPIFY_TOKEN_ACME" in out.stdout


def _history(db_url: str, now) -> None:
    """Six finished PO runs for two merchants in the last hours (synthetic, deterministic durations)."""
    import datetime as dt

    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.merchants import configure_merchant
    from poflow_dagster.store.schema import StageRun

    db = get_database(db_url)
    stages = {"queue_wait": 0.5, "ai_parsing": 1.5, "database_save": 0.2, "product_draft_creation": 0.1,
              "shopify_sync": 2.0, "status_update": 0.1, "checks": 0.4}
    with db.session() as session:
        for merchant in ("acme", "nord"):
            configure_merchant(session, merchant)
    with db.session() as session:
        for i in range(6):
            ended = now - dt.timedelta(hours=6 - i)
            merchant = "acme" if i % 2 else "nord"
            durations = {name: seconds * (1 + i / 10) for name, seconds in stages.items()}
            durations["end_to_end"] = sum(durations.values())
            for stage, seconds in durations.items():
                kind = {"queue_wait": "wait", "checks": "check", "end_to_end": "total"}.get(stage, "stage")
                session.add(StageRun(
                    run_id=f"run-{i}", upload_id=f"up-{i}", merchant_id=merchant, job="po_job", stage=stage,
                    kind=kind, run_status="success", outcome="success" if kind == "stage" else None,
                    started_at=ended - dt.timedelta(seconds=seconds), ended_at=ended, duration_s=seconds,
                    attempts=1, items=10 + i, source_format="csv", file_bytes=1000 + 100 * i, lines=10 + i,
                    skus=10 + i, first_run=True,
                ))


def test_report_text_and_json_contract(home, db_url):
    import datetime as dt

    _history(db_url, dt.datetime.now(dt.UTC))
    text = _run(["report"], home, db_url)
    assert text.returncode == 0, text.stderr
    for heading in ("End to end (first runs, from upload): 6 runs", "Stages", "Waits (", "Checks (", "Bottlenecks",
                    "Merchants", "(all merchants)", "ETA accuracy"):
        assert heading in text.stdout, heading
    for stage in ("ai_parsing", "product_draft_creation", "shopify_sync", "queue_wait"):
        assert stage in text.stdout

    data = json.loads(_run(["report", "--format", "json", "--since", "24h"], home, db_url).stdout)
    assert {"stages", "waits", "checks", "end_to_end", "bottlenecks", "merchants", "merchants_total",
            "eta"} <= set(data)
    stage_keys = {"stage", "runs", "p50_s", "p90_s", "p95_s", "share", "throughput_items_per_s", "failure_rate",
                  "retry_rate"}
    assert data["stages"] and all(set(row) >= stage_keys for row in data["stages"])
    stages = {row["stage"]: row for row in data["stages"]}
    assert stages["ai_parsing"]["runs"] == 6 and stages["ai_parsing"]["p50_s"] == pytest.approx(1.5 * 1.25, abs=0.01)
    assert {row["stage"] for row in data["waits"]} == {"queue_wait"}  # sensor/queue/launch waits only
    assert [row["stage"] for row in data["checks"]] == ["checks"]
    assert data["end_to_end"]["runs"] == 6
    assert data["bottlenecks"] and all(
        set(row) >= {"stage", "severity", "factor", "cause", "recommendation"} for row in data["bottlenecks"]
    )
    assert data["bottlenecks"][0]["stage"] == "shopify_sync"  # the largest share of every run
    assert set(data["eta"]) >= {"n", "within_15s", "within_15pct", "mae_s"}
    assert {row["merchant_id"] for row in data["merchants"]} == {"acme", "nord"}
    assert data["merchants_total"]["runs"] == 6 and data["merchants_total"]["success_rate"] == 1.0

    one = json.loads(_run(["report", "--format", "json", "--merchant", "acme"], home, db_url).stdout)
    assert one["end_to_end"]["runs"] == 3 and "nord" not in {row["merchant_id"] for row in one["merchants"]}
    recent = json.loads(_run(["report", "--format", "json", "--since", "150m"], home, db_url).stdout)
    assert recent["end_to_end"]["runs"] == 2  # the runs that ended 2 h and 1 h ago


@pytest.mark.parametrize(
    "args, code",
    [
        (["report", "--since", "yesterday"], "invalid_since"),
        (["report", "--since", "2999-01-01"], "invalid_since"),
        (["report", "--since", "999999w"], "invalid_since"),
        (["report", "--merchant", "nobody"], "unknown_merchant"),
    ],
)
def test_report_bad_input_is_one_line(home, db_url, args, code):
    result = _run(args, home, db_url)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {code}: ") and result.stderr.count("\n") == 1


def test_report_refresh_reads_the_runs_of_dagster_home(home, db_url, samples, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {"DAGSTER_HOME": str(dagster_home)}
    upload_id = _run(["upload", str(samples["acme-po-1001.csv"]), "--merchant", "acme"], home, db_url).stdout.strip()
    # Run it on DAGSTER_HOME's instance as a daemon would (`poflow run` refreshes the history itself).
    from poflow_dagster.definitions import defs
    from poflow_dagster.pipeline.local import local_instance, run_upload
    from poflow_dagster.store.db import get_database

    with local_instance(dagster_home) as instance:
        assert run_upload(defs, instance, get_database(db_url), upload_id, log_level="ERROR").success

    before = json.loads(_run(["report", "--format", "json"], home, db_url, env_extra=env).stdout)
    assert before["end_to_end"]["runs"] == 0  # nothing refreshed yet
    after = _run(["report", "--format", "json", "--refresh"], home, db_url, env_extra=env)
    assert after.returncode == 0, after.stderr
    assert "refreshed stage_runs: 1 new runs" in after.stderr  # the PO run (images are one of its steps)
    data = json.loads(after.stdout)
    assert data["end_to_end"]["runs"] == 1
    assert {row["stage"] for row in data["stages"]} >= {"ai_parsing", "shopify_sync", "status_update"}

    # Without DAGSTER_HOME the local default home (POFLOW_HOME/dagster) is read: created, and without this run.
    without = _run(["report", "--refresh"], home, db_url, env_extra={"DAGSTER_HOME": ""})
    assert without.returncode == 0 and "refreshed stage_runs: 0 new runs" in without.stderr, without.stderr
    assert (home / "dagster" / "dagster.yaml").is_file()


def test_upload_report_says_when_the_sensor_requested_the_run_first(capsys) -> None:  # type: ignore[no-untyped-def]
    from poflow_dagster.cli import _report_upload

    _report_upload("up-1", None, {"outcome": "already_requested"})
    out, err = capsys.readouterr()
    assert out == "up-1\n" and "already requested" in err and "upload_sensor" in err
