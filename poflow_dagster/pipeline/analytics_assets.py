"""Analytics assets (group ``analytics``): run history → stage performance, bottlenecks, merchant health and the
ETA model.

``stage_runs`` is the fact table (one row per run × stage, kept in the app database and built incrementally from
Dagster's own records); the other four read it with pandas (``poflow_dagster/analytics``) and each shows a table,
numbers the UI plots over time and a chart (PNG under ``POFLOW_HOME/analytics/``).
"""

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from poflow_dagster import config
from poflow_dagster.resources import DatabaseResource

log = logging.getLogger(__name__)

GROUP = "analytics"
KINDS = {"pandas"}
#: Default analytics window in days (``POFLOW_ANALYTICS_WINDOW_DAYS``).
DEFAULT_WINDOW_DAYS = 7.0
#: How much history the ETA model is fitted on, in windows.
ETA_HISTORY_WINDOWS = 4
#: How many of the newest stage_runs rows the ``stage_runs`` asset shows.
LATEST_ROWS = 25


def analytics_window() -> dt.timedelta:
    """``POFLOW_ANALYTICS_WINDOW_DAYS`` (default 7); a bad value falls back to the default with a warning."""
    raw = (os.environ.get("POFLOW_ANALYTICS_WINDOW_DAYS") or "").strip()
    if not raw:
        return dt.timedelta(days=DEFAULT_WINDOW_DAYS)
    try:
        days = float(raw)
    except ValueError:
        days = 0.0
    if not days > 0:
        log.warning("POFLOW_ANALYTICS_WINDOW_DAYS=%r is not a positive number of days; using %s", raw,
                    DEFAULT_WINDOW_DAYS)
        days = DEFAULT_WINDOW_DAYS
    return dt.timedelta(days=days)


def chart_dir() -> Path:
    """Where the analytics charts are written: ``POFLOW_HOME/analytics``."""
    path = config.poflow_home() / "analytics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _history(db: DatabaseResource, now: dt.datetime, windows: int = 2) -> pd.DataFrame:
    from poflow_dagster.analytics.frame import load_stage_runs

    return load_stage_runs(db.database, since=now - windows * analytics_window(), until=now)


# ---------------------------------------------------------------------------------------------- metadata helpers


def _plain(value: Any) -> Any:
    """A metadata-friendly scalar: None for NaN/NaT, int/float/bool/str otherwise."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, (int, float, str, bool)):
        return round(value, 4) if isinstance(value, float) else value
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return pd.Timestamp(value).isoformat()
    return str(value)


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    values = series.dropna()
    if len(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    return "string"


def frame_table(df: pd.DataFrame, columns: list[str] | None = None, *, limit: int = 200) -> dg.MetadataValue:
    """``df`` (its first ``limit`` rows) as a Dagster table with a ``TableSchema``."""
    columns = [c for c in (columns or list(df.columns)) if c in df.columns]
    data = df[columns].head(limit)
    schema = dg.TableSchema(columns=[dg.TableColumn(name, _column_type(data[name])) for name in columns])
    records = [dg.TableRecord({name: _plain(row[name]) for name in columns}) for _, row in data.iterrows()]
    return dg.MetadataValue.table(records, schema=schema)


def _number(value: Any) -> float | None:
    value = _plain(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _numbers(**values: Any) -> dict[str, dg.MetadataValue]:
    """Numeric metadata (the UI plots these over materializations); missing numbers are left out."""
    out: dict[str, dg.MetadataValue] = {}
    for name, value in values.items():
        plain = _plain(value)
        if isinstance(plain, int) and not isinstance(plain, bool):
            out[name] = dg.MetadataValue.int(plain)
        elif (number := _number(plain)) is not None:
            out[name] = dg.MetadataValue.float(number)
    return out


def _chart(context: dg.AssetExecutionContext, draw, data: Any, name: str) -> dict[str, dg.MetadataValue]:
    """Draw a chart to ``POFLOW_HOME/analytics/<name>.png`` and link it; a chart that fails is logged, not fatal."""
    try:
        path = draw(data, chart_dir() / f"{name}.png")
    except Exception as error:  # a chart is a view; the numbers are the asset
        context.log.warning(f"chart {name} not drawn: {type(error).__name__}: {error}")
        return {}
    return {"chart": dg.MetadataValue.path(str(path))} if path else {}


# ----------------------------------------------------------------------------------------------------- assets


@dg.asset(group_name=GROUP, kinds=KINDS)
def stage_runs(context: dg.AssetExecutionContext, db: DatabaseResource) -> dg.MaterializeResult:
    """One row per finished run × stage — the analytics fact table, kept in the app database (``stage_runs``).

    Built incrementally from Dagster's run records and event log (cursor-paged) joined with the app's
    ``stage_metrics``: the PO stages, the orchestration waits (``sensor_wait``, ``queue_wait``, ``launch_wait``),
    the ``checks`` and ``end_to_end``. A cursor in ``analytics_state`` means nothing is read twice.
    """
    from poflow_dagster.analytics.frame import STAGE_RUN_COLUMNS
    from poflow_dagster.pipeline.run_history import refresh_stage_runs

    database = db.database
    refresh = refresh_stage_runs(context.instance, database)
    latest = _latest_rows(database)
    shown = [c for c in ["ended_at", "run_id", "upload_id", "merchant_id", "stage", "kind", "outcome", "duration_s",
                         "items", "source_format", "lines", "run_status"] if c in STAGE_RUN_COLUMNS]
    context.log.info(
        f"stage_runs: {refresh.new_runs} new runs, {refresh.rows_written} rows written, {refresh.total_rows} in all"
    )
    return dg.MaterializeResult(
        metadata={
            "new_runs": dg.MetadataValue.int(int(refresh.new_runs)),
            "rows_written": dg.MetadataValue.int(int(refresh.rows_written)),
            "total_rows": dg.MetadataValue.int(int(refresh.total_rows)),
            "pages_read": dg.MetadataValue.int(int(refresh.pages_read)),
            "seconds": dg.MetadataValue.float(round(float(refresh.seconds), 3)),
            "latest_rows": frame_table(latest, shown, limit=LATEST_ROWS),
        }
    )


def _latest_rows(database) -> pd.DataFrame:
    from sqlalchemy import select

    from poflow_dagster.analytics.frame import STAGE_RUN_COLUMNS
    from poflow_dagster.store.schema import StageRun

    table = StageRun.__table__
    query = select(table).order_by(table.c.ended_at.desc(), table.c.id.desc()).limit(LATEST_ROWS)
    with database.engine.connect() as connection:
        rows = connection.execute(query).fetchall()
    return pd.DataFrame.from_records(rows, columns=STAGE_RUN_COLUMNS)


@dg.asset(group_name=GROUP, kinds=KINDS, deps=[stage_runs])
def stage_performance(context: dg.AssetExecutionContext, db: DatabaseResource) -> dg.Output[pd.DataFrame]:
    """How long each stage takes over the analytics window (default 7 days): runs, p50/p90/p95 and mean seconds,
    share of the end-to-end time, throughput (items/s), failure and retry rates — overall and by format,
    merchant and PO size. The orchestration waits (sensor, queue, launch) are rows of their own."""
    from poflow_dagster.analytics import charts
    from poflow_dagster.analytics.performance import PERFORMANCE_COLUMNS, stage_performance as compute

    now, window = _now(), analytics_window()
    perf = compute(_history(db, now, windows=1), now=now, window=window)
    overall = perf[perf["slice"] == "all"]
    p95 = dict(zip(overall["stage"], overall["p95_s"], strict=False))
    p50 = dict(zip(overall["stage"], overall["p50_s"], strict=False))
    runs = dict(zip(overall["stage"], overall["runs"], strict=False))
    metadata: dict[str, Any] = {
        "window_days": dg.MetadataValue.float(window.total_seconds() / 86400),
        "overall": frame_table(overall, PERFORMANCE_COLUMNS),
        "by_slice": frame_table(perf[perf["slice"] != "all"], PERFORMANCE_COLUMNS, limit=500),
        **_numbers(
            runs=runs.get("end_to_end", 0),
            end_to_end_p50_s=p50.get("end_to_end"),
            end_to_end_p95_s=p95.get("end_to_end"),
            **{f"{stage}_p95_s": value for stage, value in p95.items() if stage != "end_to_end"},
        ),
        **_chart(context, charts.stage_duration_chart, perf, "stage_performance"),
    }
    return dg.Output(perf, metadata=metadata)


@dg.asset(group_name=GROUP, kinds=KINDS, deps=[stage_runs])
def bottleneck_report(context: dg.AssetExecutionContext, db: DatabaseResource) -> dg.Output[pd.DataFrame]:
    """Stages ranked by their contribution to the end-to-end p95, with the trend against the days before
    ("ai_parsing p95 is 2.1× its 6-day median": the last day against the rest of the window), the likely cause
    from what the stages recorded (LLM latency, Shopify throttling, queue wait, database time) and a
    recommendation naming the setting to change."""
    from poflow_dagster.analytics import charts
    from poflow_dagster.analytics.bottlenecks import bottleneck_report as compute
    from poflow_dagster.analytics.report import recent_period

    now, window = _now(), analytics_window()
    report = compute(_history(db, now, windows=1), now=now, window=window, recent=recent_period(window))
    top = report.iloc[0] if len(report) else None
    severities = report["severity"].value_counts().to_dict() if "severity" in report else {}
    messages = "\n".join(f"- **{row['stage']}** ({row['severity']}): {row['message']}"
                         for _, row in report.head(10).iterrows() if row.get("message"))
    metadata: dict[str, Any] = {
        "report": frame_table(report),
        "summary": dg.MetadataValue.md(messages or "No stage stands out in this window."),
        "top_stage": dg.MetadataValue.text(str(top["stage"]) if top is not None else "-"),
        **_numbers(
            top_contribution=top["contribution"] if top is not None else None,
            max_factor=report["factor"].max() if len(report) else None,
            warnings=sum(count for severity, count in severities.items() if severity in ("warning", "critical")),
        ),
        **_chart(context, charts.bottleneck_chart, report, "bottleneck_report"),
    }
    return dg.Output(report, metadata=metadata)


@dg.asset(group_name=GROUP, kinds=KINDS, deps=[stage_runs])
def merchant_health(context: dg.AssetExecutionContext, db: DatabaseResource) -> dg.Output[pd.DataFrame]:
    """Per merchant over the window: success rate, average and p95 end-to-end duration, failed and stuck
    workflows, and the share that stopped for review."""
    from poflow_dagster.analytics import charts
    from poflow_dagster.analytics.frame import load_workflow_states
    from poflow_dagster.analytics.merchants import merchant_health_parts

    now, window = _now(), analytics_window()
    workflows = load_workflow_states(db.database, since=now - window)
    parts = merchant_health_parts(_history(db, now, windows=1), workflows, now=now, window=window)
    merchants, everyone = parts.merchants, parts.total
    metadata: dict[str, Any] = {
        "merchants": frame_table(merchants),
        **_numbers(
            merchant_count=len(merchants),
            success_rate=everyone.get("success_rate"),
            lowest_success_rate=merchants["success_rate"].min() if len(merchants) else None,
            stuck=everyone.get("stuck"),
            stuck_rate=everyone.get("stuck_rate"),
            needs_review_share=everyone.get("needs_review_share"),
        ),
        **_chart(context, charts.merchant_chart, merchants, "merchant_health"),
    }
    return dg.Output(merchants, metadata=metadata)


@dg.asset(group_name=GROUP, kinds=KINDS, deps=[stage_runs])
def eta_model(context: dg.AssetExecutionContext, db: DatabaseResource) -> dg.Output[dict]:
    """Per-stage duration models from the PO's size (lines, pages, bytes, LLM windows, SKUs), fitted on the
    last four analytics windows of history. Before it goes live (``analytics_state`` ``model:eta``, where the
    live ETA of running POs reads it) the same fit on the older runs is backtested on the newest held-out runs:
    it is published only if it does no worse than the defaults and the model live now (on runs that model
    never saw). ``live_model`` and ``why`` say which model the live ETA uses and why."""
    from poflow_dagster.analytics import charts
    from poflow_dagster.analytics.eta import EtaModel, choose_model
    from poflow_dagster.analytics.live_eta import MODEL_STATE, clear_model_cache
    from poflow_dagster.store.analytics_state import load_json, save_json

    now = _now()
    history = _history(db, now, windows=ETA_HISTORY_WINDOWS)
    stored = load_json(db.database, MODEL_STATE)
    try:
        previous = EtaModel.from_json(stored) if stored is not None else None
    except Exception as error:  # a model of an older shape: the fit competes with the defaults only
        context.log.warning(f"stored ETA model unreadable ({type(error).__name__}: {error})")
        previous = None
    choice = choose_model(history, now=now, window=ETA_HISTORY_WINDOWS * analytics_window(), previous=previous)
    model = choice.fitted
    if choice.publish:
        save_json(db.database, MODEL_STATE, model.to_json())
        clear_model_cache()
    context.log.info(f"eta_model: {choice.reason}")
    scores = choice.backtest.as_dict()
    metadata: dict[str, Any] = {
        "live_model": dg.MetadataValue.text(choice.live),
        "why": dg.MetadataValue.text(choice.reason),
        "basis": dg.MetadataValue.text(model.basis),
        "fitted_runs": dg.MetadataValue.int(int(model.n)),
        "backtest": dg.MetadataValue.json({k: _plain(v) for k, v in scores.items() if not isinstance(v, (list, dict))}),
        "stages": frame_table(model.to_frame()),
        **_numbers(**{k: v for k, v in scores.items() if isinstance(v, (int, float))},
                   default_mae_s=choice.default_mae_s, previous_mae_s=choice.previous_mae_s),
        **_chart(context, charts.eta_backtest_chart, choice.backtest, "eta_model"),
    }
    return dg.Output(
        {"model": model.to_json(), "published": choice.publish, "live": choice.live, "why": choice.reason,
         "backtest": scores},
        metadata=metadata,
    )


analytics_assets = [stage_runs, stage_performance, bottleneck_report, merchant_health, eta_model]
