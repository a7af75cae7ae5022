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
    assert meta["new_runs"].value == len(runs) + 1  # the four PO runs and the one image run
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
