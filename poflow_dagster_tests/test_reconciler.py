"""workflow_reconciler: no workflow stays pending/processing once its Dagster run has ended or vanished —
whatever happened to po_failure_sensor's tick (an error in its write, a database outage)."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import pytest
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.reconciler import reconcile_workflows, workflow_reconciler
from poflow_dagster.pipeline.sensors import po_failure_sensor, upload_sensor
from poflow_dagster.resources import DatabaseResource, StorageResource
from poflow_dagster.store.db import close_database, get_database
from poflow_dagster.store.schema import Upload
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.uploads import (
    claim_uploads_for_runs,
    clear_run_request,
    mark_run_requested,
    register_upload,
)
from poflow_dagster.store.workflow import stage_started, status_report
from poflow_dagster.store.workflow_repair import (
    LOST_AFTER,
    RUN_REQUEST_GRACE,
    OpenWorkflow,
    RunState,
    apply_repair,
    open_workflows,
    plan_repair,
)
from poflow_dagster.domain.stages import Stage
from poflow_dagster_tests.conftest import PG_ADMIN_URL
from poflow_dagster_tests.faults import CuttableProxy, failing_writes
from poflow_dagster_tests.test_duplicate_po import _stored


def _failed_run(db, instance, upload_id: str):
    """A real PO run that fails in product_draft_creation (a database error while saving drafts): the stage
    leaves the workflow ``processing`` for po_failure_sensor, exactly like any unexpected error."""
    instance.add_dynamic_partitions("po_uploads", [upload_id])
    with failing_writes(db, "product_drafts", "INSERT"):
        result = defs.resolve_job_def("po_job").execute_in_process(
            partition_key=upload_id, instance=instance, raise_on_error=False,
            resources={"db": DatabaseResource(url=db.url)},
        )
    assert not result.success
    assert status_report(db, upload_id).workflow.status == "processing"
    return result


def _failure_sensor(instance, result, url: str) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name="po_failure_sensor", dagster_event=result.get_run_failure_event(), dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id), resources={"db": DatabaseResource(url=url)},
    ).for_run_failure()
    po_failure_sensor(context)


def _reconciler_tick(instance, url: str, cursor: str | None = None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"db": DatabaseResource(url=url)})
    return workflow_reconciler(context), context.cursor


def _assert_failed_in_drafts(db, upload_id: str, run_id: str) -> None:
    report = status_report(db, upload_id)
    assert report.workflow.status == "failed" and report.upload.status == "failed"
    assert report.workflow.run_id == run_id
    assert report.workflow.current_stage == "product_draft_creation"
    assert report.workflow.error_code == "stage_failed" and "injected fault" in report.workflow.error_message


def test_failure_sensor_tick_error_is_repaired_by_the_reconciler(home, db, instance, samples):
    """(c) po_failure_sensor's own database write raises: its tick errors (Dagster moves its cursor past the
    run, never retrying it). The reconciler's next tick marks the workflow failed with the run's reason."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = _failed_run(db, instance, upload.id)
    with failing_writes(db, "workflow_executions", "UPDATE"):
        with pytest.raises(Exception, match="injected fault"):
            _failure_sensor(instance, result, db.url)
    assert status_report(db, upload.id).workflow.status == "processing"

    skip, cursor = _reconciler_tick(instance, db.url)
    assert "repaired 1" in skip.skip_message and cursor == "0"
    _assert_failed_in_drafts(db, upload.id, result.run_id)
    skip, _ = _reconciler_tick(instance, db.url)  # nothing unfinished is left to look at
    assert "examined 0" in skip.skip_message


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a database server only
def test_database_outage_fails_the_sensor_tick_then_the_reconciler_repairs(db_url, home, instance, samples):
    """(b) PostgreSQL unreachable — connections dropped and new ones refused by a proxy in front of the
    shared server — while the run's failure is handled: po_failure_sensor's tick and a reconciler tick
    error. Once it is reachable again, the reconciler's next tick repairs the workflow. The issue saw a
    45 s outage; this one lasts 3 s: the code path (refused connections, dead pooled ones) is the same."""
    proxy = CuttableProxy(("127.0.0.1", 5432))
    proxied = db_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    assert proxied != db_url and PG_ADMIN_URL in db_url
    try:
        db = get_database(proxied)
        upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
        result = _failed_run(db, instance, upload.id)

        proxy.cut()
        outage_started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError):
            _failure_sensor(instance, result, proxied)
        with pytest.raises(sa.exc.OperationalError):
            _reconciler_tick(instance, proxied)
        time.sleep(max(0.0, 3 - (time.monotonic() - outage_started)))
        proxy.restore()

        skip, _ = _reconciler_tick(instance, proxied)
        assert "repaired 1" in skip.skip_message
        _assert_failed_in_drafts(db, upload.id, result.run_id)
    finally:
        close_database(proxied)
        proxy.close()


def test_a_requested_run_that_was_never_created_is_requested_again(home, db, instance, samples):
    """upload_sensor marked the upload requested, but its tick died before Dagster created the run: after
    the grace period the reconciler forgets the request and the next sensor tick asks again."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    sensor_context = dg.build_sensor_context(
        instance=instance, resources={"db": DatabaseResource(url=db.url), "storage": StorageResource(home=str(home))}
    )
    assert [r.run_key for r in upload_sensor(sensor_context).run_requests] == [upload.id]  # ...and lost
    assert reconcile_workflows(instance, db)[0] == 0  # within the grace period: left alone
    later = utcnow() + RUN_REQUEST_GRACE
    assert reconcile_workflows(instance, db, now=later)[0] == 1
    again = upload_sensor(sensor_context)
    assert [r.run_key for r in again.run_requests] == [upload.id]
    assert list(again.dynamic_partitions_requests[0].partition_keys) == [upload.id]


def test_a_succeeded_run_whose_final_write_is_missing_is_completed(home, db, shop, instance, samples):
    """The run succeeded but the workflow still says processing (its last write was lost): the reconciler
    sets the state the ops leave — completed."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    done = defs.resolve_job_def("po_job").execute_in_process(partition_key=upload.id, instance=instance)
    stage_started(db, upload.id, done.run_id, Stage.STATUS_UPDATE, 2)  # back to processing, as if lost
    assert status_report(db, upload.id).workflow.status == "processing"
    assert reconcile_workflows(instance, db)[0] == 1
    report = status_report(db, upload.id)
    assert report.workflow.status == "completed" and report.upload.status == "completed"
    assert report.workflow.run_id == done.run_id


def _open(**changes) -> OpenWorkflow:
    now = utcnow()
    values = dict(id=1, upload_id="up-1", run_id=None, status="pending", upload_status="received",
                  run_requested_at=now, approved_at=None, started_at=None, updated_at=now)
    values.update(changes)
    return OpenWorkflow(**values)


def test_plan_repair_rules():
    now = utcnow()
    t = lambda seconds: now + dt.timedelta(seconds=seconds)  # noqa: E731
    failed = RunState("r1", "FAILURE", created_at=t(-100), started_at=t(-99), ended_at=t(-50))
    newer = RunState("r2", "STARTED", created_at=t(-40), started_at=t(-39))
    # Anything still queued or running: Dagster ends it first.
    assert plan_repair(_open(status="processing", run_id="r2"), [failed, newer], now) is None
    # The latest run ended: its outcome, whatever the workflow names.
    repair = plan_repair(_open(status="processing", run_id="r1", started_at=t(-98)), [failed], now)
    assert (repair.action, repair.run.run_id) == ("failed", "r1")
    canceled = RunState("r3", "CANCELED", created_at=t(-30))
    assert plan_repair(_open(status="pending"), [failed, canceled], now).action == "canceled"
    ok = RunState("r4", "SUCCESS", created_at=t(-20), started_at=t(-19), ended_at=t(-1))
    assert plan_repair(_open(status="processing", run_id="r4", started_at=t(-18)), [failed, ok], now).action == "succeeded"
    # Approved for review: the earlier (review) run does not count; the continuation is requested each tick.
    approved = _open(upload_status="approved", approved_at=t(-5), run_id="r4", started_at=t(-18))
    assert plan_repair(approved, [ok], now) is None
    assert plan_repair(approved, [ok], now + LOST_AFTER) is None  # e.g. the daemon was down: never "lost"
    continuation = RunState("r5", "FAILURE", created_at=t(-2))
    assert plan_repair(approved, [ok, continuation], now).run.run_id == "r5"
    # A run the workflow names but Dagster does not know: lost only after a long quiet time.
    unknown = _open(status="processing", run_id="elsewhere", started_at=t(-10), updated_at=t(-10))
    assert plan_repair(unknown, [failed], now) is None
    assert plan_repair(unknown, [failed], now + LOST_AFTER).action == "lost"
    # Requested, no run created: asked again after the grace period, not before.
    assert plan_repair(_open(run_requested_at=t(-1)), [], now) is None
    assert plan_repair(_open(run_requested_at=t(-1)), [], now + RUN_REQUEST_GRACE).action == "rerequest"


def test_reconciler_reads_a_bounded_batch_and_walks_on(db):
    ids = []
    for i in range(5):
        upload = register_upload(db, "m1", _stored(f"batch{i}".ljust(64, "0")))
        stage_started(db, upload.id, f"run-{i}", Stage.AI_PARSING, 1)
        ids.append(upload.id)
    first = open_workflows(db, limit=2)
    second = open_workflows(db, after_id=first[-1].id, limit=2)
    third = open_workflows(db, after_id=second[-1].id, limit=2)
    assert [w.upload_id for w in first + second + third] == ids
    with dg.instance_for_test() as instance:  # the runs are unknown here; too recent to be called lost
        assert reconcile_workflows(instance, db, limit=2) == (0, 2, first[-1].id)
        assert reconcile_workflows(instance, db, after_id=third[-1].id, limit=2) == (0, 0, 0)
        later = utcnow() + LOST_AFTER
        assert reconcile_workflows(instance, db, limit=10, now=later) == (5, 5, 0)
    report = status_report(db, ids[0])
    assert report.workflow.status == "failed" and report.workflow.error_code == "run_lost"
    with db.session() as session:
        assert set(session.scalars(sa.select(Upload.status))) == {"failed"}
    assert apply_repair  # the core is importable without Dagster


def test_a_canceled_run_fails_its_pending_workflow(db, instance):
    """A run canceled before it started (never reached a stage): the workflow shows the cancel."""
    from poflow_dagster.store.uploads import claim_uploads_for_runs

    upload = register_upload(db, "m1", _stored("c" * 64))
    assert claim_uploads_for_runs(db, limit=10) == [upload.id]
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("po_job"), tags={"dagster/partition": upload.id},
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    assert reconcile_workflows(instance, db)[0] == 0  # not started yet: Dagster will run or end it
    instance.report_run_canceled(run, "canceled by an operator")
    assert reconcile_workflows(instance, db)[0] == 1
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.error_code, report.workflow.run_id) == (
        "failed", "run_canceled", run.run_id)
    assert report.upload.status == "failed"


def test_a_run_failed_by_run_monitoring_keeps_dagsters_reason(db, instance):
    """Run monitoring ends a run over its ``dagster/max_runtime`` as FAILURE with its own message: the
    workflow says so (po_failure_sensor and the reconciler read the reason the same way)."""
    from poflow_dagster.store.uploads import claim_uploads_for_runs

    upload = register_upload(db, "m1", _stored("d" * 64))
    assert claim_uploads_for_runs(db, limit=10) == [upload.id]
    instance.add_dynamic_partitions("po_uploads", [upload.id])
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("po_job"), tags={"dagster/partition": upload.id},
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    stage_started(db, upload.id, run.run_id, Stage.SHOPIFY_SYNC, 1)
    instance.report_run_failed(run, "Exceeded maximum runtime of 1800 seconds.")
    assert reconcile_workflows(instance, db)[0] == 1
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.error_code) == ("failed", "run_failed")
    assert report.workflow.error_message == "Exceeded maximum runtime of 1800 seconds. (during shopify_sync)"
    assert report.workflow.current_stage == "shopify_sync"


def test_a_repair_planned_before_a_new_run_started_is_not_written(home, db, samples):
    """The reconciler planned 'completed' from its snapshot (the old run succeeded), but before it writes, a
    new run of the partition enters its first stage: the repair is dropped and the new run owns the workflow."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    stage_started(db, upload.id, "run-old", Stage.AI_PARSING, 1)
    (workflow,) = open_workflows(db)
    old_run = RunState("run-old", "SUCCESS", created_at=utcnow() - dt.timedelta(minutes=1))
    repair = plan_repair(workflow, [old_run], utcnow())
    assert repair is not None and repair.action == "succeeded"

    stage_started(db, upload.id, "run-new", Stage.AI_PARSING, 1)  # a re-run begins
    assert apply_repair(db, repair) is False
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.run_id) == ("processing", "run-new")


def test_a_withdrawal_planned_for_an_old_request_leaves_a_newer_one_standing(home, db, samples):
    """The reconciler planned to withdraw a request that never became a run; before it writes, that request is
    gone and a new one was made (the sensor claimed the upload again, or a direct submit marked it) whose run may
    be on its way. Withdrawing the new request would let the sensor ask a second time: it stands."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    assert claim_uploads_for_runs(db, 10) == [upload.id]
    (workflow,) = open_workflows(db)
    repair = plan_repair(workflow, [], utcnow() + RUN_REQUEST_GRACE)
    assert repair is not None and repair.action == "rerequest"

    assert clear_run_request(db, upload.id)  # the old request is withdrawn meanwhile...
    assert mark_run_requested(db, upload.id)  # ...and a new one made
    assert apply_repair(db, repair) is False
    assert claim_uploads_for_runs(db, 10) == []  # the new request stands: the sensor does not ask again

    (workflow,) = open_workflows(db)  # planned against the request as it is now, the withdrawal is written
    repair = plan_repair(workflow, [], utcnow() + RUN_REQUEST_GRACE)
    assert apply_repair(db, repair) is True
    assert claim_uploads_for_runs(db, 10) == [upload.id]
