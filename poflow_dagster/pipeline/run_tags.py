"""The tags every PO run carries, so the Dagster UI (runs list, partition pages) can filter by merchant and file,
and the run queue can bound runs per Shopify store and per workload.

``poflow/merchant`` and ``poflow/file`` hold the upload's merchant id and original file name, sanitized: control
characters become spaces, runs of whitespace collapse, and the value is cut to ``MAX_TAG_CHARS``.

``poflow/shop`` (the store the run will sync to: its host, or ``emulator``) and ``poflow/workload`` (``scan``: a
PDF, image or free-text document, the LLM path; ``sheet``: everything read deterministically) are what the
instance's ``concurrency.runs.tag_concurrency_limits`` count: at most N runs per store (``applyLimitPerUniqueValue``)
and at most M scans at once. A merchant with Shopify sync off gets no ``poflow/shop`` tag: its runs never call
Shopify, so they never wait for a store's slots.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from urllib.parse import urlsplit

import sqlalchemy as sa

from poflow_dagster import config
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Merchant, Upload

MERCHANT_TAG = "poflow/merchant"
FILE_TAG = "poflow/file"
SHOP_TAG = "poflow/shop"
WORKLOAD_TAG = "poflow/workload"
#: ``poflow/shop`` of runs that sync to the bundled local emulator (no shop configured).
EMULATOR_SHOP = "emulator"
#: Sniffed formats that go down the LLM path (scans, photos, PDFs, free text): ``poflow/workload=scan``.
SCAN_FORMATS = frozenset({"pdf", "image", "text", "docx", "rtf", "html"})
#: The same by file extension, when the stored file cannot be read here (another machine's storage).
SCAN_EXTENSIONS = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".heic",
                             ".txt", ".docx", ".rtf", ".html", ".htm"})
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
    """``po_run_tags`` plus the concurrency tags (:func:`run_concurrency_tags`) for these uploads, by upload id
    (ids not found are left out). One query for all of them."""
    if not upload_ids:
        return {}
    with db.session() as session:
        rows = session.execute(_tag_query(list(upload_ids))).all()
    return {row.id: {**po_run_tags(row.merchant_id, row.original_filename), **_concurrency_tags(row)} for row in rows}


def run_concurrency_tags(database: Database, upload_id: str) -> dict[str, str]:
    """The run-queue concurrency tags of one upload's PO run, decided cheaply from the stored upload and its
    merchant's settings: ``poflow/workload`` (``scan`` | ``sheet``) and, unless the merchant's Shopify sync is off,
    ``poflow/shop`` (the store's host, e.g. ``acme.myshopify.com``, or ``emulator``). ``{}`` for an unknown id."""
    with database.session() as session:
        row = session.execute(_tag_query([upload_id])).first()
    return _concurrency_tags(row) if row is not None else {}


def _tag_query(upload_ids: list[str]) -> sa.Select:
    return (
        sa.select(Upload.id, Upload.merchant_id, Upload.original_filename, Upload.stored_path,
                  Merchant.shop_url, Merchant.shopify_sync_enabled)
        .join(Merchant, Merchant.id == Upload.merchant_id)
        .where(Upload.id.in_(upload_ids))
    )


def _concurrency_tags(row: sa.Row) -> dict[str, str]:
    from poflow_dagster.workers.queues import queue_tags

    tags = {WORKLOAD_TAG: workload_of(row.stored_path, row.original_filename)}
    if row.shopify_sync_enabled:
        tags[SHOP_TAG] = shop_tag_value(row.shop_url)
    return {**tags, **queue_tags(tags)}  # the Celery queue of the workload (ignored by other run launchers)


def shop_tag_value(merchant_shop_url: str | None) -> str:
    """The store a run syncs to, as a tag value: the merchant's shop host, else ``SHOPIFY_SHOP_URL``'s, else
    ``emulator`` (the same order as ``shopify.connection.resolve_shop``)."""
    url = (merchant_shop_url or "").strip() or config.shopify_shop_url()
    if not url:
        return EMULATOR_SHOP
    host = urlsplit(url if "//" in url else f"https://{url}").netloc.lower().rpartition("@")[2]
    return tag_value(host or url)


def workload_of(stored_path: str | None, filename: str | None) -> str:
    """``scan`` when the file goes down the LLM path (sniffed from its first bytes; by extension when the file
    is not readable here), else ``sheet``."""
    from poflow_dagster.extraction.sniff import detect_format

    if stored_path:
        try:
            return "scan" if detect_format(Path(stored_path)) in SCAN_FORMATS else "sheet"
        except OSError:
            pass
    suffix = PurePath(filename or stored_path or "").suffix.lower()
    return "scan" if suffix in SCAN_EXTENSIONS else "sheet"
