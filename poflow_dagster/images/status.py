"""Where one upload's product images stand, for ``poflow status`` and the API's upload status.

:func:`upload_image_status` reads ``draft_images`` for the drafts of the upload's PO (a draft another PO shares
shows its images too: they are the product's). Bounded for a 5,000-line PO: the counts always cover every draft
(counted in SQL, chunk by chunk); the per-draft list holds the first ``limit`` drafts with images, in PO order, each
with at most ``IMAGES_PER_DRAFT`` images, and says how many more there are (``drafts_more``, ``more``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import MAX_CHUNK_DRAFTS, drafts_for_upload
from poflow_dagster.store.schema import DraftImage

__all__ = ["DRAFTS_SHOWN", "IMAGES_PER_DRAFT", "STATES", "upload_image_status"]

#: Drafts listed by default (the counts cover all of them).
DRAFTS_SHOWN = 50
#: Images listed per draft.
IMAGES_PER_DRAFT = 10
#: Every state a draft image can be in, in the order they are shown.
STATES = ("attached", "fetched", "found", "duplicate", "rejected", "skipped", "failed")


def upload_image_status(db: Database, upload_id: str, *, limit: int = DRAFTS_SHOWN) -> dict[str, Any]:
    """``{"counts": {state: n, "drafts": n, "drafts_with_images": n}, "rejected": {reason: n},
    "drafts": [{"sku", "draft_id", "images": [{state, source, url, media_gid, reason}], "more"}], "drafts_more"}``."""
    drafts = drafts_for_upload(db, upload_id)
    ids = [d.id for d in drafts]
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with_images: set[int] = set()
    with db.session() as session:
        for first in range(0, len(ids), MAX_CHUNK_DRAFTS):
            chunk = ids[first:first + MAX_CHUNK_DRAFTS]
            for draft_id, state, count in session.execute(
                select(DraftImage.draft_id, DraftImage.state, func.count())
                .where(DraftImage.draft_id.in_(chunk)).group_by(DraftImage.draft_id, DraftImage.state)
            ):
                states[state] += count
                with_images.add(draft_id)
            for (reason,) in session.execute(
                select(DraftImage.reason).where(DraftImage.draft_id.in_(chunk), DraftImage.state == "rejected")
            ):
                reasons[reason_code(reason)] += 1
        shown = [d for d in drafts if d.id in with_images][:max(limit, 0)]
        rows: dict[int, list[DraftImage]] = {}
        if shown:
            for row in session.scalars(select(DraftImage).where(DraftImage.draft_id.in_([d.id for d in shown]))
                                       .order_by(DraftImage.draft_id, DraftImage.position, DraftImage.id)):
                rows.setdefault(row.draft_id, []).append(row)
        listed = [_draft_entry(d.sku, d.id, rows.get(d.id, [])) for d in shown]
    counts = {"drafts": len(drafts), "drafts_with_images": len(with_images),
              **{state: states.get(state, 0) for state in STATES}}
    return {"counts": counts, "rejected": dict(sorted(reasons.items())), "drafts": listed,
            "drafts_more": len(with_images) - len(listed)}


def reason_code(reason: str | None) -> str:
    """The stable code of a stored reason (``"http_404: Not Found"`` -> ``http_404``)."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


def _draft_entry(sku: str, draft_id: int, rows: list[DraftImage]) -> dict[str, Any]:
    images = [{"state": r.state, "source": r.source, "url": _short(r.url), "media_gid": r.media_gid,
               "reason": r.reason} for r in rows[:IMAGES_PER_DRAFT]]
    return {"sku": sku, "draft_id": draft_id, "images": images, "more": max(len(rows) - IMAGES_PER_DRAFT, 0)}


def _short(url: str | None, limit: int = 300) -> str | None:
    """A URL as shown (a ``data:`` URI or a very long link is cut: the row keeps it whole)."""
    return url if url is None or len(url) <= limit else url[:limit - 1] + "…"
