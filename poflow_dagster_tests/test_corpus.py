"""The real-document corpus is well formed: sources, licences, expected files and their own arithmetic.

Every directory under ``corpus/`` is one public source with a ``SOURCE.json`` and a licence file; every
document in it has a hand-checked ``<file>.expected.json`` (and every expected file has its document).
These tests never run the extractors (the benchmark does); they check that what the benchmark compares
against is complete and consistent with itself.
"""

from __future__ import annotations

import datetime
import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
EXPECTED_SUFFIX = ".expected.json"
SOURCE_FILE = "SOURCE.json"

FORMATS = {"pdf", "xlsx", "csv", "tsv", "xml", "edi"}
DOCUMENT_KINDS = {"purchase_order", "order_confirmation", "invoice", "delivery_note", "quote", "credit_note"}
DOCUMENT_TYPES = {"purchase_order", "order_confirmation", "invoice", "delivery_note", "quote", None}
TOP_KEYS = {"origin_path", "format", "language", "document_kind", "expected", "checked_by_hand", "notes"}
CONTRACT_KEYS = {"po_number", "supplier_name", "order_date", "currency", "document_type", "prices_include_tax",
                 "subtotal", "tax", "shipping", "total", "lines"}
LINE_KEYS = {"sku", "barcode", "description", "quantity", "unit_cost", "line_total", "unit", "discount"}
MONEY_KEYS = ("subtotal", "tax", "shipping", "total")
LINE_MONEY_KEYS = ("unit_cost", "line_total", "discount")
LEGAL_FILE = re.compile(r"(LICEN[CS]E|NOTICE|COPYING|README)([._-].*)?", re.IGNORECASE)
TOLERANCE = Decimal("0.01")
MAX_TAX_FACTOR = Decimal("1.30")
MIN_DOCUMENTS = 40
MIN_SOURCES = 8


def _source_dirs() -> list[Path]:
    """Every directory directly under the corpus: one per public source."""
    return sorted(p for p in CORPUS.iterdir() if p.is_dir()) if CORPUS.is_dir() else []


def _expected_files() -> list[Path]:
    """Every hand-written expected file in every source directory."""
    return sorted(p for d in _source_dirs() for p in d.glob("*" + EXPECTED_SUFFIX))


def _source_files(source: Path) -> set[str]:
    """Names in a source directory that are documents: not metadata, licence/notice texts or expected files."""
    meta = json.loads((source / SOURCE_FILE).read_text(encoding="utf-8"))
    skip = {SOURCE_FILE, meta.get("licence_file")}
    return {p.name for p in source.iterdir()
            if p.is_file() and p.name not in skip and not LEGAL_FILE.fullmatch(p.name)
            and not p.name.endswith(EXPECTED_SUFFIX)}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _decimal(value: object, where: str) -> Decimal:
    """A money value or quantity from an expected file: a decimal string (never a float), as the contract prints."""
    assert isinstance(value, str), f"{where}: must be a decimal string, got {value!r}"
    try:
        return Decimal(value)
    except InvalidOperation:
        pytest.fail(f"{where}: {value!r} is not a decimal string")


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


SOURCES = _source_dirs()
EXPECTED = _expected_files()


def test_corpus_has_sources_and_documents():
    """The corpus exists and holds documents (a guard against a silently empty parametrisation)."""
    assert SOURCES, f"no source directories under {CORPUS}"
    assert EXPECTED, "no expected files in the corpus"


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_source_metadata(source: Path):
    """SOURCE.json names its origin, a 40-hex commit and a licence whose text sits next to it."""
    meta_path = source / SOURCE_FILE
    assert meta_path.is_file(), f"{source.name}: SOURCE.json missing"
    meta = _load(meta_path)
    for key in ("name", "origin", "commit", "licence", "licence_file", "notes"):
        assert meta.get(key), f"{source.name}: SOURCE.json lacks {key!r}"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", meta["origin"]), meta["origin"]
    assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"]), f"{source.name}: commit {meta['commit']!r}"
    assert re.fullmatch(r"[A-Za-z0-9.+-]+", meta["licence"]), f"{source.name}: licence {meta['licence']!r}"
    licence = source / meta["licence_file"]
    assert licence.is_file() and licence.stat().st_size > 0, f"{source.name}: licence file {licence.name} missing"


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_every_document_has_an_expected_file_and_back(source: Path):
    """Each document has its expected file, each expected file its document, and documents stay small."""
    documents = _source_files(source)
    expected = {p.name[: -len(EXPECTED_SUFFIX)] for p in source.glob("*" + EXPECTED_SUFFIX)}
    assert documents, f"{source.name}: no documents"
    assert documents == expected, (
        f"{source.name}: without expected file {sorted(documents - expected)}, "
        f"expected file without document {sorted(expected - documents)}")
    for name in documents:
        assert (source / name).stat().st_size < 1_000_000, f"{source.name}/{name} is 1 MB or more"
        assert re.fullmatch(r"[\w.+-]+", name), f"{source.name}/{name}: rename to drop odd characters"


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_expected_file_shape(path: Path):
    """The expected file has the layout's keys with values of the right kind."""
    data = _load(path)
    assert TOP_KEYS <= data.keys(), f"missing {sorted(TOP_KEYS - data.keys())}"
    assert data["format"] in FORMATS, data["format"]
    assert path.name.lower().removesuffix(EXPECTED_SUFFIX).endswith("." + data["format"]) or \
        data["format"] in {"xml", "edi"}, f"format {data['format']!r} does not match the file name"
    assert re.fullmatch(r"[a-z]{2}", data["language"]), data["language"]
    assert data["document_kind"] in DOCUMENT_KINDS, data["document_kind"]
    assert data["checked_by_hand"] is True
    assert data.get("line_totals_include_tax", False) in (True, False)
    assert isinstance(data["origin_path"], str) and data["origin_path"]
    if data["format"] == "pdf":
        assert isinstance(data.get("text_layer"), bool), "PDF entries need text_layer true/false"
    expected = data["expected"]
    assert CONTRACT_KEYS <= expected.keys(), f"missing {sorted(CONTRACT_KEYS - expected.keys())}"
    assert expected["document_type"] in DOCUMENT_TYPES, expected["document_type"]
    assert expected["prices_include_tax"] in (True, False, None)
    if expected["order_date"] is not None:
        datetime.date.fromisoformat(expected["order_date"])
    if expected["currency"] is not None:
        assert re.fullmatch(r"[A-Z]{3}", expected["currency"]), expected["currency"]
    for key in MONEY_KEYS:
        if expected[key] is not None:
            _decimal(expected[key], key)
    assert isinstance(expected["lines"], list)
    for number, line in enumerate(expected["lines"], 1):
        assert LINE_KEYS <= line.keys(), f"line {number}: missing {sorted(LINE_KEYS - line.keys())}"
        for key in LINE_MONEY_KEYS:
            if line[key] is not None:
                _decimal(line[key], f"line {number} {key}")
        if line["quantity"] is not None:
            _decimal(line["quantity"], f"line {number} quantity")
        unit = line["unit"]
        assert unit is None or (unit == unit.lower() and not unit.endswith(".")), f"line {number}: unit {unit!r}"


@pytest.mark.parametrize("path", EXPECTED, ids=_ids(EXPECTED))
def test_expected_line_arithmetic(path: Path):
    """Where a line prints quantity, unit cost and amount: quantity x unit cost - discount = amount (± 0.01).

    Credit notes print positive quantities and prices with negative amounts, so they compare magnitudes.
    Documents marked ``line_totals_include_tax`` print net unit prices beside VAT-inclusive amounts: there
    the amount must lie between the net value and the net value plus at most 30 % tax.
    """
    data = _load(path)
    credit = data["document_kind"] == "credit_note"
    gross_totals = data.get("line_totals_include_tax") is True
    for number, line in enumerate(data["expected"]["lines"], 1):
        if line["quantity"] is None or line["unit_cost"] is None or line["line_total"] is None:
            continue
        gross = Decimal(line["quantity"]) * Decimal(line["unit_cost"])
        net = gross - Decimal(line["discount"] or "0")
        total = Decimal(line["line_total"])
        if credit:
            net, total = abs(net), abs(total)
        if gross_totals:
            assert net - TOLERANCE <= total <= net * MAX_TAX_FACTOR + TOLERANCE, (
                f"line {number}: net {net} and VAT-inclusive amount {total} do not fit together")
            continue
        assert abs(net - total) <= TOLERANCE, (
            f"line {number} ({line['description']!r}): {line['quantity']} x {line['unit_cost']} "
            f"- {line['discount'] or 0} = {net}, printed {line['line_total']}")


def test_corpus_size():
    """The benchmark needs at least 40 documents from at least 8 public sources."""
    sources = {p.parent.name for p in EXPECTED}
    assert len(EXPECTED) >= MIN_DOCUMENTS, f"{len(EXPECTED)} documents, need {MIN_DOCUMENTS}"
    assert len(sources) >= MIN_SOURCES, f"{len(sources)} sources, need {MIN_SOURCES}"
