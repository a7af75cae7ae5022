"""Product drafts from a PO: one per distinct SKU, priced at cost plus the merchant's markup."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from poflow_dagster.domain.models import ParsedPO

CENT = Decimal("0.01")


@dataclass(frozen=True)
class DraftPlan:
    sku: str
    title: str
    description: str | None
    unit_cost: Decimal
    price: Decimal
    currency: str | None


def retail_price(unit_cost: Decimal, markup_percent: Decimal) -> Decimal:
    """``unit_cost x (1 + markup)``, rounded half-up to the cent."""
    return (unit_cost * (1 + markup_percent / 100)).quantize(CENT, rounding=ROUND_HALF_UP)


def plan_drafts(po: ParsedPO, markup_percent: Decimal) -> tuple[list[DraftPlan], list[str]]:
    """Plan one draft per distinct SKU (first occurrence wins the title; the last cost wins).

    Returns the plans in PO order and the reasons lines were left out (no SKU, no cost).
    """
    by_sku: dict[str, DraftPlan] = {}
    skipped: list[str] = []
    for line in po.lines:
        sku = (line.sku or "").strip()
        if not sku:
            skipped.append(f"line {line.line_no}: no SKU")
            continue
        unit_cost = line.unit_cost
        if unit_cost is None and line.line_total is not None and line.quantity:
            unit_cost = (line.line_total / line.quantity).quantize(CENT, rounding=ROUND_HALF_UP)
        if unit_cost is None:
            skipped.append(f"line {line.line_no}: SKU {sku} has no unit cost")
            continue
        title = (line.description or "").strip() or sku
        previous = by_sku.get(sku)
        by_sku[sku] = DraftPlan(
            sku=sku,
            title=previous.title if previous else title[:500],
            description=previous.description if previous else line.description,
            unit_cost=unit_cost,
            price=retail_price(unit_cost, markup_percent),
            currency=po.currency,
        )
    return list(by_sku.values()), skipped
