"""Checks of the analytics assets: is the ETA model good enough, and is any stage running slow right now?

Both warn (never block): an analyst or on-call engineer sees them on the asset, the run goes on.
"""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import datetime as dt

import dagster as dg

from poflow_dagster.pipeline.analytics_assets import bottleneck_report, eta_model, frame_table
from poflow_dagster.resources import DatabaseResource

#: The plan's goal: ETA within ±15 s for 90 % of jobs.
ETA_GOAL_WITHIN_15S = 0.9
#: Fewer held-out runs than this: the backtest says nothing yet (the check passes, with a note).
MIN_BACKTEST_RUNS = 10
#: A stage whose recent median is more than this many times its normal one is "slow".
SLOWDOWN_FACTOR = 2.0


def eta_verdict(scores: dict) -> tuple[bool, str]:
    """Whether backtest ``scores`` meet the goal (≥ 90 % within ±15 s and no worse than the old plan's
    ±20 %-size median baseline), and why, in one line."""
    n = int(scores.get("n") or 0)
    if n < MIN_BACKTEST_RUNS:
        return True, f"only {n} held-out runs (fewer than {MIN_BACKTEST_RUNS}): not enough history to judge yet"
    within = float(scores.get("within_15s") or 0.0)
    baseline = scores.get("baseline_within_15s")
    problems = []
    if within < ETA_GOAL_WITHIN_15S:
        problems.append(f"{within:.0%} of {n} held-out runs within ±15 s (goal {ETA_GOAL_WITHIN_15S:.0%})")
    if baseline is not None and within < float(baseline):
        problems.append(f"worse than the ±20 %-size median baseline ({within:.0%} vs {float(baseline):.0%})")
    if problems:
        return False, "; ".join(problems)
    against = f", baseline {float(baseline):.0%}" if baseline is not None else ""
    return True, f"{within:.0%} of {n} held-out runs within ±15 s{against}"


@dg.asset_check(asset=eta_model, blocking=False)
def eta_backtest(eta_model: dict) -> dg.AssetCheckResult:
    """Backtest of the ETA model on held-out recent runs (time-ordered: fitted on the older runs, scored on the
    newer, as the live ETA sees them: size and format at the first stage's start, against the time from there to
    the run's end). Warns when fewer than 90 % of them land within ±15 s, or when the old plan's method (median
    of runs with a file size within ±20 %) does better; passes with a note while the history is too small.
    Whether the fit went live (the asset publishes it only if it does no worse than the defaults and the live
    model) is in ``live_model``."""
    scores = dict(eta_model.get("backtest") or {})
    passed, summary = eta_verdict(scores)
    metadata = {"summary": dg.MetadataValue.text(summary),
                "live_model": dg.MetadataValue.text(str(eta_model.get("live") or "fitted"))}
    for name, value in scores.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metadata[name] = dg.MetadataValue.float(float(value))
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
                               description=summary)


@dg.asset_check(asset=bottleneck_report, blocking=False)
def stage_slowdown(db: DatabaseResource) -> dg.AssetCheckResult:
    """Warns when a stage's median over the last hour is more than 2× its normal (the median of the 7 days
    before), listing those stages with their factor."""
    import pandas as pd

    from poflow_dagster.analytics.bottlenecks import slow_stages
    from poflow_dagster.analytics.frame import load_stage_runs

    now = dt.datetime.now(dt.UTC)
    history = load_stage_runs(db.database, since=now - dt.timedelta(days=8), until=now)
    slow = slow_stages(history, now=now, factor=SLOWDOWN_FACTOR)
    summary = (
        "; ".join(f"{s['stage']} runs {s['factor']:.1f}× its normal" for s in slow)
        if slow else "no stage runs more than 2× its normal"
    )
    metadata = {"summary": dg.MetadataValue.text(summary), "slow_stages": dg.MetadataValue.int(len(slow))}
    if slow:
        metadata["stages"] = frame_table(pd.DataFrame(slow))
    return dg.AssetCheckResult(passed=not slow, severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
                               description=summary)


analytics_checks = [eta_backtest, stage_slowdown]
