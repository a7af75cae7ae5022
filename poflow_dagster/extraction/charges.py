"""Document-level allowances and charges, as the structured readers (UBL, CII, X12) report them: freight is
``shipping``, allowances are the PO's ``discount``, other charges its ``charges`` (all applied to the total)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from poflow_dagster.domain.models import Issue
from poflow_dagster.extraction.numbers import as_money


@dataclass(frozen=True)
class DocumentCharge:
    """One document-level allowance or charge as a reader found it (``label`` names it in the issue)."""

    amount: Decimal | None
    is_charge: bool  # False: an allowance (money off)
    is_freight: bool
    label: str


def apply_document_charges(issues: list[Issue], found: Iterable[DocumentCharge]
                           ) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """(shipping = freight charges, discount = allowances, charges = other charges); the allowances and other
    charges are named in an info issue. An unreadable amount is skipped; a freight charge of 0 is a shipping of 0
    (the document says so), another allowance/charge of 0 changes nothing."""
    freight: list[Decimal] = []
    allowances: list[Decimal] = []
    charges: list[Decimal] = []
    named: list[str] = []
    for item in found:
        if item.amount is None:
            continue
        if item.is_charge and item.is_freight:
            freight.append(item.amount)
            continue
        if item.amount == 0:
            continue
        (charges if item.is_charge else allowances).append(item.amount)
        named.append(item.label)
    _note_allowances_and_charges(issues, named)
    return _sum_or_none(freight), _sum_or_none(allowances), _sum_or_none(charges)


def _sum_or_none(amounts: list[Decimal]) -> Decimal | None:
    """The amounts' sum as money, or ``None`` when there are none."""
    return as_money(sum(amounts, Decimal(0))) if amounts else None


def _note_allowances_and_charges(issues: list[Issue], named: list[str]) -> None:
    """An info issue naming the document-level allowances and charges applied to the total (besides freight)."""
    if named:
        issues.append(Issue(code="DOCUMENT_ALLOWANCES_CHARGES", severity="info",
                            message=f"applied to the total besides shipping: {', '.join(named)}"))
