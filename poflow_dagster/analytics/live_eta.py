"""Live ETA of a running PO: remaining stages predicted for this PO's size, the current stage adjusted by its
own progress.

The model is the one the ``eta_model`` asset fitted and stored under ``model:eta`` (``store/analytics_state``);
with no fitted model yet, ``DEFAULT_MODEL`` answers and the basis says so ("defaults: no history yet").
Features come from the upload (bytes, format) and from what earlier stages of the run measured (lines after
``ai_parsing``, SKUs after ``product_draft_creation``, pages and LLM windows from their signals).

Neither changes while a stage runs, so a stage's reporter reads both once (``EtaInputs.load``, at the stage's
start) and estimates each progress report with ``EtaInputs.estimate``: no database work per report.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from poflow_dagster.analytics import eta as eta_core
from poflow_dagster.store.analytics_state import load_json
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import PurchaseOrder, StageMetric, Upload

__all__ = [
    "MODEL_STATE", "EtaEstimate", "EtaInputs", "clear_model_cache", "estimate_eta", "load_model", "po_features",
]

log = logging.getLogger(__name__)

#: Where the ``eta_model`` asset stores the fitted model (JSON) in ``analytics_state``.
MODEL_STATE = "model:eta"
#: How long a process reuses the stored model before reading it again.
MODEL_CACHE_SECONDS = 60.0
DEFAULT_BASIS = "defaults: no history yet"

_cache: dict[str, tuple[float, eta_core.EtaModel]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class EtaEstimate:
    """Seconds left until the PO should be done, the moment that is (UTC) and what the estimate rests on."""

    seconds: float
    at: dt.datetime
    basis: str


def clear_model_cache() -> None:
    """Forget cached models (tests; a process that just stored a new model)."""
    with _cache_lock:
        _cache.clear()


def load_model(db: Database, *, max_age_s: float = MODEL_CACHE_SECONDS) -> eta_core.EtaModel:
    """The stored ``eta_model`` (cached in this process for ``max_age_s``), or ``DEFAULT_MODEL``."""
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(db.url)
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
    model = eta_core.DEFAULT_MODEL
    stored = load_json(db, MODEL_STATE)
    if stored is not None:
        try:
            model = eta_core.EtaModel.from_json(stored)
        except Exception as error:  # a model of an older shape: fall back, say so in the log
            log.warning("stored ETA model unreadable (%s); using defaults", error)
    with _cache_lock:
        _cache[db.url] = (now, model)
    return model


def model_basis(model: eta_core.EtaModel) -> str:
    """What an estimate made with ``model`` rests on, in words."""
    return model.basis or DEFAULT_BASIS


@dataclass(frozen=True)
class EtaInputs:
    """What a live estimate of one run rests on and what stays put while one of its stages runs: the model and
    the PO's features (read once, at the stage's start)."""

    model: eta_core.EtaModel
    features: eta_core.PoFeatures

    @classmethod
    def load(cls, db: Database, upload_id: str, run_id: str) -> EtaInputs:
        """The model (process-cached) and the features of ``run_id`` of ``upload_id`` as its stages left them."""
        return cls(model=load_model(db), features=po_features(db, upload_id, run_id))

    def estimate(
        self, stage: str, *, fraction_done: float = 0.0, elapsed_in_stage_s: float = 0.0,
        now: dt.datetime | None = None,
    ) -> EtaEstimate:
        """Seconds until the run should finish, given it is in ``stage`` with ``fraction_done`` of it done after
        ``elapsed_in_stage_s`` (pure: no database)."""
        now = now or dt.datetime.now(dt.UTC)
        seconds = eta_core.predict_remaining(
            self.model, self.features, current_stage=str(stage),
            fraction_done=max(0.0, min(1.0, float(fraction_done))),
            elapsed_in_stage_s=max(0.0, float(elapsed_in_stage_s)),
        )
        seconds = round(max(0.0, float(seconds)), 3)
        return EtaEstimate(seconds=seconds, at=now + dt.timedelta(seconds=seconds), basis=model_basis(self.model))


def estimate_eta(
    db: Database,
    upload_id: str,
    run_id: str,
    stage: str,
    *,
    fraction_done: float = 0.0,
    elapsed_in_stage_s: float = 0.0,
    now: dt.datetime | None = None,
) -> EtaEstimate:
    """Seconds until ``run_id`` of ``upload_id`` should finish, given it is in ``stage`` with ``fraction_done``
    of it done after ``elapsed_in_stage_s`` (reads the model and features; ``EtaInputs`` reads them once)."""
    return EtaInputs.load(db, upload_id, run_id).estimate(
        stage, fraction_done=fraction_done, elapsed_in_stage_s=elapsed_in_stage_s, now=now)


def po_features(db: Database, upload_id: str, run_id: str) -> eta_core.PoFeatures:
    """This PO's ``PoFeatures``: size and format from the upload (``eta.features_at_start``, the format guessed
    from its name or MIME type by ``eta.guess_format``, or the saved PO's format once there is one);
    lines, SKUs, pages and LLM windows from what its stages measured so far (this run's numbers win over an
    earlier run's of the same upload)."""
    with db.session() as session:  # one statement: the upload, its saved PO's format, its stages' metrics
        rows = session.execute(
            select(Upload, PurchaseOrder.source_format, StageMetric)
            .outerjoin(PurchaseOrder, PurchaseOrder.upload_id == Upload.id)
            .outerjoin(StageMetric, StageMetric.upload_id == Upload.id)
            .where(Upload.id == upload_id)
            .order_by(StageMetric.started_at)
        ).all()
    upload, parsed_format = (rows[0][0], rows[0][1]) if rows else (None, None)
    metrics = [row[2] for row in rows if row[2] is not None]
    values: dict[str, Any] = {"file_bytes": None, "source_format": None}
    if upload is not None:
        start = eta_core.features_at_start(
            upload.size_bytes, parsed_format or eta_core.guess_format(upload.original_filename, upload.mime_type)
        )
        values.update(file_bytes=start.file_bytes, source_format=start.source_format)
    for metric in sorted(metrics, key=lambda m: (m.run_id == run_id, m.started_at)):
        if metric.outcome not in ("success", "reused"):
            continue
        signals = metric.signals or {}
        if metric.stage == "ai_parsing" and metric.items is not None:
            values["lines"] = metric.items
        if metric.stage == "product_draft_creation" and metric.items is not None:
            values["skus"] = metric.items
        for name in ("pages", "llm_windows", "lines", "skus"):
            if signals.get(name) is not None:
                values[name] = signals[name]
    return eta_core.PoFeatures(**values)
