"""Sensors evaluated directly (their requests asserted); the daemon test covers the real path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.sensors import image_attachment_sensor, po_failure_sensor, upload_sensor
from poflow_dagster.resources import DatabaseResource, ShopifyResource, StorageResource
from poflow_dagster.store.workflow import status_report


def _sensor_context(instance, db, home: Path, cursor: str | None = None):
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"db": DatabaseResource(url=db.url), "storage": StorageResource(home=str(home))},
    )


def test_upload_sensor_one_partition_and_run_per_new_upload(home, db, instance, samples):
    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    second = upload_file(db, home, "acme", samples["nordwind-bestellung-2002.tsv"])
    duplicate = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    assert duplicate.duplicate_of == first.id

    result = upload_sensor(_sensor_context(instance, db, home))

    keys = [first.id, second.id]
    assert [r.partition_key for r in result.run_requests] == keys
    assert [r.run_key for r in result.run_requests] == keys
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == "po_uploads" and list(add.partition_keys) == keys
    assert status_report(db, first.id).workflow.status == "pending"
    assert status_report(db, duplicate.id).workflow is None  # a duplicate gets no run

    # Cursor-based: nothing new, nothing requested.
    again = upload_sensor(_sensor_context(instance, db, home, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason)

    # A file dropped into the inbox becomes an upload on the next tick, and is moved, not lost.
    box = home / "inbox" / "acme"
    box.mkdir(parents=True)
    dropped = box / "lumiere.xlsx"
    dropped.write_bytes(samples["lumiere-commande-3003.xlsx"].read_bytes())
    past = time.time() - 5
    os.utime(dropped, (past, past))
    third = upload_sensor(_sensor_context(instance, db, home, cursor=result.cursor))
    [request] = third.run_requests
    assert status_report(db, request.partition_key).upload.original_filename == "lumiere.xlsx"
    assert not dropped.exists() and (box / ".processed" / "lumiere.xlsx").exists()


def test_failure_sensor_marks_the_workflow_failed(home, db, instance, samples, monkeypatch):
    monkeypatch.setenv("SHOPIFY_SHOP_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "t")
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    result = defs.resolve_job_def("po_job").execute_in_process(
        partition_key=upload.id, instance=instance, raise_on_error=False,
        resources={"shopify": ShopifyResource(max_attempts=1)},
    )
    assert not result.success
    assert result.retry_attempts_for_node("purchase_order.shopify_sync") == 3  # the op's retry policy ran
    assert status_report(db, upload.id).workflow.status == "processing"  # the op left it to the sensor

    run = instance.get_run_by_id(result.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="po_failure_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=run,
        resources={"db": DatabaseResource(url=db.url)},
    ).for_run_failure()
    po_failure_sensor(context)

    report = status_report(db, upload.id)
    assert report.workflow.status == "failed" and report.upload.status == "failed"
    assert report.workflow.current_stage == "shopify_sync"
    assert report.workflow.error_code == "shopify_unreachable"
    assert [s.outcome for s in report.stages if s.stage == "shopify_sync"] == ["failed"]
    assert [s.attempts for s in report.stages if s.stage == "shopify_sync"] == [4]


def test_image_sensor_requests_the_image_run_after_success(home, db, shop, instance, samples):
    from poflow_dagster.pipeline.local import run_upload

    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    done = run_upload(defs, instance, db, upload.id, with_images=False)
    run = instance.get_run_by_id(done.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="image_attachment_sensor",
        dagster_event=[e for e in instance.all_logs(run.run_id) if e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS][0].dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    )
    request = image_attachment_sensor(context)
    assert request.partition_key == upload.id and request.run_key == f"images:{run.run_id}"
