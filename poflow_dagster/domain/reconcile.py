"""Never trust a number that doesn't add up: arithmetic and plausibility checks on a parsed PO.

Codes are stable (frontends, reviewers and tests rely on them). ``error`` issues stop the PO before
Shopify sync (workflow ``needs_review``) until someone approves it; ``warning`` issues are shown only.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from poflow_dagster.domain.models import Issue, ParsedPO

TOLERANCE = Decimal("0.01")
#: Extractions the extractor itself rates below this are reviewed by a person.
LOW_CONFIDENCE_THRESHOLD = 0.7

LINE_AMOUNT_MISMATCH = "LINE_AMOUNT_MISMATCH"
SUBTOTAL_MISMATCH = "SUBTOTAL_MISMATCH"
TOTAL_MISMATCH = "TOTAL_MISMATCH"
NEGATIVE_QUANTITY = "NEGATIVE_QUANTITY"
MISSING_SKU = "MISSING_SKU"
DUPLICATE_LINE = "DUPLICATE_LINE"
LOW_CONFIDENCE = "LOW_CONFIDENCE"

RECONCILIATION_CODES = frozenset(
    {LINE_AMOUNT_MISMATCH, SUBTOTAL_MISMATCH, TOTAL_MISMATCH, NEGATIVE_QUANTITY, MISSING_SKU, DUPLICATE_LINE, LOW_CONFIDENCE}
)


def _s(value: Decimal) -> str:
    return format(value, "f")


def reconcile(po: ParsedPO) -> ParsedPO:
    """Return ``po`` with this module's issues (re)computed; other issues are kept as they are."""
    issues = [issue for issue in po.issues if issue.code not in RECONCILIATION_CODES]
    issues += _line_issues(po) + _duplicate_issues(po) + _total_issues(po) + _confidence_issues(po)
    return po.model_copy(update={"issues": issues})


def needs_review(po: ParsedPO) -> bool:
    return any(issue.severity == "error" for issue in po.issues)


def review_reasons(po: ParsedPO) -> list[str]:
    return [f"{issue.code}: {issue.message}" for issue in po.issues if issue.severity == "error"]


def _line_issues(po: ParsedPO) -> list[Issue]:
    issues: list[Issue] = []
    for line in po.lines:
        if line.quantity is not None and line.quantity < 0:
            issues.append(Issue(code=NEGATIVE_QUANTITY, severity="error",
                                message=f"line {line.line_no}: quantity {_s(line.quantity)} is negative"))
        if not (line.sku or "").strip():
            issues.append(Issue(code=MISSING_SKU, severity="warning",
                                message=f"line {line.line_no}: no SKU, so no product draft"))
        if None not in (line.quantity, line.unit_cost, line.line_total):
            expected = line.quantity * line.unit_cost - (line.discount or 0)
            if abs(expected - line.line_total) > TOLERANCE:
                less = f" - {_s(line.discount)}" if line.discount else ""
                issues.append(Issue(
                    code=LINE_AMOUNT_MISMATCH, severity="error",
                    message=f"line {line.line_no}: {_s(line.quantity)} x {_s(line.unit_cost)}{less} = "
                    f"{_s(expected)}, but the line says {_s(line.line_total)}",
                ))
    return issues


def _duplicate_issues(po: ParsedPO) -> list[Issue]:
    def key(line):
        return ((line.sku or "").strip().casefold(), (line.description or "").strip().casefold(),
                line.quantity, line.unit_cost)

    counts = Counter(key(line) for line in po.lines)
    issues: list[Issue] = []
    for line in po.lines:
        if counts[key(line)] > 1 and line.line_no == min(l.line_no for l in po.lines if key(l) == key(line)):
            numbers = [str(l.line_no) for l in po.lines if key(l) == key(line)]
            issues.append(Issue(code=DUPLICATE_LINE, severity="warning",
                                message=f"lines {', '.join(numbers)} are identical ({line.sku or line.description})"))
    return issues


def _total_issues(po: ParsedPO) -> list[Issue]:
    if not po.lines:  # nothing to add up (a header read without its lines says so in its own issue)
        return []
    issues: list[Issue] = []
    lines_sum = po.lines_sum()
    if po.subtotal is not None and abs(lines_sum - po.subtotal) > TOLERANCE:
        issues.append(Issue(code=SUBTOTAL_MISMATCH, severity="error",
                            message=f"lines add up to {_s(lines_sum)}, the subtotal says {_s(po.subtotal)}"))
    if po.total is not None:
        base = po.subtotal if po.subtotal is not None else lines_sum
        # Tax-inclusive prices: the tax printed is a part of the lines' amounts, never added on top.
        tax = 0 if po.prices_include_tax else (po.tax or 0)
        adjustments = (po.charges or 0) - (po.discount or 0)
        expected = base + adjustments + tax + (po.shipping or 0)
        if abs(expected - po.total) > TOLERANCE:
            what = "subtotal (tax included) + shipping" if po.prices_include_tax else "subtotal + tax + shipping"
            if adjustments:
                what = what.replace("subtotal", "subtotal - discount + charges", 1)
            issues.append(Issue(code=TOTAL_MISMATCH, severity="error",
                                message=f"{what} = {_s(expected)}, the total says {_s(po.total)}"))
    return issues


def _confidence_issues(po: ParsedPO) -> list[Issue]:
    if po.confidence is not None and po.confidence < LOW_CONFIDENCE_THRESHOLD:
        return [Issue(code=LOW_CONFIDENCE, severity="error",
                      message=f"the extractor's confidence is {po.confidence:.2f} (below {LOW_CONFIDENCE_THRESHOLD})")]
    return []
