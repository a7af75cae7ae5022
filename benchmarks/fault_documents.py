"""The fault benchmark's 20 purchase orders (distinct PO numbers and bytes, mixed formats) and the fake LLM
that "reads" the two kinds the pipeline sends to an LLM (free text and scanned PDFs).

Every document is printed from a :class:`Doc` (PO number, supplier, lines, tax, shipping), so what the
pipeline must save is known exactly. The LLM stand-in reads free text with regular expressions (whatever
window of the text it is sent) and identifies a scanned page by a row of black/white squares printed at its
top (the document index and page number in binary), which survives rendering at any resolution; it answers
only what is on the pages it was sent, and answers HTTP 429 with ``Retry-After`` for a seeded share of calls.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import random
import re
import sys
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poflow_dagster.samples import edi_documents, pdf_documents  # noqa: E402
from poflow_dagster.samples.spreadsheets import SampleLine, SamplePO, render_sample  # noqa: E402

CENT = Decimal("0.01")
#: SKUs that several small POs order too (concurrent upserts of one product).
SHARED_SKUS = ("SHARED-01", "SHARED-02", "SHARED-03")
_NOUNS = ("widget", "gadget", "bracket", "hinge", "valve", "gasket", "spindle", "sprocket", "washer", "coupler")
_ADJECTIVES = ("Blue", "Steel", "Large", "Brass", "Mini", "Heavy", "Red", "Matte", "Coated", "Slim")


#: One ordered item (the sample PDFs' own line type: the line total is quantity x unit cost).
Line = pdf_documents.LineSpec


@dataclass
class Doc:
    index: int
    kind: str  # acme_csv | nordwind_tsv | lumiere_xlsx | iberia_csv | pdf | x12 | ubl | text_llm | scan_llm
    po_number: str
    supplier: str
    lines: tuple[Line, ...]
    tax: Decimal = Decimal("0.00")
    shipping: Decimal = Decimal("0.00")
    filename: str = ""
    pages: list[tuple[Line, ...]] = field(default_factory=list)  # scans: the lines on each page

    @property
    def subtotal(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00"))

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax + self.shipping

    @property
    def uses_llm(self) -> bool:
        return self.kind.endswith("_llm")


#: (kind, number of lines, shares SKUs with other POs). Four POs with 100-150 SKUs make throttling bite.
PLAN: tuple[tuple[str, int, bool], ...] = (
    ("acme_csv", 150, False), ("acme_csv", 6, True), ("acme_csv", 20, False),
    ("nordwind_tsv", 120, False), ("nordwind_tsv", 5, True),
    ("lumiere_xlsx", 100, False), ("lumiere_xlsx", 5, False),
    ("iberia_csv", 4, True), ("iberia_csv", 12, False),
    ("pdf", 100, False), ("pdf", 5, False), ("pdf", 20, False),
    ("x12", 30, False), ("x12", 4, True),
    ("ubl", 20, False), ("ubl", 4, False),
    ("text_llm", 12, True), ("text_llm", 8, False),
    ("scan_llm", 16, False), ("scan_llm", 8, False),
)


def _lines(index: int, count: int, shared: bool, rng: random.Random) -> tuple[Line, ...]:
    lines = []
    for n in range(count):
        if shared and n < len(SHARED_SKUS):
            sku = SHARED_SKUS[n]
        else:
            sku = f"F{index:02d}-{n + 1:04d}"
        description = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.randint(2, 90)} mm"
        lines.append(Line(sku, description, Decimal(rng.randint(1, 40)), Decimal(rng.randint(50, 9999)) / 100))
    return tuple(lines)


def build_documents(
    dest: Path, *, count: int = 20, scale: float = 1.0, seed: int = 6, first_index: int = 0
) -> list[Doc]:
    """Write ``count`` POs (the first ``count`` of :data:`PLAN`, cycling) into ``dest``, numbered from
    ``first_index`` (batches built into one run need distinct numbers: the scans print theirs, below 256)."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    stamp = f"{seed:02d}"
    docs = []
    for index in range(first_index, first_index + count):
        kind, size, shared = PLAN[(index - first_index) % len(PLAN)]
        size = max(4, int(size * scale))
        doc = Doc(
            index=index, kind=kind, po_number=f"FB{stamp}-{index:03d}", supplier=f"Fault Bench Supplier {index:02d}",
            lines=_lines(index, size, shared, rng),
        )
        docs.append(doc)
        _WRITERS[kind](doc, dest)
    return docs


# --- writers -----------------------------------------------------------------------------------


def _sample_po(doc: Doc, filename: str, currency: str, tax_rate: str, shipping: str) -> SamplePO:
    return SamplePO(
        filename=filename, source_format=filename.rsplit(".", 1)[1], po_number=doc.po_number,
        supplier_name=doc.supplier, order_date=dt.date(2026, 11, 2), currency=currency,
        tax_rate=Decimal(tax_rate), shipping=Decimal(shipping),
        lines=tuple(SampleLine(l.sku, l.description, l.quantity, l.unit_cost) for l in doc.lines),
    )


def _spreadsheet(renderer_name: str, extension: str, currency: str, tax_rate: str, shipping: str):
    def write(doc: Doc, dest: Path) -> None:
        sample = _sample_po(doc, renderer_name, currency, tax_rate, shipping)  # renderer chosen by its name
        doc.tax, doc.shipping = sample.tax, sample.shipping
        doc.filename = f"po-{doc.index:02d}-{doc.kind}.{extension}"
        (dest / doc.filename).write_bytes(render_sample(sample))

    return write


def _write_pdf(doc: Doc, dest: Path) -> None:
    doc.tax, doc.shipping = (doc.subtotal * Decimal("0.08")).quantize(CENT), Decimal("25.00")
    spec = pdf_documents.POSpec(
        po_number=doc.po_number, supplier_name=doc.supplier, order_date=dt.date(2026, 11, 2),
        date_text="2026-11-02", currency="USD",
        lines=tuple(pdf_documents.LineSpec(l.sku, l.description, l.quantity, l.unit_cost) for l in doc.lines),
        tax=doc.tax, shipping=doc.shipping, ruled=doc.index % 2 == 1, rows_per_page=25,
    )
    doc.filename = f"po-{doc.index:02d}-pdf.pdf"
    pdf_documents.make_text_po_pdf(dest / doc.filename, spec)


def _order_spec(doc: Doc) -> edi_documents.OrderSpec:
    doc.tax, doc.shipping = (doc.subtotal * Decimal("0.05")).quantize(CENT), Decimal("12.50")
    return edi_documents.sample_spec(
        po_number=doc.po_number, supplier=doc.supplier, order_date=dt.date(2026, 11, 2),
        lines=tuple(edi_documents.LineSpec(l.sku, l.description, l.quantity, l.unit_cost) for l in doc.lines),
        tax=doc.tax, shipping=doc.shipping,
    )


def _write_x12(doc: Doc, dest: Path) -> None:
    doc.filename = f"po-{doc.index:02d}-x12.edi"
    (dest / doc.filename).write_text(edi_documents.x12_850(_order_spec(doc)))


def _write_ubl(doc: Doc, dest: Path) -> None:
    doc.filename = f"po-{doc.index:02d}-ubl.xml"
    (dest / doc.filename).write_bytes(edi_documents.ubl_order(_order_spec(doc)))


def text_line(line: Line) -> str:
    return f"Item {line.sku} {line.description} = {line.quantity} units at {line.unit_cost} each = amount {line.line_total}"


_TEXT_ITEM = re.compile(r"Item (\S+) (.+?) = (\d+) units at ([\d.]+) each = amount ([\d.]+)")


def _write_text(doc: Doc, dest: Path) -> None:
    doc.shipping = Decimal("9.00")
    rows = [
        "Hello team", "",
        "please treat this message as our purchase order.",
        f"PO Number: {doc.po_number}",
        f"Supplier: {doc.supplier}",
        "Order Date: 2026-11-02",
        "Currency: USD", "",
        "We would like the following items:",
        *(text_line(line) for line in doc.lines),
        "",
        f"Subtotal: {doc.subtotal}",
        f"Shipping: {doc.shipping}",
        f"Total: {doc.total}",
        "", "Kind regards from the purchasing desk",
    ]
    doc.filename = f"po-{doc.index:02d}-text.txt"
    (dest / doc.filename).write_text("\n".join(rows) + "\n")


# Scans: a 16-bit code (document index << 8 | page number) as squares across the top of the page.
_PAGE_W, _PAGE_H, _BITS = 1240, 1754, 16
_CELL = _PAGE_W / (_BITS + 4)


def _write_scan(doc: Doc, dest: Path) -> None:
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    per_page = 4
    doc.pages = [doc.lines[i:i + per_page] for i in range(0, len(doc.lines), per_page)]
    pdf = FPDF(unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    font = ImageFont.load_default(size=28)
    for number, page_lines in enumerate(doc.pages, start=1):
        image = Image.new("L", (_PAGE_W, _PAGE_H), 255)
        draw = ImageDraw.Draw(image)
        code = (doc.index << 8) | number
        for bit in range(_BITS):
            if code >> (_BITS - 1 - bit) & 1:
                x = (bit + 2) * _CELL
                draw.rectangle((x + 6, 40, x + _CELL - 6, 40 + _CELL - 12), fill=0)
        text = ["PURCHASE ORDER", f"PO Number: {doc.po_number}", f"Supplier: {doc.supplier}", ""]
        text += [text_line(line) for line in page_lines]
        if number == len(doc.pages):
            text += ["", f"Subtotal {doc.subtotal}   Total {doc.total}"]
        for row, value in enumerate(text):
            draw.text((60, 160 + row * 44), value, fill=0, font=font)
        pdf_documents.add_image_page(pdf, image)
    doc.filename = f"po-{doc.index:02d}-scan.pdf"
    (dest / doc.filename).write_bytes(bytes(pdf.output()))


def read_scan_code(png: bytes) -> int | None:
    """The (document index << 8 | page) code printed on a rendered scan page, or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as image:
            gray = image.convert("L")
            width, height = gray.size
            scale = width / _PAGE_W
            code = 0
            for bit in range(_BITS):
                x = int(((bit + 2) * _CELL + _CELL / 2) * scale)
                y = int((40 + (_CELL - 12) / 2) * scale)
                code = code << 1 | (1 if gray.getpixel((min(x, width - 1), min(y, height - 1))) < 128 else 0)
            return code
    except OSError:
        return None


_WRITERS = {
    "acme_csv": _spreadsheet("acme-po-1001.csv", "csv", "USD", "8", "45.00"),
    "nordwind_tsv": _spreadsheet("nordwind-bestellung-2002.tsv", "tsv", "EUR", "19", "12.90"),
    "lumiere_xlsx": _spreadsheet("lumiere-commande-3003.xlsx", "xlsx", "EUR", "20", "25.00"),
    "iberia_csv": _spreadsheet("iberia-pedido-4004.csv", "csv", "EUR", "10", "18.00"),
    "pdf": _write_pdf,
    "x12": _write_x12,
    "ubl": _write_ubl,
    "text_llm": _write_text,
    "scan_llm": _write_scan,
}


# --- the fake LLM --------------------------------------------------------------------------------


def _answer_line(line: Line) -> dict:
    return {"sku": line.sku, "description": line.description, "quantity": str(line.quantity),
            "unit_cost": str(line.unit_cost), "line_total": str(line.line_total), "confidence": 0.97}


class FakeLLM:
    """The ``behaviour`` for ``poflow_dagster_tests.openai_server``: reads our documents, 429s a share."""

    def __init__(self, docs: list[Doc], *, rate_limit_share: float, retry_after: str = "1", seed: int = 6) -> None:
        self.by_po = {d.po_number: d for d in docs}
        self.by_index = {d.index: d for d in docs}
        self.share = rate_limit_share
        self.retry_after = retry_after
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "rate_limited_429": 0, "answered": 0, "unrecognised": 0}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def __call__(self, body: dict):
        from poflow_dagster_tests.openai_server import Reply, image_urls, request_text

        with self._lock:
            self.counts["requests"] += 1
            limited = self._rng.random() < self.share
        if limited:
            self._count("rate_limited_429")
            return Reply.rate_limited(retry_after=self.retry_after)
        answer = self._read(request_text(body), image_urls(body))
        if answer is None:
            self._count("unrecognised")
            answer = {"po_number": None, "supplier_name": None, "order_date": None, "currency": None,
                      "subtotal": None, "tax": None, "shipping": None, "total": None, "confidence": 0.1, "lines": []}
        else:
            self._count("answered")
        return Reply.json(answer, prompt_tokens=800, completion_tokens=150, delay=0.2)

    def _read(self, text: str, images: list[str]) -> dict | None:
        header: Doc | None = None
        doc: Doc | None = None
        lines: list[Line] = []
        totals = False
        match = re.search(r"PO Number: (\S+)", text)
        if match and match.group(1) in self.by_po:
            header = doc = self.by_po[match.group(1)]
        for sku, *_ in _TEXT_ITEM.findall(text):
            owner = doc or next((d for d in self.by_po.values() if d.kind == "text_llm"
                                 and any(l.sku == sku for l in d.lines)), None)
            if owner is not None:
                doc = owner
                lines += [l for l in owner.lines if l.sku == sku][:1]
        if doc is not None and "Total:" in text:
            totals = True
        for url in images:
            code = read_scan_code(base64.b64decode(url.split(",", 1)[1])) if url.startswith("data:") else None
            if code is None or (code >> 8) not in self.by_index:
                continue
            doc = self.by_index[code >> 8]
            page = code & 0xFF
            if not 1 <= page <= len(doc.pages):
                continue
            if page == 1:
                header = doc
            lines += list(doc.pages[page - 1])
            totals = totals or page == len(doc.pages)
        if doc is None:
            return None
        return {
            "po_number": header.po_number if header else None,
            "supplier_name": header.supplier if header else None,
            "order_date": "2026-11-02" if header else None,
            "currency": "USD" if header else None,
            "subtotal": str(doc.subtotal) if totals else None,
            "tax": None,
            "shipping": str(doc.shipping) if totals and doc.shipping else None,
            "total": str(doc.total) if totals else None,
            "confidence": 0.97,
            "lines": [_answer_line(l) for l in lines],
        }
