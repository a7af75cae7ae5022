"""Extraction quality: the project's generated fixtures and the real-document corpus, offline and with the LLM.

    .venv/bin/python benchmarks/extraction.py [--corpus-only] [--json] [--corpus DIR] [--seed 7]
                                              [--windows 12] [--delay 0.2] [--concurrency 4]

(a) Field and line accuracy of ``extract_file`` on every fixture the project generates (samples, text
    PDFs, EDI X12 850, UBL Order/Invoice), scored against the specs the fixtures are printed from.
(b) An N-window document through the real ``openai`` client against the local chat-completions server
    with a fixed per-call delay: sequential vs concurrent in this process, printed as a ratio.
(c) The real-document corpus (``poflow_dagster_tests/corpus/<source>/<doc>`` with ``<doc>.expected.json``,
    hand-checked), twice: offline (no LLM), and with the LLM path configured, the LLM being the local server
    acting as a model (see "Simulated LLM" below). Reported by format, by language and per source.

Scores (corpus)
---------------
* **Header fields**: for each document, the fields among ``po_number``, ``supplier_name``, ``order_date``,
  ``currency``, ``document_type``, ``subtotal``, ``tax``, ``shipping``, ``total`` whose expected value is not
  null. A field is right when the extracted value equals the expected one: ``supplier_name`` compared after
  collapsing whitespace and case, money as ``Decimal`` (``"12.5" == "12.50"``), the others as strings with
  surrounding whitespace removed. Header accuracy = fields right / fields scored, summed over documents.
* **Lines**: expected and extracted lines are aligned one to one (:func:`align_lines`: each pair is scored by
  equal amounts - line total, unit cost, quantity - equal SKU, and description similarity; pairs are taken
  best first; a pair with nothing in common is never made). An aligned line is right when its
  ``quantity``, ``unit_cost``, ``line_total`` (``Decimal`` equality) and ``sku`` (exact) match wherever the
  expected value is not null, and its description is similar (``rapidfuzz.fuzz.ratio >= 85`` after collapsing
  whitespace and case; not checked when the expected description is null). Line accuracy = lines right /
  max(expected lines, extracted lines), summed over documents: a dropped or an extra line costs one.
* **Refused**: ``extract_file`` raised a ``PoflowError`` (its code is counted). A refused document scores
  nothing: its expected fields and lines stay in the denominators. **Text documents** are every document but
  PDFs without a text layer (``"text_layer": false``) and images.

Simulated LLM
-------------
The LLM run points ``OPENAI_BASE_URL`` at ``poflow_dagster_tests.openai_server`` through the real ``openai``
client. It answers every request with the *expected* JSON of the document being extracted, perturbed per
document by a seeded generator (``--seed``): about one document in six gets a wrong number (a line's unit
price with two digits swapped, or x10), one in six a dropped line, one in six a missing header field (set
null); the rest are answered faithfully. Its usage is proportional to the request: prompt tokens = characters
of text / 4 + 765 per image (a high-detail page), completion tokens = characters of the answer / 4, priced
with the default model's prices. Its accuracy is therefore *simulated*: it measures what poflow does with a
model's realistic mistakes (the hybrid's merge, reconciliation, review), not what a real model reads.

Goals printed next to the numbers: header >= 90 %, lines >= 85 %, text documents refused <= 5 %.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rapidfuzz import fuzz  # noqa: E402

from poflow_dagster.domain.errors import PoflowError  # noqa: E402
from poflow_dagster.domain.models import ParsedPO  # noqa: E402
from poflow_dagster.extraction import extract_file  # noqa: E402
from poflow_dagster.extraction.llm import LLMSettings  # noqa: E402
from poflow_dagster.samples.spreadsheets import SAMPLES, generate_samples  # noqa: E402
from poflow_dagster.samples import edi_documents as edi  # noqa: E402
from poflow_dagster.samples import pdf_documents as pdfs  # noqa: E402

CORPUS = REPO / "poflow_dagster_tests" / "corpus"
HEADER_FIELDS = ("po_number", "supplier_name", "order_date", "currency", "document_type",
                 "subtotal", "tax", "shipping", "total")
MONEY_FIELDS = frozenset({"subtotal", "tax", "shipping", "total"})
DESCRIPTION_SIMILARITY = 85
GOALS = {"header": 0.90, "lines": 0.85, "text_refused": 0.05}



@dataclass(frozen=True)
class Truth:
    """What a fixture says: header fields (None = not printed, not scored) and lines."""

    fields: dict[str, object]
    lines: list[tuple[str, Decimal, Decimal, Decimal]]  # sku, quantity, unit cost, line total


def _truth(spec, *, supplier: str, unit_cost: str, subtotal: bool = True) -> Truth:
    lines = [(l.sku, l.quantity, getattr(l, unit_cost), (l.quantity * getattr(l, unit_cost)).quantize(Decimal("0.01")))
             for l in spec.lines]
    fields = {"po_number": spec.po_number, "supplier_name": getattr(spec, supplier), "order_date": spec.order_date,
              "currency": spec.currency, "tax": spec.tax, "shipping": spec.shipping,
              "subtotal": sum(t for *_, t in lines) if subtotal else None}
    return Truth(fields, lines)


def fixtures(folder: Path) -> list[tuple[str, Path, Truth]]:
    cases: list[tuple[str, Path, Truth]] = []
    for sample, path in zip(SAMPLES, generate_samples(folder / "samples"), strict=True):
        truth = _truth(sample, supplier="supplier_name", unit_cost="unit_cost")
        truth.fields.update(tax=sample.tax, shipping=sample.shipping, total=sample.total)
        cases.append((sample.source_format, path, truth))
    for name in ("simple_po_spec", "multipage_po_spec", "long_date_po_spec", "terse_po_spec", "euro_po_spec"):
        spec = getattr(pdfs, name)()
        path = pdfs.make_text_po_pdf(folder / f"{name}.pdf", spec)
        truth = _truth(spec, supplier="supplier_name", unit_cost="unit_cost")
        truth.fields["total"] = spec.total
        cases.append(("pdf", path, truth))
    order = edi.sample_spec()
    for style_name in ("STAR_TILDE", "PIPE_NEWLINE", "TILDE_CRLF"):
        path = folder / f"po-{style_name}.edi"
        path.write_text(edi.x12_850(order, getattr(edi, style_name)))
        cases.append(("x12", path, _truth(order, supplier="supplier", unit_cost="unit_price", subtotal=False)))
    invoice_number = "INV-2024-0042"
    for kind, document in (("ubl order", edi.ubl_order(order)),
                           ("ubl invoice", edi.peppol_invoice(order, invoice_number=invoice_number))):
        path = folder / f"{kind.replace(' ', '-')}.xml"
        path.write_bytes(document if isinstance(document, bytes) else document.encode())
        truth = _truth(order, supplier="supplier", unit_cost="unit_price", subtotal=False)
        if kind == "ubl invoice":  # an invoice is known by its own number and the seller's legal name
            truth.fields.update(po_number=invoice_number, supplier_name=order.supplier_legal_name)
        cases.append(("ubl", path, truth))
    return cases


def score(parsed: ParsedPO, truth: Truth) -> tuple[int, int, int, int]:
    """(fields right, fields scored, lines right, lines expected); a wrong extra line costs one."""
    scored = {k: v for k, v in truth.fields.items() if v is not None}
    fields_right = sum(getattr(parsed, k) == v for k, v in scored.items())
    got = [(l.sku, l.quantity, l.unit_cost, l.line_total) for l in parsed.lines]
    lines_right = sum(g == t for g, t in zip(got, truth.lines))
    lines_right -= max(0, len(got) - len(truth.lines))
    return fields_right, len(scored), max(lines_right, 0), len(truth.lines)


def accuracy_table(*, quiet: bool = False) -> dict[str, dict[str, int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, path, truth in fixtures(Path(tmp)):
            f_ok, f_n, l_ok, l_n = score(extract_file(path), truth)
            row = totals[fmt]
            row[0] += 1
            for i, value in enumerate((f_ok, f_n, l_ok, l_n), start=1):
                row[i] += value
    if not quiet:
        _print_fixture_table(totals)
    return {fmt: dict(zip(("documents", "fields_right", "fields", "lines_right", "lines"), row, strict=True))
            for fmt, row in totals.items()}


def _print_fixture_table(totals: dict[str, list[int]]) -> None:
    print(f"{'format':<8}{'documents':>10}{'fields':>14}{'field acc.':>12}{'lines':>12}{'line acc.':>11}")
    for fmt, (docs, f_ok, f_n, l_ok, l_n) in totals.items():
        print(f"{fmt:<8}{docs:>10}{f'{f_ok}/{f_n}':>14}{f_ok / f_n:>12.1%}{f'{l_ok}/{l_n}':>12}{l_ok / l_n:>11.1%}")


def concurrency_ratio(windows: int, delay: float, concurrency: int, *, quiet: bool = False) -> dict[str, float]:
    from llm_concurrency import answer, run

    from poflow_dagster_tests.openai_server import start_openai_server

    with start_openai_server(lambda body: answer(body, delay)) as server:
        run(server.base_url, 1, 1)  # warm-up
        sequential, _ = run(server.base_url, windows, 1)
        concurrent, _ = run(server.base_url, windows, concurrency)
    if not quiet:
        print(f"{windows} windows, {delay:g} s per call: sequential {sequential:.2f} s, concurrent ({concurrency}) "
              f"{concurrent:.2f} s, ratio {concurrent / sequential:.2f} (ideal {1 / concurrency:.2f})")
    return {"sequential_s": sequential, "concurrent_s": concurrent, "ratio": concurrent / sequential}


# --- (c) scores on the real-document corpus ------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _text(value: Any) -> str:
    """Whitespace collapsed, case folded."""
    return " ".join(str(value or "").split()).casefold()


def field_right(name: str, expected: Any, got: Any) -> bool:
    """One header field as the module docstring defines it (``expected`` is not null)."""
    if name == "supplier_name":
        return _text(expected) == _text(got)
    if name in MONEY_FIELDS:
        return got is not None and _decimal(expected) == _decimal(got)
    return got is not None and str(expected).strip() == str(got).strip()


def header_score(expected: dict[str, Any], got: dict[str, Any] | None) -> tuple[int, int]:
    """(fields right, fields scored): the non-null expected header fields; ``got=None`` (refused) scores 0."""
    scored = [name for name in HEADER_FIELDS if expected.get(name) is not None]
    if got is None:
        return 0, len(scored)
    return sum(field_right(name, expected[name], got.get(name)) for name in scored), len(scored)


def description_similar(expected: str | None, got: str | None) -> bool:
    """``rapidfuzz.fuzz.ratio >= 85`` after collapsing whitespace and case (an expected null is not checked)."""
    if expected is None:
        return True
    return fuzz.ratio(_text(expected), _text(got)) >= DESCRIPTION_SIMILARITY


def line_right(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    """Quantity, unit cost, line total (Decimal) and SKU (exact) where expected non-null; description similar."""
    for name in ("quantity", "unit_cost", "line_total"):
        if expected.get(name) is not None and _decimal(expected[name]) != _decimal(got.get(name)):
            return False
    if expected.get("sku") is not None and str(expected["sku"]).strip() != str(got.get("sku") or "").strip():
        return False
    return description_similar(expected.get("description"), got.get("description"))


def _pair_score(expected: dict[str, Any], got: dict[str, Any]) -> float:
    """How much two lines have in common: equal amounts and SKU, plus description similarity (0..1)."""
    score = 0.0
    for name, weight in (("line_total", 2.0), ("unit_cost", 1.0), ("quantity", 1.0)):
        value = _decimal(expected.get(name))
        if value is not None and value == _decimal(got.get(name)):
            score += weight
    if expected.get("sku") and str(expected["sku"]).strip() == str(got.get("sku") or "").strip():
        score += 2.0
    similarity = fuzz.ratio(_text(expected.get("description")), _text(got.get("description"))) / 100
    return score + (similarity if similarity >= 0.5 else 0.0)


def align_lines(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """One-to-one (expected index, extracted index) pairs, best-scoring first; pairs scoring 0 are never made.

    Ties go to the pair closest in document order.
    """
    candidates = sorted(
        ((score, -abs(i - j), i, j) for i, e in enumerate(expected) for j, g in enumerate(got)
         if (score := _pair_score(e, g)) > 0),
        reverse=True,
    )
    used_expected: set[int] = set()
    used_got: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, _, i, j in candidates:
        if i not in used_expected and j not in used_got:
            used_expected.add(i)
            used_got.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def line_score(expected: list[dict[str, Any]], got: list[dict[str, Any]] | None) -> tuple[int, int]:
    """(lines right, max(expected, extracted)); ``got=None`` (refused) scores 0 of the expected lines."""
    if got is None:
        return 0, len(expected)
    right = sum(line_right(expected[i], got[j]) for i, j in align_lines(expected, got))
    return right, max(len(expected), len(got))


# --- the corpus ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusDocument:
    source: str
    path: Path
    format: str
    language: str
    text_layer: bool | None
    expected: dict[str, Any]

    @property
    def is_text(self) -> bool:
        """Every document but a PDF without a text layer (a scan) and an image."""
        return self.format not in ("image",) and self.text_layer is not False

    @property
    def label(self) -> str:
        return f"{self.source}/{self.path.name}"


def corpus_documents(root: Path) -> list[CorpusDocument]:
    """Every ``<doc>.expected.json`` under ``root/<source>/`` whose document exists, in name order."""
    documents = []
    for meta_path in sorted(root.glob("*/*.expected.json")):
        document = meta_path.with_name(meta_path.name[: -len(".expected.json")])
        if not document.is_file():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        documents.append(CorpusDocument(
            source=meta_path.parent.name, path=document, format=str(meta.get("format") or "?"),
            language=str(meta.get("language") or "?"), text_layer=meta.get("text_layer"),
            expected=meta.get("expected") or {},
        ))
    return documents


@dataclass
class Result:
    """One document's outcome in one run."""

    document: CorpusDocument
    got: dict[str, Any] | None  # the extract contract, None when refused
    refused: str | None = None  # the PoflowError code
    header: tuple[int, int] = (0, 0)
    lines: tuple[int, int] = (0, 0)
    extractor: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    perturbation: str | None = None
    asked_because: list[str] = field(default_factory=list)  # the hybrid's reasons for asking the LLM


def score_document(document: CorpusDocument, got: dict[str, Any] | None, refused: str | None = None) -> Result:
    expected = document.expected
    return Result(document, got, refused, header_score(expected, got),
                  line_score(expected.get("lines") or [], None if got is None else got.get("lines") or []))


def extract_contract(path: Path, llm: LLMSettings | None) -> tuple[dict[str, Any] | None, str | None, ParsedPO | None]:
    """(contract, refusal code, parsed PO) of one document."""
    try:
        po = extract_file(path, llm=llm)
    except PoflowError as error:
        return None, error.code, None
    return po.to_contract(), None, po


# --- the simulated LLM ----------------------------------------------------------------------------------

PERTURBATIONS = ("faithful", "faithful", "faithful", "wrong_number", "dropped_line", "missing_field")
_DOCUMENT_TYPES = frozenset({"purchase_order", "order_confirmation", "invoice", "delivery_note", "quote"})


def perturbation_for(document: CorpusDocument, seed: int) -> str:
    """The seeded perturbation of one document (same seed, same document -> same choice)."""
    return random.Random(f"{seed}:{document.label}").choice(PERTURBATIONS)


def _swap_digits(value: str, rng: random.Random) -> str:
    """Two adjacent different digits swapped (``"12.50"`` -> ``"21.50"``), else the value x10."""
    digits = [i for i in range(len(value) - 1) if value[i].isdigit() and value[i + 1].isdigit()
              and value[i] != value[i + 1]]
    if not digits:
        return format(Decimal(value) * 10, "f")
    i = rng.choice(digits)
    return value[:i] + value[i + 1] + value[i] + value[i + 2:]


def simulated_answer(expected: dict[str, Any], perturbation: str, rng: random.Random) -> dict[str, Any]:
    """What the simulated model answers for a document: its expected JSON in the LLM schema, perturbed."""
    lines = [dict(line) for line in expected.get("lines") or []]
    answer: dict[str, Any] = {name: expected.get(name) for name in (
        "po_number", "supplier_name", "order_date", "currency", "subtotal", "discount", "charges", "tax", "shipping",
        "total")}
    answer["document_type"] = expected.get("document_type") if expected.get("document_type") in _DOCUMENT_TYPES else None
    answer["prices_include_tax"] = expected.get("prices_include_tax")
    if perturbation == "wrong_number":
        priced = [line for line in lines if line.get("unit_cost")]
        if priced:
            line = rng.choice(priced)
            line["unit_cost"] = _swap_digits(str(line["unit_cost"]), rng)
    elif perturbation == "dropped_line" and lines:
        lines.pop(rng.randrange(len(lines)))
    elif perturbation == "missing_field":
        present = [name for name in ("po_number", "supplier_name", "order_date", "total") if answer.get(name)]
        if present:
            answer[rng.choice(present)] = None
    answer["lines"] = [{"sku": line.get("sku"), "barcode": line.get("barcode"), "description": line.get("description"),
                        "quantity": line.get("quantity"), "unit_cost": line.get("unit_cost"),
                        "line_total": line.get("line_total"), "unit": line.get("unit"),
                        "discount": line.get("discount"), "confidence": 0.9} for line in lines]
    answer["confidence"] = 0.9
    return answer


@dataclass
class SimulatedModel:
    """The server's behaviour: answers for the document being extracted, counting its usage per document."""

    seed: int
    document: CorpusDocument | None = None
    usage: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> Any:
        from poflow_dagster_tests.openai_server import Reply, estimated_prompt_tokens

        document = self.document
        assert document is not None, "a request arrived between documents"
        perturbation = perturbation_for(document, self.seed)
        answer = simulated_answer(document.expected, perturbation, random.Random(f"{self.seed}:{document.label}:a"))
        prompt = estimated_prompt_tokens(body)
        completion = len(json.dumps(answer)) // 4
        with self._lock:
            counts = self.usage[document.label]
            counts[0] += prompt
            counts[1] += completion
            counts[2] += 1
        return Reply.json(answer, prompt_tokens=prompt, completion_tokens=completion)


@contextmanager
def simulated_llm(seed: int) -> Iterator[tuple[SimulatedModel, LLMSettings]]:
    from poflow_dagster_tests.openai_server import API_KEY, start_openai_server

    model = SimulatedModel(seed)
    with start_openai_server(model) as server:
        yield model, LLMSettings(api_key=API_KEY, base_url=server.base_url, max_retries=0)


# --- runs and the report ----------------------------------------------------------------------------------


def run_corpus(documents: list[CorpusDocument], *, seed: int | None) -> list[Result]:
    """Every document through ``extract_file``: offline (``seed=None``) or with the simulated LLM."""
    if seed is None:
        return [_run_one(document, None, None) for document in documents]
    with simulated_llm(seed) as (model, settings):
        return [_run_one(document, settings, model) for document in documents]


def _run_one(document: CorpusDocument, llm: LLMSettings | None, model: SimulatedModel | None) -> Result:
    if model is not None:
        model.document = document
    got, refused, po = extract_contract(document.path, llm)
    result = score_document(document, got, refused)
    result.extractor = po.extractor if po is not None else None
    result.asked_because = list((po.stats.get("hybrid") or {}).get("asked_because") or []) if po is not None else []
    if model is not None:
        result.prompt_tokens, result.completion_tokens, result.llm_calls = model.usage.get(document.label, [0, 0, 0])
        if result.llm_calls:
            result.perturbation = perturbation_for(document, model.seed)
        model.document = None
    return result


def summarise(results: list[Result], key: Any) -> dict[str, dict[str, Any]]:
    """Counts and accuracies grouped by ``key(result)``."""
    groups: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        groups[key(result)].append(result)
    return {name: _totals(group) for name, group in sorted(groups.items())}


def _totals(results: list[Result]) -> dict[str, Any]:
    header_right, header_n = (sum(r.header[i] for r in results) for i in (0, 1))
    lines_right, lines_n = (sum(r.lines[i] for r in results) for i in (0, 1))
    text = [r for r in results if r.document.is_text]
    return {
        "documents": len(results),
        "header_right": header_right, "header_scored": header_n,
        "header_accuracy": _share(header_right, header_n),
        "lines_right": lines_right, "lines_scored": lines_n, "line_accuracy": _share(lines_right, lines_n),
        "refused": sum(r.refused is not None for r in results),
        "refused_share": _share(sum(r.refused is not None for r in results), len(results)),
        "text_documents": len(text),
        "text_refused_share": _share(sum(r.refused is not None for r in text), len(text)),
        "refusal_codes": dict(Counter(r.refused for r in results if r.refused)),
    }


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def run_summary(results: list[Result], settings: LLMSettings | None = None,
                offline: list[Result] | None = None) -> dict[str, Any]:
    """Everything one run reports (JSON-ready); with ``offline``, the same documents' offline scores for
    those that asked the LLM (what the LLM path changed)."""
    prices = (settings.prices() if settings is not None else None) or (Decimal(0), Decimal(0))
    summary: dict[str, Any] = {
        "overall": _totals(results),
        # Scans (no text layer) need an LLM by definition: the offline goals are read on the text documents.
        "text_documents": _totals([r for r in results if r.document.is_text]),
        "by_format": summarise(results, lambda r: r.document.format),
        "by_language": summarise(results, lambda r: r.document.language),
        "by_source": summarise(results, lambda r: r.document.source),
        "documents": [_document_row(r, prices) for r in results],
    }
    if settings is not None:
        summary["llm"] = _llm_usage(results, settings)
    if offline is not None:
        asked = {r.document.label for r in results if r.llm_calls}
        summary["asked_llm"] = {"offline": _totals([r for r in offline if r.document.label in asked] or offline[:0]),
                                "with_llm": _totals([r for r in results if r.document.label in asked])}
    return summary


def _cost(prompt: int, completion: int, prices: tuple[Decimal, Decimal]) -> Decimal:
    return (Decimal(prompt) * prices[0] + Decimal(completion) * prices[1]) / 1000


def _document_row(result: Result, prices: tuple[Decimal, Decimal]) -> dict[str, Any]:
    cost = _cost(result.prompt_tokens, result.completion_tokens, prices)
    return {"document": result.document.label, "format": result.document.format,
            "language": result.document.language, "refused": result.refused, "extractor": result.extractor,
            "header": list(result.header), "lines": list(result.lines), "llm_calls": result.llm_calls,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "cost_usd": format(cost.quantize(Decimal("0.000001")), "f"), "perturbation": result.perturbation}


def _llm_usage(results: list[Result], settings: LLMSettings) -> dict[str, Any]:
    used = [r for r in results if r.llm_calls]
    prompt, completion = sum(r.prompt_tokens for r in used), sum(r.completion_tokens for r in used)
    cost = _cost(prompt, completion, settings.prices() or (Decimal(0), Decimal(0)))
    per_document = cost / len(used) if used else Decimal(0)
    return {
        "documents_asking_llm": len(used), "calls": sum(r.llm_calls for r in used),
        "prompt_tokens": prompt, "completion_tokens": completion, "model": settings.model,
        "cost_usd": format(cost.quantize(Decimal("0.000001")), "f"),
        "cost_per_llm_document_usd": format(per_document.quantize(Decimal("0.000001")), "f"),
        "tokens_per_llm_document": round((prompt + completion) / len(used)) if used else 0,
        "perturbations": dict(Counter(r.perturbation for r in used)),
        "hybrid_documents": sum(bool(r.asked_because) for r in used),
        "hybrid_asked_because": dict(Counter(reason for r in results for reason in r.asked_because).most_common()),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def print_run(title: str, summary: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(f"{'':<28}{'docs':>6}{'header':>14}{'acc.':>8}{'lines':>12}{'acc.':>8}{'refused':>9}")
    for group in ("by_format", "by_language"):
        for name, row in summary[group].items():
            _print_row(f"{group[3:]} {name}", row)
    _print_row("text documents", summary["text_documents"])
    _print_row("overall", summary["overall"])
    text = summary["text_documents"]
    print(f"  text documents (scans need an LLM): header {_pct(text['header_accuracy'])}, "
          f"lines {_pct(text['line_accuracy'])}")
    overall = summary["overall"]
    print(f"  header accuracy {_pct(overall['header_accuracy'])} (goal >= {GOALS['header']:.0%}), "
          f"line accuracy {_pct(overall['line_accuracy'])} (goal >= {GOALS['lines']:.0%}), "
          f"text documents refused {_pct(overall['text_refused_share'])} of {overall['text_documents']} "
          f"(goal <= {GOALS['text_refused']:.0%}), all refused {_pct(overall['refused_share'])}")
    if overall["refusal_codes"]:
        print("  refusals: " + ", ".join(f"{code} {n}" for code, n in sorted(overall["refusal_codes"].items())))
    if "llm" in summary:
        llm = summary["llm"]
        print(f"  LLM (simulated, {llm['model']} prices): {llm['documents_asking_llm']} documents asked it "
              f"({llm['hybrid_documents']} text readings it completed, the others read by it alone), {llm['calls']} calls, {llm['prompt_tokens']:,} prompt + "
              f"{llm['completion_tokens']:,} completion tokens, ${llm['cost_usd']} "
              f"(${llm['cost_per_llm_document_usd']} and ~{llm['tokens_per_llm_document']:,} tokens per document "
              f"that asked); perturbations in those answers: {llm['perturbations']}")
        print(f"  why text readings asked it: {llm['hybrid_asked_because']}")
    if "asked_llm" in summary:
        before, after = summary["asked_llm"]["offline"], summary["asked_llm"]["with_llm"]
        print(f"  the {after['documents']} documents that asked it: header {_pct(before['header_accuracy'])} offline -> "
              f"{_pct(after['header_accuracy'])}, lines {_pct(before['line_accuracy'])} -> "
              f"{_pct(after['line_accuracy'])}, refused {before['refused']} -> {after['refused']}")


def _print_row(name: str, row: dict[str, Any]) -> None:
    print(f"  {name:<26}{row['documents']:>6}{row['header_right']:>8}/{row['header_scored']:<5}"
          f"{_pct(row['header_accuracy']):>8}{row['lines_right']:>6}/{row['lines_scored']:<5}"
          f"{_pct(row['line_accuracy']):>8}{row['refused']:>9}")


def print_sources(offline: dict[str, Any], online: dict[str, Any]) -> None:
    print(f"\nper source{'':<31}{'docs':>5}{'refused':>9}{'with LLM':>10}{'lines offline':>15}{'with LLM':>10}")
    for name, row in offline["by_source"].items():
        llm = online["by_source"][name]
        print(f"  {name:<39}{row['documents']:>5}{row['refused']:>9}{llm['refused']:>10}"
              f"{_pct(row['line_accuracy']):>15}{_pct(llm['line_accuracy']):>10}")


def corpus_report(root: Path, seed: int, *, quiet: bool) -> dict[str, Any]:
    documents = corpus_documents(root)
    if not documents:
        if not quiet:
            print(f"\n(c) no corpus documents under {root}")
        return {"documents": 0}
    offline_results = run_corpus(documents, seed=None)
    offline = run_summary(offline_results)
    with simulated_llm(seed) as (_, settings):
        pass  # only for the price table of the settings the LLM run uses
    online = run_summary(run_corpus(documents, seed=seed), settings, offline_results)
    if not quiet:
        sources = len({d.source for d in documents})
        print(f"\n(c) real-document corpus: {len(documents)} documents from {sources} sources ({root})")
        print_run("offline (no LLM)", offline)
        print_run(f"with the LLM path (simulated model answering from the expected JSON, seed {seed}: "
                  "seeded wrong numbers, dropped lines, missing fields)", online)
        print_sources(offline, online)
    return {"documents": len(documents), "goals": GOALS, "offline": offline, "llm": online, "seed": seed,
            "simulated_llm": "answers from the expected JSON with seeded perturbations (wrong number, dropped line, "
                             "missing field); usage = text / 4 + 765 tokens per image"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-only", action="store_true", help="only (c): the real-document corpus")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="corpus root (<source>/<doc> + .expected.json)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated LLM's perturbations")
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    quiet = args.json
    report: dict[str, Any] = {}
    if not args.corpus_only:
        if not quiet:
            print("(a) extraction accuracy on the project's fixtures")
        report["fixtures"] = accuracy_table(quiet=quiet)
        if not quiet:
            print("\n(b) LLM windows, concurrent vs sequential")
        report["concurrency"] = concurrency_ratio(args.windows, args.delay, args.concurrency, quiet=quiet)
    report["corpus"] = corpus_report(args.corpus, args.seed, quiet=quiet)
    if args.json:
        print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
