"""Barcodes (UPC / EAN / GTIN) as the extractors read them, and the check every parsed PO gets.

A barcode is text, never a number: leading zeros count (``012345678905`` is a UPC-A). What a document
hands us is cleaned the way a person would read it, and nothing else is changed:

* spaces, hyphens and dashes between the digits go (``4 006381 333931`` -> ``4006381333931``);
* a spreadsheet's float forms are undone when no digit was lost: a numeric cell ``7612345678901.0``, the text
  ``7612345678901.0`` and ``7.612345678901E+12`` all become ``7612345678901``. ``7.61E+12`` (Excel's display
  of a long number, saved to CSV) has lost its digits and is kept as printed;
* a numeric cell loses leading zeros: its digits are zero-padded to the next GTIN length (8, 12, 13, 14)
  when that makes a valid GTIN (an 11-digit ``12345678905`` is the UPC-A ``012345678905``).

:func:`check_barcodes` gives every line whose barcode is not a valid GTIN (wrong length, letters, a wrong
check digit: :func:`poflow_dagster.catalog.normalize.barcode_key` returns ``None``) a warning
``INVALID_BARCODE`` issue naming the line. The barcode stays on the line as printed; the PO is not held
(warnings never are), and such a barcode is never used for matching nor sent to Shopify.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from poflow_dagster.catalog.normalize import barcode_key
from poflow_dagster.domain.models import Issue, ParsedPO

__all__ = ["INVALID_BARCODE", "check_barcodes", "clean_barcode", "gtin_or_none", "with_check_digit"]

#: Issue code of a line whose barcode is not a valid GTIN.
INVALID_BARCODE = "INVALID_BARCODE"

_GTIN_LENGTHS = (8, 12, 13, 14)
#: Spaces, hyphens and dashes a barcode may be printed with (``4-006381-333931``).
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_FLOAT_TEXT = re.compile(r"[+-]?\d+(?:[.,]\d+)?(?:[eE][+-]?\d+)?")
_MAX_LENGTH = 64  # the column's width (line_items.barcode, product_drafts.barcode)


def clean_barcode(value: object) -> str | None:
    """A cell's barcode as text (``None`` when blank). See the module docstring for what is cleaned."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return _from_number(value)
    text = " ".join(str(value).split()).lstrip("'")  # ``'0123…``: a spreadsheet's keep-as-text prefix
    if not text:
        return None
    digits = _SEPARATORS.sub("", text)
    if digits.isascii() and digits.isdigit():
        return digits[:_MAX_LENGTH]
    if _FLOAT_TEXT.fullmatch(digits):
        exact = _exact_digits(digits.replace(",", "."))
        if exact is not None:
            return exact
    return text[:_MAX_LENGTH]


def _from_number(value: int | float | Decimal) -> str | None:
    """A numeric cell: its integer digits, zero-padded back to a GTIN when a leading zero was lost."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    number = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    if number != number.to_integral_value() or number < 0:
        return format(number.normalize(), "f")[:_MAX_LENGTH]  # not a whole number: shown as it is (and flagged)
    return _restore_zeros(str(int(number)))


def _exact_digits(text: str) -> str | None:
    """``7612345678901.0`` / ``7.612345678901E+12`` -> the integer's digits; ``None`` when digits were lost
    (``7.61E+12``: the exponent stands for digits nobody wrote) or it is not a whole number."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if number < 0 or number != number.to_integral_value() or number.as_tuple().exponent > 0:
        return None
    return str(int(number))


def _restore_zeros(digits: str) -> str:
    """Pad to the next GTIN length if the padded number is a valid GTIN (leading zeros a number cell lost)."""
    if len(digits) in _GTIN_LENGTHS or not 7 <= len(digits) < 14:
        return digits
    padded = digits.zfill(next(n for n in _GTIN_LENGTHS if n > len(digits)))
    return padded if barcode_key(padded) is not None else digits


def gtin_or_none(barcode: str | None) -> str | None:
    """``barcode`` if it is a valid GTIN (8, 12, 13 or 14 digits, check digit right), else ``None``."""
    return barcode if barcode is not None and barcode_key(barcode) is not None else None


def with_check_digit(body: str) -> str:
    """``body`` with its GS1 mod-10 check digit appended (for codes sent without one: X12 ``UI``, ``UA``)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def check_barcodes(po: ParsedPO) -> ParsedPO:
    """``po`` with one ``INVALID_BARCODE`` warning per line whose barcode is not a valid GTIN (recomputed: a
    second call adds nothing)."""
    issues = [issue for issue in po.issues if issue.code != INVALID_BARCODE]
    for line in po.lines:
        if line.barcode is not None and barcode_key(line.barcode) is None:
            issues.append(Issue(code=INVALID_BARCODE, severity="warning", message=_why(line.line_no, line.barcode)))
    if len(issues) == len(po.issues) and all(a is b for a, b in zip(issues, po.issues)):
        return po
    return po.model_copy(update={"issues": issues})


def _why(line_no: int, barcode: str) -> str:
    """One line saying what is wrong with a barcode."""
    shown = barcode if len(barcode) <= 40 else barcode[:39] + "…"
    digits = _SEPARATORS.sub("", barcode)
    if "e" in digits.lower() and _FLOAT_TEXT.fullmatch(digits):
        reason = "is in scientific notation, its digits were lost (format the column as text)"
    elif not (digits.isascii() and digits.isdigit()):
        reason = "is not a GTIN (only digits are)"
    elif len(digits) not in _GTIN_LENGTHS:
        reason = f"has {len(digits)} digits (a GTIN has 8, 12, 13 or 14)"
    elif not digits.strip("0"):
        reason = "is all zeros"
    else:
        reason = "has a wrong check digit"
    return f"line {line_no}: barcode {shown!r} {reason}; kept as printed, not used for matching"
