"""Product drafts and their Shopify links, matched by (merchant, SKU) so re-runs never duplicate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from poflow_dagster.domain.drafts import DraftPlan, plan_drafts
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder, ShopifyProduct
from poflow_dagster.store.types import utcnow


@dataclass(frozen=True)
class DraftRecord:
    id: int
    sku: str
    title: str
    description: str | None
    price: Decimal
    unit_cost: Decimal
    created: bool  # False: an existing draft of this SKU was updated (or left as it was)
    changed: bool = True  # False: the draft already said exactly this; nothing was written


def upsert_drafts(
    db: Database, merchant_id: str, upload_id: str, plans: list[DraftPlan],
    on_progress: Callable[[int, int], None] | None = None,
) -> list[DraftRecord]:
    """Create or update one draft per planned SKU, in one transaction; ``on_progress(drafts done, drafts)``
    after each."""
    records: list[DraftRecord] = []
    with db.session() as session:
        existing = {
            draft.sku: draft
            for draft in session.scalars(
                select(ProductDraft).where(
                    ProductDraft.merchant_id == merchant_id, ProductDraft.sku.in_([plan.sku for plan in plans])
                )
            )
        }
        for plan in plans:
            draft = existing.get(plan.sku)
            created = draft is None
            if draft is not None and _same(draft, plan):
                records.append(_record(draft, created=False, changed=False))
                if on_progress is not None:
                    on_progress(len(records), len(plans))
                continue
            if draft is None:
                draft = ProductDraft(merchant_id=merchant_id, sku=plan.sku)
                session.add(draft)
            draft.title = plan.title
            draft.description = plan.description
            draft.unit_cost = plan.unit_cost
            draft.price = plan.price
            draft.currency = plan.currency
            draft.source_upload_id = upload_id
            session.flush()
            records.append(_record(draft, created))
            if on_progress is not None:
                on_progress(len(records), len(plans))
    return records


def _same(draft: ProductDraft, plan: DraftPlan) -> bool:
    return (draft.title, draft.description, draft.unit_cost, draft.price, draft.currency) == (
        plan.title, plan.description, plan.unit_cost, plan.price, plan.currency
    )


def drafts_for_upload(db: Database, upload_id: str) -> list[DraftRecord]:
    """The merchant's drafts for the SKUs on this upload's PO, in PO order."""
    with db.session() as session:
        po = session.scalar(select(PurchaseOrder).where(PurchaseOrder.upload_id == upload_id))
        if po is None:
            return []
        skus = list(
            dict.fromkeys(
                sku for sku in session.scalars(
                    select(LineItem.sku).where(LineItem.po_id == po.id).order_by(LineItem.line_no)
                ) if sku
            )
        )
        drafts = {
            draft.sku: draft
            for draft in session.scalars(
                select(ProductDraft).where(ProductDraft.merchant_id == po.merchant_id, ProductDraft.sku.in_(skus))
            )
        }
        return [_record(drafts[sku], False) for sku in skus if sku in drafts]


def current_drafts(db: Database, drafts: list[DraftRecord]) -> list[DraftRecord]:
    """The same drafts as the database holds them now (another PO with the same SKU may have changed them
    since they were read), in the same order; a draft that no longer exists is returned as it was."""
    if not drafts:
        return []
    with db.session() as session:
        rows = {
            row.id: row
            for row in session.scalars(select(ProductDraft).where(ProductDraft.id.in_([d.id for d in drafts])))
        }
    return [
        replace(draft, title=row.title, description=row.description, price=row.price, unit_cost=row.unit_cost)
        if (row := rows.get(draft.id)) is not None else draft
        for draft in drafts
    ]


def record_shopify_links(db: Database, shop_url: str, links: list[tuple[int, str, str, str, Decimal]]) -> None:
    """Remember where each draft lives in Shopify: ``(draft_id, handle, product_gid, variant_gid, price)``."""
    with db.session() as session:
        existing = {
            link.draft_id: link
            for link in session.scalars(
                select(ShopifyProduct).where(ShopifyProduct.draft_id.in_([row[0] for row in links]))
            )
        }
        for draft_id, handle, product_gid, variant_gid, price in links:
            link = existing.get(draft_id) or ShopifyProduct(draft_id=draft_id)
            link.shop_url = shop_url
            link.handle = handle
            link.product_gid = product_gid
            link.variant_gid = variant_gid
            link.synced_price = price
            link.synced_at = utcnow()
            session.add(link)


def count_shopify_links(db: Database, draft_ids: list[int]) -> int:
    with db.session() as session:
        return len(list(session.scalars(select(ShopifyProduct.id).where(ShopifyProduct.draft_id.in_(draft_ids)))))


def _record(draft: ProductDraft, created: bool, changed: bool = True) -> DraftRecord:
    return DraftRecord(
        id=draft.id,
        sku=draft.sku,
        title=draft.title,
        description=draft.description,
        price=draft.price,
        unit_cost=draft.unit_cost,
        created=created,
        changed=changed,
    )


@dataclass(frozen=True)
class DraftOutcome:
    drafts: list[DraftRecord]
    skipped: list[str]  # lines that got no draft, and why


def create_drafts_for_po(
    db: Database, upload_id: str, po: ParsedPO, *, on_progress: Callable[[int, int], None] | None = None
) -> DraftOutcome:
    """One draft per distinct SKU of the PO, priced with the merchant's markup; re-runs update, never add.
    ``on_progress(drafts done, drafts)`` is called as each draft is written."""
    from poflow_dagster.store.uploads import merchant_for_upload

    merchant = merchant_for_upload(db, upload_id)
    plans, skipped = plan_drafts(po, merchant.markup_percent)
    for attempt in range(3):  # a concurrent PO of the same merchant may insert the same SKU first
        try:
            return DraftOutcome(upsert_drafts(db, merchant.id, upload_id, plans, on_progress), skipped)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
