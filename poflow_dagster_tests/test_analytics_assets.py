"""End to end: real POs through po_job, then the analytics job on the same Dagster instance and app database —
every analytics asset materialises with its tables, numbers and chart, the checks run, and a second refresh reads
nothing it already has."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.analytics.eta import EtaModel
from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.store.analytics_state import load_json
from poflow_dagster.store.schema import StageRun

ANALYTICS = ["stage_runs", "stage_performance", "bottleneck_report", "merchant_health", "eta_model"]
CHARTED = ["stage_performance", "bottleneck_report", "merchant_health", "eta_model"]
PO_STAGES = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]
RUNS = [("acme-po-1001.csv", "acme"), ("nordwind-bestellung-2002.tsv", "nord"),
        ("lumiere-commande-3003.xlsx", "lum"), ("iberia-pedido-4004.csv", "acme")]


def _refresh(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("analytics_job").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success, [e.step_failure_data.error for e in result.get_step_failure_events()]
    return result


def _metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata


def _stage_rows(db) -> list[tuple[str, str, str]]:
    with db.session() as session:
        return [tuple(row) for row in session.execute(sa.select(StageRun.run_id, StageRun.stage, StageRun.kind))]


def test_real_runs_become_analytics_assets_with_checks_and_refresh_incrementally(home, db, shop, instance, samples):
    runs = [run_upload(defs, instance, db, upload_file(db, home, merchant, samples[name]).id, with_images=(i == 0))
            for i, (name, merchant) in enumerate(RUNS)]
    assert all(run.success for run in runs), [run.error for run in runs]

    first = _refresh(instance)

    materialized = {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
    assert materialized == set(ANALYTICS)
    checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
    assert set(checks) == {"eta_backtest", "stage_slowdown"}
    # Four runs are too few to judge the ETA: the backtest passes and says why.
    assert checks["eta_backtest"].passed and "not enough history" in checks["eta_backtest"].description
    assert checks["stage_slowdown"].passed

    # stage_runs holds every run's stages, waits and end-to-end time, once.
    rows = _stage_rows(db)
    assert len(rows) == len(set(rows))
    for run in runs:
        stages = {stage for run_id, stage, _ in rows if run_id == run.run_id}
        assert set(PO_STAGES) | {"end_to_end"} <= stages, stages
    assert any(kind == "wait" for _, _, kind in rows)
    assert any(stage == "image_attachment" for _, stage, _ in rows)
    meta = _metadata(instance, "stage_runs")
    assert meta["new_runs"].value == len(runs)  # the PO runs (images are a step of each)
    assert meta["total_rows"].value == len(rows) and meta["rows_written"].value == len(rows)
    assert isinstance(meta["latest_rows"], dg.TableMetadataValue) and meta["latest_rows"].records

    perf = _metadata(instance, "stage_performance")
    overall = {record.data["stage"]: record.data for record in perf["overall"].records}
    assert overall["end_to_end"]["runs"] == len(runs) and overall["ai_parsing"]["runs"] == len(runs)
    assert perf["end_to_end_p95_s"].value >= perf["ai_parsing_p95_s"].value > 0
    assert {c.name for c in perf["overall"].schema.columns} >= {"stage", "runs", "p50_s", "p95_s", "share"}
    by_slice = {(r.data["slice"], r.data["slice_value"]) for r in perf["by_slice"].records}
    assert {("merchant_id", "acme"), ("merchant_id", "nord"), ("source_format", "xlsx")} <= by_slice

    report = _metadata(instance, "bottleneck_report")
    ranked = [record.data for record in report["report"].records]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1)) and ranked[0]["recommendation"]
    health = {record.data["merchant_id"]: record.data for record in _metadata(instance, "merchant_health")["merchants"].records}
    assert health["acme"]["runs"] == 2 and health["acme"]["success_rate"] == 1.0 and health["lum"]["runs"] == 1

    model = EtaModel.from_json(load_json(db, "model:eta"))  # what the live ETA reads
    assert model.n == len(runs)
    assert _metadata(instance, "eta_model")["basis"].value == model.basis

    for asset in CHARTED:
        chart = Path(_metadata(instance, asset)["chart"].value)
        assert chart == home / "analytics" / f"{asset}.png"
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second refresh reads nothing it already has: no new runs, no row written twice.
    _refresh(instance)
    meta = _metadata(instance, "stage_runs")
    assert (meta["new_runs"].value, meta["rows_written"].value, meta["total_rows"].value) == (0, 0, len(rows))
    assert sorted(_stage_rows(db)) == sorted(rows)

    # One more PO: only its run is added.
    extra = run_upload(defs, instance, db, upload_file(db, home, "nord", samples["northwind-po-004512.x12"]).id,
                       with_images=False)
    assert extra.success, extra.error
    _refresh(instance)
    meta = _metadata(instance, "stage_runs")
    assert meta["new_runs"].value == 1
    assert {stage for run_id, stage, _ in _stage_rows(db) if run_id == extra.run_id} >= set(PO_STAGES)
    assert meta["total_rows"].value == len(_stage_rows(db)) > len(rows)


def _synthetic_history(db, now, *, slow_recent: bool) -> None:
    """55 CSV runs over the past six days, then 5 in the last hour (their ai_parsing 3× slower if asked).
    Shopify sync takes 5 s + 0.8 s per SKU and POs have 10 to 300 lines (100 bytes each): runs last from
    about 15 s to four minutes, so an ETA that ignores size is tens of seconds off."""
    import datetime as dt

    base = {"queue_wait": 0.3, "ai_parsing": 1.0, "database_save": 0.2, "product_draft_creation": 0.1,
            "shopify_sync": 5.0, "status_update": 0.1, "checks": 0.4}
    kinds = {"queue_wait": "wait", "checks": "check", "end_to_end": "total"}
    with db.session() as session:
        for i in range(60):
            recent = i >= 55
            ended = now - (dt.timedelta(minutes=50 - 10 * (i - 55)) if recent else dt.timedelta(hours=140 - 2.5 * i))
            lines = 10 + (i * 37) % 290
            seconds = {stage: value + (0.8 * lines if stage == "shopify_sync" else 0.0) for stage, value in base.items()}
            if recent and slow_recent:
                seconds["ai_parsing"] *= 3
            seconds["end_to_end"] = sum(seconds.values())
            for stage, value in seconds.items():
                session.add(StageRun(
                    run_id=f"run-{i}", upload_id=f"up-{i}", merchant_id="acme", job="po_job", stage=stage,
                    kind=kinds.get(stage, "stage"), run_status="success",
                    outcome=None if stage in kinds else "success", started_at=ended - dt.timedelta(seconds=value),
                    ended_at=ended, duration_s=value, attempts=1, file_bytes=100 * lines, source_format="csv",
                    lines=lines, skus=lines, first_run=True,
                ))


def test_slow_stage_warns_and_a_good_eta_passes_its_backtest(home, db, instance):
    import datetime as dt

    _synthetic_history(db, dt.datetime.now(dt.UTC), slow_recent=True)
    result = _refresh(instance)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}

    slowdown = checks["stage_slowdown"]
    assert not slowdown.passed and slowdown.severity == dg.AssetCheckSeverity.WARN
    assert slowdown.description.startswith("ai_parsing runs 3.0× its normal")
    assert [r.data["stage"] for r in slowdown.metadata["stages"].records] == ["ai_parsing"]

    # 60 runs of 15 s to 4 min whose time follows their size: the fitted model lands every held-out run within
    # ±15 s, and does better than the old plan's size median and far better than the defaults on the same runs.
    backtest = checks["eta_backtest"]
    assert backtest.passed and backtest.metadata["n"].value == 12 and backtest.metadata["within_15s"].value == 1.0
    assert "100% of 12 held-out runs within ±15 s" in backtest.description
    meta = _metadata(instance, "eta_model")
    mae = meta["mae_s"].value
    assert mae < 3.0
    assert mae < meta["baseline_mae_s"].value
    assert mae * 10 < meta["default_mae_s"].value  # defaults: 0.15 s a SKU against 0.8 s, about a line a KB
    assert meta["live_model"].value == "fitted" and meta["why"].value.startswith("published")
    assert EtaModel.from_json(load_json(db, "model:eta")).n == 60

    report = {r.data["stage"]: r.data for r in _metadata(instance, "bottleneck_report")["report"].records}
    assert report["ai_parsing"]["severity"] == "critical" and report["ai_parsing"]["factor"] >= 2.9
    assert _metadata(instance, "stage_runs")["new_runs"].value == 0  # no Dagster runs: the table is as it was


def test_a_fit_worse_than_the_live_model_is_not_published(home, db, instance):
    """The refresh keeps the live model when the new fit does worse on the held-out runs that model never saw."""
    import datetime as dt

    from poflow_dagster.analytics.eta import DEFAULT_MODEL, fit_eta_model
    from poflow_dagster.analytics.frame import load_stage_runs
    from poflow_dagster.store.analytics_state import save_json

    now = dt.datetime.now(dt.UTC)
    _synthetic_history(db, now, slow_recent=False)
    # A live model, fitted a week ago, that is exact on every run: no fit on the older runs can beat it.
    live = fit_eta_model(load_stage_runs(db, since=now - dt.timedelta(days=30), until=now), now=now)
    live.fitted_at = (now - dt.timedelta(days=7)).isoformat()
    live.basis = "the live model"
    # Spoil the new fit: on the older runs shopify_sync took no time per SKU.
    with db.session() as session:
        for row in session.scalars(sa.select(StageRun).where(StageRun.stage.in_(["shopify_sync", "end_to_end"]))):
            if int(row.run_id.split("-")[1]) < 48:
                row.duration_s -= 0.8 * row.skus
    save_json(db, "model:eta", live.to_json())

    _refresh(instance)

    meta = _metadata(instance, "eta_model")
    assert meta["live_model"].value == "previous" and "worse than" in meta["why"].value
    assert meta["previous_mae_s"].value < meta["mae_s"].value
    assert EtaModel.from_json(load_json(db, "model:eta")).basis == "the live model"  # still what POs read
    assert DEFAULT_MODEL.basis.startswith("defaults")


def test_steady_history_does_not_warn(home, db, instance):
    import datetime as dt

    _synthetic_history(db, dt.datetime.now(dt.UTC), slow_recent=False)
    checks = {e.check_name: e for e in _refresh(instance).get_asset_check_evaluations()}
    assert checks["stage_slowdown"].passed and checks["stage_slowdown"].description.startswith("no stage runs")
    assert checks["eta_backtest"].passed


def test_eta_verdict_warns_below_the_goal_or_below_the_baseline():
    from poflow_dagster.pipeline.analytics_checks import eta_verdict

    assert eta_verdict({"n": 3, "within_15s": 0.0})[0] is True  # too little history to judge
    assert eta_verdict({"n": 50, "within_15s": 0.95, "baseline_within_15s": 0.6}) == (
        True, "95% of 50 held-out runs within ±15 s, baseline 60%")
    passed, why = eta_verdict({"n": 50, "within_15s": 0.8, "baseline_within_15s": 0.6})
    assert not passed and "80% of 50 held-out runs within ±15 s (goal 90%)" in why
    passed, why = eta_verdict({"n": 50, "within_15s": 0.92, "baseline_within_15s": 0.96})
    assert not passed and "worse than the ±20 %-size median baseline" in why
