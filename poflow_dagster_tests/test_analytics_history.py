"""Run history into stage_runs: real runs on a real Dagster instance, SQLite and PostgreSQL app databases."""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import sqlalchemy as sa
from dagster._core.events import DagsterEvent
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from poflow_dagster.analytics.history import (
    LaunchEvent,
    RunFact,
    ingest_finished_runs,
    prune_launches,
    record_launch_events,
)
from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.pipeline.run_history import instance_key, refresh_stage_runs, run_timeline_so_far
from poflow_dagster.store.analytics_state import load_state
from poflow_dagster.store.schema import RunLaunch, StageMetric, StageRun, Upload

PO_STAGES = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]
E = dg.DagsterEventType


def rows_of(db, run_id: str) -> dict[str, StageRun]:
    with db.session() as session:
        return {row.stage: row for row in session.scalars(sa.select(StageRun).where(StageRun.run_id == run_id))}


def count(db, model=StageRun) -> int:
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_real_runs_become_their_timelines_incrementally(home, db, shop, instance, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    first = run_upload(defs, instance, db, upload.id)
    assert first.success, first.error

    refresh = refresh_stage_runs(instance, db)

    assert refresh.new_runs == 1  # one run: the PO, its checks and its images
    rows = rows_of(db, first.run_id)
    # In-process: no queue. Images are a stage of the same run.
    assert set(rows) == {"sensor_wait", "launch_wait", *PO_STAGES, "checks", "image_attachment", "end_to_end"}
    assert {s: rows[s].kind for s in ("sensor_wait", "launch_wait", "ai_parsing", "checks", "end_to_end")} == {
        "sensor_wait": "wait", "launch_wait": "wait", "ai_parsing": "stage", "checks": "check", "end_to_end": "total"}
    with db.session() as session:
        received = session.scalar(sa.select(Upload.created_at).where(Upload.id == upload.id))
        metrics = {m.stage: m for m in session.scalars(sa.select(StageMetric).where(StageMetric.run_id == first.run_id))}
    record = instance.get_run_record_by_id(first.run_id)
    run_end = dt.datetime.fromtimestamp(record.end_time, dt.UTC)
    assert all(r.first_run and r.run_status == "success" and r.job == "po_job" and r.merchant_id == "acme"
               and r.upload_id == upload.id for r in rows.values())
    assert rows["end_to_end"].started_at == received and rows["sensor_wait"].started_at == received
    # The PO's clock ends where its images start (its checks done), not at the run's end after them.
    assert rows["end_to_end"].ended_at == rows["checks"].ended_at == metrics["image_attachment"].started_at
    assert rows["end_to_end"].ended_at <= run_end
    assert rows["sensor_wait"].ended_at == record.create_timestamp.astimezone(dt.UTC)
    assert rows["launch_wait"].ended_at == metrics["ai_parsing"].started_at  # RUN_START -> first stage
    assert rows["checks"].started_at == metrics["status_update"].ended_at
    for stage in PO_STAGES:
        assert rows[stage].duration_s == metrics[stage].duration_ms / 1000 and rows[stage].outcome == "success"
    # The PO's shape on every row; the stage signals in their columns.
    assert {(r.source_format, r.file_bytes, r.lines, r.skus) for r in rows.values()} == {
        ("csv", upload.size_bytes, 5, metrics["product_draft_creation"].items)}
    sync = rows["shopify_sync"]
    assert sync.shopify_requests >= 1 and sync.shopify_points > 0 and sync.shopify_throttled_s is not None
    assert metrics["product_draft_creation"].signals == {"skus": metrics["product_draft_creation"].items}
    images = rows["image_attachment"]
    assert (images.kind, images.outcome, images.started_at) == ("stage", "skipped", metrics["image_attachment"].started_at)
    assert refresh.rows_written == len(rows) == refresh.total_rows == count(db)
    assert count(db, RunLaunch) == 1  # launch times are kept (a re-ingest keeps its waits), pruned after 7 days
    assert load_state(db, f"cursor:{instance_key(instance)}:RUN_SUCCESS") is not None

    again = refresh_stage_runs(instance, db)  # nothing new: nothing read again, nothing written
    assert (again.new_runs, again.rows_written, again.total_rows) == (0, 0, refresh.total_rows)

    rerun = run_upload(defs, instance, db, upload.id, with_images=False)  # a re-run of the same partition
    assert rerun.success
    third = refresh_stage_runs(instance, db)
    assert (third.new_runs, third.total_rows) == (1, refresh.total_rows + third.rows_written)
    rerun_rows = rows_of(db, rerun.run_id)
    assert "sensor_wait" not in rerun_rows and not any(r.first_run for r in rerun_rows.values())
    created = instance.get_run_record_by_id(rerun.run_id).create_timestamp.astimezone(dt.UTC)
    assert rerun_rows["end_to_end"].started_at == created
    assert rows_of(db, first.run_id).keys() == rows.keys()  # the first run's rows untouched
    with db.session() as session:
        per_run = session.execute(
            sa.select(StageRun.run_id, sa.func.count()).where(StageRun.stage == "end_to_end").group_by(StageRun.run_id)
        ).all()
        firsts = session.scalar(sa.select(sa.func.count(sa.distinct(StageRun.run_id)))
                                .where(StageRun.upload_id == upload.id, StageRun.first_run.is_(True)))
    assert sorted(n for _, n in per_run) == [1, 1] and firsts == 1


def test_reexecution_from_failure_adds_its_own_rows(home, db, shop, samples, monkeypatch):
    from poflow_dagster_tests.test_reexecution import po_job

    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    config = {"resources": {"shopify": {"config": {"max_attempts": 1}}}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("po_uploads", [upload.id])
        monkeypatch.setenv("SHOPIFY_SHOP_URL", "http://127.0.0.1:9")  # Shopify down for the first run
        with dg.execute_job(dg.reconstructable(po_job), instance, tags={"dagster/partition": upload.id},
                            run_config=config) as failed:
            assert not failed.success
        first = refresh_stage_runs(instance, db)
        failed_rows = rows_of(db, failed.run_id)
        assert first.new_runs == 1
        assert {r.run_status for r in failed_rows.values()} == {"failure"}
        assert (failed_rows["shopify_sync"].outcome, failed_rows["shopify_sync"].error_code) == (
            "failed", "shopify_unreachable")
        assert "status_update" not in failed_rows and failed_rows["sensor_wait"].first_run
        assert failed_rows["checks"].started_at == failed_rows["shopify_sync"].ended_at

        monkeypatch.setenv("SHOPIFY_SHOP_URL", shop.url)
        with dg.execute_job(
            dg.reconstructable(po_job), instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
            tags={"dagster/partition": upload.id}, run_config=config,
        ) as retried:
            assert retried.success
        second = refresh_stage_runs(instance, db)
    assert second.new_runs == 1
    retried_rows = rows_of(db, retried.run_id)
    assert {"shopify_sync", "status_update", "end_to_end"} <= set(retried_rows)
    assert "ai_parsing" not in retried_rows and "sensor_wait" not in retried_rows  # not redone, not a first run
    assert not any(r.first_run for r in retried_rows.values())
    assert rows_of(db, failed.run_id).keys() == failed_rows.keys()
    with db.session() as session:
        stages = session.execute(sa.select(StageRun.run_id, StageRun.stage)).all()
        syncs = session.scalar(sa.select(sa.func.count()).where(StageRun.stage == "shopify_sync"))
    assert len(stages) == len(set(stages)) == second.total_rows
    assert syncs == 2  # one failed attempt, one that worked: each counted once


def _synthetic_run(instance, job: str, created: dt.datetime, tags: dict | None = None) -> str:
    """A run record as a queued submission leaves it (a queued run needs its code location origin)."""
    run_id = str(uuid.uuid4())
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("poflow"), "__repository__"), job)
    instance.run_storage.add_historical_run(
        dg.DagsterRun(job_name=job, run_id=run_id, tags=tags or {}, remote_job_origin=origin),
        run_creation_time=created,
    )
    return run_id


def _event(instance, run_id: str, job: str, event_type: dg.DagsterEventType, at: dt.datetime) -> None:
    instance.report_dagster_event(DagsterEvent(event_type_value=event_type.value, job_name=job), run_id,
                                  timestamp=at.timestamp())


def test_waits_from_launch_events_runs_in_progress_and_other_jobs(home, db, instance, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    with db.session() as session:
        received = session.scalar(sa.select(Upload.created_at).where(Upload.id == upload.id))
    t = lambda s: received + dt.timedelta(seconds=s)  # noqa: E731
    run_id = _synthetic_run(instance, "po_job", t(3), {"dagster/partition": upload.id})
    other = _synthetic_run(instance, "analytics_job", t(3))
    with db.session() as session:
        for stage, start, end in (("ai_parsing", 14, 15.5), ("database_save", 15.5, 16), ("product_draft_creation",
                                  16, 17), ("shopify_sync", 17, 25), ("status_update", 25, 25.5)):
            session.add(StageMetric(upload_id=upload.id, run_id=run_id, stage=stage, started_at=t(start),
                                    ended_at=t(end), duration_ms=int((end - start) * 1000), attempts=1,
                                    outcome="success", items=5))
    _event(instance, run_id, "po_job", E.RUN_ENQUEUED, t(3))
    _event(instance, run_id, "po_job", E.RUN_STARTING, t(9))
    _event(instance, run_id, "po_job", E.RUN_START, t(11))
    for event_type, s in ((E.RUN_STARTING, 4), (E.RUN_START, 5), (E.RUN_SUCCESS, 6)):
        _event(instance, other, "analytics_job", event_type, t(s))

    running = refresh_stage_runs(instance, db)  # our run is still going; the analytics run is not history

    assert (running.new_runs, running.total_rows) == (0, 0)
    with db.session() as session:
        launch = session.get(RunLaunch, run_id)
        assert count(db, RunLaunch) == 1
    assert (launch.enqueued_at, launch.starting_at, launch.started_at) == (t(3), t(9), t(11))

    _event(instance, run_id, "po_job", E.RUN_SUCCESS, t(30))
    done = refresh_stage_runs(instance, db)

    assert done.new_runs == 1
    rows = rows_of(db, run_id)
    assert {s: (r.kind, r.duration_s) for s, r in rows.items() if r.kind != "stage"} == {
        "sensor_wait": ("wait", 3.0),  # upload received -> run created
        "queue_wait": ("wait", 6.0),  # run created -> RUN_STARTING
        "launch_wait": ("wait", 5.0),  # RUN_STARTING -> first stage started
        "checks": ("check", 4.5),  # last stage ended -> run ended
        "end_to_end": ("total", 30.0),  # upload received -> run ended
    }
    assert rows["shopify_sync"].duration_s == 8.0 and rows["end_to_end"].first_run
    assert not rows_of(db, other) and count(db, RunLaunch) == 1  # our run's launch times are kept

    # A run seen again (a UI materialization of stage_runs racing the schedule, the sweep, --refresh) replaces
    # its rows from the run record alone, as the reader gives it: nothing counted twice, and its waits survive.
    record = instance.get_run_record_by_id(run_id)
    fact = RunFact(run_id=run_id, job_name="po_job", upload_id=upload.id, status="success",
                   created_at=record.create_timestamp.astimezone(dt.UTC), ended_at=t(30), first_run=True,
                   started_at=t(11))
    for _ in range(2):
        assert ingest_finished_runs(db, [fact]) == len(rows)
        again = rows_of(db, run_id)
        assert count(db) == len(rows) and {s: r.duration_s for s, r in again.items() if r.kind == "wait"} == {
            "sensor_wait": 3.0, "queue_wait": 6.0, "launch_wait": 5.0}

    # Launch rows older than the retention go, in one statement; recent ones stay.
    assert prune_launches(db, now=t(30) + dt.timedelta(days=6)) == 0 and count(db, RunLaunch) == 1
    assert prune_launches(db, now=t(30) + dt.timedelta(days=8)) == 1 and count(db, RunLaunch) == 0


def test_a_first_run_that_died_before_any_stage_is_still_the_first(home, db, instance, samples):
    """One rule for ``first_run`` (the run records): the upload's earliest po_job run is its first even when it
    recorded no stage; the next run then has no sensor_wait, in stage_runs and in the PO's timeline alike."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    with db.session() as session:
        received = session.scalar(sa.select(Upload.created_at).where(Upload.id == upload.id))
    t = lambda s: received + dt.timedelta(seconds=s)  # noqa: E731
    dead = _synthetic_run(instance, "po_job", t(2), {"dagster/partition": upload.id})
    second = _synthetic_run(instance, "po_job", t(40), {"dagster/partition": upload.id})
    with db.session() as session:
        session.add(StageMetric(upload_id=upload.id, run_id=second, stage="ai_parsing", started_at=t(41),
                                ended_at=t(42), duration_ms=1000, attempts=1, outcome="success", items=5))

    timeline = run_timeline_so_far(instance, db, second, upload.id)
    assert timeline.first_run is False and "sensor_wait" not in {row.stage for row in timeline.rows}

    _event(instance, dead, "po_job", E.RUN_FAILURE, t(5))
    _event(instance, second, "po_job", E.RUN_SUCCESS, t(45))
    refresh_stage_runs(instance, db)
    assert {r.first_run for r in rows_of(db, dead).values()} == {True}
    assert {r.first_run for r in rows_of(db, second).values()} == {False}
    assert "sensor_wait" not in rows_of(db, second) and rows_of(db, second)["end_to_end"].duration_s == 5.0


def test_llm_document_rows_carry_pages_windows_and_llm_seconds(home, db, shop, instance, tmp_path, monkeypatch):
    from poflow_dagster.samples.pdf_documents import make_scanned_pdf
    from poflow_dagster_tests.openai_server import API_KEY, Reply, fail_first, start_openai_server
    from poflow_dagster_tests.test_llm_pipeline import _scripted_po

    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=3)
    with start_openai_server(fail_first(1, Reply.rate_limited("0.1"), _scripted_po())) as server:
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("POFLOW_LLM_WINDOW_PAGES", "1")
        upload = upload_file(db, home, "acme", scan)
        result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, result.error

    refresh_stage_runs(instance, db)

    parsing = rows_of(db, result.run_id)["ai_parsing"]
    assert (parsing.pages, parsing.llm_windows) == (3, 3)
    assert 0 < parsing.llm_seconds <= parsing.duration_s
    assert {(r.source_format, r.lines) for r in rows_of(db, result.run_id).values()} == {("pdf", 3)}
    with db.session() as session:
        signals = session.scalar(sa.select(StageMetric.signals).where(StageMetric.run_id == result.run_id,
                                                                      StageMetric.stage == "ai_parsing"))
    assert signals["llm_retries"] == 1  # the one rate-limited answer

    # A re-run reuses the cached parse: the document still has its pages, but no LLM ran.
    rerun = run_upload(defs, instance, db, upload.id, with_images=False)
    refresh_stage_runs(instance, db)
    again = rows_of(db, rerun.run_id)["ai_parsing"]
    assert (again.outcome, again.pages, again.llm_windows, again.llm_seconds) == ("reused", 3, None, None)


def test_two_ingestions_of_the_same_runs_at_once_count_each_run_once(db):
    import threading

    t0 = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    facts = [RunFact(f"race-{n}", "po_job", None, "success", created_at=t0, ended_at=t0 + dt.timedelta(seconds=n),
                     first_run=False) for n in range(300)]
    # Every run was queued and launched: both racing ingestions must keep its queue and launch waits.
    record_launch_events(db, [LaunchEvent(f.run_id, kind, t0 + dt.timedelta(seconds=s))
                              for f in facts for kind, s in (("starting", 2), ("started", 3))])
    barrier, errors = threading.Barrier(2), []

    def ingest() -> None:
        barrier.wait()
        try:
            ingest_finished_runs(db, facts)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count(db) == 600  # one queue_wait and one end_to_end row per run (no upload, no stages), never two
    with db.session() as session:
        waits = session.scalars(sa.select(StageRun.duration_s).where(StageRun.stage == "queue_wait")).all()
    assert sorted(waits) == [2.0] * 300


def test_cursors_belong_to_their_instance(home, db, shop, samples, tmp_path):
    """A fresh Dagster instance (``dagster dev`` without DAGSTER_HOME starts one each time) numbers its events
    from 1 again: its runs are still read, not skipped behind the previous instance's cursor."""
    first_upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    second_upload = upload_file(db, home, "acme", samples["nordwind-bestellung-2002.tsv"])
    with dg.instance_for_test() as old:
        run_upload(defs, old, db, first_upload.id)
        run_upload(defs, old, db, first_upload.id, with_images=False)  # more events than the new instance has
        assert refresh_stage_runs(old, db).new_runs == 2
        old_key = instance_key(old)
    with dg.instance_for_test() as new:
        assert instance_key(new) != old_key
        fresh = run_upload(defs, new, db, second_upload.id, with_images=False)
        refresh = refresh_stage_runs(new, db)
    assert refresh.new_runs == 1 and "end_to_end" in rows_of(db, fresh.run_id)


def test_a_run_the_cursor_passed_is_swept_up(home, db, shop, instance, samples):
    """On PostgreSQL an event can commit after one with a higher id was read: a finished run with no rows is
    ingested by the next refresh's sweep of recently ended runs."""
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert refresh_stage_runs(instance, db).new_runs == 1
    with db.session() as session:  # as if its terminal event had been passed by the cursor
        session.execute(sa.delete(StageRun).where(StageRun.run_id == result.run_id))
    assert refresh_stage_runs(instance, db).new_runs == 0  # too recent for the sweep: it may still commit
    swept = refresh_stage_runs(instance, db, sweep_settle=dt.timedelta(0))
    assert swept.new_runs == 1 and set(rows_of(db, result.run_id)) >= {*PO_STAGES, "end_to_end"}
    assert refresh_stage_runs(instance, db, sweep_settle=dt.timedelta(0)).new_runs == 0  # once only


def test_the_sweep_reaches_back_to_the_last_refresh(home, db, instance, samples):
    """The sweep starts at this instance's last successful refresh (minus a margin), not a fixed 30 minutes: a
    run that ended an hour ago, after that refresh, but was passed by the cursor is still ingested."""
    from poflow_dagster.store.analytics_state import save_state

    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    now = dt.datetime.now(dt.UTC)
    run_id = _synthetic_run(instance, "po_job", now - dt.timedelta(hours=3), {"dagster/partition": upload.id})
    _event(instance, run_id, "po_job", E.RUN_SUCCESS, now - dt.timedelta(hours=1))
    assert refresh_stage_runs(instance, db).new_runs == 1
    assert load_state(db, f"sweep:{instance_key(instance)}:last_refresh") is not None
    with db.session() as session:  # as if its terminal event had been passed by the cursor
        session.execute(sa.delete(StageRun).where(StageRun.run_id == run_id))
    save_state(db, f"sweep:{instance_key(instance)}:last_refresh", (now - dt.timedelta(hours=2)).isoformat())

    swept = refresh_stage_runs(instance, db)

    assert swept.new_runs == 1 and "end_to_end" in rows_of(db, run_id)
    assert refresh_stage_runs(instance, db).new_runs == 0  # the sweep now starts after it
