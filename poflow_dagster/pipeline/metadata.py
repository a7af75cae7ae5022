"""Markdown for the Dagster UI: the parsed PO as a table (text escaped, never interpreted)."""

from __future__ import annotations

import html
from decimal import Decimal

from poflow_dagster.domain.models import ParsedPO

MAX_TABLE_ROWS = 200


def md_text(value: object) -> str:
    """Plain text that renders literally inside a markdown table cell."""
    if value is None:
        return ""
    text = html.escape(" ".join(str(value).split()), quote=False)
    for char in "\\|`*_[]<>#":
        text = text.replace(char, "\\" + char)
    return text


def money(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def po_lines_markdown(po: ParsedPO) -> str:
    rows = [
        "| # | SKU | Description | Qty | Unit cost | Line total |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for line in po.lines[:MAX_TABLE_ROWS]:
        rows.append(
            f"| {line.line_no} | {md_text(line.sku)} | {md_text(line.description)} | {money(line.quantity)} "
            f"| {money(line.unit_cost)} | {money(line.line_total)} |"
        )
    if len(po.lines) > MAX_TABLE_ROWS:
        rows.append(f"| … | {len(po.lines) - MAX_TABLE_ROWS} more lines | | | | |")
    header = (
        f"**PO** {md_text(po.po_number) or '—'} · **Supplier** {md_text(po.supplier_name) or '—'} · "
        f"**Date** {po.order_date or '—'} · **Currency** {po.currency or '—'}  \n"
        f"**Subtotal** {money(po.subtotal) or '—'} · **Tax** {money(po.tax) or '—'} · "
        f"**Shipping** {money(po.shipping) or '—'} · **Total** {money(po.total) or '—'}\n\n"
    )
    issues = ""
    if po.issues:
        issues = "\n\n**Issues**\n" + "\n".join(
            f"- `{md_text(i.code)}` ({i.severity}): {md_text(i.message)}" for i in po.issues
        )
    return header + "\n".join(rows) + issues
