"""How ``poflow report`` shows the analytics in a terminal: rich tables of stages, waits, checks, end-to-end
time, bottlenecks, merchant health and the ETA's measured accuracy (``--format json`` prints the dict instead)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from poflow_dagster.domain.errors import PoflowError

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: dt.datetime) -> dt.datetime:
    """``7d``, ``24h``, ``90m``, ``2w`` (a span before ``now``) or an ISO date/time (UTC unless it says
    otherwise) → the start of the report's window. Anything else, or a span reaching before year 1:
    ``PoflowError("invalid_since")``."""
    match = _SPAN.match(text or "")
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        if seconds <= 0:
            raise PoflowError("invalid_since", f"{text!r} is an empty span; use e.g. 7d, 24h or 2026-11-01")
        try:
            return now - dt.timedelta(seconds=seconds)
        except (OverflowError, ValueError):
            message = f"{text!r} reaches before the calendar starts; use e.g. 7d or 52w"
            raise PoflowError("invalid_since", message) from None
    try:
        start = dt.datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise PoflowError(
            "invalid_since", f"{text!r} is neither a span (7d, 24h, 90m, 2w) nor an ISO date (2026-11-01)"
        ) from None
    start = start.replace(tzinfo=dt.UTC) if start.tzinfo is None else start.astimezone(dt.UTC)
    if start >= now:
        raise PoflowError("invalid_since", f"{text!r} is not in the past")
    return start


def _when(iso: str | None) -> str:
    return "-" if not iso else f"{dt.datetime.fromisoformat(iso).astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"


def _number(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _stage_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("stage", "runs", "skipped", "reused", "p50 s", "p90 s", "p95 s", "share", "items/s", "failed",
                 "retried"):
        table.add_column(name, justify="left" if name == "stage" else "right", no_wrap=name == "stage")
    for row in rows:
        table.add_row(
            escape(str(row["stage"])), str(row["runs"]), str(row.get("skipped") or 0), str(row.get("reused") or 0),
            _seconds(row["p50_s"]), _seconds(row["p90_s"]), _seconds(row["p95_s"]),
            _percent(row["share"]), _number(row["throughput_items_per_s"]), _percent(row["failure_rate"]),
            _percent(row["retry_rate"]),
        )
    return table


def _bottleneck_table(rows: list[dict]) -> Table:
    table = Table(title="Bottlenecks (by share of the slowest runs' time)", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("stage", no_wrap=True)
    table.add_column("severity")
    table.add_column("trend", justify="right")
    table.add_column("cause")
    table.add_column("recommendation")
    colour = {"critical": "bold red", "warning": "yellow"}
    for rank, row in enumerate(rows, start=1):
        severity = row["severity"] or "-"
        table.add_row(
            str(rank), escape(row["stage"]), f"[{colour[severity]}]{severity}[/]" if severity in colour else severity,
            "-" if row["factor"] is None else f"{row['factor']:.1f}×", escape(row["cause"] or "-"),
            escape(row["recommendation"] or "-"),
        )
    return table


def _merchant_table(rows: list[dict], total: dict | None = None) -> Table:
    table = Table(title="Merchants (success per PO by its latest run; failed = failed runs)", title_justify="left")
    for name in ("merchant", "uploads", "runs", "success", "avg s", "p95 s", "failed", "stuck", "needs review"):
        table.add_column(name, justify="left" if name == "merchant" else "right", no_wrap=name == "merchant")
    labelled = [(escape(str(row["merchant_id"])), row) for row in rows]
    if total and len(rows) > 1:
        table.add_section()
        labelled.append(("(all merchants)", total))
    for label, row in labelled:
        table.add_row(
            label, str(row["uploads"] if row["uploads"] is not None else "-"),
            str(row["runs"] if row["runs"] is not None else "-"), _percent(row["success_rate"]),
            _seconds(row["avg_s"]), _seconds(row["p95_s"]), str(row["failed"] if row["failed"] is not None else "-"),
            str(row["stuck"] if row["stuck"] is not None else "-"), _percent(row["needs_review_share"]),
        )
    return table


def _eta_table(eta: dict) -> Table:
    table = Table(title="ETA accuracy (backtest on held-out recent runs)", title_justify="left")
    for name in ("", "runs", "within ±15 s", "within ±15 %", "mean error s"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("eta_model", str(eta.get("n") or 0), _percent(eta.get("within_15s")),
                  _percent(eta.get("within_15pct")), _seconds(eta.get("mae_s")))
    table.add_row("old plan (±20 % size median)", str(eta.get("n") or 0), _percent(eta.get("baseline_within_15s")),
                  _percent(eta.get("baseline_within_15pct")), _seconds(eta.get("baseline_mae_s")))
    return table


def report_console() -> Console:
    """Colours in a terminal; plain text, 140 columns wide (or ``COLUMNS``), when piped."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=shutil.get_terminal_size((140, 24)).columns, highlight=False, color_system=None)
    return console


def print_report(report: dict, console: Console, *, merchant_id: str | None = None) -> None:
    """The report as text: a header line, then one rich table per section (sections without rows are left out)."""
    window = report["window"]
    who = f" · merchant {merchant_id}" if merchant_id else ""
    console.print(f"poflow report · {_when(window['since'])} → {_when(window['until'])}{who}", markup=False)
    e2e = report["end_to_end"]
    if not e2e.get("runs"):
        console.print("No finished runs in this window yet (stage_runs is refreshed by the analytics job, "
                      "or `poflow report --refresh`).", markup=False)
    else:
        console.print(f"End to end (first runs, from upload): {e2e['runs']} runs · p50 {_seconds(e2e['p50_s'])} s"
                      f" · p90 {_seconds(e2e['p90_s'])} s · p95 {_seconds(e2e['p95_s'])} s")
    sections = [
        (report["stages"], lambda rows: _stage_table("Stages", rows)),
        (report["waits"], lambda rows: _stage_table("Waits (orchestration time no op sees)", rows)),
        (report.get("checks") or [], lambda rows: _stage_table("Checks (asset checks and teardown)", rows)),
        (report["bottlenecks"], _bottleneck_table),
        (report["merchants"], lambda rows: _merchant_table(rows, report.get("merchants_total"))),
    ]
    for rows, build in sections:
        if rows:
            console.print()
            console.print(build(rows))
    console.print()
    console.print(_eta_table(report["eta"]))
    if report["eta"].get("basis"):
        console.print(f"ETA model: {report['eta']['basis']}", markup=False)
