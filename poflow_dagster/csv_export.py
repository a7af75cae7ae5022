"""Every CSV poflow writes goes through here: cells that a spreadsheet would run as a formula are
neutralised (OWASP CSV injection), numbers stay numbers."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from poflow_dagster.domain.models import ParsedPO

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(?:[.,]\d+)*$")


def neutralize(cell: object) -> str:
    """``=HYPERLINK(...)`` -> ``'=HYPERLINK(...)``; ``-12.50`` stays ``-12.50``."""
    text = "" if cell is None else str(cell)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def write_rows(rows: Iterable[Sequence[object]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows([neutralize(cell) for cell in row] for row in rows)
    return buffer.getvalue()


def po_lines_csv(po: ParsedPO) -> str:
    """The parsed lines as CSV for spreadsheets (money as plain decimal strings)."""
    def s(value) -> str:
        return "" if value is None else format(value, "f")

    header = ["line", "sku", "description", "quantity", "unit_cost", "line_total"]
    rows = [[line.line_no, line.sku, line.description, s(line.quantity), s(line.unit_cost), s(line.line_total)]
            for line in po.lines]
    return write_rows([header, *rows])
