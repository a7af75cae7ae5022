"""The sample PO generator: deterministic, internally consistent, in the promised formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from poflow_dagster.samples import SAMPLE_EXPECTATIONS, SAMPLES, generate_samples

REQUIRED = {
    "acme-po-1001.csv",
    "nordwind-bestellung-2002.tsv",
    "lumiere-commande-3003.xlsx",
    "iberia-pedido-4004.csv",
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {p.name: p for p in generate_samples(tmp_path_factory.mktemp("samples") / "nested")}


def test_all_required_samples_are_written(paths: dict[str, Path]) -> None:
    assert REQUIRED <= set(paths)
    assert set(paths) == set(SAMPLE_EXPECTATIONS)
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0


def test_output_is_deterministic(paths: dict[str, Path], tmp_path: Path) -> None:
    again = {p.name: p.read_bytes() for p in generate_samples(tmp_path)}
    assert again == {name: path.read_bytes() for name, path in paths.items()}


@pytest.mark.parametrize("po", SAMPLES, ids=lambda po: po.filename)
def test_sample_data_is_consistent(po) -> None:  # type: ignore[no-untyped-def]
    assert 3 <= len(po.lines) <= 8
    for line in po.lines:
        assert line.line_total == line.quantity * line.unit_cost
    assert sum(line.quantity * line.unit_cost for line in po.lines) == po.subtotal
    assert po.subtotal + po.tax + po.shipping == po.total
    expected = SAMPLE_EXPECTATIONS[po.filename]
    assert expected["subtotal"] == po.subtotal
    assert isinstance(expected["subtotal"], Decimal)
    assert expected["line_count"] == len(po.lines)


def _rows(text: str, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def _table(rows: list[list[str]], first_header: str) -> list[list[str]]:
    """Item rows under the header row (stdlib only, independent of the extractor)."""
    start = next(i for i, row in enumerate(rows) if row and row[0] == first_header) + 1
    items = []
    for row in rows[start:]:
        if not row or not row[0]:
            break
        items.append(row)
    return items


def test_acme_csv_is_english_comma_separated(paths: dict[str, Path]) -> None:
    text = paths["acme-po-1001.csv"].read_bytes().decode("utf-8")
    rows = _rows(text, ",")
    items = _table(rows, "SKU")
    assert "00042" in [row[0] for row in items]
    assert any("," in row[4] for row in items)  # "1,500.00" style amounts
    assert any(row[3:4] == ["Subtotal"] for row in rows)
    assert any(row[3:4] == ["Total"] for row in rows)
    # The CSV's own numbers add up: line totals = qty x price, sum = subtotal.
    money = lambda s: Decimal(s.replace("$", "").replace(",", ""))  # noqa: E731
    for row in items:
        assert Decimal(row[2]) * money(row[3]) == money(row[4])
    subtotal = next(money(row[4]) for row in rows if row[3:4] == ["Subtotal"])
    assert sum(money(row[4]) for row in items) == subtotal


def test_nordwind_tsv_is_german_with_comma_decimals(paths: dict[str, Path]) -> None:
    text = paths["nordwind-bestellung-2002.tsv"].read_bytes().decode("utf-8-sig")
    assert "14.09.2026" in text
    assert "EUR" in text
    rows = _rows(text, "\t")
    assert ["Artikelnr.", "Bezeichnung", "Menge", "Einzelpreis", "Gesamtpreis"] in rows
    items = _table(rows, "Artikelnr.")
    german = lambda s: Decimal(s.replace(".", "").replace(",", "."))  # noqa: E731
    for row in items:
        assert german(row[2]) * german(row[3]) == german(row[4])
    assert any("." in row[4] and "," in row[4] for row in items)  # "2.499,80" style


def test_lumiere_xlsx_has_numeric_cells_and_french_headers(paths: dict[str, Path]) -> None:
    path = paths["lumiere-commande-3003.xlsx"]
    assert "xl/workbook.xml" in zipfile.ZipFile(path).namelist()
    sheet = openpyxl.load_workbook(path, data_only=True).active
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    header_index = next(i for i, row in enumerate(values) if row[0] == "Réf.")
    assert values[header_index][1:3] == ["Désignation", "Quantité"]
    assert any(isinstance(v, (dt.date, dt.datetime)) for row in values[:header_index] for v in row)
    assert any(v == "EUR" for row in values[:header_index] for v in row)
    items = [row for row in values[header_index + 1 :] if row[0] is not None]
    assert items
    for row in items:
        quantity, price, total = row[2], row[3], row[4]
        assert all(isinstance(v, (int, float)) for v in (quantity, price, total))
        assert abs(quantity * price - total) < 1e-9


def test_iberia_csv_is_semicolon_separated_spanish(paths: dict[str, Path]) -> None:
    text = paths["iberia-pedido-4004.csv"].read_bytes().decode("cp1252")
    rows = _rows(text, ";")
    assert ["Código", "Descripción", "Cantidad", "Precio unitario", "Importe"] in rows
    items = _table(rows, "Código")
    assert all("," in row[3] for row in items)  # comma decimals
    spanish = lambda s: Decimal(s.replace(".", "").replace(",", "."))  # noqa: E731
    for row in items:
        assert spanish(row[2]) * spanish(row[3]) == spanish(row[4])
