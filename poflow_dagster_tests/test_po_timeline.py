"""The purchase_order materialization carries its run's whole timeline (waits and every stage so far)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.pipeline.run_history import run_timeline_so_far, timeline_metadata
from poflow_dagster.store.schema import StageMetric, Upload
from poflow_dagster.store.stage_metrics import stage_metrics_for_run
from poflow_dagster_tests.test_analytics_history import E, _event, _synthetic_run

PO_STAGES = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]


def test_purchase_order_materialization_has_the_run_timeline(home, db, shop, instance, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, result.error

    event = instance.get_latest_materialization_event(dg.AssetKey("purchase_order"))
    meta = event.asset_materialization.metadata
    table = meta["timeline"]
    assert isinstance(table, dg.TableMetadataValue)
    records = [record.data for record in table.records]
    assert [r["stage"] for r in records] == ["sensor_wait", "launch_wait", *PO_STAGES]
    assert [r["kind"] for r in records] == ["wait", "wait", *["stage"] * 5]
    assert [c.name for c in table.schema.columns] == ["stage", "kind", "started", "duration_s", "attempts", "outcome",
                                                      "items"]
    metrics = {m.stage: m for m in stage_metrics_for_run(db, result.run_id)}
    by_stage = {r["stage"]: r for r in records}
    for stage in PO_STAGES:  # each stage's own duration, not the last op's
        assert by_stage[stage]["duration_s"] == metrics[stage].duration_ms / 1000
        assert meta[f"{stage}_s"].value == round(metrics[stage].duration_ms / 1000, 3)
        assert (by_stage[stage]["outcome"], by_stage[stage]["attempts"]) == ("success", 1)
    assert by_stage["ai_parsing"]["items"] == 5
    assert by_stage["ai_parsing"]["started"] == metrics["ai_parsing"].started_at.isoformat(timespec="milliseconds")
    waits = by_stage["sensor_wait"]["duration_s"] + by_stage["launch_wait"]["duration_s"]
    assert meta["waits_s"].value == round(waits, 3) and meta["first_run"].value is True
    # The clock runs from the upload: at least the waits and all stages so far.
    so_far = meta["end_to_end_s_so_far"].value
    assert so_far >= round(waits + sum(m.duration_ms for m in metrics.values()) / 1000, 3) - 0.01
    with db.session() as session:
        received = session.scalar(sa.select(Upload.created_at).where(Upload.id == upload.id))
    materialized = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
    assert so_far <= (materialized - received).total_seconds() + 0.01

    rerun = run_upload(defs, instance, db, upload.id, with_images=False)
    assert rerun.success
    meta = instance.get_latest_materialization_event(dg.AssetKey("purchase_order")).asset_materialization.metadata
    assert meta["first_run"].value is False
    assert "sensor_wait" not in [r.data["stage"] for r in meta["timeline"].records]


def test_timeline_so_far_of_a_launched_run_shows_queue_and_launch(home, db, instance, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    with db.session() as session:
        received = session.scalar(sa.select(Upload.created_at).where(Upload.id == upload.id))
    t = lambda s: received + dt.timedelta(seconds=s)  # noqa: E731
    run_id = _synthetic_run(instance, "po_job", t(2), {"dagster/partition": upload.id})
    _event(instance, run_id, "po_job", E.RUN_ENQUEUED, t(2))
    _event(instance, run_id, "po_job", E.RUN_STARTING, t(7))
    _event(instance, run_id, "po_job", E.RUN_START, t(8))
    with db.session() as session:
        session.add(StageMetric(upload_id=upload.id, run_id=run_id, stage="ai_parsing", started_at=t(10),
                                ended_at=t(11.5), duration_ms=1500, attempts=2, outcome="success", items=5))
        session.add(StageMetric(upload_id=upload.id, run_id=run_id, stage="database_save", started_at=t(11.5),
                                attempts=1, outcome="running"))

    timeline = run_timeline_so_far(instance, db, run_id, upload.id)

    assert timeline.first_run and timeline.clock_started_at == received
    assert [(r.stage, r.duration_s) for r in timeline.rows] == [
        ("sensor_wait", 2.0), ("queue_wait", 5.0), ("launch_wait", 3.0), ("ai_parsing", 1.5), ("database_save", None)]
    meta = timeline_metadata(timeline)
    assert (meta["waits_s"], meta["ai_parsing_s"], "database_save_s" in meta) == (10.0, 1.5, False)
    assert [r.data["attempts"] for r in meta["timeline"].records] == [1, 1, 1, 2, 1]


def test_timeline_that_cannot_be_read_is_left_out_with_a_warning(instance, tmp_path, caplog):
    import logging

    from poflow_dagster.pipeline.run_history import po_timeline_metadata
    from poflow_dagster.store.db import Database

    unmigrated = Database(f"sqlite:///{tmp_path / 'empty.sqlite3'}")  # no tables: every read fails
    try:
        with caplog.at_level(logging.WARNING):
            meta = po_timeline_metadata(instance, unmigrated, "no-such-run", "no-such-upload", logging.getLogger("t"))
    finally:
        unmigrated.dispose()
    assert meta == {} and "run timeline unavailable (OperationalError" in caplog.text
