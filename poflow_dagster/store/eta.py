"""The live ETA on the workflow row: ``eta_seconds``, ``eta_at`` and ``eta_basis`` while a PO runs.

Written at each stage start and as a stage reports progress (``pipeline/stage_runner.py``); cleared when the
workflow completes, fails or stops for review (``store/workflow.py``).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import select

from poflow_dagster.domain.stages import WorkflowStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import WorkflowExecution

__all__ = ["EtaLike", "clear_eta", "record_eta"]


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


def clear_eta(workflow: WorkflowExecution) -> None:
    """No ETA on a workflow that is no longer running."""
    workflow.eta_seconds = None
    workflow.eta_at = None
    workflow.eta_basis = None
