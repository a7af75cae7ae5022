"""Sensors evaluated directly (their requests asserted); the daemon test covers the real path."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.sensors import is_side_step, po_failure_sensor, upload_sensor
from poflow_dagster.resources import DatabaseResource, ShopifyResource, StorageResource
from poflow_dagster.store.workflow import status_report
from poflow_dagster_tests.faults import failing_writes


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

    # By state: every upload has its run requested now, so nothing is requested again.
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


def test_failure_sensor_marks_the_workflow_failed(home, db, instance, samples):
    """An unexpected error (here a real database error while saving drafts) fails the run; the stage
    records its metrics and leaves the workflow to po_failure_sensor, which marks it failed."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    with failing_writes(db, "product_drafts", "INSERT"):
        result = defs.resolve_job_def("po_job").execute_in_process(
            partition_key=upload.id, instance=instance, raise_on_error=False,
        )
    assert not result.success
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
    assert report.workflow.current_stage == "product_draft_creation"
    assert report.workflow.error_code == "stage_failed" and "injected fault" in report.workflow.error_message
    assert report.workflow.run_id == result.run_id
    assert [s.outcome for s in report.stages if s.stage == "product_draft_creation"] == ["failed"]


def test_failure_sensor_leaves_a_run_that_dagster_will_retry_to_its_retry(home, db, instance, samples):
    """A run worker killed mid-run is an infrastructure failure: Dagster tags the failed run
    ``dagster/will_retry=true`` and queues a re-execution. The workflow is not marked failed meanwhile."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    with failing_writes(db, "product_drafts", "INSERT"):
        result = defs.resolve_job_def("po_job").execute_in_process(
            partition_key=upload.id, instance=instance, raise_on_error=False,
        )
    instance.add_run_tags(result.run_id, {"dagster/will_retry": "true"})
    context = dg.build_run_status_sensor_context(
        sensor_name="po_failure_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"db": DatabaseResource(url=db.url)},
    ).for_run_failure()
    po_failure_sensor(context)
    assert status_report(db, upload.id).workflow.status == "processing"


def test_a_run_failing_in_its_image_step_never_fails_the_po(home, db, shop, instance, samples, monkeypatch):
    """The image op catches its own errors; should the step fail anyway (here its error handling breaks too),
    neither ``run_upload`` nor ``po_failure_sensor`` marks the already completed upload failed."""
    import poflow_dagster.pipeline.images as images
    from poflow_dagster.pipeline.local import run_upload

    def broken(*args, **kwargs):
        raise RuntimeError("images broke twice")

    monkeypatch.setattr(images, "drafts_for_upload", broken)
    monkeypatch.setattr(images, "_failed", broken)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id)
    assert not result.success and result.failed_step == "product_images.image_attachment"
    assert is_side_step(result.failed_step) and not is_side_step("purchase_order.status_update")

    context = dg.build_run_status_sensor_context(
        sensor_name="po_failure_sensor",
        dagster_event=[e for e in instance.all_logs(result.run_id)
                       if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE][0].dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"db": DatabaseResource(url=db.url)},
    ).for_run_failure()
    po_failure_sensor(context)
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.progress_percent, report.upload.status) == (
        "completed", 100, "completed")
    assert report.workflow.error_code is None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a database server only
def test_upload_committed_late_with_a_lower_seq_is_not_skipped(home, db, instance, samples):
    """The old ``max(seq)`` cursor's bug, on PostgreSQL: a transaction takes a lower ``seq`` but commits
    after a later upload was seen by a tick. Selection by state (no run requested yet) picks it up."""
    from poflow_dagster.store.schema import Upload

    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"])  # merchant exists; one tick sees it
    assert [r.partition_key for r in upload_sensor(_sensor_context(instance, db, home)).run_requests] == [first.id]
    with db.session() as slow:  # a slow writer: its row exists (seq taken) but is not committed yet
        late = Upload(id="up-late-commit", merchant_id="acme", original_filename="late.csv", sha256="f" * 64,
                      size_bytes=1, mime_type="text/csv", stored_path="/tmp/late.csv", source="api",
                      status="received")
        slow.add(late)
        slow.flush()
        later = upload_file(db, home, "acme", samples["nordwind-bestellung-2002.tsv"])  # commits first
        tick = upload_sensor(_sensor_context(instance, db, home))
        assert [r.partition_key for r in tick.run_requests] == [later.id]
        [add] = tick.dynamic_partitions_requests
        assert list(add.partition_keys) == [later.id]
    with db.session() as session:
        seqs = dict(session.execute(sa.select(Upload.id, Upload.seq)).all())
    assert seqs["up-late-commit"] < seqs[later.id]  # a max(seq) cursor would be past it now
    tick = upload_sensor(_sensor_context(instance, db, home))
    assert [(r.partition_key, r.run_key) for r in tick.run_requests] == [("up-late-commit", "up-late-commit")]
    [add] = tick.dynamic_partitions_requests
    assert list(add.partition_keys) == ["up-late-commit"]
    assert status_report(db, "up-late-commit").workflow.status == "pending"
    assert isinstance(upload_sensor(_sensor_context(instance, db, home)), dg.SkipReason)


def test_failure_of_an_older_run_never_overwrites_a_newer_success(home, db, shop, instance, samples, monkeypatch):
    """Run 1 fails (Shopify down), run 2 completes the PO; run 1's failure, handled late by
    ``po_failure_sensor`` (or any caller of record_run_failure), leaves the completed workflow alone."""
    from poflow_dagster.store.workflow import record_run_failure

    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    job = defs.resolve_job_def("po_job")
    monkeypatch.setenv("SHOPIFY_SHOP_URL", "http://127.0.0.1:9")
    failed = job.execute_in_process(partition_key=upload.id, instance=instance, raise_on_error=False,
                                    resources={"shopify": ShopifyResource(max_attempts=1)})
    monkeypatch.setenv("SHOPIFY_SHOP_URL", shop.url)
    done = job.execute_in_process(partition_key=upload.id, instance=instance)
    assert not failed.success and done.success
    assert status_report(db, upload.id).workflow.status == "completed"

    context = dg.build_run_status_sensor_context(
        sensor_name="po_failure_sensor", dagster_event=failed.get_run_failure_event(), dagster_instance=instance,
        dagster_run=instance.get_run_by_id(failed.run_id), resources={"db": DatabaseResource(url=db.url)},
    ).for_run_failure()
    po_failure_sensor(context)
    # Without Dagster's view (local callers), the start times decide: run 1 started before run 2's stages.
    started = dt.datetime.fromtimestamp(instance.get_run_record_by_id(failed.run_id).start_time, dt.UTC)
    assert not record_run_failure(db, upload.id, failed.run_id, "purchase_order.shopify_sync",
                                  "shopify_unreachable: down", run_started_at=started)
    report = status_report(db, upload.id)
    assert report.workflow.status == "completed" and report.upload.status == "completed"
    assert report.workflow.run_id == done.run_id
