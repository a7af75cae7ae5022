"""The parsed purchase order: the one shape every extractor returns and every stage consumes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Severity = Literal["info", "warning", "error"]


class Issue(BaseModel):
    """Something a reviewer should know about a parsed PO: a stable upper-case ``code``
    (``SUBTOTAL_MISMATCH``), a severity (``error`` stops the PO for review) and one line of text."""

    code: str
    severity: Severity = "warning"
    message: str

    @field_validator("code")
    @classmethod
    def _upper_snake(cls, code: str) -> str:
        return code.strip().upper()


class POLine(BaseModel):
    """One ordered item. SKUs are strings (zero padding kept); numbers are Decimal."""

    line_no: int
    sku: str | None = None
    barcode: str | None = None  # UPC / EAN / GTIN as printed
    description: str | None = None
    quantity: Decimal | None = None
    unit_cost: Decimal | None = None
    line_total: Decimal | None = None  # what the line charges, after its discount
    #: Unit of measure as printed after the quantity, normalised (``kg``, ``g``, ``l``, ``units``, ``days``...).
    unit: str | None = None
    #: Money taken off this line (a percentage is turned into its amount): quantity x unit cost - discount = total.
    discount: Decimal | None = None
    #: Product image URLs the document gives for this line (a picture column, UBL item attachments); bytes
    #: embedded in the document are kept as ``data:<mime>;base64,...`` URIs.
    image_urls: list[str] = Field(default_factory=list)


class ParsedPO(BaseModel):
    """A purchase order as read from one document. Unknown values are ``None``."""

    po_number: str | None = None
    supplier_name: str | None = None
    order_date: dt.date | None = None
    currency: str | None = None  # ISO 4217
    #: What the document says it is: purchase_order | order_confirmation | invoice | delivery_note | quote
    #: (None: not said). All carry the same item table; an invoice is read like a PO.
    document_type: str | None = None
    #: The line prices include tax (VAT-inclusive / gross): lines add up to the total, tax is a part of it.
    prices_include_tax: bool | None = None
    subtotal: Decimal | None = None
    #: Document-level allowances (money off the whole order, e.g. a promotion) and charges other than shipping
    #: (insurance, handling...): total = subtotal - discount + charges + shipping + tax.
    discount: Decimal | None = None
    charges: Decimal | None = None
    tax: Decimal | None = None
    shipping: Decimal | None = None
    total: Decimal | None = None
    lines: list[POLine] = Field(default_factory=list)
    issues: list[Issue] = Field(default_factory=list)
    source_format: str = "unknown"  # csv | tsv | xlsx | pdf | image | x12 | ubl | cii | text
    extractor: str = "unknown"  # which extractor produced it: spreadsheet | pdf_text | x12_850 | ubl | llm
    #: 0..1 where the extractor can judge it (the LLM reports one); None = deterministic, fully trusted.
    confidence: float | None = None
    #: How extraction went (pages, windows, tokens, cost, retries): stage metadata, not part of the JSON contract.
    stats: dict[str, Any] = Field(default_factory=dict)

    def lines_sum(self) -> Decimal:
        """Sum of line totals (missing totals count as quantity x unit cost, else 0)."""
        total = Decimal("0")
        for line in self.lines:
            if line.line_total is not None:
                total += line.line_total
            elif line.quantity is not None and line.unit_cost is not None:
                total += line.quantity * line.unit_cost
        return total

    def to_contract(self) -> dict:
        """The JSON contract of ``poflow extract --format json`` (money as decimal strings)."""

        def s(value: Decimal | None) -> str | None:
            return None if value is None else format(value, "f")

        return {
            "po_number": self.po_number,
            "supplier_name": self.supplier_name,
            "order_date": self.order_date.isoformat() if self.order_date else None,
            "currency": self.currency,
            "document_type": self.document_type,
            "prices_include_tax": self.prices_include_tax,
            "subtotal": s(self.subtotal),
            "discount": s(self.discount),
            "charges": s(self.charges),
            "tax": s(self.tax),
            "shipping": s(self.shipping),
            "total": s(self.total),
            "lines": [
                {
                    "sku": line.sku,
                    "barcode": line.barcode,
                    "description": line.description,
                    "quantity": s(line.quantity),
                    "unit_cost": s(line.unit_cost),
                    "line_total": s(line.line_total),
                    "unit": line.unit,
                    "discount": s(line.discount),
                    "image_urls": [_short_uri(u) for u in line.image_urls],
                }
                for line in self.lines
            ],
            "issues": [issue.model_dump() for issue in self.issues],
        }


def _short_uri(uri: str) -> str:
    """An image URL as printed: an embedded image (``data:`` URI) shows its type only, not its bytes."""
    return uri.split(",", 1)[0] + ",..." if uri.startswith("data:") else uri
