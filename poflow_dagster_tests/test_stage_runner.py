"""run_stage: the one place an op is retried — only while the app database is away."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.domain.stages import Stage
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.stage_runner import is_database_unavailable
from poflow_dagster.resources import DatabaseResource
from poflow_dagster.store.db import close_database, get_database
from poflow_dagster.store.schema import LineItem, PurchaseOrder, StageMetric
from poflow_dagster.store.uploads import mark_run_requested
from poflow_dagster.store.workflow import status_report
from poflow_dagster_tests.faults import CuttableProxy


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # an outage of a database server
def test_a_database_outage_during_a_run_is_ridden_out_and_the_po_completes(db_url, home, shop, instance, samples):
    """PostgreSQL becomes unreachable (a proxy in front of it refuses and drops connections) as the run
    starts, before it has connected, and comes back 3 s later: connecting fails, run_stage asks Dagster to
    retry the step after 2 s, then 4 s, and the PO completes once — one PO, its lines once, every stage
    recorded. (The fault benchmark saw runs dequeued during an outage fail at once before this.)"""
    proxy = CuttableProxy(("127.0.0.1", 5432))
    proxied = db_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    restore = threading.Timer(3.0, proxy.restore)
    try:
        db = get_database(proxied)
        upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
        mark_run_requested(db, upload.id)
        instance.add_dynamic_partitions(po_uploads.name, [upload.id])
        close_database(proxied)  # like a run worker that starts during the outage: nothing connected yet
        proxy.cut()
        restore.start()
        result = defs.resolve_job_def("po_job").execute_in_process(
            partition_key=upload.id, instance=instance, raise_on_error=False,
            resources={"db": DatabaseResource(url=proxied)},
        )
        assert result.success
        db = get_database(proxied)
        retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retried and all(e.step_key == "purchase_order.ai_parsing" for e in retried)
        report = status_report(db, upload.id)
        assert report.workflow.status == "completed" and report.upload.status == "completed"
        with db.session() as session:
            assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == 1
            assert session.scalar(sa.select(sa.func.count(LineItem.id))) == 5
            metrics = {m.stage: m for m in session.scalars(sa.select(StageMetric))}
        assert metrics[Stage.AI_PARSING.value].attempts == len(retried) + 1
        assert all(m.outcome == "success" for m in metrics.values() if m.stage != Stage.IMAGE_ATTACHMENT.value)
    finally:
        restore.cancel()
        close_database(proxied)
        proxy.close()


def test_only_connection_failures_count_as_the_database_being_away():
    refused = sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert is_database_unavailable(refused)
    assert is_database_unavailable(sa.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")))
    assert is_database_unavailable(sa.exc.OperationalError("UPDATE", {}, Exception("database is locked")))
    assert not is_database_unavailable(sa.exc.OperationalError("SELECT", {}, Exception("no such table: uploads")))
    assert not is_database_unavailable(sa.exc.OperationalError("INSERT", {}, Exception("database or disk is full")))
    assert not is_database_unavailable(sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_database_unavailable(ValueError("a bug"))
