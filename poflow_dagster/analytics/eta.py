"""The measured ETA model: per stage ``seconds = base + Σ rate × feature (+ rate × max(0, feature − knot))``,
fitted on run history.

Each stage picks, among a few candidate features, the one that explains its history best (robust least squares
with outlier trimming, non-negative rates; a per-format base where formats differ). Shopify's cost limit is a
leaky bucket: a small PO is paid from the bucket at once, a large one waits for points to be restored beyond
what the bucket held, so the Shopify stages may add a hinge ``max(0, points − knot)`` whose knot is learnt from
the history; reading a document with the LLM at all costs a set-up (a step on ``llm_windows``). What is not known
at upload (lines, SKUs, pages, LLM windows) is read off the training runs of the same format by file size
(between the runs just smaller and just larger: a spreadsheet's fixed bytes, a scanned PDF's few lines in many
bytes), else from ratios (lines per KB, ...). So a PO gets an ETA from its file size and format
alone at upload, and a sharper one once parsing has counted its lines. With no history the model is
``DEFAULT_MODEL`` and says so in ``basis``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from poflow_dagster.analytics.frame import in_window, prepare_frame
from poflow_dagster.analytics.timeline import PO_STAGES, WAIT_STAGES

#: Candidate features per stage (the fit keeps the one that explains the stage best, or none).
CANDIDATES: dict[str, list[str]] = {
    "ai_parsing": ["llm_windows", "pages", "file_bytes", "lines"],
    "database_save": ["lines"],
    "product_draft_creation": ["skus", "lines"],
    "shopify_sync": ["skus", "shopify_points"],
    "checks": ["skus", "shopify_points"],  # the checks read the products back from Shopify: the same bucket
}
#: Features whose cost may bend upwards past a knot (Shopify's leaky bucket: free while the bucket lasts,
#: then paid at the restore rate): their stages also try ``rate × x + rate₂ × max(0, x − knot)``.
HINGE_FEATURES: dict[str, list[str]] = {
    "shopify_sync": ["shopify_points", "skus"],
    "checks": ["shopify_points", "skus"],
}
#: Features whose first unit costs a fixed setup on top of its rate (the LLM: a document read by it at all pays
#: a call's set-up; a text PDF read without it does not), each with a second feature for the work done without
#: it (a text PDF's pages): their stages also try ``rate × x + setup × [x > 0] + rate₂ × second``.
STEP_FEATURES: dict[str, list[tuple[str, str]]] = {"ai_parsing": [("llm_windows", "pages")]}
#: Training runs kept per format to estimate, by file size, what is not known at upload.
MAX_NEIGHBOURS = 200
#: Beyond the sizes seen: the runs (same format, closest file size) whose scaled median estimates a feature.
NEIGHBOURS_K = 5
#: The features a neighbour row holds, after its file size.
NEIGHBOUR_FEATURES = ["pages", "llm_windows", "lines", "skus", "shopify_points"]
#: Stages whose base differs by source format (deterministic extractors vs PDF + LLM).
BY_FORMAT_STAGES = {"ai_parsing"}
#: The stages of a PO run in order, after the waits: what an ETA adds up.
RUN_STAGES: list[str] = [*PO_STAGES, "checks"]
MIN_RUNS = 5
#: A feature is kept only if it cuts the stage's mean absolute error by at least this share.
MIN_IMPROVEMENT = 0.1
DETERMINISTIC_FORMATS = ("csv", "tsv", "xlsx", "x12", "ubl", "cii")
ANY = "*"


@dataclass(frozen=True)
class PoFeatures:
    """What is known about a PO: at upload its size and format; after parsing its pages, lines, SKUs, windows."""

    file_bytes: int | None
    source_format: str | None
    pages: float | None = None
    lines: float | None = None
    skus: float | None = None
    llm_windows: float | None = None


@dataclass
class StageModel:
    """``seconds = base (per format if known) + Σ rate × feature + Σ rate₂ × max(0, feature − knot)``; ``hinges``
    maps a feature to ``[knot, rate₂]``; ``steps`` maps a feature to ``[threshold, seconds]`` added once the
    feature is a unit past the threshold (a share of it in between); ``n`` runs fitted, ``fitted`` False =
    default."""

    base_s: float
    rates: dict[str, float] = field(default_factory=dict)
    base_by_format: dict[str, float] = field(default_factory=dict)
    n: int = 0
    residual_p90_s: float | None = None
    fitted: bool = False
    hinges: dict[str, list[float]] = field(default_factory=dict)
    steps: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class EtaModel:
    """Stage models, what estimates unknown features (training runs by format: ``[file_bytes, pages, llm_windows,
    lines, skus, shopify_points]``, ``None`` where unknown; else ratios), the time between stages, the basis."""

    stages: dict[str, StageModel]
    ratios: dict[str, dict[str, float]]
    overhead_s: float = 0.0
    n: int = 0
    fitted_at: str | None = None
    basis: str = "defaults: no history yet"
    neighbours: dict[str, list[list[float | None]]] = field(default_factory=dict)

    def to_json(self) -> str:
        """JSON text (``from_json`` reads it back to an equal model)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> EtaModel:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        stages = {name: StageModel(**value) for name, value in data.pop("stages").items()}
        return cls(stages=stages, **data)

    def to_frame(self) -> pd.DataFrame:
        """One row per stage: base, rates, per-format bases, runs fitted, residual p90, fitted or default."""
        rows = [
            {
                "stage": name,
                "base_s": model.base_s,
                "rates": ", ".join([*(f"{k}={v:.4g}" for k, v in model.rates.items()),
                                    *(f"max(0, {k}-{knot:.4g})={v:.4g}" for k, (knot, v) in model.hinges.items()),
                                    *(f"[{k}>{t:.4g}]={v:.4g}" for k, (t, v) in model.steps.items())])
                or "-",
                "base_by_format": ", ".join(f"{k}={v:.3g}" for k, v in model.base_by_format.items()) or "-",
                "n": model.n,
                "residual_p90_s": model.residual_p90_s,
                "fitted": model.fitted,
            }
            for name, model in self.stages.items()
        ]
        columns = ["stage", "base_s", "rates", "base_by_format", "n", "residual_p90_s", "fitted"]
        return pd.DataFrame(rows, columns=columns)

    def stage(self, stage: str) -> StageModel | None:
        """This model's stage, else the default's (a stage with too little history), else ``None``."""
        return self.stages.get(stage) or DEFAULT_MODEL.stages.get(stage)


def _default_ratios() -> dict[str, dict[str, float]]:
    deterministic = dict.fromkeys(DETERMINISTIC_FORMATS, 0.0)
    return {
        "lines_per_kb": {"csv": 10.0, "tsv": 10.0, "x12": 8.0, "xlsx": 2.0, "ubl": 1.0, "cii": 1.0, "pdf": 0.3, ANY: 1.0},
        "pages_per_kb": {**deterministic, "pdf": 1 / 60, ANY: 1 / 120},
        "windows_per_page": {**deterministic, "pdf": 0.25, ANY: 0.25},
        "windows_per_kb": {**deterministic, "pdf": 1 / 240, ANY: 1 / 480},
        "skus_per_line": {ANY: 1.0},
        "points_per_sku": {ANY: 10.0},
    }


#: The model with no history: measured orders of magnitude from the samples, and says so.
DEFAULT_MODEL = EtaModel(
    stages={
        "sensor_wait": StageModel(base_s=2.5),
        "queue_wait": StageModel(base_s=1.0),
        "launch_wait": StageModel(base_s=4.0),
        "ai_parsing": StageModel(
            base_s=1.0, rates={"llm_windows": 8.0}, base_by_format=dict.fromkeys(DETERMINISTIC_FORMATS, 0.5)
        ),
        "database_save": StageModel(base_s=0.2, rates={"lines": 0.002}),
        "product_draft_creation": StageModel(base_s=0.2, rates={"skus": 0.003}),
        "shopify_sync": StageModel(base_s=0.5, rates={"skus": 0.15}),
        "status_update": StageModel(base_s=0.1),
        "checks": StageModel(base_s=0.5),
        "image_attachment": StageModel(base_s=2.0, rates={"skus": 0.5}),
    },
    ratios=_default_ratios(),
    basis="defaults: no history yet",
)


# --- prediction ---------------------------------------------------------------------------------------------


def _ratio(model: EtaModel, name: str, source_format: str | None) -> float:
    table = model.ratios.get(name) or DEFAULT_MODEL.ratios[name]
    if source_format is not None and source_format in table:
        return table[source_format]
    return table.get(ANY, DEFAULT_MODEL.ratios[name][ANY])


def _known(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def estimate_features(model: EtaModel, features: PoFeatures) -> dict[str, float]:
    """Every feature the stage models use: the known ones as given, the others estimated from the training runs
    of the same format by size (``_from_neighbours``), else from the ratios."""
    fmt = features.source_format
    kb = features.file_bytes / 1024 if _known(features.file_bytes) else 0.0
    near = _from_neighbours(model, features.file_bytes, fmt) if _known(features.file_bytes) else {}
    if _known(features.pages):
        pages = float(features.pages)
    else:
        pages = near.get("pages", kb * _ratio(model, "pages_per_kb", fmt))
    if _known(features.llm_windows):
        windows = float(features.llm_windows)
    elif _known(features.pages):
        windows = pages * _ratio(model, "windows_per_page", fmt)
    else:
        windows = near.get("llm_windows", kb * _ratio(model, "windows_per_kb", fmt))
    if _known(features.lines):
        lines = float(features.lines)
    else:
        lines = near.get("lines", kb * _ratio(model, "lines_per_kb", fmt))
    if _known(features.skus):
        skus = float(features.skus)
    elif _known(features.lines) or "skus" not in near:
        skus = lines * _ratio(model, "skus_per_line", fmt)
    else:
        skus = near["skus"]
    return {
        "file_bytes": float(features.file_bytes) if _known(features.file_bytes) else 0.0,
        "pages": pages,
        "llm_windows": windows,
        "lines": lines,
        "skus": skus,
        "shopify_points": skus * _ratio(model, "points_per_sku", fmt),
    }


def _from_neighbours(model: EtaModel, file_bytes: float, source_format: str | None) -> dict[str, float]:
    """Unknown features read off the training runs of this format by file size: within the sizes seen, the
    straight line between the runs just smaller and just larger (what a ratio through zero loses: a
    spreadsheet's fixed bytes, a scanned PDF's few lines in many bytes); beyond them, the nearest
    :data:`NEIGHBOURS_K` runs each scaled by the size ratio, and the median of those. Empty when the format has
    fewer than 3 runs."""
    table = model.neighbours.get(source_format or "") or []
    if len(table) < 3 or file_bytes <= 0:
        return {}
    rows = np.array([[np.nan if v is None else float(v) for v in row] for row in table], dtype=float)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    out: dict[str, float] = {}
    for i, name in enumerate(NEIGHBOUR_FEATURES, start=1):
        known = rows[~np.isnan(rows[:, i])]
        if len(known) == 0:
            continue
        sizes, values = np.maximum(known[:, 0], 1.0), known[:, i]
        if sizes[0] <= file_bytes <= sizes[-1]:
            out[name] = float(np.interp(file_bytes, sizes, values))
            continue
        nearest = np.argsort(np.abs(np.log(sizes) - np.log(float(file_bytes))), kind="stable")[:NEIGHBOURS_K]
        out[name] = float(np.median(values[nearest] * float(file_bytes) / sizes[nearest]))
    return out


def _stage_seconds(stage_model: StageModel, values: dict[str, float], source_format: str | None) -> float:
    base = stage_model.base_by_format.get(source_format or "", stage_model.base_s)
    linear = sum(rate * values.get(name, 0.0) for name, rate in stage_model.rates.items())
    bent = sum(rate * max(0.0, values.get(name, 0.0) - knot) for name, (knot, rate) in stage_model.hinges.items())
    # A step is paid in full from one unit past its threshold; an estimate between (a size where some runs used
    # the LLM and some did not) pays its share.
    setup = sum(seconds * min(1.0, max(0.0, values.get(name, 0.0) - threshold))
                for name, (threshold, seconds) in stage_model.steps.items())
    return max(0.0, base + linear + bent + setup)


def predict_stage_seconds(model: EtaModel, stage: str, features: PoFeatures) -> float:
    """Predicted seconds of one stage (or wait, or ``checks``) for this PO; 0 for a stage nobody knows."""
    stage_model = model.stage(stage)
    if stage_model is None:
        return 0.0
    return _stage_seconds(stage_model, estimate_features(model, features), features.source_format)


def predict_total_seconds(model: EtaModel, features: PoFeatures, *, include_waits: bool = True) -> float:
    """Predicted end-to-end seconds: (waits +) the PO stages + checks + the time between them."""
    values = estimate_features(model, features)
    stages = [*WAIT_STAGES, *RUN_STAGES] if include_waits else RUN_STAGES
    total = sum(_stage_seconds(model.stage(s), values, features.source_format) for s in stages if model.stage(s))
    return max(0.0, total + model.overhead_s)


def predict_remaining(
    model: EtaModel,
    features: PoFeatures,
    *,
    current_stage: str | None,
    fraction_done: float = 0.0,
    elapsed_in_stage_s: float = 0.0,
) -> float:
    """Seconds left for a running PO: what remains of the current stage plus every later stage and the checks.

    The current stage's remainder is ``max(prediction − elapsed, prediction × (1 − fraction_done))`` when it
    reports progress, else ``prediction − elapsed``; never negative. The time between steps is shared out, one
    share after each run stage: the current stage's share is left until it finishes. A finished stage
    (``fraction_done ≥ 1``) has nothing left: the ETA is then the later stages alone, exactly what the next
    stage's start will say. ``current_stage=None`` = not started yet."""
    if current_stage is None:
        return predict_total_seconds(model, features)
    order = [*WAIT_STAGES, *RUN_STAGES]
    values = estimate_features(model, features)
    fmt = features.source_format
    finished = fraction_done >= 1.0
    current = 0.0
    if not finished:
        stage_model = model.stage(current_stage)
        predicted = _stage_seconds(stage_model, values, fmt) if stage_model else 0.0
        fraction = max(fraction_done, 0.0)
        current = predicted - max(elapsed_in_stage_s, 0.0)
        if fraction > 0:
            current = max(current, predicted * (1 - fraction))
        current = max(current, 0.0)
    if current_stage not in order:
        return current
    later = order[order.index(current_stage) + 1 :]
    rest = sum(_stage_seconds(model.stage(s), values, fmt) for s in later if model.stage(s))
    # The time between steps: one share for the gap after each run stage not finished yet.
    open_stages = [s for s in later if s in RUN_STAGES] + ([current_stage] if current_stage in RUN_STAGES
                                                           and not finished else [])
    overhead = max(model.overhead_s, 0.0) * len(open_stages) / len(RUN_STAGES)
    return max(0.0, current + rest + overhead)


def guess_format(filename: str | None, mime_type: str | None) -> str:
    """The source format an upload's name (else its MIME type) suggests, in the extractors' own names
    (``ParsedPO.source_format``: csv, tsv, xlsx, pdf, x12, ubl, image, text); ``unknown`` otherwise. The parser
    decides by content later; this is all the ETA has before parsing."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in FORMAT_BY_SUFFIX:
        return FORMAT_BY_SUFFIX[suffix]
    mime = (mime_type or "").split(";")[0].strip().lower()
    if mime.startswith("image/"):
        return "image"
    return FORMAT_BY_MIME.get(mime, "unknown")


def features_at_start(file_bytes: float | None, source_format: str | None) -> PoFeatures:
    """What is known of a PO when its first stage starts (the live ETA's first estimate): its size and format."""
    return PoFeatures(file_bytes=None if file_bytes is None else int(file_bytes), source_format=source_format)


#: File suffixes and the format the extractors will most likely report for them.
FORMAT_BY_SUFFIX: dict[str, str] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "text", ".xlsx": "xlsx", ".xlsm": "xlsx", ".pdf": "pdf",
    ".xml": "ubl", ".ubl": "ubl", ".edi": "x12", ".x12": "x12", ".850": "x12",
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".bmp", ".heic"), "image"),
}
#: MIME types (any ``image/*`` is ``image``) and their format.
FORMAT_BY_MIME: dict[str, str] = {
    "text/csv": "csv", "text/tab-separated-values": "tsv", "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/xml": "ubl", "text/xml": "ubl", "application/edi-x12": "x12", "text/plain": "text",
}


# --- fitting ------------------------------------------------------------------------------------------------

RUN_FEATURES = ["file_bytes", "lines", "skus", "pages", "llm_windows", "shopify_points"]


def run_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: job, status, first run, merchant, format, ended_at (its ``end_to_end``, else its last
    row), the PO's features (pages/windows from ``ai_parsing``, Shopify points from ``shopify_sync``) and one
    column of seconds per stage (empty where the stage was skipped or reused)."""
    if df.empty:
        return pd.DataFrame(
            columns=["job", "run_status", "first_run", "merchant_id", "source_format", "ended_at", *RUN_FEATURES]
        )
    grouped = df.groupby("run_id", sort=False)
    runs = grouped.agg(
        job=("job", "first"),
        run_status=("run_status", "first"),
        first_run=("first_run", "max"),
        merchant_id=("merchant_id", "first"),
        source_format=("source_format", "first"),
        ended_at=("ended_at", "max"),
        file_bytes=("file_bytes", "max"),
        lines=("lines", "max"),
        skus=("skus", "max"),
    )
    parsing = df[df["stage"] == "ai_parsing"].groupby("run_id")[["pages", "llm_windows"]].max()
    parsing = parsing.fillna(0.0)  # parsed without an LLM (or no pages): 0, not unknown
    sync = df[df["stage"] == "shopify_sync"].groupby("run_id")["shopify_points"].max()
    # A skipped or reused stage (parse cache, review hold) did not do the work: it says nothing of its duration.
    worked = df["duration_s"].notna() & ~df["outcome"].isin(["skipped", "reused"])
    durations = df[worked].groupby(["run_id", "stage"])["duration_s"].sum().unstack()
    e2e_end = df[df["stage"] == "end_to_end"].groupby("run_id")["ended_at"].max()
    runs = runs.join(parsing).join(sync).join(durations)
    if "ai_parsing" in runs.columns:  # a reused or failed parse measured no pages or windows
        runs.loc[runs["ai_parsing"].isna(), ["pages", "llm_windows"]] = np.nan
    runs["ended_at"] = e2e_end.reindex(runs.index).fillna(runs["ended_at"])
    return runs


def robust_fit(x: np.ndarray | None, y: np.ndarray, groups: np.ndarray, *, iterations: int = 4):
    """Least squares ``y ≈ base[group] + rate × x`` with non-negative base and rate, trimming outliers
    (residuals beyond 3 robust standard deviations) and refitting. ``x=None`` fits bases only (medians).
    Returns ``(bases by group, rate, kept mask)``."""
    columns = None if x is None else np.asarray(x, dtype=float).reshape(-1, 1)
    bases, rates, keep = robust_fit_columns(columns, y, groups, iterations=iterations)
    return bases, float(rates[0]) if rates.size else 0.0, keep


def robust_fit_columns(x: np.ndarray | None, y: np.ndarray, groups: np.ndarray, *, iterations: int = 4):
    """``y ≈ base[group] + Σ rate_j × x[:, j]`` (non-negative bases and rates), trimming outliers within each
    group and refitting. A run's noise grows with its duration (a throttled sync varies by seconds, a small one
    by milliseconds), so a residual is judged relative to the fitted value (at least the group's median): beyond
    3 robust standard deviations of those it is trimmed. Returns ``(bases by group, rates, kept mask)``."""
    names = list(dict.fromkeys(groups.tolist()))
    keep = np.ones(len(y), dtype=bool)
    width = 0 if x is None else x.shape[1]
    bases, rates = {}, np.zeros(width)
    for _ in range(iterations):
        bases, rates = _fit_once(x, y, groups, names, keep)
        fitted = _fitted_values(bases, rates, x, groups)
        new_keep = np.ones(len(y), dtype=bool)
        for g in names:  # each format has its own noise: trim within it
            members = groups == g
            floor = max(float(np.median(y[members])), 1e-6)
            relative = np.abs(y - fitted) / np.maximum(fitted, floor)
            scale = 1.4826 * float(np.median(relative[keep & members])) if (keep & members).any() else 0.0
            new_keep[members] = relative[members] <= max(3 * scale, 1e-6)
        if new_keep.sum() < max(3, len(y) // 2) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return bases, rates, keep


def _fitted_values(bases: dict, rates: np.ndarray, x: np.ndarray | None, groups: np.ndarray) -> np.ndarray:
    values = np.array([bases[g] for g in groups], dtype=float)
    return values if x is None or not rates.size else values + x @ rates


def _nnls(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient ≥ 0: drop the most negative column and refit until none is."""
    active = list(range(design.shape[1]))
    coef = np.zeros(design.shape[1])
    while active:
        solution, *_ = np.linalg.lstsq(design[:, active], target, rcond=None)
        if np.all(np.isfinite(solution)) and solution.min() >= 0:
            coef[active] = solution
            return coef
        active.pop(int(np.argmin(np.nan_to_num(solution, nan=-np.inf))))
    return coef


def _fit_once(x, y, groups, names, keep):
    width = 0 if x is None else x.shape[1]
    medians = {g: max(0.0, float(np.median(y[keep & (groups == g)]))) for g in names}
    if width == 0:
        return medians, np.zeros(0)
    columns = [(groups == g).astype(float) for g in names]
    design = np.column_stack([*columns, x])[keep]
    coef = _nnls(design, y[keep])
    rates = coef[len(names):]
    if not np.any(rates > 0):  # no feature helps: the bases are the medians
        return medians, np.zeros(width)
    return {g: float(coef[i]) for i, g in enumerate(names)}, rates


def _candidate(
    stage: str, runs: pd.DataFrame, feature: str | None, min_runs: int, *, shape: str = "line",
    second: str | None = None,
) -> tuple[StageModel, float] | None:
    """Fit one candidate on the runs with the stage and the feature; its model and mean absolute error.
    ``shape``: ``line`` = ``rate × x``; ``hinge`` = ``rate × x + rate₂ × max(0, x − knot)``, the knot the best of
    the 5 %-quantiles of ``x`` refined between its neighbours; ``step`` = ``rate × x + setup × [x > 0]``
    (``+ rate₂ × second``)."""
    rows = runs[runs[stage].notna()] if feature is None else runs[runs[stage].notna() & runs[feature].notna()]
    if second is not None:
        rows = rows[rows[second].notna()]
    if len(rows) < min_runs:
        return None
    y = rows[stage].to_numpy(dtype=float)
    x = None if feature is None else rows[feature].to_numpy(dtype=float)
    if x is not None and np.ptp(x) == 0:
        return None
    formats = rows["source_format"].astype(object).where(rows["source_format"].notna(), ANY).astype(str)
    if stage in BY_FORMAT_STAGES:
        counts = formats.value_counts()
        formats = formats.where(formats.map(counts) >= min_runs, ANY)
    else:
        formats = pd.Series(ANY, index=rows.index)
    groups = formats.to_numpy(dtype=object)
    knots: list[float | None] = [None]
    if shape == "step" and x is not None:
        knots = [0.0] if (x > 0).sum() >= 3 and (x <= 0).sum() >= 3 else []
        if not knots:
            return None
    if shape == "hinge" and x is not None:
        edge = max(3, min_runs // 2)  # runs needed on each side of a knot
        knots = [float(k) for k in np.unique(np.quantile(x, np.linspace(0.05, 0.95, 19)))
                 if (x <= k).sum() >= edge and (x > k).sum() >= edge]
        if not knots:
            return None
    best = _best_knot(stage, rows, feature, second, shape, knots, x, y, groups)
    if best is not None and shape == "hinge" and len(knots) > 1:
        # Refine between the grid's knots either side of the best one.
        chosen = best[0].hinges[feature][0] if feature in best[0].hinges else None
        if chosen is not None and chosen in knots:
            i = knots.index(chosen)
            low, high = knots[max(i - 1, 0)], knots[min(i + 1, len(knots) - 1)]
            finer = [float(k) for k in np.linspace(low, high, 11)[1:-1] if k != chosen]
            refined = _best_knot(stage, rows, feature, second, shape, finer, x, y, groups)
            if refined is not None and refined[1] < best[1]:
                best = refined
    return best


def _best_knot(
    stage: str,
    rows: pd.DataFrame,
    feature: str | None,
    second: str | None,
    shape: str,
    knots: list[float | None],
    x: np.ndarray | None,
    y: np.ndarray,
    groups: np.ndarray,
) -> tuple[StageModel, float] | None:
    """The candidate of one shape with the knot (of ``knots``) that leaves the smallest trimmed error."""
    best: tuple[StageModel, float] | None = None
    for knot in knots:
        if x is None or knot is None:
            columns = None if x is None else x.reshape(-1, 1)
        elif shape == "step":
            extra = [rows[second].to_numpy(dtype=float)] if second is not None else []
            columns = np.column_stack([x, (x > knot).astype(float), *extra])
        else:
            columns = np.column_stack([x, np.maximum(x - knot, 0.0)])
        bases, rates, _ = robust_fit_columns(columns, y, groups)
        residual = np.abs(y - _fitted_values(bases, rates, columns, groups))
        score = _trimmed_mae(residual)
        if best is not None and score >= best[1]:
            continue
        overall = float(np.median(y - (columns @ rates if columns is not None and rates.size else 0.0)))
        model = StageModel(
            base_s=bases.get(ANY, max(0.0, overall)),
            rates={name: float(rate) for name, rate in [(feature, rates[0] if rates.size else 0.0),
                                                         (second, rates[2] if rates.size > 2 else 0.0)]
                   if name is not None and rate > 0},
            base_by_format={g: b for g, b in bases.items() if g != ANY},
            n=len(rows),
            residual_p90_s=float(np.percentile(residual, 90)),
            fitted=True,
            hinges={feature: [knot, float(rates[1])]} if shape == "hinge" and knot is not None and rates[1] > 0
            else {},
            steps={feature: [knot, float(rates[1])]} if shape == "step" and knot is not None and rates[1] > 0 else {},
        )
        best = (model, score)
    return best


def _trimmed_mae(residual: np.ndarray, keep_share: float = 0.95) -> float:
    """Mean absolute error over the best ``keep_share`` of the rows (the same count for every candidate)."""
    ordered = np.sort(residual)
    return float(ordered[: max(1, int(np.ceil(len(ordered) * keep_share)))].mean())


def fit_stage(stage: str, runs: pd.DataFrame, *, min_runs: int = MIN_RUNS) -> StageModel | None:
    """The best small model of ``stage`` on these runs (a feature must beat the constant by ``MIN_IMPROVEMENT``
    on the same runs, and a hinge or a step the best straight line by as much), or ``None`` with fewer than ``min_runs``
    runs."""
    if stage not in runs.columns:
        return None
    best = _candidate(stage, runs, None, min_runs)
    if best is None:
        return None
    best_score = 1.0
    tries: list[tuple[str, str, str | None]] = [(feature, "line", None) for feature in CANDIDATES.get(stage, [])]
    tries += [(feature, "hinge", None) for feature in HINGE_FEATURES.get(stage, [])]
    tries += [(feature, "step", second) for feature, second in STEP_FEATURES.get(stage, [])]
    for feature, shape, second in tries:
        if feature not in runs.columns or (second is not None and second not in runs.columns):
            continue
        fitted = _candidate(stage, runs, feature, min_runs, shape=shape, second=second)
        if fitted is None:
            continue
        constant = _candidate(stage, runs[runs[feature].notna()], None, min_runs)
        score = fitted[1] / constant[1] if constant and constant[1] > 0 else 1.0
        better = score < best_score * (1 - MIN_IMPROVEMENT)
        if better or (shape == "line" and score < best_score and best_score < 1.0):
            best, best_score = fitted, score
    return best[0]


def fit_ratios(runs: pd.DataFrame, *, min_runs: int = 3) -> dict[str, dict[str, float]]:
    """Ratios for features not known yet, per source format (``*`` = all formats), defaulting where thin."""
    ratios = _default_ratios()
    kb = runs["file_bytes"] / 1024
    pairs = {
        "lines_per_kb": (runs["lines"], kb),
        "pages_per_kb": (runs["pages"], kb),
        "windows_per_page": (runs["llm_windows"], runs["pages"]),
        "windows_per_kb": (runs["llm_windows"], kb),
        "skus_per_line": (runs["skus"], runs["lines"]),
        "points_per_sku": (runs["shopify_points"], runs["skus"]),
    }
    formats = runs["source_format"].astype(object).where(runs["source_format"].notna(), ANY)
    for name, (numerator, denominator) in pairs.items():
        valid = numerator.notna() & denominator.notna() & (denominator > 0)
        if valid.sum() >= min_runs:
            ratios[name][ANY] = float(numerator[valid].sum() / denominator[valid].sum())
        for fmt in formats[valid].unique():
            mask = valid & (formats == fmt)
            if fmt != ANY and mask.sum() >= min_runs:
                ratios[name][str(fmt)] = float(numerator[mask].sum() / denominator[mask].sum())
    return ratios


def training_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Successful ``po_job`` runs, one row each (``run_table``)."""
    runs = run_table(df[df["job"] == "po_job"])
    return runs[runs["run_status"] == "success"]


def fit_eta_model(
    df: pd.DataFrame, *, now: dt.datetime, window: dt.timedelta = dt.timedelta(days=30), min_runs: int = MIN_RUNS
) -> EtaModel:
    """Fit every stage on the successful ``po_job`` runs that ended in ``(now - window, now]``; a stage with fewer
    than ``min_runs`` runs keeps its default. No history at all gives ``DEFAULT_MODEL`` (``basis`` says so)."""
    runs = training_runs(in_window(prepare_frame(df), now - window, now))
    return _fit_runs(runs, now=now, min_runs=min_runs)


def _fit_runs(runs: pd.DataFrame, *, now: dt.datetime, min_runs: int) -> EtaModel:
    if len(runs) == 0:
        return copy.deepcopy(DEFAULT_MODEL)
    stages: dict[str, StageModel] = {}
    defaulted: list[str] = []
    unseen: list[str] = []
    for stage in [*WAIT_STAGES, *RUN_STAGES]:
        fitted = fit_stage(stage, runs, min_runs=min_runs)
        if fitted is None and stage in WAIT_STAGES and len(runs) >= min_runs and _never_seen(runs, stage):
            # Enough runs and none waited here (e.g. runs executed in process: no queue, no launch):
            # this deployment has no such wait, so the ETA adds none (a default would only add error).
            stages[stage] = StageModel(base_s=0.0, n=0, fitted=True)
            unseen.append(stage)
            continue
        if fitted is None:
            defaulted.append(stage)
            stages[stage] = copy.deepcopy(DEFAULT_MODEL.stages[stage])
        else:
            stages[stage] = fitted
    model = EtaModel(stages=stages, ratios=fit_ratios(runs), n=len(runs), neighbours=neighbour_table(runs))
    model.overhead_s = _overhead(runs)
    model.fitted_at = pd.Timestamp(now).tz_convert("UTC").isoformat()
    if len(defaulted) == len(stages):
        model.basis = f"defaults: only {len(runs)} runs (fewer than {min_runs})"
    else:
        basis = f"eta_model fitted on {len(runs)} runs, {pd.Timestamp(now).tz_convert('UTC'):%Y-%m-%d %H:%M} UTC"
        if defaulted:
            basis += f"; defaults for {', '.join(defaulted)}"
        if unseen:
            basis += f"; no {', '.join(unseen)} in these runs"
        model.basis = basis[:200]
    return model


def neighbour_table(runs: pd.DataFrame) -> dict[str, list[list[float | None]]]:
    """Per format (with at least 3 runs), the newest :data:`MAX_NEIGHBOURS` runs' ``[file_bytes, pages,
    llm_windows, lines, skus, shopify_points]`` in order of size (``None`` where not measured)."""
    if runs.empty or "file_bytes" not in runs.columns:
        return {}
    usable = runs[runs["source_format"].notna() & (runs["file_bytes"] > 0)]
    usable = usable.sort_values("ended_at", kind="stable") if "ended_at" in usable.columns else usable
    columns = ["file_bytes", *NEIGHBOUR_FEATURES]
    table: dict[str, list[list[float | None]]] = {}
    for fmt, group in usable.groupby("source_format", sort=True):
        group = group.tail(MAX_NEIGHBOURS).sort_values("file_bytes", kind="stable")
        if len(group) < 3:
            continue
        values = group.reindex(columns=columns).to_numpy(dtype=float)
        table[str(fmt)] = [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in values]
    return table


def _never_seen(runs: pd.DataFrame, stage: str) -> bool:
    return stage not in runs.columns or not runs[stage].notna().any()


def _overhead(runs: pd.DataFrame) -> float:
    """Median end-to-end time no stage or wait accounts for (the gaps between steps)."""
    if "end_to_end" not in runs.columns:
        return 0.0
    parts = [s for s in [*WAIT_STAGES, *RUN_STAGES] if s in runs.columns]
    gaps = (runs["end_to_end"] - runs[parts].fillna(0.0).sum(axis=1)).dropna()
    return float(gaps.median()) if len(gaps) else 0.0


# --- backtest -----------------------------------------------------------------------------------------------


@dataclass
class EtaBacktest:
    """How close the ETA would have been on the newest runs (fitted on the older ones), and the old baseline."""

    n: int = 0
    train_n: int = 0
    within_15s: float | None = None
    within_15pct: float | None = None
    mae_s: float | None = None
    after_parse_within_15s: float | None = None
    after_parse_within_15pct: float | None = None
    after_parse_mae_s: float | None = None
    baseline_within_15s: float | None = None
    baseline_within_15pct: float | None = None
    baseline_mae_s: float | None = None
    basis: str = "defaults: no history yet"
    errors_s: list[float] = field(default_factory=list)
    baseline_errors_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The scores (not the per-run errors) as a JSON-ready dict."""
        data = asdict(self)
        data.pop("errors_s")
        data.pop("baseline_errors_s")
        return data


def _scores(errors: np.ndarray, actual: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if errors.size == 0:
        return None, None, None
    absolute = np.abs(errors)
    return (
        float(np.mean(absolute <= 15.0)),
        float(np.mean(absolute <= 0.15 * actual)),
        float(np.mean(absolute)),
    )


def backtest_eta(
    df: pd.DataFrame, *, holdout: float = 0.2, now: dt.datetime | None = None, min_runs: int = MIN_RUNS
) -> EtaBacktest:
    """Fit on the oldest ``1 - holdout`` of the successful first ``po_job`` runs with an ``end_to_end`` row and
    score the newest exactly as the live ETA would have seen them.

    The target is the time from the first stage's start to the run's end (``end_to_end`` minus the sensor,
    queue and launch waits): the live ETA first speaks when ``ai_parsing`` starts, after those waits happened.
    "At start" predicts it from what ``po_features`` knows then: the file size and the format (``stage_runs``
    keeps the parsed format, not the upload's name, so the parsed one stands in for the name's guess; pages,
    known only after parsing, are never used). "After parsing" is ``ai_parsing``'s measured time plus the
    prediction at its end, with lines, SKUs, pages and windows known. The old plan's baseline is scored on the
    same runs and the same target: the median of that time over runs within ±20 % of the file size in the
    7 days before (else of all earlier runs)."""
    split = split_runs(df, holdout=holdout, now=now, min_runs=min_runs)
    if split is None:
        return EtaBacktest()
    runs, train, test = split
    model = _fit_runs(train, now=train["ended_at"].max().to_pydatetime(), min_runs=min_runs)
    actual = test["remaining_s"].to_numpy(dtype=float)
    at_start = predict_at_start(model, test)
    after_parse = np.array([_after_parse_eta(model, row) for row in test.itertuples()])
    baseline = _baseline(runs, test)
    has_baseline = ~np.isnan(baseline)
    result = EtaBacktest(n=len(test), train_n=len(train), basis=model.basis)
    result.within_15s, result.within_15pct, result.mae_s = _scores(at_start - actual, actual)
    (result.after_parse_within_15s, result.after_parse_within_15pct, result.after_parse_mae_s) = _scores(
        after_parse - actual, actual
    )
    (result.baseline_within_15s, result.baseline_within_15pct, result.baseline_mae_s) = _scores(
        baseline[has_baseline] - actual[has_baseline], actual[has_baseline]
    )
    result.errors_s = (at_start - actual).tolist()
    result.baseline_errors_s = (baseline[has_baseline] - actual[has_baseline]).tolist()
    return result


def split_runs(
    df: pd.DataFrame, *, holdout: float = 0.2, now: dt.datetime | None = None, min_runs: int = MIN_RUNS
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """``(all, train, test)``: the backtest's runs (successful first ``po_job`` runs with an ``end_to_end``, in the
    order they ended, with their ``remaining_s`` target), the older ``1 - holdout`` and the newest ``holdout``;
    ``None`` when there are too few to split."""
    data = prepare_frame(df)
    if now is not None:
        data = in_window(data, None, now)
    runs = training_runs(data)
    if "end_to_end" not in runs.columns:
        return None
    runs = runs[runs["first_run"] & runs["end_to_end"].notna()].sort_values("ended_at", kind="stable").copy()
    waits = [stage for stage in WAIT_STAGES if stage in runs.columns]
    runs["remaining_s"] = (runs["end_to_end"] - runs[waits].fillna(0.0).sum(axis=1)).clip(lower=0.0)
    n_test = int(round(len(runs) * holdout))
    if n_test < 1 or len(runs) - n_test < min_runs:
        return None
    return runs, runs.iloc[: len(runs) - n_test], runs.iloc[len(runs) - n_test :]


def predict_at_start(model: EtaModel, runs: pd.DataFrame) -> np.ndarray:
    """The live ETA's first estimate for each run (``ai_parsing`` starting, size and format known)."""
    return np.array(
        [
            predict_remaining(model, features_at_start(_value(row, "file_bytes"), row.source_format),
                              current_stage="ai_parsing")
            for row in runs.itertuples()
        ]
    )


def _value(row: Any, name: str) -> float | None:
    value = getattr(row, name, None)
    return None if value is None or pd.isna(value) else float(value)


def _after_parse_eta(model: EtaModel, row: Any) -> float:
    features = PoFeatures(
        file_bytes=_value(row, "file_bytes"),
        source_format=row.source_format,
        pages=_value(row, "pages"),
        lines=_value(row, "lines"),
        skus=_value(row, "skus"),
        llm_windows=_value(row, "llm_windows"),
    )
    parsed = _value(row, "ai_parsing") or 0.0
    return parsed + predict_remaining(model, features, current_stage="ai_parsing", fraction_done=1.0)


def _baseline(runs: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The old plan's estimate for each test run: the median ``remaining_s`` of earlier runs of similar size."""
    ended = runs["ended_at"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    target = runs["remaining_s"].to_numpy(dtype=float)
    size = runs["file_bytes"].to_numpy(dtype=float)
    week = np.timedelta64(7, "D")
    out = np.full(len(test), np.nan)
    for i, row in enumerate(test.itertuples()):
        started = np.datetime64(pd.Timestamp(row.ended_at).tz_convert(None), "ns") - np.timedelta64(
            int(row.end_to_end * 1e9), "ns"
        )
        earlier = ended <= started
        if not earlier.any():
            continue
        similar = earlier & (ended > started - week)
        if _value(row, "file_bytes") is not None:
            similar &= np.abs(size - row.file_bytes) <= 0.2 * row.file_bytes
        pool = target[similar] if similar.any() else target[earlier]
        out[i] = float(np.median(pool))
    return out


# --- which model goes live ----------------------------------------------------------------------------------

#: The previous model is compared only on held-out runs it never saw, and only with at least this many.
MIN_UNSEEN_RUNS = 5


@dataclass
class ModelChoice:
    """The freshly fitted model, whether it goes live (``publish``), which model is live after this and why."""

    fitted: EtaModel
    publish: bool
    live: str  # "fitted" | "previous" | "defaults"
    reason: str
    backtest: EtaBacktest
    default_mae_s: float | None = None
    previous_mae_s: float | None = None


def choose_model(
    df: pd.DataFrame,
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=30),
    previous: EtaModel | None = None,
    holdout: float = 0.2,
    min_runs: int = MIN_RUNS,
) -> ModelChoice:
    """Fit a model on the window's history and decide whether it replaces the live one.

    The same fitting, done on the older runs only (``backtest_eta``), is scored on the newest held-out runs
    against ``DEFAULT_MODEL`` on those runs and against ``previous`` (the stored model) on those it never saw
    (ended after it was fitted; at least :data:`MIN_UNSEEN_RUNS`). The fit goes live only if its mean absolute
    error is no worse than each; otherwise the live model stays as it is. Too little history to hold runs out:
    the fit goes live (stages without enough runs keep their defaults), and the reason says it was not tested."""
    fitted = fit_eta_model(df, now=now, window=window, min_runs=min_runs)
    data = in_window(prepare_frame(df), now - window, now)
    backtest = backtest_eta(data, holdout=holdout, now=now, min_runs=min_runs)
    split = split_runs(data, holdout=holdout, now=now, min_runs=min_runs)
    if split is None or backtest.mae_s is None:
        return ModelChoice(fitted, True, "fitted", "published untested: too little history to hold runs out",
                           backtest)
    _, _, test = split
    actual = test["remaining_s"].to_numpy(dtype=float)
    errors = np.abs(np.asarray(backtest.errors_s, dtype=float))
    default_mae = float(np.mean(np.abs(predict_at_start(DEFAULT_MODEL, test) - actual)))
    losses: list[str] = []
    previous_mae: float | None = None
    notes = [f"held-out MAE {backtest.mae_s:.1f} s on {len(test)} runs; defaults {default_mae:.1f} s"]
    if backtest.mae_s > default_mae + 1e-9:
        losses.append(f"defaults ({default_mae:.1f} s vs {backtest.mae_s:.1f} s)")
    if previous is not None and previous.fitted_at:
        unseen = (test["ended_at"] > pd.Timestamp(previous.fitted_at)).to_numpy()
        if unseen.sum() >= MIN_UNSEEN_RUNS:
            previous_mae = float(np.mean(np.abs(predict_at_start(previous, test[unseen]) - actual[unseen])))
            fitted_mae = float(np.mean(errors[unseen]))
            notes.append(f"previous model {previous_mae:.1f} s vs {fitted_mae:.1f} s on {int(unseen.sum())} runs "
                         "it never saw")
            if fitted_mae > previous_mae + 1e-9:
                losses.append(f"the previous model ({previous_mae:.1f} s vs {fitted_mae:.1f} s)")
    if not losses:
        return ModelChoice(fitted, True, "fitted", "published: " + "; ".join(notes), backtest, default_mae,
                           previous_mae)
    kept = "previous" if previous is not None and previous.fitted_at else "defaults"
    why = (f"not published, worse than {' and '.join(losses)}; "
           f"kept the {'previous model' if kept == 'previous' else 'defaults'}")
    return ModelChoice(fitted, False, kept, why, backtest, default_mae, previous_mae)
