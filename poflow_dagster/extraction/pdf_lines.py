"""The line model of the PDF reader: what the cells of one item row mean.

* **Quantities with units** - ``2.50 kg``, ``500 g``, ``3.00 Units``, ``12 Stk`` give the number and the
  normalised unit (:func:`.vocabulary.normalize_unit`); ``2 Days x 3 Seats`` is 6 (days), or 2 when the
  row's price and total say so.
* **Item codes inside descriptions** - ``[AB-1200] Desk Lamp``, ``*55501* Hand Soap``, ``Art.-Nr. 4711
  Schraube``, ``Desk Lamp (SKU: AB-1200)``: the code becomes the SKU when the table has no code column.
  A bare leading code (``AB-1200 Desk Lamp``) is taken only when most lines of the table start that way.
* **Discounts** - a discount cell is an amount or a percentage of quantity x unit price; the line total
  is what remains (a total column that shows the undiscounted amount is corrected).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal

from poflow_dagster.domain.models import POLine
from poflow_dagster.extraction.vocabulary import normalize_unit

__all__ = ["apply_discount", "code_from_description", "leading_codes", "quantity_and_unit"]

CENT = Decimal("0.01")
_NUMBER = r"[-+]?\d[\d.,'\u00a0\u202f ]*\d|[-+]?\d"
_QTY_UNIT_RE = re.compile(rf"^(?:x\s*)?({_NUMBER})\s*([^\d\s].{{0,24}}?)?\.?$", re.IGNORECASE)
_UNIT_QTY_RE = re.compile(rf"^([^\d\s][^\d]{{0,12}}?)\s*({_NUMBER})$")
_TIMES_RE = re.compile(rf"^({_NUMBER})\s*([^\d\s]*)\s*[x×*]\s*({_NUMBER})\s*([^\d\s]*)$", re.IGNORECASE)

_CODE_PATTERNS = (
    re.compile(r"^\[\s*([A-Za-z0-9][\w\-./]*)\s*\]\s*[-–:]?\s*(.+)$"),
    re.compile(r"^\*\s*([A-Za-z0-9][\w\-./]*)\s*\*\s*[-–:]?\s*(.+)$"),
    re.compile(
        r"^(?:art\.?\s*-?\s*nr\.?|artikel(?:nr\.?|nummer)?|art\.?|item(?:\s*no\.?)?|sku|ref\.?|r[ée]f[ée]rence|"
        r"code|c[oó]d(?:igo)?\.?|part\s*no\.?|品番)\s*[:#.]?\s*([A-Za-z0-9][\w\-./]*\d[\w\-./]*)\s*[-–:,]?\s+(.+)$",
        re.IGNORECASE,
    ),
    re.compile(r"^(.+?)\s*[\[(]\s*(?:sku|art\.?\s*-?\s*nr\.?|item|ref\.?|code)\s*[:#.]?\s*([\w\-./]*\d[\w\-./]*)\s*[\])]$",
               re.IGNORECASE),
)
_LEADING_CODE_RE = re.compile(r"^([A-Z0-9][A-Z0-9\-./_]{2,}[A-Z0-9])\s+[-–:]?\s*(\S.*)$")

Parse = Callable[[str | None], Decimal | None]


def quantity_and_unit(text: str | None, parse: Parse, price: Decimal | None = None,
                      total: Decimal | None = None) -> tuple[Decimal | None, str | None]:
    """The quantity a cell states and its unit: ``2.50 kg`` -> (2.50, ``kg``); (None, None) if unreadable."""
    if text is None:
        return None, None
    text = " ".join(text.split())
    plain = parse(text)
    if plain is not None:
        return plain, None
    times = _TIMES_RE.match(text)
    if times:
        return _product(times, parse, price, total)
    m = _QTY_UNIT_RE.match(text)
    if m:
        number, unit = parse(m.group(1)), m.group(2)
        if number is not None and (unit is None or _unit_word(unit) is not None):
            return number, _unit_word(unit) if unit else None
    m = _UNIT_QTY_RE.match(text)
    if m and normalize_unit(m.group(1)) is not None:
        number = parse(m.group(2))
        if number is not None:
            return number, normalize_unit(m.group(1))
    return None, None


_UNIT_WORD_RE = re.compile(r"^(?:[^\W\d_]{1,4}\d{0,3}\.?|[^\W\d_]{1,10}\(s\))$")


def _unit_word(text: str) -> str | None:
    """A unit after a quantity: a known one normalised (``Stk`` -> ``units``), else a short code (``H87``,
    ``BX``, ``Liter(s)``) lower-cased; None for anything else (``4 Eisvogel`` is no quantity)."""
    known = normalize_unit(text)
    if known:
        return known
    word = text.strip()
    return word.lower().rstrip(".") if _UNIT_WORD_RE.match(word) else None


def _product(m: re.Match[str], parse: Parse, price: Decimal | None,
             total: Decimal | None) -> tuple[Decimal | None, str | None]:
    """``2 Days x 3 Seats``: the product (or the first factor when price x first = total), first unit named."""
    first, second = parse(m.group(1)), parse(m.group(3))
    if first is None or second is None:
        return None, None
    units = [u for u in (normalize_unit(m.group(2)) if m.group(2) else None,
                         normalize_unit(m.group(4)) if m.group(4) else None) if u]
    quantity = first * second
    if price is not None and total is not None and abs(price * first - total) <= CENT < abs(price * quantity - total):
        quantity = first
    return quantity, units[0] if units else None


def code_from_description(description: str | None) -> tuple[str | None, str | None]:
    """``[AB-1200] Desk Lamp`` -> (``AB-1200``, ``Desk Lamp``); (None, description) when no code is marked."""
    if not description:
        return None, description
    for pattern in _CODE_PATTERNS:
        m = pattern.match(description.strip())
        if m:
            first, second = m.group(1).strip(), m.group(2).strip()
            code, rest = (second, first) if pattern is _CODE_PATTERNS[-1] else (first, second)
            if any(ch.isalpha() for ch in rest):
                return code, rest
    return None, description


def leading_codes(lines: Sequence[POLine]) -> None:
    """SKUs from bare leading codes (``AB-1200 Desk Lamp``) when most code-less lines start with one."""
    candidates = [line for line in lines if line.sku is None and line.description]
    if len(candidates) < 2:
        return
    matches = {id(line): m for line in candidates if (m := _LEADING_CODE_RE.match(line.description or ""))}
    matches = {k: m for k, m in matches.items() if any(ch.isdigit() for ch in m.group(1))}
    if len(matches) * 4 < len(candidates) * 3:
        return
    for line in candidates:
        m = matches.get(id(line))
        if m:
            line.sku, line.description = m.group(1), m.group(2).strip()


def apply_discount(line: POLine, text: str | None, parse: Parse) -> None:
    """Fill ``line.discount`` from a discount cell (``10%``, ``-5.00``); the line total is what remains."""
    if not text:
        return
    stripped = text.strip()
    value = parse(stripped.strip("%").strip())
    if value is None or value == 0:
        return
    gross = line.quantity * line.unit_cost if line.quantity is not None and line.unit_cost is not None else None
    if "%" in stripped:
        if gross is None:
            return
        line.discount = (gross * abs(value) / 100).quantize(CENT)
    else:
        line.discount = abs(value)
    if gross is not None and (line.line_total is None or line.line_total == gross):
        line.line_total = gross - line.discount  # none printed, or printed before the discount
