"""Turning a failed run's step and error text into (stage, code, one-line message)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from poflow_dagster.domain.stages import Stage

_CODED = re.compile(r"^(?:[\w.]+(?:Error|Exception|Failure)?:\s*)?([a-z][a-z0-9_]{2,63}): (.+)$", re.S)
_STAGES = {stage.value for stage in Stage}


@dataclass(frozen=True)
class FailureReason:
    stage: str | None
    code: str
    message: str


def stage_of_step(step_key: str | None) -> str | None:
    """``purchase_order.shopify_sync`` -> ``shopify_sync``; a check step keeps its own name."""
    if not step_key:
        return None
    last = step_key.split(".")[-1]
    return last if last in _STAGES else step_key


def failure_reason(step_key: str | None, error_text: str | None) -> FailureReason:
    """Recover the stable code from ``code: message`` texts; anything else is ``stage_failed``."""
    text = " ".join((error_text or "run failed").split())
    match = _CODED.match(text)
    if match:
        return FailureReason(stage_of_step(step_key), match.group(1), match.group(2)[:1000])
    return FailureReason(stage_of_step(step_key), "stage_failed", text[:1000])


def run_failure_reason(error_text: str | None, *, canceled: bool = False) -> FailureReason:
    """A run that failed outside any step (its worker died, it could not start) or was canceled:
    ``run_failed`` / ``run_canceled`` with Dagster's own words; the stage is wherever the run was."""
    text = " ".join((error_text or ("run canceled" if canceled else "run failed")).split())
    match = _CODED.match(text)
    if match and not canceled:
        return FailureReason(None, match.group(1), match.group(2)[:1000])
    return FailureReason(None, "run_canceled" if canceled else "run_failed", text[:1000])
