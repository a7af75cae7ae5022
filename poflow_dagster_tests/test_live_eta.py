"""The live ETA of a running PO: defaults without history (and says so), the fitted model when there is one,
on the workflow row and every progress event while it runs, cleared when it ends."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
import redis
from sqlalchemy import select

from poflow_dagster.analytics.eta import fit_eta_model
from poflow_dagster.analytics.live_eta import MODEL_STATE, clear_model_cache, estimate_eta, po_features
from poflow_dagster.definitions import defs
from poflow_dagster.domain.stages import Stage
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.store.analytics_state import save_json
from poflow_dagster.store.eta import record_eta
from poflow_dagster.store.progress_bus import ProgressBus
from poflow_dagster.store.schema import WorkflowExecution
from poflow_dagster.store.workflow import mark_completed, mark_failed, stage_started, status_report

from poflow_dagster_tests.conftest import REDIS_TEST_URL as REDIS_URL  # POFLOW_TEST_REDIS_URL
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
PO_STAGES = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    clear_model_cache()
    yield
    clear_model_cache()


def _upload(db, home: Path, tmp_path: Path, name: str, size: int, merchant: str = "acme"):
    path = tmp_path / name
    header = b"sku,description,quantity,unit_cost\n"
    body = (f"{name}-" * (size // (len(name) + 1) + 1)).encode()[: max(0, size - len(header))]
    path.write_bytes(header + body)
    return upload_file(db, home, merchant, path)


def _history(runs: int = 30) -> pd.DataFrame:
    """Synthetic CSV runs: bigger files have more lines and SKUs; Shopify sync costs 0.1 s per SKU."""
    rows = []
    for i in range(runs):
        file_bytes = 2_000 + 1_500 * i
        lines = file_bytes / 100
        ended = NOW - dt.timedelta(hours=runs - i)
        stages = {
            "ai_parsing": 0.5 + 0.0001 * file_bytes,
            "database_save": 0.2 + 0.01 * lines,
            "product_draft_creation": 0.1 + 0.005 * lines,
            "shopify_sync": 0.5 + 0.1 * lines,
            "status_update": 0.1,
            "checks": 0.4,
        }
        stages["end_to_end"] = sum(stages.values())
        for stage, seconds in stages.items():
            rows.append({
                "run_id": f"run-{i}", "upload_id": f"up-{i}", "merchant_id": "acme", "job": "po_job",
                "stage": stage, "run_status": "success", "outcome": "success", "duration_s": seconds,
                "started_at": ended - dt.timedelta(seconds=seconds), "ended_at": ended, "file_bytes": file_bytes,
                "source_format": "csv", "lines": lines, "skus": lines, "first_run": True,
            })
    return pd.DataFrame(rows)


def test_defaults_without_history_and_says_so(db, home, tmp_path):
    upload = _upload(db, home, tmp_path, "po.csv", 5_000)
    estimate = estimate_eta(db, upload.id, "run-1", "ai_parsing", now=NOW)
    assert estimate.basis == "defaults: no history yet"
    assert estimate.seconds > 0
    assert estimate.at == NOW + dt.timedelta(seconds=estimate.seconds)
    features = po_features(db, upload.id, "run-1")
    assert (features.file_bytes, features.source_format) == (5_000, "csv")


def test_fitted_model_follows_size_and_progress_shortens_it(db, home, tmp_path):
    model = fit_eta_model(_history(), now=NOW)
    assert model.basis.startswith("eta_model fitted on 30 runs")
    save_json(db, MODEL_STATE, model.to_json())
    small = _upload(db, home, tmp_path, "small.csv", 2_000)
    large = _upload(db, home, tmp_path, "large.csv", 40_000)

    small_eta = estimate_eta(db, small.id, "r-small", "ai_parsing", now=NOW)
    large_eta = estimate_eta(db, large.id, "r-large", "ai_parsing", now=NOW)
    assert small_eta.basis == large_eta.basis == model.basis
    # 38 KB more of CSV is about 380 more lines at ~0.115 s each (save + drafts + sync): tens of seconds more.
    assert large_eta.seconds > small_eta.seconds + 20

    at_start = estimate_eta(db, large.id, "r-large", "shopify_sync", now=NOW)
    half_done = estimate_eta(db, large.id, "r-large", "shopify_sync", fraction_done=0.5, elapsed_in_stage_s=5, now=NOW)
    long_in = estimate_eta(db, large.id, "r-large", "shopify_sync", elapsed_in_stage_s=20, now=NOW)
    assert half_done.seconds < at_start.seconds and long_in.seconds < at_start.seconds
    assert estimate_eta(db, large.id, "r-large", "status_update", now=NOW).seconds < at_start.seconds


def test_model_is_cached_then_reread(db, home, tmp_path):
    upload = _upload(db, home, tmp_path, "po.csv", 5_000)
    assert estimate_eta(db, upload.id, "r", "ai_parsing", now=NOW).basis == "defaults: no history yet"
    save_json(db, MODEL_STATE, fit_eta_model(_history(), now=NOW).to_json())
    assert estimate_eta(db, upload.id, "r", "ai_parsing", now=NOW).basis == "defaults: no history yet"  # cached
    clear_model_cache()
    assert estimate_eta(db, upload.id, "r", "ai_parsing", now=NOW).basis.startswith("eta_model fitted on 30 runs")


def test_eta_is_kept_only_while_processing_and_cleared_at_the_end(db, home, tmp_path):
    upload = _upload(db, home, tmp_path, "po.csv", 5_000)
    estimate = estimate_eta(db, upload.id, "r1", "ai_parsing", now=NOW)
    assert record_eta(db, upload.id, estimate) is False  # no workflow yet
    stage_started(db, upload.id, "r1", Stage.AI_PARSING, 1)
    assert record_eta(db, upload.id, estimate) is True
    workflow = status_report(db, upload.id).workflow
    assert workflow.eta_seconds == pytest.approx(estimate.seconds) and workflow.eta_at == estimate.at
    assert workflow.eta_basis == "defaults: no history yet"
    mark_completed(db, upload.id, "r1")
    workflow = status_report(db, upload.id).workflow
    assert (workflow.eta_seconds, workflow.eta_at, workflow.eta_basis) == (None, None, None)
    assert record_eta(db, upload.id, estimate) is False  # a late estimate never brings it back

    stage_started(db, upload.id, "r2", Stage.AI_PARSING, 1)
    assert record_eta(db, upload.id, estimate) is True
    mark_failed(db, upload.id, run_id="r2", stage="ai_parsing", code="boom", message="it broke")
    assert status_report(db, upload.id).workflow.eta_seconds is None


def test_a_real_run_carries_the_eta_on_every_event_and_clears_it(home, db, shop, instance, samples, monkeypatch):
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, result.error

    events = [e for e in _stage_events(db, upload.id) if e["status"] != "completed"]
    assert [(e["stage"], e["status"]) for e in events if e["status"] == "stage_started"] == [
        (s, "stage_started") for s in PO_STAGES]
    running = events[:-1]  # the last one is status_update succeeded: the PO is done
    assert all(e["eta_seconds"] is not None and e["eta_at"] is not None for e in running), running
    for event in running:
        at = dt.datetime.fromisoformat(event["eta_at"])
        sent = dt.datetime.fromisoformat(event["at"])
        assert abs((at - sent).total_seconds() - event["eta_seconds"]) < 5
    starts = [e["eta_seconds"] for e in events if e["status"] == "stage_started"]
    assert starts[0] > starts[-1]  # less is left at status_update than at ai_parsing
    assert (events[-1]["stage"], events[-1]["status"], events[-1]["eta_seconds"]) == ("status_update", "stage_succeeded", None)
    with db.session() as session:
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload.id))
        assert workflow.status == "completed"
        assert (workflow.eta_seconds, workflow.eta_at, workflow.eta_basis) == (None, None, None)


def test_poflow_status_shows_the_eta_in_text_and_json(db, home, tmp_path):
    from poflow_dagster.status_view import render_status, status_json

    upload = _upload(db, home, tmp_path, "po.csv", 5_000)
    stage_started(db, upload.id, "r1", Stage.AI_PARSING, 1)
    estimate = estimate_eta(db, upload.id, "r1", "ai_parsing", now=NOW)
    record_eta(db, upload.id, estimate)
    report = status_report(db, upload.id)
    workflow = status_json(report)["workflow"]
    assert workflow["eta_seconds"] == pytest.approx(estimate.seconds)
    assert dt.datetime.fromisoformat(workflow["eta_at"]) == estimate.at
    assert workflow["eta_basis"] == "defaults: no history yet"
    text = render_status(report)
    assert f"ETA ~{estimate.seconds:.0f} s ({estimate.at:%H:%M:%S} UTC) · defaults: no history yet" in text
    mark_completed(db, upload.id, "r1")
    assert "ETA" not in render_status(status_report(db, upload.id))


def test_a_stage_that_ends_early_leaves_none_of_its_predicted_time(home, db, shop, instance, samples, monkeypatch):
    """A real run with a model that predicts far longer stages than the run takes: each stage ends early, and
    its "succeeded" event's ETA is just the later stages — what the next stage's "started" event says too."""
    import copy

    from poflow_dagster.analytics.eta import DEFAULT_MODEL

    model = copy.deepcopy(DEFAULT_MODEL)
    for stage in PO_STAGES:
        model.stages[stage].base_s = 20.0
        model.stages[stage].base_by_format = {}
    model.overhead_s, model.fitted_at, model.basis = 0.0, NOW.isoformat(), "test model: 20 s a stage"
    save_json(db, MODEL_STATE, model.to_json())
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, result.error

    events = [e for e in _stage_events(db, upload.id) if e["status"] in ("stage_started", "stage_succeeded")]
    pairs = [(a, b) for a, b in zip(events, events[1:], strict=False)
             if a["status"] == "stage_succeeded" and b["status"] == "stage_started"]
    assert [a["stage"] for a, _ in pairs] == PO_STAGES[:-1]
    for done, following in pairs:
        assert done["eta_seconds"] == pytest.approx(following["eta_seconds"], abs=0.5), (done, following)
    # After ai_parsing: four stages of 20 s (and their small per-line rates) and the checks; nothing of parsing.
    assert 20.0 * 4 < pairs[0][0]["eta_seconds"] < 20.0 * 4 + 5


def _stage_events(db, upload_id: str) -> list[dict]:
    """The upload's progress events (as JSON) from its merchant's Redis stream, oldest first; the stream is
    deleted afterwards."""
    bus = ProgressBus(REDIS_URL, db)
    try:
        events = [json.loads(e.model_dump_json()) for _, e in bus.read_merchant_events("acme", "0", block_ms=0,
                                                                                       count=10_000)]
        redis.Redis.from_url(REDIS_URL).delete(bus.stream_key("acme"))
    finally:
        bus.close()
    return [e for e in events if e["upload_id"] == upload_id and e["stage"] is not None]
