"""Partition retention in the app database: which uploads' Dagster partitions may go, and the record that they went.

An upload's partition may be retired once the upload has *ended* — ``completed``, ``duplicate`` or ``failed``
(never ``received``, ``processing``, ``needs_review`` or ``approved``: those still expect a run) — and neither the
upload nor its workflow row changed since the cutoff. The history stays: the upload, its PO, drafts, stage
metrics and ``stage_runs`` are never touched; ``retired_partitions`` says when the partition went and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from poflow_dagster.domain.stages import UploadStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import RetiredPartition, Upload, WorkflowExecution

#: Upload statuses whose partition may be retired once older than the retention.
RETIRABLE_STATUSES: tuple[str, ...] = (UploadStatus.COMPLETED, UploadStatus.DUPLICATE, UploadStatus.FAILED)


@dataclass(frozen=True)
class Retirable:
    """An upload whose partition may be retired: its status and when it last changed."""

    upload_id: str
    status: str
    ended_at: dt.datetime


@dataclass
class PartitionSplit:
    """Partition keys sorted by what retention may do with them."""

    retirable: list[Retirable] = field(default_factory=list)
    not_ended: list[str] = field(default_factory=list)  # received, processing, needs_review, approved
    recent: list[str] = field(default_factory=list)  # ended, but since the cutoff
    unknown: list[str] = field(default_factory=list)  # no uploads row (another database's, or deleted): left alone
    #: The oldest upload (by ``created_at``) among the keys that stay, if any.
    oldest_kept: tuple[str, dt.datetime] | None = None


def split_partitions(db: Database, keys: Sequence[str], cutoff: dt.datetime) -> PartitionSplit:
    """Sort ``keys`` (one batch: one query) into retirable, not ended, recent and unknown."""
    split = PartitionSplit()
    if not keys:
        return split
    with db.session() as session:
        rows = session.execute(
            sa.select(Upload.id, Upload.status, Upload.created_at, Upload.updated_at, WorkflowExecution.updated_at)
            .outerjoin(WorkflowExecution, WorkflowExecution.upload_id == Upload.id)
            .where(Upload.id.in_(list(keys)))
        ).all()
    found = {row[0]: row for row in rows}
    for key in keys:
        row = found.get(key)
        if row is None:
            split.unknown.append(key)
            continue
        _id, status, created_at, upload_changed, workflow_changed = row
        ended_at = max(upload_changed, workflow_changed) if workflow_changed else upload_changed
        if status not in RETIRABLE_STATUSES:
            split.not_ended.append(key)
        elif ended_at >= cutoff:
            split.recent.append(key)
        else:
            split.retirable.append(Retirable(key, status, ended_at))
            continue
        if split.oldest_kept is None or created_at < split.oldest_kept[1]:
            split.oldest_kept = (key, created_at)
    return split


def record_retired(db: Database, retired: Sequence[Retirable], retired_at: dt.datetime, retention_days: int) -> None:
    """Record (or record again: idempotent) that these uploads' partitions were retired at ``retired_at``."""
    if not retired:
        return
    ids = [r.upload_id for r in retired]
    with db.session() as session:
        session.execute(sa.delete(RetiredPartition).where(RetiredPartition.upload_id.in_(ids)))
        session.execute(
            sa.insert(RetiredPartition),
            [{"upload_id": r.upload_id, "retired_at": retired_at, "upload_status": r.status,
              "retention_days": retention_days} for r in retired],
        )


def partition_retirement(db: Database, upload_id: str) -> RetiredPartition | None:
    """When and why this upload's Dagster partition was retired (``None``: it was not)."""
    with db.session() as session:
        return session.get(RetiredPartition, upload_id)


def retired_count(db: Database) -> int:
    """How many uploads' partitions have been retired."""
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(RetiredPartition)) or 0
