"""analytics.merchants: per-merchant health from stage_runs and real workflow rows."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from poflow_dagster.analytics.frame import load_workflow_states, prepare_workflows
from poflow_dagster.analytics.merchants import MERCHANT_COLUMNS, merchant_health, merchant_health_parts
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster_tests.test_analytics_frame import NOW, frame, run_rows

_counter = itertools.count()


def add_workflow(db, merchant_id: str, status: str, *, updated_at: dt.datetime, created_at: dt.datetime | None = None):
    """A real uploads + workflow_executions pair (ORM), with the given status and timestamps."""
    n = next(_counter)
    upload_id = f"up-test-{n}"
    with db.session() as session:
        ensure_merchant(session, merchant_id)
        session.add(
            Upload(
                id=upload_id,
                merchant_id=merchant_id,
                original_filename=f"po{n}.csv",
                sha256=f"{n:064x}",
                size_bytes=100,
                mime_type="text/csv",
                stored_path=f"/tmp/po{n}.csv",
                status="processing",
                created_at=created_at or updated_at,
            )
        )
        session.flush()
        session.add(WorkflowExecution(upload_id=upload_id, status=status, updated_at=updated_at))
    return upload_id


def test_merchant_health_from_runs_and_real_workflows(db):
    rows = []
    e2e_m1 = []
    for i in range(8):
        durations = {"queue_wait": 1.0, "ai_parsing": 5.0 + i, "database_save": 1.0}
        status = "failure" if i == 7 else "success"
        rows += run_rows(f"a{i}", ended_at=NOW - dt.timedelta(hours=i + 1), durations=durations, run_status=status)
        e2e_m1.append(sum(durations.values()))
    rows += run_rows("b0", ended_at=NOW - dt.timedelta(hours=2), merchant_id="m2", durations={"ai_parsing": 20.0})
    rows += run_rows("old", ended_at=NOW - dt.timedelta(days=20), merchant_id="m2", durations={"ai_parsing": 99.0})
    # A second (continuation) run of the same upload: one upload, two runs.
    rows += run_rows("b1", ended_at=NOW - dt.timedelta(hours=1), merchant_id="m2", upload_id="up-b0",
                     durations={"ai_parsing": 2.0}, first_run=False)
    add_workflow(db, "m1", "processing", updated_at=NOW - dt.timedelta(hours=1))  # stuck
    add_workflow(db, "m1", "pending", updated_at=NOW - dt.timedelta(minutes=5))  # not yet stuck
    add_workflow(db, "m1", "completed", updated_at=NOW - dt.timedelta(hours=3))
    add_workflow(db, "m2", "needs_review", updated_at=NOW - dt.timedelta(hours=1))
    add_workflow(db, "m2", "completed", updated_at=NOW - dt.timedelta(hours=1))
    add_workflow(db, "m2", "completed", updated_at=NOW - dt.timedelta(days=30))  # outside the window
    health = merchant_health(frame(rows), load_workflow_states(db), now=NOW).set_index("merchant_id")

    m1 = health.loc["m1"]
    # 8 uploads that ran + 3 received in the window (these synthetic workflows belong to other uploads).
    assert m1["runs"] == 8 and m1["uploads"] == 11 and m1["failed"] == 1
    assert m1["success_rate"] == pytest.approx(7 / 8)
    assert m1["avg_s"] == pytest.approx(np.mean(e2e_m1))
    assert m1["p95_s"] == pytest.approx(np.percentile(e2e_m1, 95))
    assert m1["stuck"] == 1 and m1["workflows"] == 3
    assert m1["stuck_rate"] == pytest.approx(1 / 3)
    assert m1["needs_review_share"] == 0

    m2 = health.loc["m2"]
    assert m2["runs"] == 2 and m2["uploads"] == 1 + 2 and m2["failed"] == 0  # two runs of one upload
    assert m2["needs_review_share"] == pytest.approx(1 / 2)
    assert m2["p95_s"] < 99  # the 20-day-old run is outside the window

    overall = health.loc["all"]
    assert overall["runs"] == 10 and overall["stuck"] == 1 and overall["workflows"] == 5
    assert overall["stuck_rate"] == pytest.approx(1 / 5)
    assert overall["success_rate"] == pytest.approx(8 / 9)  # per upload: 9 POs, a0..a6 and up-b0 succeeded


def test_merchant_health_counts_stuck_by_stuck_after():
    flows = prepare_workflows(
        __import__("pandas").DataFrame(
            {
                "upload_id": ["u1", "u2"],
                "merchant_id": ["m1", "m1"],
                "status": ["processing", "processing"],
                "updated_at": [NOW - dt.timedelta(minutes=40), NOW - dt.timedelta(minutes=10)],
                "created_at": [NOW - dt.timedelta(hours=1)] * 2,
            }
        )
    )
    strict = merchant_health(frame([]), flows, now=NOW, stuck_after=dt.timedelta(minutes=5)).set_index("merchant_id")
    lenient = merchant_health(frame([]), flows, now=NOW).set_index("merchant_id")
    assert strict.loc["m1", "stuck"] == 2 and lenient.loc["m1", "stuck"] == 1
    assert lenient.loc["m1", "runs"] == 0 and lenient.loc["m1", "success_rate"] is None


def test_merchant_health_empty():
    health = merchant_health(frame([]), prepare_workflows(None), now=NOW)
    assert list(health["merchant_id"]) == ["all"]
    assert health.iloc[0]["runs"] == 0 and health.iloc[0]["stuck_rate"] is None
    parts = merchant_health_parts(frame([]), prepare_workflows(None), now=NOW)
    assert parts.merchants.empty and list(parts.merchants.columns) == MERCHANT_COLUMNS
    assert parts.total["runs"] == 0 and parts.total["success_rate"] is None and "merchant_id" not in parts.total


def test_success_is_per_po_by_its_latest_run_and_failures_per_run():
    # A PO whose first run failed (after 30 s from upload) and whose re-execution succeeded.
    rows = run_rows("first", ended_at=NOW - dt.timedelta(hours=2), upload_id="up-1", run_status="failure",
                    durations={"sensor_wait": 1.0, "ai_parsing": 29.0},
                    extra={"ai_parsing": {"outcome": "failed"}})
    rows += run_rows("again", ended_at=NOW - dt.timedelta(hours=1), upload_id="up-1", first_run=False,
                     durations={"queue_wait": 1.0, "ai_parsing": 3.0})
    # Another PO, one successful run of 10 s.
    rows += run_rows("other", ended_at=NOW - dt.timedelta(hours=3), upload_id="up-2",
                     durations={"sensor_wait": 1.0, "ai_parsing": 9.0})
    parts = merchant_health_parts(frame(rows), prepare_workflows(None), now=NOW)
    m1 = parts.merchants.set_index("merchant_id").loc["m1"]
    assert m1["success_rate"] == 1.0 and m1["failed"] == 1 and m1["runs"] == 3 and m1["uploads"] == 2
    # avg/p95 on first runs only (the PO's clock from upload), not the continuation's 4 s.
    assert m1["avg_s"] == pytest.approx(20.0) and m1["p95_s"] == pytest.approx(np.percentile([30.0, 10.0], 95))
    assert parts.total["success_rate"] == 1.0 and parts.total["failed"] == 1
    # The other way round: succeeded first, its latest run failed → not a success.
    flipped = [dict(r, run_status="success") if r["run_id"] == "first" else
               dict(r, run_status="failure") if r["run_id"] == "again" else r for r in rows]
    flipped_parts = merchant_health_parts(frame(flipped), prepare_workflows(None), now=NOW)
    assert flipped_parts.total["success_rate"] == pytest.approx(1 / 2)


def test_a_merchant_named_all_does_not_collide_with_the_total():
    rows = run_rows("x", ended_at=NOW - dt.timedelta(hours=1), merchant_id="all")
    rows += run_rows("y", ended_at=NOW - dt.timedelta(hours=2), merchant_id="zed", run_status="failure")
    parts = merchant_health_parts(frame(rows), prepare_workflows(None), now=NOW)
    assert list(parts.merchants["merchant_id"]) == ["all", "zed"]
    assert parts.merchants.set_index("merchant_id").loc["all", "success_rate"] == 1.0
    assert parts.total["runs"] == 2 and parts.total["success_rate"] == 0.5
    # Every number is finite or None (metadata and JSON take no NaN or inf).
    for value in [*parts.merchants.to_dict("records"), parts.total]:
        for item in value.values():
            assert not isinstance(item, float) or np.isfinite(item)


def test_many_merchants_each_get_their_own_numbers():
    rows = []
    for m in range(40):
        for k in range(3):
            rows += run_rows(f"r{m}-{k}", ended_at=NOW - dt.timedelta(hours=k + 1), merchant_id=f"m{m:02d}",
                             durations={"ai_parsing": float(m + k)}, run_status="failure" if k == 2 else "success")
    health = merchant_health_parts(frame(rows), prepare_workflows(None), now=NOW).merchants.set_index("merchant_id")
    assert len(health) == 40 and (health["runs"] == 3).all() and (health["failed"] == 1).all()
    assert health.loc["m07", "avg_s"] == pytest.approx(8.0)
