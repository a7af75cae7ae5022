"""Synthetic run history for the analytics scale benchmark: runs in a real Dagster instance, rows in the app DB.

Each run is what a real po_job run leaves behind, written through Dagster's public instance API: a run
record (partition tag = upload id), its run-status events (``RUN_STARTING``, ``RUN_START``,
then ``RUN_SUCCESS`` or ``RUN_FAILURE``) with their timestamps, and in the app database the upload, its saved
PO and one ``stage_metrics`` row per stage with signals. Sizes, formats and durations are drawn from a seeded
generator so that the numbers look like a real week: most POs small, a few large, LLM documents slower.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Merchant, PurchaseOrder, StageMetric, Upload

FORMATS = (("csv", 0.45), ("xlsx", 0.15), ("pdf", 0.2), ("x12", 0.08), ("ubl", 0.07), ("scan", 0.05))
MERCHANTS = tuple(f"bench-m{n}" for n in range(8))


@dataclass(frozen=True)
class SyntheticRun:
    run_id: str
    upload_id: str
    created: float  # epoch seconds
    events: list[tuple[DagsterEventType, float]]
    stages: list[tuple[str, float, float, int, dict]]  # (stage, start, end, items, signals)
    succeeded: bool


def _draw_format(rng: random.Random) -> str:
    roll, acc = rng.random(), 0.0
    for name, share in FORMATS:
        acc += share
        if roll <= acc:
            return name
    return FORMATS[0][0]


def _plan_run(rng: random.Random, index: int, created: float, prefix: str) -> tuple[SyntheticRun, dict]:
    fmt = _draw_format(rng)
    lines = max(1, int(rng.lognormvariate(2.5, 1.0)))
    skus = max(1, int(lines * rng.uniform(0.8, 1.0)))
    file_bytes = int(lines * (90 if fmt in ("csv", "x12") else 400) + rng.randint(500, 5000))
    uses_llm = fmt == "scan"
    pages = max(1, lines // 25) if fmt in ("pdf", "scan") else None
    windows = pages if uses_llm else 0
    t = created + rng.uniform(0.2, 1.5)  # queued -> starting
    # No RUN_ENQUEUED: a queued status needs a code location origin; queue_wait is run created -> RUN_STARTING.
    events = [(DagsterEventType.RUN_STARTING, t)]
    t += rng.uniform(2.0, 5.0)  # worker start
    events.append((DagsterEventType.RUN_START, t))
    t += rng.uniform(0.2, 0.6)
    stages = []
    parse = 0.3 + (windows or 0) * rng.uniform(4, 9) + lines * 0.002
    throttled = max(0.0, (skus * 10.2 - 1000) / 100)
    durations = [
        ("ai_parsing", parse, lines, {"pages": pages, "llm_windows": windows, "llm_seconds": parse * 0.9}),
        ("database_save", 0.05 + lines * 0.0015, lines, {}),
        ("product_draft_creation", 0.05 + skus * 0.002, skus, {"skus": skus}),
        ("shopify_sync", 0.3 + skus * 0.05 + throttled, skus,
         {"shopify_requests": skus, "shopify_points": skus * 10.2, "shopify_throttled_s": throttled}),
        ("status_update", 0.03, 1, {}),
    ]
    succeeded = rng.random() > 0.03
    for number, (stage, seconds, items, signals) in enumerate(durations):
        seconds *= rng.uniform(0.85, 1.2)
        stages.append((stage, t, t + seconds, items, {k: v for k, v in signals.items() if v is not None}))
        t += seconds + 0.01
        if not succeeded and number == 3:
            break
    t += rng.uniform(0.2, 0.8)  # checks
    events.append((DagsterEventType.RUN_SUCCESS if succeeded else DagsterEventType.RUN_FAILURE, t))
    upload_id = f"{prefix}{index:06d}"
    run = SyntheticRun(str(uuid.uuid4()), upload_id, created, events, stages, succeeded)
    upload = {
        "id": upload_id, "merchant": MERCHANTS[index % len(MERCHANTS)], "format": "pdf" if fmt == "scan" else fmt,
        "bytes": file_bytes, "lines": lines, "received": created - rng.uniform(0.5, 5.0),
    }
    return run, upload


def synthesize(
    instance: dg.DagsterInstance, db: Database, count: int, *, seed: int, prefix: str = "syn",
    start: dt.datetime | None = None, end: dt.datetime | None = None,
) -> int:
    """Write ``count`` finished po_job runs (Dagster) and their uploads, POs and stage metrics (app DB), created
    evenly between ``start`` and ``end`` (default: the last 7 days)."""
    rng = random.Random(seed)
    end = end or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    start = start or end - dt.timedelta(days=7)
    step = (end - start).total_seconds() / max(count, 1)
    runs, uploads = [], []
    for index in range(count):
        run, upload = _plan_run(rng, index, start.timestamp() + index * step, prefix)
        runs.append(run)
        uploads.append(upload)
    _write_app_rows(db, runs, uploads)
    template = _empty_run_shard(instance)
    for run in runs:
        instance.run_storage.add_historical_run(
            dg.DagsterRun(job_name="po_job", run_id=run.run_id, tags={"dagster/partition": run.upload_id}),
            run_creation_time=_ts(run.created),
        )
        if template is not None:
            _reuse_shard(instance, template, run.run_id)
        for event_type, at in run.events:
            instance.report_dagster_event(
                DagsterEvent(event_type_value=event_type.value, job_name="po_job"), run.run_id, timestamp=at
            )
    return count


def _empty_run_shard(instance: dg.DagsterInstance) -> Path | None:
    """SQLite event logs keep one database file per run, and initialising one (create + alembic stamp) costs
    ~90 ms: 15 minutes for 10,000 runs. The benchmark initialises one empty shard and copies it per run (what
    Dagster would have created), so the history is written in a couple of minutes. PostgreSQL: nothing to do."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqliteEventLogStorage):
        return None
    with storage.run_connection("bench-template"):
        pass
    return Path(storage.path_for_shard("bench-template"))


def _reuse_shard(instance: dg.DagsterInstance, template: Path, run_id: str) -> None:
    storage = instance.event_log_storage
    shutil.copyfile(template, storage.path_for_shard(run_id))
    storage._initialized_dbs.add(run_id)  # noqa: SLF001 - the copied shard is initialised already


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _write_app_rows(db: Database, runs: list[SyntheticRun], uploads: list[dict]) -> None:
    with db.session() as session:
        known = set(session.scalars(sa.select(Merchant.id)))
        for merchant in sorted({u["merchant"] for u in uploads} - known):
            session.add(Merchant(id=merchant, name=merchant, markup_percent=0))
    upload_rows, po_rows, metric_rows = [], [], []
    for run, upload in zip(runs, uploads, strict=True):
        received = _ts(upload["received"])
        upload_rows.append({
            "id": upload["id"], "merchant_id": upload["merchant"], "original_filename": f"{upload['id']}.{upload['format']}",
            "sha256": hashlib.sha256(upload["id"].encode()).hexdigest(), "size_bytes": upload["bytes"],
            "mime_type": "application/octet-stream", "stored_path": f"/nowhere/{upload['id']}", "source": "cli",
            "status": "completed" if run.succeeded else "failed", "run_requested_at": _ts(run.created),
            "created_at": received, "updated_at": received,
        })
        po_rows.append({
            "upload_id": upload["id"], "merchant_id": upload["merchant"], "po_number": f"PO-{upload['id']}",
            "source_format": upload["format"], "extractor": "bench", "issues": [], "created_at": received,
            "updated_at": received,
        })
        for stage, start, end, items, signals in run.stages:
            metric_rows.append({
                "upload_id": upload["id"], "run_id": run.run_id, "stage": stage, "started_at": _ts(start),
                "ended_at": _ts(end), "duration_ms": int((end - start) * 1000), "items": items,
                "bytes": upload["bytes"] if stage == "ai_parsing" else None, "attempts": 1, "outcome": "success",
                "signals": signals or None,
            })
        if not run.succeeded and run.stages:
            metric_rows[-1]["outcome"] = "failed"
            metric_rows[-1]["error_code"] = "shopify_error"
    with db.engine.begin() as conn:
        for table, rows in ((Upload, upload_rows), (PurchaseOrder, po_rows), (StageMetric, metric_rows)):
            for start in range(0, len(rows), 2000):
                conn.execute(sa.insert(table), rows[start:start + 2000])
