"""The tags every PO run carries, so the Dagster UI (runs list, partition pages) can filter by merchant and file.

``poflow/merchant`` and ``poflow/file`` hold the upload's merchant id and original file name, sanitized: control
characters become spaces, runs of whitespace collapse, and the value is cut to ``MAX_TAG_CHARS``.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload

MERCHANT_TAG = "poflow/merchant"
FILE_TAG = "poflow/file"
#: Longest tag value written (Dagster stores run tags as text; the UI shows them in one line).
MAX_TAG_CHARS = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def tag_value(text: str | None) -> str:
    """``text`` as a one-line tag value of at most ``MAX_TAG_CHARS`` characters (``"-"`` when empty)."""
    value = " ".join(_CONTROL.sub(" ", text or "").split())
    return value[:MAX_TAG_CHARS] or "-"


def po_run_tags(merchant_id: str, filename: str) -> dict[str, str]:
    """The run tags of one upload's PO runs."""
    return {MERCHANT_TAG: tag_value(merchant_id), FILE_TAG: tag_value(filename)}


def upload_run_tags(db: Database, upload_ids: list[str]) -> dict[str, dict[str, str]]:
    """``po_run_tags`` for these uploads, by upload id (ids not found are left out)."""
    if not upload_ids:
        return {}
    with db.session() as session:
        rows = session.execute(
            sa.select(Upload.id, Upload.merchant_id, Upload.original_filename).where(Upload.id.in_(list(upload_ids)))
        ).all()
    return {row.id: po_run_tags(row.merchant_id, row.original_filename) for row in rows}
