"""Document-level allowances and charges, as the structured readers (UBL, CII, X12) report them: freight is
``shipping``, allowances are the PO's ``discount``, other charges its ``charges`` (all applied to the total)."""

from __future__ import annotations

from decimal import Decimal

from poflow_dagster.domain.models import Issue
from poflow_dagster.extraction.numbers import as_money


def sum_or_none(amounts: list[Decimal]) -> Decimal | None:
    """The amounts' sum as money, or ``None`` when there are none."""
    return as_money(sum(amounts, Decimal(0))) if amounts else None


def note_allowances_and_charges(issues: list[Issue], named: list[str]) -> None:
    """An info issue naming the document-level allowances and charges applied to the total (besides freight)."""
    if named:
        issues.append(Issue(code="DOCUMENT_ALLOWANCES_CHARGES", severity="info",
                            message=f"applied to the total besides shipping: {', '.join(named)}"))
