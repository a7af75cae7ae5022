"""The app database (SQLAlchemy 2 typed ORM). Identical on SQLite and PostgreSQL.

Migrations live in ``store/migrations``; a test compares them against these models.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from poflow_dagster.store.types import Money, Quantity, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Merchant(Base):
    """A Shopify merchant and its per-merchant pipeline configuration."""

    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    markup_percent: Mapped[Decimal] = mapped_column(Money())
    shopify_sync_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    shop_url: Mapped[str | None] = mapped_column(String(500))
    #: The *name* of the environment variable holding this shop's access token (never the token).
    shopify_token_env: Mapped[str | None] = mapped_column(String(200))
    #: Apply received PO quantities to Shopify stock (``poflow receive``; all of it on sync), at this location.
    receive_stock: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    stock_location_gid: Mapped[str | None] = mapped_column(String(100))
    #: When stock is received: ``manual`` (``poflow receive`` / the API, as goods arrive) or ``sync`` (every
    #: ordered unit when the PO syncs: for merchants who upload delivery documents).
    receive_on: Mapped[str] = mapped_column(String(10), default="manual", server_default="manual")
    #: Matched existing variants also get the PO's price (unit cost with the markup), not only its cost.
    update_price: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The supplier's image feed (SKU -> image URLs, CSV or JSON) at an http(s) URL or a local path.
    image_feed_url: Mapped[str | None] = mapped_column(Text)


class Supplier(Base):
    __tablename__ = "suppliers"
    __table_args__ = (UniqueConstraint("merchant_id", "normalized_name", name="uq_suppliers_merchant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    name: Mapped[str] = mapped_column(String(300))
    normalized_name: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Upload(Base):
    """One uploaded file. ``id`` is the partition key; ``seq`` orders uploads (oldest first).

    ``upload_sensor`` selects by state (``received`` with no ``run_requested_at``), never by a ``seq``
    cursor: a transaction that commits late with a lower ``seq`` is still picked up."""

    __tablename__ = "uploads"
    __table_args__ = (
        # The same bytes for one merchant are stored once; later copies point at the first.
        Index(
            "uq_uploads_merchant_sha256_original",
            "merchant_id",
            "sha256",
            unique=True,
            sqlite_where=text("duplicate_of IS NULL"),
            postgresql_where=text("duplicate_of IS NULL"),
        ),
        # The sensor's safety net looks for uploads nobody has requested a run for yet.
        Index("ix_uploads_pending_run", "status", "run_requested_at"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    original_filename: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    mime_type: Mapped[str] = mapped_column(String(200))
    stored_path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), default="cli")  # cli | inbox | api
    status: Mapped[str] = mapped_column(String(20), index=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[str | None] = mapped_column(ForeignKey("uploads.id"))
    #: A reviewer let a PO with error-severity issues continue (``poflow approve``).
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    approved_by: Mapped[str | None] = mapped_column(String(200))
    #: When a PO run was first requested (direct submit or ``upload_sensor``); ``NULL`` = nobody has yet.
    run_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ParseResult(Base):
    """The parsed PO of an upload, kept so later runs (approval, re-runs) never parse or pay an LLM twice."""

    __tablename__ = "parse_results"

    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    extractor: Mapped[str] = mapped_column(String(40))
    parsed_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class PurchaseOrder(Base):
    """A saved PO: exactly one per (non-duplicate) upload, and one per merchant + supplier + PO number."""

    __tablename__ = "purchase_orders"
    __table_args__ = (
        # Two uploads of one supplier's PO number race to save: the database picks the one winner.
        # A unique index (not a table constraint): SQLite adds it without rebuilding the table.
        Index("uq_purchase_orders_merchant_supplier_po", "merchant_id", "supplier_id", "po_number", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), unique=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    supplier_id: Mapped[int | None] = mapped_column(ForeignKey("suppliers.id"))
    po_number: Mapped[str | None] = mapped_column(String(100))
    order_date: Mapped[dt.date | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    subtotal: Mapped[Decimal | None] = mapped_column(Money())
    tax: Mapped[Decimal | None] = mapped_column(Money())
    shipping: Mapped[Decimal | None] = mapped_column(Money())
    total: Mapped[Decimal | None] = mapped_column(Money())
    source_format: Mapped[str] = mapped_column(String(20))
    extractor: Mapped[str] = mapped_column(String(40))
    issues: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: sha256 of the parsed PO it was saved from: an identical re-save is skipped.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    lines: Mapped[list[LineItem]] = relationship(
        back_populates="purchase_order", cascade="all, delete-orphan", order_by="LineItem.line_no"
    )


class LineItem(Base):
    __tablename__ = "line_items"
    __table_args__ = (UniqueConstraint("po_id", "line_no", name="uq_line_items_po_line"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    po_id: Mapped[int] = mapped_column(ForeignKey("purchase_orders.id", ondelete="CASCADE"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str | None] = mapped_column(String(100))
    barcode: Mapped[str | None] = mapped_column(String(64))  # as printed (UPC / EAN / GTIN)
    description: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[Decimal | None] = mapped_column(Quantity())
    unit_cost: Mapped[Decimal | None] = mapped_column(Money())
    line_total: Mapped[Decimal | None] = mapped_column(Money())

    purchase_order: Mapped[PurchaseOrder] = relationship(back_populates="lines")


class ProductDraft(Base):
    """The merchant's product for one SKU; POs update it, never duplicate it."""

    __tablename__ = "product_drafts"
    __table_args__ = (UniqueConstraint("merchant_id", "sku", name="uq_product_drafts_merchant_sku"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    sku: Mapped[str] = mapped_column(String(100))
    barcode: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    unit_cost: Mapped[Decimal] = mapped_column(Money())
    price: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    source_upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ShopifyProduct(Base):
    """Where a draft lives in Shopify."""

    __tablename__ = "shopify_products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("product_drafts.id", ondelete="CASCADE"), unique=True)
    shop_url: Mapped[str] = mapped_column(String(500))
    handle: Mapped[str] = mapped_column(String(255))
    product_gid: Mapped[str] = mapped_column(String(100))
    variant_gid: Mapped[str] = mapped_column(String(100))
    synced_price: Mapped[Decimal] = mapped_column(Money())
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class WorkflowExecution(Base):
    """Where an upload's PO workflow is now (one row per upload; ``run_id`` is the latest run)."""

    __tablename__ = "workflow_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), unique=True)
    run_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    current_stage: Mapped[str | None] = mapped_column(String(40))
    progress_percent: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: The latest Shopify read-back (``shopify_matches_drafts``): passed | failed | error | skipped.
    #: Shown beside the status, never instead of it: a check never changes a completed PO's status.
    verification_status: Mapped[str | None] = mapped_column(String(20))
    verification_message: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Live ETA while the PO runs: seconds left when last estimated, the moment it should finish, and what the
    #: estimate rests on ("eta_model fitted on 412 runs" or "defaults: no history yet").
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    eta_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    eta_basis: Mapped[str | None] = mapped_column(String(200))
    #: The last progress event's ``seq`` for this upload (events are numbered 1, 2, 3… per upload).
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class StageMetric(Base):
    """How one stage went in one run (retries in the same run raise ``attempts``)."""

    __tablename__ = "stage_metrics"
    __table_args__ = (UniqueConstraint("run_id", "stage", name="uq_stage_metrics_run_stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    items: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    outcome: Mapped[str] = mapped_column(String(20))  # running | success | failed | skipped
    error_code: Mapped[str | None] = mapped_column(String(64))
    #: What the stage measured about its work, for analytics and the ETA: ``pages``, ``llm_windows``,
    #: ``llm_seconds``, ``skus``, ``shopify_requests``, ``shopify_points``, ``shopify_throttled_s``, ...
    signals: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StageRun(Base):
    """Analytics fact table: one row per finished run × stage, built incrementally from Dagster's run
    records and run-status events joined with ``stage_metrics`` (``analytics/history.py``).

    ``kind`` says what the row measures: ``stage`` (an op of the PO or image job), ``wait`` (orchestration
    time no op sees: ``sensor_wait`` upload received → run created, ``queue_wait`` run created → launched,
    ``launch_wait`` launched → first stage started), ``check`` (``checks``: last stage ended → run ended)
    and ``total`` (``end_to_end``: upload received, or run created for later runs, → run ended).
    """

    __tablename__ = "stage_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "stage", name="uq_stage_runs_run_stage"),
        Index("ix_stage_runs_ended_at", "ended_at"),
        Index("ix_stage_runs_stage_ended_at", "stage", "ended_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    upload_id: Mapped[str | None] = mapped_column(String(64), index=True)
    merchant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    job: Mapped[str] = mapped_column(String(40))  # po_job (images are its last step)
    stage: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))  # stage | wait | check | total
    run_status: Mapped[str] = mapped_column(String(20))  # success | failure | canceled
    outcome: Mapped[str | None] = mapped_column(String(20))  # the stage's: success | failed | skipped | reused
    error_code: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    duration_s: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    items: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int | None] = mapped_column(Integer)
    pages: Mapped[int | None] = mapped_column(Integer)
    llm_windows: Mapped[int | None] = mapped_column(Integer)
    llm_seconds: Mapped[float | None] = mapped_column(Float)
    shopify_requests: Mapped[int | None] = mapped_column(Integer)
    shopify_points: Mapped[float | None] = mapped_column(Float)
    shopify_throttled_s: Mapped[float | None] = mapped_column(Float)
    #: The PO's size and shape (same on every row of a run): for slices and the ETA model.
    source_format: Mapped[str | None] = mapped_column(String(20))
    file_bytes: Mapped[int | None] = mapped_column(Integer)
    lines: Mapped[int | None] = mapped_column(Integer)
    skus: Mapped[int | None] = mapped_column(Integer)
    #: The upload's first PO run (the only one with a ``sensor_wait``); re-runs and continuations are not.
    first_run: Mapped[bool] = mapped_column(Boolean, default=False)
    run_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RunLaunch(Base):
    """When Dagster launched a run (``RUN_STARTING``) and its worker started (``RUN_START``), read from the
    run-status event log by cursor; kept 7 days (a run ingested again keeps its waits), then pruned."""

    __tablename__ = "run_launches"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    starting_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class AnalyticsState(Base):
    """Small named state of the analytics: event-log cursors (``cursor:<event type>``) and fitted models
    (``model:eta``, JSON). One row per name, replaced in place."""

    __tablename__ = "analytics_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class MerchantToken(Base):
    """A per-merchant API token for ``poflow serve``: only its sha256 is stored (``poflow merchant token ID``)."""

    __tablename__ = "merchant_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ProgressEventRow(Base):
    """Progress events kept in the app database when no Redis is configured (the SSE endpoint then polls
    this table); ``seq`` is monotonic per upload. With Redis, events live in a per-merchant Redis stream."""

    __tablename__ = "progress_events"
    __table_args__ = (
        UniqueConstraint("upload_id", "seq", name="uq_progress_events_upload_seq"),
        Index("ix_progress_events_merchant_id_id", "merchant_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    upload_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RetiredPartition(Base):
    """An upload whose Dagster partition (``po_uploads``) was removed by ``partition_retention_job`` once it had
    ended longer ago than the retention. Its history stays here (uploads, POs, stage metrics) and in the
    analytics (``stage_runs``); Dagster keeps its runs and events. A run of the upload re-adds the partition."""

    __tablename__ = "retired_partitions"

    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), primary_key=True)
    retired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The upload's status when its partition was retired: completed | duplicate | failed.
    upload_status: Mapped[str] = mapped_column(String(20))
    retention_days: Mapped[int] = mapped_column(Integer)


class CatalogVariantRow(Base):
    """A variant of the merchant's Shopify catalog, synced incrementally (``catalog/sync.py``) for matching PO
    lines to existing products. ``sku_key``, ``barcode_key`` and ``vendor_key`` hold the normalised keys
    (``catalog/normalize.py``), so every lookup is an index lookup of equal strings on both databases."""

    __tablename__ = "catalog_variants"
    __table_args__ = (
        UniqueConstraint("shop_url", "variant_gid", name="uq_catalog_variants_shop_variant"),
        Index("ix_catalog_variants_merchant_sku_key", "merchant_id", "sku_key"),
        Index("ix_catalog_variants_merchant_barcode_key", "merchant_id", "barcode_key"),
        Index("ix_catalog_variants_merchant_vendor_key", "merchant_id", "vendor_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    shop_url: Mapped[str] = mapped_column(String(500))
    product_gid: Mapped[str] = mapped_column(String(100))
    variant_gid: Mapped[str] = mapped_column(String(100))
    inventory_item_gid: Mapped[str | None] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(255))
    sku_key: Mapped[str | None] = mapped_column(String(255))
    barcode: Mapped[str | None] = mapped_column(String(255))
    barcode_key: Mapped[str | None] = mapped_column(String(14))
    product_title: Mapped[str] = mapped_column(String(500))
    variant_title: Mapped[str | None] = mapped_column(String(500))
    vendor: Mapped[str | None] = mapped_column(String(255))
    vendor_key: Mapped[str | None] = mapped_column(String(255))
    unit_cost: Mapped[Decimal | None] = mapped_column(Money())
    price: Mapped[Decimal] = mapped_column(Money())
    product_status: Mapped[str] = mapped_column(String(20))  # ACTIVE | DRAFT | ARCHIVED
    shopify_updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: The variant's ``poflow.supplier_skus`` metafield: JSON list of ``"supplier_key|supplier_sku_key"``.
    supplier_skus: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CatalogSyncState(Base):
    """Where the catalog sync of one merchant's shop stands: ``last_updated_at`` is the newest product
    ``updatedAt`` of the last complete pass (the next pass asks for products updated after it). A pass that
    stopped half way keeps its page cursor (``pass_*``) and the next sync continues it."""

    __tablename__ = "catalog_sync_state"

    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    shop_url: Mapped[str] = mapped_column(String(500), primary_key=True)
    last_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_full_sync_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    pass_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    pass_updated_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    pass_full: Mapped[bool] = mapped_column(Boolean, default=False)
    pass_cursor: Mapped[str | None] = mapped_column(Text)
    pass_max_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class SupplierSkuMap(Base):
    """A supplier's SKU learned to be one of the merchant's variants (a reviewer approved the match)."""

    __tablename__ = "supplier_sku_map"
    __table_args__ = (
        UniqueConstraint("merchant_id", "supplier_key", "supplier_sku_key", "shop_url",
                         name="uq_supplier_sku_map_merchant_supplier_sku_shop"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    supplier_key: Mapped[str] = mapped_column(String(300))
    supplier_sku_key: Mapped[str] = mapped_column(String(255))
    variant_gid: Mapped[str] = mapped_column(String(100))
    shop_url: Mapped[str] = mapped_column(String(500))
    learned_from_upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: When this entry reached the variant's ``poflow.supplier_skus`` metafield (``None``: not yet).
    metafield_written_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class LineMatchRow(Base):
    """Which catalog variant one PO line is (``catalog/match.py``), and a reviewer's decision on it.

    ``status``: matched | ambiguous | unmatched | approved; ``method``: sku | barcode | supplier_sku |
    fuzzy_title | manual | none; ``candidates``: ``[{variant_gid, sku, title, vendor, score, method}]``.
    Deleted with its line (a changed PO re-saved gets new lines, matched again; approvals live on in
    ``supplier_sku_map``)."""

    __tablename__ = "line_matches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line_item_id: Mapped[int] = mapped_column(ForeignKey("line_items.id", ondelete="CASCADE"), unique=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))
    score: Mapped[float] = mapped_column(Float)
    variant_gid: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    matched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StockReceipt(Base):
    """Units of one PO line received into Shopify stock (``receiving.py``); a line may be received in parts.

    ``idempotency_key`` is the receipt's identity (a hash of upload, line and ``receipt_no``); ``adjustment_key``
    is the ``@idempotent`` key of the ``inventoryAdjustQuantities`` call carrying it (one call holds up to 250
    receipts) and ``change_from_quantity`` the quantity expected there before it: both are written *before*
    the call, so a retry re-sends exactly the same request and Shopify applies it once. ``status``:
    pending (sent or about to be; outcome unknown) | applied | failed (Shopify refused it: nothing applied)."""

    __tablename__ = "stock_receipts"
    __table_args__ = (
        UniqueConstraint("upload_id", "line_no", "receipt_no", name="uq_stock_receipts_upload_line_receipt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    receipt_no: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[Decimal] = mapped_column(Quantity())
    variant_gid: Mapped[str | None] = mapped_column(String(100))
    inventory_item_gid: Mapped[str] = mapped_column(String(100))
    location_gid: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    adjustment_key: Mapped[str | None] = mapped_column(String(64), index=True)
    change_from_quantity: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # pending | applied | failed
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    applied_by: Mapped[str | None] = mapped_column(String(200))


# Models kept in modules of their own, registered on ``Base`` here so migrations and the model test see them.
from poflow_dagster.store import api_requests as _api_requests  # noqa: E402,F401


class ImageRow(Base):
    """One image of a merchant, stored once by content (``images/store.py``): the file lives at
    ``POFLOW_HOME/images/<sha256[:2]>/<sha256>.<ext>`` (``storage_path``, relative to ``POFLOW_HOME``)."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("merchant_id", "sha256", name="uq_images_merchant_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    phash: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(50))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(Integer)
    storage_path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ImageUrlRow(Base):
    """What one URL gave a merchant last time (``url_sha256`` keys the index; URLs can be long): its ETag, the
    image (``sha256``) and how the last fetch went. The database's ETag cache, and the reason one image is never
    fetched twice across POs: a known URL with an image is reused without a request until it is older than
    ``POFLOW_IMAGE_REVALIDATE_HOURS``, then re-validated with ``If-None-Match``."""

    __tablename__ = "image_urls"
    __table_args__ = (UniqueConstraint("merchant_id", "url_sha256", name="uq_image_urls_merchant_url_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    url_sha256: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))  # fetched | not_modified | failed
    reason: Mapped[str | None] = mapped_column(String(100))
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DraftImage(Base):
    """One image candidate of a product draft: where it came from (``source``: document | feed | search, its
    ``url``; none for bytes embedded in the document), its ``position`` among the draft's candidates, and where
    it stands (``state``: found | fetched | duplicate | rejected | attached | skipped | failed, ``reason``).
    ``candidate_key`` (sha256 of the URL, or ``embedded:<sha256>``) makes a re-run find the same row.
    Deleted with its draft."""

    __tablename__ = "draft_images"
    __table_args__ = (UniqueConstraint("draft_id", "candidate_key", name="uq_draft_images_draft_candidate"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("product_drafts.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    merchant_id: Mapped[str] = mapped_column(String(64))
    upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id"), index=True)
    candidate_key: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(String(10))
    url: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    #: For a ``duplicate``: the sha256 of the draft's image it duplicates (the one kept).
    duplicate_of: Mapped[str | None] = mapped_column(String(64))
    media_gid: Mapped[str | None] = mapped_column(String(100))
    attached_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
