"""The live ETA on the workflow row: ``eta_seconds``, ``eta_at`` and ``eta_basis`` while a PO runs.

Written at each stage start and as a stage reports progress (``pipeline/stage_runner.py``); cleared when the
workflow completes, fails or stops for review (``store/workflow.py``).

A stage's progress reporter writes its percent and ETA with ``record_progress``: one conditional ``UPDATE``
that may be told to wait only briefly for the row (SQLite: the database's write lock, which the stage's own
transaction may hold; PostgreSQL: the workflow row's lock) and to give up rather than block.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import case, select, update
from sqlalchemy.exc import OperationalError

from poflow_dagster.domain.stages import WorkflowStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import WorkflowExecution

__all__ = ["EtaLike", "clear_eta", "record_eta", "record_progress"]


class EtaLike(Protocol):
    seconds: float
    at: dt.datetime
    basis: str


def record_eta(db: Database, upload_id: str, estimate: EtaLike) -> bool:
    """Store ``estimate`` on the upload's workflow row if it is still processing. Returns whether it did.

    A workflow that has already finished keeps its cleared ETA: a late estimate never brings one back.
    """
    with db.session() as session:
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload_id))
        if workflow is None or workflow.status != WorkflowStatus.PROCESSING:
            return False
        workflow.eta_seconds = round(float(estimate.seconds), 3)
        workflow.eta_at = estimate.at
        workflow.eta_basis = estimate.basis[:200]
        return True


def record_progress(
    db: Database, upload_id: str, run_id: str, *, percent: int | None = None, estimate: EtaLike | None = None,
    wait_ms: int | None = None,
) -> bool | None:
    """Store the PO's ``percent`` (never lowering it) and ``estimate`` on the workflow row, in one ``UPDATE``,
    if the row is still ``run_id``'s and processing. Returns whether it was, or ``None`` when ``wait_ms`` was
    given and the row stayed locked that long (nothing written; the caller may try again later).

    Without ``wait_ms`` the statement waits as long as the database's own timeouts allow.
    """
    values: dict[str, object] = {}
    if percent is not None:
        percent = max(0, min(int(percent), 100))
        values["progress_percent"] = case(
            (WorkflowExecution.progress_percent < percent, percent), else_=WorkflowExecution.progress_percent
        )
    if estimate is not None:
        values.update(eta_seconds=round(float(estimate.seconds), 3), eta_at=estimate.at,
                      eta_basis=estimate.basis[:200])
    statement = update(WorkflowExecution).where(
        WorkflowExecution.upload_id == upload_id, WorkflowExecution.run_id == run_id,
        WorkflowExecution.status == WorkflowStatus.PROCESSING,
    )
    if not values:
        raise ValueError("record_progress needs a percent or an estimate")
    statement = statement.values(**values).execution_options(synchronize_session=False)
    with db.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        previous_timeout = None
        try:
            if wait_ms is not None:
                if sqlite:  # busy_timeout is the connection's: put back what it was afterwards
                    previous_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
                    connection.exec_driver_sql(f"PRAGMA busy_timeout={max(0, int(wait_ms))}")
                else:
                    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{max(1, int(wait_ms))}ms'")
            written = connection.execute(statement).rowcount
            connection.commit()
        except OperationalError as error:
            connection.rollback()
            if wait_ms is not None and _locked(error):
                return None
            raise
        finally:
            if previous_timeout is not None:
                connection.exec_driver_sql(f"PRAGMA busy_timeout={int(previous_timeout)}")
                connection.commit()
    return written > 0


def _locked(error: OperationalError) -> bool:
    """The statement gave up waiting for a lock (SQLite busy, PostgreSQL ``lock_not_available``)."""
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state:
        return str(state) == "55P03"
    text = str(error.orig).lower()
    return "database is locked" in text or "database is busy" in text


def clear_eta(workflow: WorkflowExecution) -> None:
    """No ETA on a workflow that is no longer running."""
    workflow.eta_seconds = None
    workflow.eta_at = None
    workflow.eta_basis = None
