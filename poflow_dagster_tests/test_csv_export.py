"""CSV we write never carries a live formula; numbers stay numbers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from poflow_dagster.csv_export import neutralize, po_lines_csv
from poflow_dagster.domain.models import ParsedPO, POLine


@pytest.mark.parametrize(
    "cell, expected",
    [("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
     ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tTAB", "'\tTAB"), ("-12.50", "-12.50"), ("+7", "+7"),
     ("Widget", "Widget"), (None, "")],
)
def test_neutralize(cell, expected):
    assert neutralize(cell) == expected


def test_po_lines_csv_round_trips_and_is_safe():
    po = ParsedPO(lines=[POLine(line_no=1, sku="00042", description='=IMPORTXML("http://evil")',
                                quantity=Decimal(2), unit_cost=Decimal("-1.50"), line_total=Decimal("-3.00"))])
    rows = list(csv.reader(io.StringIO(po_lines_csv(po))))
    assert rows[0] == ["line", "sku", "description", "quantity", "unit_cost", "line_total"]
    assert rows[1] == ["1", "00042", "'=IMPORTXML(\"http://evil\")", "2", "-1.50", "-3.00"]
