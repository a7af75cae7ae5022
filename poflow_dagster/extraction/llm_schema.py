"""The Structured Output schema the LLM fills in, and its conversion to :class:`ParsedPO`.

The schema is deliberately flat (document -> lines -> line: 3 levels, the API allows 5)
and every property is *required but nullable*, as Structured Outputs' strict mode
demands (``required`` lists every property, ``additionalProperties: false``; the
``openai`` SDK adds both when it turns these models into a JSON schema). Money and
quantities travel as strings (``"1234.56"``) so no float rounding happens on the way,
dates as ``"YYYY-MM-DD"``. A plain decimal is taken as it is (``"10.000"`` is ten: the format the model
is asked for); anything else is parsed with :mod:`.numbers`; a value that does not
parse becomes ``None`` plus a warning :class:`Issue` (``unreadable_number``,
``unreadable_date``, ``unreadable_currency``) - never a guess.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from poflow_dagster.domain.models import Issue, POLine, ParsedPO
from poflow_dagster.extraction.barcodes import clean_barcode
from poflow_dagster.extraction.numbers import detect_currency, parse_date, parse_decimal

__all__ = ["LLMExtraction", "LLMLine", "merged_confidence", "to_parsed_po"]

_MONEY = (
    "Plain decimal string as printed, without currency symbols or thousands separators "
    "(e.g. '1234.56'); null if absent."
)
_CONFIDENCE = "Your confidence from 0 to 1 that the values above are exactly what the document says."
_ISO_CODE_RE = re.compile(r"[A-Z]{3}")
#: The format the model is told to use: a plain decimal with a dot (``"10.000"`` is ten, not ten thousand).
_PLAIN_DECIMAL_RE = re.compile(r"-?\d+(\.\d+)?")


DocumentType = Literal["purchase_order", "order_confirmation", "invoice", "delivery_note", "quote"]


class LLMLine(BaseModel):
    """One ordered item exactly as printed on the page (never a subtotal/tax/shipping/total row)."""

    model_config = ConfigDict(extra="forbid")

    sku: str | None = Field(
        description="Supplier item code / SKU exactly as printed (keep leading zeros); null if none."
    )
    barcode: str | None = Field(
        default=None,
        description="The item's barcode (UPC / EAN / GTIN / JAN digits) exactly as printed, keeping leading "
        "zeros; null if none. Never the supplier item code.",
    )
    description: str | None = Field(description="Item description as printed; null if none.")
    quantity: str | None = Field(description="Ordered quantity as a plain decimal string; null if absent.")
    unit_cost: str | None = Field(description="Unit price. " + _MONEY)
    line_total: str | None = Field(description="Line amount as printed (do not compute it). " + _MONEY)
    unit: str | None = Field(
        default=None, description="Unit of measure printed with the quantity (kg, pcs, h, ...); null if none."
    )
    discount: str | None = Field(
        default=None, description="Money taken off this line when printed (a percentage: its amount). " + _MONEY
    )
    confidence: float = Field(description=_CONFIDENCE)


class LLMExtraction(BaseModel):
    """What the model returns for one window of pages (a part of one purchase order)."""

    model_config = ConfigDict(extra="forbid")

    po_number: str | None = Field(description="Purchase order number as printed; null if not on these pages.")
    supplier_name: str | None = Field(
        description="Name of the supplier (vendor) the order is placed with; null if not on these pages."
    )
    order_date: str | None = Field(description="Order date as YYYY-MM-DD; null if not on these pages.")
    currency: str | None = Field(description="ISO 4217 code (USD, EUR, ...) of the amounts; null if it cannot be told.")
    document_type: DocumentType | None = Field(
        default=None, description="What the title says the document is; null if it does not say."
    )
    prices_include_tax: bool | None = Field(
        default=None,
        description="true if the document says its prices include VAT/tax (gross), false if it says net; else null.",
    )
    subtotal: str | None = Field(description="Subtotal row. " + _MONEY)
    discount: str | None = Field(
        default=None, description="Money taken off the whole order (an allowance row, not a line's). " + _MONEY
    )
    charges: str | None = Field(
        default=None, description="Charges other than shipping added to the order (handling, insurance...). " + _MONEY
    )
    tax: str | None = Field(description="Tax / VAT row. " + _MONEY)
    shipping: str | None = Field(description="Shipping / freight row. " + _MONEY)
    total: str | None = Field(description="Grand total row. " + _MONEY)
    lines: list[LLMLine] = Field(description="Item lines on these pages, in reading order; empty if none.")
    confidence: float = Field(description=_CONFIDENCE)


def to_parsed_po(extraction: LLMExtraction, *, source_format: str) -> ParsedPO:
    """Convert one (possibly merged) extraction to a :class:`ParsedPO` with ``extractor="llm"``.

    Unparseable numbers, dates and currencies become ``None`` with a warning issue;
    ``confidence`` is the minimum of the document's and the lines' confidences.
    """
    issues: list[Issue] = []
    po = ParsedPO(
        po_number=_clean(extraction.po_number),
        supplier_name=_clean(extraction.supplier_name),
        order_date=_date(extraction.order_date, issues),
        currency=_currency(extraction.currency, issues),
        document_type=extraction.document_type,
        prices_include_tax=extraction.prices_include_tax,
        subtotal=_number(extraction.subtotal, "subtotal", issues),
        discount=_number(extraction.discount, "discount", issues),
        charges=_number(extraction.charges, "charges", issues),
        tax=_number(extraction.tax, "tax", issues),
        shipping=_number(extraction.shipping, "shipping", issues),
        total=_number(extraction.total, "total", issues),
        lines=[_line(i, line, issues) for i, line in enumerate(extraction.lines, start=1)],
        source_format=source_format,
        extractor="llm",
        confidence=merged_confidence([extraction]),
    )
    po.issues.extend(issues)
    return po


def merged_confidence(extractions: Iterable[LLMExtraction]) -> float | None:
    """Minimum of every document and line confidence (clamped to 0..1); None if there are none."""
    values = [
        value
        for extraction in extractions
        for value in (extraction.confidence, *(line.confidence for line in extraction.lines))
    ]
    if not values:
        return None
    return min(max(0.0, min(1.0, float(v))) for v in values)


def _line(line_no: int, line: LLMLine, issues: list[Issue]) -> POLine:
    """Convert one line; number problems are reported with the line number."""
    where = f"line {line_no}"
    barcode = clean_barcode(_clean(line.barcode))
    return POLine(
        line_no=line_no,
        sku=_clean(line.sku) or barcode,  # items known only by their barcode: it is the SKU (as in tables)
        barcode=barcode,
        description=_clean(line.description),
        quantity=_number(line.quantity, f"{where} quantity", issues),
        unit_cost=_number(line.unit_cost, f"{where} unit cost", issues),
        line_total=_number(line.line_total, f"{where} total", issues),
        unit=_unit(line.unit),
        discount=_number(line.discount, f"{where} discount", issues),
    )


def _unit(value: str | None) -> str | None:
    """A unit as printed, lower-cased, without a trailing dot (``"Stk."`` -> ``"stk"``)."""
    text = _clean(value)
    return text.lower().rstrip(".") or None if text else None


def _clean(value: str | None) -> str | None:
    """Collapse whitespace; empty strings become None."""
    if value is None:
        return None
    cleaned = " ".join(value.split())
    return cleaned or None


def _number(value: str | None, field: str, issues: list[Issue]) -> Decimal | None:
    """Parse a decimal string; record ``unreadable_number`` when it is not one."""
    text = _clean(value)
    if text is None:
        return None
    number = Decimal(text) if _PLAIN_DECIMAL_RE.fullmatch(text) else parse_decimal(text)
    if number is None:
        issues.append(_warning("UNREADABLE_NUMBER", f"{field}: {_quote(text)} is not a number"))
    return number


def _date(value: str | None, issues: list[Issue]) -> dt.date | None:
    """Parse the order date; record ``unreadable_date`` when it is not one."""
    text = _clean(value)
    if text is None:
        return None
    date = parse_date(text)
    if date is None:
        issues.append(_warning("UNREADABLE_DATE", f"order date: {_quote(text)} is not a date"))
    return date


def _currency(value: str | None, issues: list[Issue]) -> str | None:
    """Accept an ISO 4217 code (or a symbol/word we can map); else ``unreadable_currency``."""
    text = _clean(value)
    if text is None:
        return None
    if _ISO_CODE_RE.fullmatch(text.upper()):
        return text.upper()
    code = detect_currency(text)
    if code is None:
        issues.append(_warning("UNREADABLE_CURRENCY", f"currency: {_quote(text)} is not an ISO 4217 code"))
    return code


def _quote(text: str, limit: int = 60) -> str:
    """Quote a model-provided value for a one-line message (shortened)."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _warning(code: str, message: str) -> Issue:
    return Issue(code=code, severity="warning", message=message)
