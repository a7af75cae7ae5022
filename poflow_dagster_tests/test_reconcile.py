"""Reconciliation: every stable code fires when its rule is broken, and only then."""

from __future__ import annotations

from decimal import Decimal as D

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.domain.reconcile import needs_review, reconcile, review_reasons


def _po(*lines, **fields) -> ParsedPO:
    return ParsedPO(lines=[
        POLine(line_no=i, sku=sku, description=desc, quantity=D(q) if q is not None else None,
               unit_cost=D(c) if c is not None else None, line_total=D(t) if t is not None else None)
        for i, (sku, desc, q, c, t) in enumerate(lines, start=1)
    ], **fields)


def codes(po: ParsedPO) -> dict[str, str]:
    return {i.code: i.severity for i in reconcile(po).issues}


def test_consistent_po_has_no_issues_and_needs_no_review():
    po = _po(("A", "a", "2", "5.00", "10.00"), ("B", "b", "1", "0.335", "0.34"),
             subtotal=D("10.34"), tax=D("1.00"), shipping=D("2.00"), total=D("13.34"))
    assert codes(po) == {} and not needs_review(reconcile(po))


def test_each_rule():
    assert codes(_po(("A", "a", "2", "5.00", "11.00"))) == {"LINE_AMOUNT_MISMATCH": "error"}
    assert codes(_po(("A", "a", "2", "5.00", "10.00"), subtotal=D("12.00"))) == {"SUBTOTAL_MISMATCH": "error"}
    assert codes(_po(("A", "a", "2", "5.00", "10.00"), subtotal=D("10.00"), tax=D("1"), total=D("10.00"))) == {
        "TOTAL_MISMATCH": "error"}
    assert codes(_po(("A", "a", "-2", "5.00", "-10.00"))) == {"NEGATIVE_QUANTITY": "error"}
    assert codes(_po((None, "freight", "1", "5.00", "5.00"))) == {"MISSING_SKU": "warning"}
    assert codes(_po(("A", "a", "1", "5.00", "5.00"), ("A", "a", "1", "5.00", "5.00"))) == {"DUPLICATE_LINE": "warning"}
    assert codes(_po(("A", "a", "1", "5.00", "5.00"), confidence=0.4)) == {"LOW_CONFIDENCE": "error"}


def test_total_without_subtotal_uses_the_lines_and_reconcile_is_idempotent():
    po = _po(("A", "a", "2", "5.00", "10.00"), tax=D("2.00"), total=D("12.00"))
    once = reconcile(po)
    assert once.issues == [] and reconcile(once).issues == []
    bad = reconcile(reconcile(_po(("A", "a", "2", "5.00", "11.00"))))
    assert [i.code for i in bad.issues] == ["LINE_AMOUNT_MISMATCH"]
    assert review_reasons(bad) == ["LINE_AMOUNT_MISMATCH: line 1: 2 x 5.00 = 10.00, but the line says 11.00"]


def test_a_line_discount_and_tax_inclusive_prices_are_compared_like_with_like():
    from decimal import Decimal as D

    from poflow_dagster.domain.models import ParsedPO, POLine
    from poflow_dagster.domain.reconcile import reconcile

    line = POLine(line_no=1, sku="A", quantity=D("4"), unit_cost=D("10.00"), discount=D("4.00"),
                  line_total=D("36.00"))
    gross = ParsedPO(lines=[line], subtotal=D("36.00"), tax=D("5.75"), total=D("36.00"), prices_include_tax=True)
    assert [i.code for i in reconcile(gross).issues if i.severity == "error"] == []
    net = gross.model_copy(update={"prices_include_tax": None})  # the same numbers read as net prices
    assert [i.code for i in reconcile(net).issues] == ["TOTAL_MISMATCH"]
    undiscounted = gross.model_copy(update={"lines": [line.model_copy(update={"discount": None})]})
    assert "LINE_AMOUNT_MISMATCH" in [i.code for i in reconcile(undiscounted).issues]


def test_document_allowances_and_charges_count_toward_the_total():
    from decimal import Decimal as D

    from poflow_dagster.domain.models import ParsedPO, POLine
    from poflow_dagster.domain.reconcile import reconcile

    line = POLine(line_no=1, sku="A", quantity=D("2"), unit_cost=D("50.00"), line_total=D("100.00"))
    po = ParsedPO(lines=[line], subtotal=D("100.00"), discount=D("10.00"), charges=D("5.00"), tax=D("19.00"),
                  shipping=D("6.00"), total=D("120.00"))
    assert [i.code for i in reconcile(po).issues if i.severity == "error"] == []
    ignored = po.model_copy(update={"discount": None})  # the promotion left out: 10.00 off the printed total
    [mismatch] = [i for i in reconcile(ignored).issues if i.code == "TOTAL_MISMATCH"]
    assert "130.00" in mismatch.message and "discount + charges" in mismatch.message


def test_a_po_without_lines_gets_no_total_mismatch_next_to_its_own_issue():
    from decimal import Decimal as D

    from poflow_dagster.domain.models import ParsedPO
    from poflow_dagster.domain.reconcile import reconcile

    header_only = ParsedPO(po_number="PO-7", subtotal=D("100.00"), tax=D("19.00"), total=D("119.00"))
    assert reconcile(header_only).issues == []
    wrong = header_only.model_copy(update={"lines": [], "total": D("500.00")})
    assert reconcile(wrong).issues == []  # without lines, nothing to add up yet
