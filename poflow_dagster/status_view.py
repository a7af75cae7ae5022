"""How ``poflow status`` shows an upload: its workflow row, its Shopify verification and per-stage durations.

Verification (the latest ``shopify_matches_drafts`` read-back) is shown on its own, beside the workflow
status: a PO can be ``completed`` with verification ``failed`` or ``error``, and the check never changes
the workflow status.
"""

from __future__ import annotations

from poflow_dagster.store.schema import WorkflowExecution
from poflow_dagster.store.workflow import StatusReport


def status_json(report: StatusReport, images: dict | None = None) -> dict:
    """The upload's status as JSON; with ``images`` (``images.status.upload_image_status``) its product images."""
    upload, workflow = report.upload, report.workflow
    data = {
        "upload_id": upload.id,
        "merchant_id": upload.merchant_id,
        "file": upload.original_filename,
        "sha256": upload.sha256,
        "upload_status": upload.status,
        "duplicate_of": upload.duplicate_of,
        "error_code": upload.error_code,
        "error_message": upload.error_message,
        "workflow": None
        if workflow is None
        else {
            "status": workflow.status,
            "run_id": workflow.run_id,
            "current_stage": workflow.current_stage,
            "progress_percent": workflow.progress_percent,
            "error_code": workflow.error_code,
            "error_message": workflow.error_message,
            "started_at": workflow.started_at.isoformat() if workflow.started_at else None,
            "completed_at": workflow.completed_at.isoformat() if workflow.completed_at else None,
            "eta_seconds": workflow.eta_seconds,
            "eta_at": workflow.eta_at.isoformat() if workflow.eta_at else None,
            "eta_basis": workflow.eta_basis,
        },
        "verification": _verification(workflow),
        "stages": [
            {
                "stage": s.stage,
                "run_id": s.run_id,
                "outcome": s.outcome,
                "attempts": s.attempts,
                "duration_ms": s.duration_ms,
                "items": s.items,
                "error_code": s.error_code,
            }
            for s in report.stages
        ],
    }
    if images is not None:
        data["images"] = images
    return data


def _verification(workflow: WorkflowExecution | None) -> dict | None:
    """The read-back result beside the workflow (``None`` until the check has run once)."""
    if workflow is None or workflow.verification_status is None:
        return None
    return {
        "status": workflow.verification_status,
        "message": workflow.verification_message,
        "verified_at": workflow.verified_at.isoformat() if workflow.verified_at else None,
    }


def eta_text(seconds: float, at: str | None, basis: str | None) -> str:
    """``ETA ~15 s (21:04:12 UTC) · eta_model fitted on 40 runs``."""
    import datetime as dt

    amount = f"~{seconds:.0f} s" if seconds < 120 else f"~{seconds / 60:.1f} min"
    clock = f" ({dt.datetime.fromisoformat(at).astimezone(dt.UTC):%H:%M:%S} UTC)" if at else ""
    return f"ETA {amount}{clock}" + (f" · {basis}" if basis else "")


def render_status(report: StatusReport, images: dict | None = None) -> str:
    data = status_json(report, images)
    lines = [
        f"upload      {data['upload_id']}  ({data['file']}, merchant {data['merchant_id']})",
        f"upload state {data['upload_status']}"
        + (f"  duplicate of {data['duplicate_of']}" if data["duplicate_of"] else ""),
    ]
    if data["error_code"]:
        lines.append(f"error       {data['error_code']}: {data['error_message']}")
    workflow = data["workflow"]
    if workflow is None:
        lines.append("workflow    not started")
    else:
        lines += [
            f"workflow    {workflow['status']}  {workflow['progress_percent']}%  stage {workflow['current_stage'] or '-'}",
            f"run         {workflow['run_id'] or '-'}",
            f"started     {workflow['started_at'] or '-'}",
            f"completed   {workflow['completed_at'] or '-'}",
        ]
        if workflow["eta_seconds"] is not None:
            lines.append(f"eta         {eta_text(workflow['eta_seconds'], workflow['eta_at'], workflow['eta_basis'])}")
        if workflow["error_code"]:
            lines.append(f"reason      {workflow['error_code']}: {workflow['error_message']}")
    verification = data["verification"]
    if verification is not None:
        lines.append(f"verified    {verification['status']}  at {verification['verified_at'] or '-'}"
                     f"  (Shopify read-back; does not change the workflow status)")
        if verification["message"]:
            lines.append(f"            {verification['message']}")
    if data["stages"]:
        lines.append("")
        lines.append(f"{'stage':<24}{'outcome':<10}{'attempts':>9}{'items':>7}{'seconds':>10}")
        for s in data["stages"]:
            seconds = "-" if s["duration_ms"] is None else f"{s['duration_ms'] / 1000:.3f}"
            items = "-" if s["items"] is None else str(s["items"])
            lines.append(f"{s['stage']:<24}{s['outcome']:<10}{s['attempts']:>9}{items:>7}{seconds:>10}")
    if images is not None:
        lines += render_images(images)
    return "\n".join(lines)


def render_images(images: dict) -> list[str]:
    """The status's images section: counts, refusals by reason, then per draft SKU each image's state."""
    counts = images["counts"]
    if not counts.get("drafts_with_images"):
        return ["", f"images      none found for {counts.get('drafts', 0)} drafts"]
    shown = ", ".join(f"{counts[state]} {state}" for state in _IMAGE_STATES if counts.get(state))
    lines = ["", f"images      {shown}  ({counts['drafts_with_images']} of {counts['drafts']} drafts)"]
    if images.get("rejected"):
        lines.append("rejected    " + ", ".join(f"{reason} {n}" for reason, n in images["rejected"].items()))
    for draft in images["drafts"]:
        for image in draft["images"]:
            where = image["media_gid"] if image["state"] == "attached" and image["media_gid"] else (
                image["url"] or "(embedded)")
            reason = f"  {image['reason']}" if image["reason"] and image["state"] != "attached" else ""
            lines.append(f"  {draft['sku']:<22}{image['state']:<10}{image['source']:<9}{where}{reason}"[:240])
        if draft["more"]:
            lines.append(f"  {draft['sku']:<22}… {draft['more']} more images")
    if images.get("drafts_more"):
        lines.append(f"  … {images['drafts_more']} more drafts with images")
    return lines


_IMAGE_STATES = ("attached", "fetched", "found", "duplicate", "rejected", "skipped", "failed")


#: ``poflow uploads`` (and the API's upload list) without ``--limit``.
DEFAULT_UPLOADS_LIMIT = 50


def list_uploads(
    db,
    *,
    merchant_id: str | None = None,
    status: str | None = None,
    since=None,
    limit: int = DEFAULT_UPLOADS_LIMIT,
) -> list[dict]:
    """``poflow uploads``: uploads newest first with their list status (``store.upload_list.LIST_STATUSES``:
    received, pending, processing, completed, failed, needs_review, duplicate), stage, percent and ETA.
    Filters: merchant, status (``pending`` = not started yet, ``received`` included), created at or after
    ``since`` (a tz-aware datetime)."""
    from poflow_dagster.store import upload_list

    page = upload_list.list_uploads(db, merchant_id=merchant_id, status=status, since=since, limit=limit)
    return [
        {
            "upload_id": e.upload_id,
            "merchant_id": e.merchant_id,
            "file": e.file,
            "status": e.status,
            "stage": e.stage,
            "percent": e.percent,
            "eta_seconds": e.eta_seconds,
            "eta_at": upload_list.iso(e.eta_at),
            "created_at": upload_list.iso(e.created_at),
            "completed_at": upload_list.iso(e.completed_at),
            "duplicate_of": e.duplicate_of,
            "error_code": e.error_code,
            "error_message": e.error_message,
        }
        for e in page.entries
    ]


def print_uploads(rows: list[dict], console=None) -> None:
    """The ``poflow uploads`` table (rich)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped: full lines, not the 80-column fallback
            console = Console(width=240)
    table = Table(show_lines=False, header_style="bold")
    for column in ("upload", "merchant", "file", "status", "stage", "%", "ETA", "created (UTC)"):
        table.add_column(column, justify="right" if column == "%" else "left", no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)  # in full: --format json
    for row in rows:
        eta = "-" if row["eta_seconds"] is None else eta_text(row["eta_seconds"], row["eta_at"], None)[4:]
        created = row["created_at"][:19].replace("T", " ") if row["created_at"] else "-"
        error = f"{row['error_code']}: {row['error_message'] or ''}".strip() if row["error_code"] else ""
        cells = (row["upload_id"], row["merchant_id"], row["file"], row["status"], row["stage"] or "-",
                 str(row["percent"]), eta, created, error)
        table.add_row(*(Text(str(cell)) for cell in cells))  # Text, not markup: `PO [/] final.csv` is a file name
    console.print(table)
    if not rows:
        console.print("no uploads match", markup=False)
