"""poflow's own sample purchase orders (demo data and test fixtures).

Every sample is described once, as data (:data:`SAMPLES`); the files are rendered
from that data and :data:`SAMPLE_EXPECTATIONS` is derived from it too, so the two
cannot drift apart. The samples are internally consistent: each line total is
exactly quantity x unit cost, the lines add up to the subtotal, and
total = subtotal + tax + shipping. Output is byte-for-byte deterministic.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from poflow_dagster.csv_export import write_rows

__all__ = [
    "SAMPLES",
    "SAMPLE_EXPECTATIONS",
    "SampleLine",
    "SamplePO",
    "generate_samples",
    "render_sample",
]

_CENT = Decimal("0.01")


@dataclass(frozen=True)
class SampleLine:
    """One item of a sample PO; ``line_total`` is exact (checked on construction)."""

    sku: str
    description: str
    quantity: Decimal
    unit_cost: Decimal

    def __post_init__(self) -> None:
        if self.quantity * self.unit_cost != self.line_total:
            raise ValueError(f"{self.sku}: quantity x unit cost is not a whole number of cents")

    @property
    def line_total(self) -> Decimal:
        return (self.quantity * self.unit_cost).quantize(_CENT)


@dataclass(frozen=True)
class SamplePO:
    """A sample purchase order as data; the file is rendered from it."""

    filename: str
    source_format: str
    po_number: str
    supplier_name: str
    order_date: dt.date
    currency: str
    tax_rate: Decimal
    shipping: Decimal
    lines: tuple[SampleLine, ...]

    @property
    def subtotal(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00"))

    @property
    def tax(self) -> Decimal:
        return (self.subtotal * self.tax_rate / 100).quantize(_CENT, rounding=ROUND_HALF_UP)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax + self.shipping

    def expectations(self) -> dict:
        """What an extractor should read from the rendered file."""
        return {
            "po_number": self.po_number,
            "supplier_name": self.supplier_name,
            "order_date": self.order_date,
            "currency": self.currency,
            "source_format": self.source_format,
            "line_count": len(self.lines),
            "skus": [line.sku for line in self.lines],
            "subtotal": self.subtotal,
            "lines_sum": self.subtotal,
            "tax": self.tax,
            "shipping": self.shipping,
            "total": self.total,
        }


def _line(sku: str, description: str, quantity: str, unit_cost: str) -> SampleLine:
    return SampleLine(sku, description, Decimal(quantity), Decimal(unit_cost))


SAMPLES: tuple[SamplePO, ...] = (
    SamplePO(
        filename="acme-po-1001.csv",
        source_format="csv",
        po_number="PO-1001",
        supplier_name="Acme Widgets, Inc.",
        order_date=dt.date(2026, 3, 3),
        currency="USD",
        tax_rate=Decimal("8"),
        shipping=Decimal("45.00"),
        lines=(
            _line("00042", "Widget, small (blue)", "120", "12.50"),
            _line("WID-200", "Widget, large", "15", "23.99"),
            _line("GAD-7", "Gadget deluxe", "4", "149.00"),
            _line("00107", "Sprocket assembly kit", "2", "1234.56"),
            _line("BOLT-M6", "Hex bolts M6 (box of 100)", "10", "8.75"),
        ),
    ),
    SamplePO(
        filename="nordwind-bestellung-2002.tsv",
        source_format="tsv",
        po_number="NW-2002",
        supplier_name="Nordwind Handels GmbH",
        order_date=dt.date(2026, 9, 14),
        currency="EUR",
        tax_rate=Decimal("19"),
        shipping=Decimal("12.90"),
        lines=(
            _line("00017", "Schraube M4 × 20, verzinkt", "1200", "0.35"),
            _line("MU-440", "Mutter M4", "1000", "0.12"),
            _line("00318", "Unterlegscheibe Ø 4 mm", "500", "0.05"),
            _line("WZ-9", "Drehmomentschlüssel", "2", "1249.90"),
        ),
    ),
    SamplePO(
        filename="lumiere-commande-3003.xlsx",
        source_format="xlsx",
        po_number="LUM-3003",
        supplier_name="Lumière & Fils SARL",
        order_date=dt.date(2026, 5, 20),
        currency="EUR",
        tax_rate=Decimal("20"),
        shipping=Decimal("25.00"),
        lines=(
            _line("00310", "Ampoule LED E27 – blanc chaud", "48", "3.95"),
            _line("LP-220", "Lampe de bureau « Café »", "6", "54.90"),
            _line("00007", "Abat-jour lin naturel", "12", "18.25"),
            _line("CB-15", "Câble textile 1,5 m", "30", "7.40"),
            _line("SP-4", "Suspension en laiton", "3", "1189.00"),
        ),
    ),
    SamplePO(
        filename="iberia-pedido-4004.csv",
        source_format="csv",
        po_number="IB-4004",
        supplier_name="Iberia Suministros S.L.",
        order_date=dt.date(2026, 10, 3),
        currency="EUR",
        tax_rate=Decimal("10"),
        shipping=Decimal("18.00"),
        lines=(
            _line("00420", "Aceite de oliva virgen extra 5 l", "24", "31.50"),
            _line("AZ-12", "Azafrán La Mancha 1 g", "50", "6.95"),
            _line("00009", "Jamón serrano loncheado", "40", "4.80"),
            _line("TU-3", "Turrón de Jijona", "100", "12.35"),
        ),
    ),
)

#: filename -> expected po_number, supplier_name, order_date, currency, source_format,
#: line_count, skus, subtotal, tax, shipping, total (Decimals for money).
SAMPLE_EXPECTATIONS: dict[str, dict] = {po.filename: po.expectations() for po in SAMPLES}


# --- number formatting -----------------------------------------------------------------------


def _en(value: Decimal) -> str:
    """``1234.5`` -> ``1,234.50``."""
    return f"{value:,.2f}"


def _de(value: Decimal, places: int = 2) -> str:
    """``1234.5`` -> ``1.234,50`` (``places=0`` for quantities: ``1.200``)."""
    return f"{value:,.{places}f}".translate(str.maketrans(",.", ".,"))


# --- renderers -------------------------------------------------------------------------------


_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # not strftime("%B"): that depends on the process locale


def _delimited(rows: Sequence[Sequence[str]], delimiter: str) -> str:
    return write_rows(rows, delimiter)


def _render_acme(po: SamplePO) -> bytes:
    """English CSV: mixed header-field layouts, ``$1,234.56`` money, a totals block."""
    rows: list[list[str]] = [
        ["Purchase Order"],
        [f"PO Number: {po.po_number}"],
        ["Supplier", po.supplier_name],
        ["Order Date", f"{_MONTHS_EN[po.order_date.month - 1]} {po.order_date.day}, {po.order_date.year}"],
        [f"Currency: {po.currency}"],
        [],
        ["SKU", "Description", "Qty", "Unit Price", "Line Total"],
    ]
    for line in po.lines:
        rows.append(
            [line.sku, line.description, str(line.quantity), "$" + _en(line.unit_cost), "$" + _en(line.line_total)]
        )
    rows += [
        [],
        ["", "", "", "Subtotal", _en(po.subtotal)],
        ["", "", "", f"Tax ({po.tax_rate}%)", _en(po.tax)],
        ["", "", "", "Shipping", _en(po.shipping)],
        ["", "", "", "Total", _en(po.total)],
        [],
        ["Please confirm delivery date by email."],
    ]
    return _delimited(rows, ",").encode("utf-8")


def _render_nordwind(po: SamplePO) -> bytes:
    """German TSV (UTF-8 with BOM, as Excel writes it): ``1.234,56`` money and quantities."""
    rows: list[list[str]] = [
        ["Bestellung"],
        ["Bestellnummer:", po.po_number],
        ["Lieferant", po.supplier_name],
        ["Bestelldatum", po.order_date.strftime("%d.%m.%Y")],
        ["Währung", po.currency],
        [],
        ["Artikelnr.", "Bezeichnung", "Menge", "Einzelpreis", "Gesamtpreis"],
    ]
    for line in po.lines:
        rows.append([line.sku, line.description, _de(line.quantity, 0), _de(line.unit_cost), _de(line.line_total)])
    rows += [
        ["", "", "", "Zwischensumme", _de(po.subtotal)],
        ["", "", "", f"MwSt {po.tax_rate} %", _de(po.tax)],
        ["", "", "", "Versandkosten", _de(po.shipping)],
        ["", "", "", "Gesamtsumme", _de(po.total)],
    ]
    return b"\xef\xbb\xbf" + _delimited(rows, "\t").encode("utf-8")


def _render_iberia(po: SamplePO) -> bytes:
    """Spanish ``;``-separated CSV in cp1252 (as Spanish Excel saves it), comma decimals."""
    rows: list[list[str]] = [
        ["Pedido de compra"],
        ["Número de pedido", po.po_number],
        ["Proveedor", po.supplier_name],
        ["Fecha", po.order_date.strftime("%d/%m/%Y")],
        ["Moneda", po.currency],
        [],
        ["Código", "Descripción", "Cantidad", "Precio unitario", "Importe"],
    ]
    for line in po.lines:
        rows.append([line.sku, line.description, _de(line.quantity, 0), _de(line.unit_cost), _de(line.line_total)])
    rows += [
        [],
        ["", "", "", "Subtotal", _de(po.subtotal)],
        ["", "", "", f"IVA {po.tax_rate}%", _de(po.tax)],
        ["", "", "", "Gastos de envío", _de(po.shipping)],
        ["", "", "", "Total", _de(po.total)],
    ]
    return _delimited(rows, ";").encode("cp1252")


_FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
_FIXED_STAMP = "2026-01-01T00:00:00Z"


def _render_lumiere(po: SamplePO) -> bytes:
    """French XLSX: numeric cells, a native date, header fields above the table."""
    from openpyxl import Workbook  # local import: only needed to render this sample

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Commande"
    money = '#,##0.00 "€"'
    sheet.append(["Bon de commande"])
    sheet.append([f"N° de commande : {po.po_number}"])
    sheet.append(["Fournisseur", po.supplier_name])
    sheet.append(["Date de commande", po.order_date])
    sheet["B4"].number_format = "DD/MM/YYYY"
    sheet.append(["Devise :", po.currency])
    sheet.append([])
    sheet.append(["Réf.", "Désignation", "Quantité", "Prix unitaire HT", "Montant HT"])
    for line in po.lines:
        # Numeric SKUs are stored as numbers shown through a zero-padding format ("00000"),
        # as Excel users typically do; the extractor must give back "00310", not 310.
        numeric_sku = line.sku.isdigit()
        sku: str | int = int(line.sku) if numeric_sku else line.sku
        sheet.append([sku, line.description, int(line.quantity), float(line.unit_cost), float(line.line_total)])
        row = sheet.max_row
        if numeric_sku:
            sheet.cell(row=row, column=1).number_format = "0" * len(line.sku)
        sheet.cell(row=row, column=4).number_format = money
        sheet.cell(row=row, column=5).number_format = money
    sheet.append([])
    for label, amount in (
        ("Sous-total HT", po.subtotal),
        (f"TVA {po.tax_rate} %", po.tax),
        ("Frais de port", po.shipping),
        ("Total TTC", po.total),
    ):
        sheet.append([None, None, None, label, float(amount)])
        sheet.cell(row=sheet.max_row, column=5).number_format = money
    stamp = dt.datetime(2026, 1, 1)
    workbook.properties.creator = "poflow samples"
    workbook.properties.created = stamp
    buffer = io.BytesIO()
    workbook.save(buffer)
    return _normalise_zip(buffer.getvalue())


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite an xlsx with fixed timestamps so the bytes are the same on every run."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                    rb"\g<1>" + _FIXED_STAMP.encode() + rb"\g<2>",
                    content,
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=_FIXED_ZIP_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o600 << 16
            target.writestr(fixed, content)
    return out.getvalue()


_RENDERERS: dict[str, Callable[[SamplePO], bytes]] = {
    "acme-po-1001.csv": _render_acme,
    "nordwind-bestellung-2002.tsv": _render_nordwind,
    "lumiere-commande-3003.xlsx": _render_lumiere,
    "iberia-pedido-4004.csv": _render_iberia,
}


def render_sample(po: SamplePO) -> bytes:
    """The file content of one sample."""
    return _RENDERERS[po.filename](po)


def generate_samples(dest: Path) -> list[Path]:
    """Write every sample into ``dest`` (created if needed); return the paths in order."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for po in SAMPLES:
        path = dest / po.filename
        path.write_bytes(render_sample(po))
        paths.append(path)
    return paths
