"""The hybrid: a deterministic reading completed, where it falls short, by the LLM's.

A deterministic extractor (the PDF text reader) is exact when it finds what it looks for and silent when it
does not. :func:`gaps` says why a reading is not enough: no lines, an essential header field missing
(``po_number``, ``supplier_name``, ``order_date``, or neither subtotal nor total to check the lines against),
or numbers that do not reconcile (``LINE_AMOUNT_MISMATCH``, ``SUBTOTAL_MISMATCH``, ``TOTAL_MISMATCH``). A
reading without gaps is used as it is: the LLM is never asked. Otherwise the LLM reads the whole document and
:func:`merge` combines both readings:

* header fields and totals: the deterministic value when it has one, else the LLM's;
* lines: the reading whose lines have the fewest arithmetic mismatches (each line, and their sum against the
  subtotal/total), on a tie the one whose numbers pass more checks, then the deterministic lines (what
  remains goes to a reviewer); the merged totals are
  tried first, then the LLM's totals, which are taken when only they agree with the lines (a misread
  subtotal never condemns right lines);
* deterministic lines get the values they lack (a line total, a SKU, a unit...) from the LLM's same line
  before they are compared, when both readings have as many lines and agree on every amount both read.

``po.stats["hybrid"]`` records why the LLM was asked, where each part came from (``"deterministic"`` or
``"llm"``), and the LLM's tokens and cost; an info issue ``LLM_COMPLETED`` tells the reviewer which parts the
LLM supplied. No lines from either reading: ``LINES_NOT_FOUND`` (error: a person adds them).
"""

from __future__ import annotations

from typing import Any

from poflow_dagster.domain.models import Issue, POLine, ParsedPO
from poflow_dagster.domain.reconcile import (
    LINE_AMOUNT_MISMATCH,
    RECONCILIATION_CODES,
    SUBTOTAL_MISMATCH,
    TOTAL_MISMATCH,
    reconcile,
)

__all__ = ["LINES_NOT_FOUND", "gaps", "has_header", "lines_not_found", "merge"]

LINES_NOT_FOUND = "LINES_NOT_FOUND"

#: Header fields a usable reading needs (a document that does not print one still asks the LLM once).
ESSENTIAL_FIELDS = ("po_number", "supplier_name", "order_date")
HEADER_FIELDS = ("po_number", "supplier_name", "order_date", "currency", "document_type", "prices_include_tax")
TOTAL_FIELDS = ("subtotal", "discount", "charges", "tax", "shipping", "total")
_ARITHMETIC = frozenset({LINE_AMOUNT_MISMATCH, SUBTOTAL_MISMATCH, TOTAL_MISMATCH})
_DETERMINISTIC, _LLM = "deterministic", "llm"
_FILLABLE = ("sku", "barcode", "quantity", "unit_cost", "line_total", "unit", "discount")

#: Fields that make a reading "a readable header": what an order states. A supplier name or a currency alone
#: is not enough (any letter has a name-like line or a currency sign).
IDENTIFYING_FIELDS = ("po_number", "order_date", "document_type", "subtotal", "tax", "total")


def has_header(po: ParsedPO) -> bool:
    """True when the reading found a field that identifies an order (:data:`IDENTIFYING_FIELDS`)."""
    return any(getattr(po, name) is not None for name in IDENTIFYING_FIELDS)


def gaps(po: ParsedPO) -> list[str]:
    """Why ``po`` is not a complete, reconciling reading ([] = use it as it is, never ask the LLM)."""
    reasons: list[str] = []
    if not po.lines:
        reasons.append("no lines")
    missing = [name for name in ESSENTIAL_FIELDS if getattr(po, name) is None]
    if po.subtotal is None and po.total is None:
        missing.append("subtotal/total")
    if missing:
        reasons.append("missing " + ", ".join(missing))
    mismatches = sorted({issue.code for issue in reconcile(po).issues if issue.code in _ARITHMETIC})
    reasons.extend(code.lower() for code in mismatches)
    return reasons


_NEXT_STEP = {
    "off": ": a person must add them, or configure an LLM (OPENAI_API_KEY) to read them",
    "tried": " (not even by the LLM): a person must add them",
    "failed": " and the LLM could not be asked: a person must add them, or parse the upload again",
}


def lines_not_found(po: ParsedPO, *, llm: str) -> ParsedPO:
    """``po`` (header read, no lines) with the error issue that sends it to a person instead of refusing it.

    ``llm`` says what the LLM did: ``"off"`` (none configured), ``"tried"`` (it found none), ``"failed"``.
    """
    message = f"the header was read but no order lines were found{_NEXT_STEP[llm]}"
    return po.model_copy(update={"issues": [*po.issues, Issue(code=LINES_NOT_FOUND, severity="error", message=message)]})


def merge(deterministic: ParsedPO, llm: ParsedPO, *, why: list[str]) -> ParsedPO:
    """One purchase order from both readings (rules in the module docstring)."""
    sources: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for name in HEADER_FIELDS + TOTAL_FIELDS:
        fields[name], source = _prefer(getattr(deterministic, name), getattr(llm, name))
        if source:
            sources[name] = source
    completed, filled = _filled(deterministic.lines, llm.lines)
    lines, lines_from, totals_from_llm = _pick_lines(completed, llm.lines, fields, llm)
    for name in totals_from_llm:
        fields[name], sources[name] = getattr(llm, name), _LLM
    sources["lines"] = lines_from
    filled = filled if lines_from == _DETERMINISTIC else 0
    if filled:
        sources["line_values"] = _LLM
    used_llm = sorted(name for name, source in sources.items() if source == _LLM)
    issues = _issues(deterministic, llm, used_llm, lines_from)
    po = deterministic.model_copy(update={
        **fields,
        "lines": _renumbered(lines),
        "issues": issues,
        "extractor": f"{deterministic.extractor}+llm" if used_llm else deterministic.extractor,
        "confidence": llm.confidence if used_llm else deterministic.confidence,
        "stats": {**deterministic.stats, **_llm_stats(llm),
                  "hybrid": {**_hybrid_stats(llm, why, sources), "line_values_filled": filled}},
    })
    if not po.lines:
        return lines_not_found(po, llm="tried")
    return po


def _prefer(mine: Any, theirs: Any) -> tuple[Any, str | None]:
    if mine is not None:
        return mine, _DETERMINISTIC
    if theirs is not None:
        return theirs, _LLM
    return None, None


def _pick_lines(
    deterministic: list[POLine], llm_lines: list[POLine], fields: dict[str, Any], llm: ParsedPO
) -> tuple[list[POLine], str, list[str]]:
    """(lines, where from, total fields to take from the LLM so they agree with those lines).

    Candidates, in order of preference: the deterministic lines, then the LLM's, each against the merged
    totals, then against the LLM's totals. The one with the fewest arithmetic mismatches wins; on a tie, the
    one with the most checks that pass (lines whose quantity x unit cost = total can be checked, a subtotal and
    a total to check them against), then the first (no lines at all never wins while the other reading has some).
    """
    llm_totals = {**fields, **{name: getattr(llm, name) for name in TOTAL_FIELDS if getattr(llm, name) is not None}}
    candidates = [(lines, source, totals)
                  for totals in (fields, llm_totals)
                  for lines, source in ((deterministic, _DETERMINISTIC), (llm_lines, _LLM)) if lines]
    if not candidates:
        return [], _DETERMINISTIC, []
    lines, source, totals = min(candidates, key=lambda candidate: _arithmetic(candidate[0], candidate[2]))
    changed = [name for name in TOTAL_FIELDS if totals[name] != fields[name]]
    return lines, source, changed


def _arithmetic(lines: list[POLine], fields: dict[str, Any]) -> tuple[int, int]:
    """(mismatches, minus the checks that pass) of ``lines`` against the subtotal/total in ``fields``: lower is
    better. Checks: each line with quantity, unit cost and total; the subtotal and the total when known."""
    probe = ParsedPO(lines=lines, **{name: fields[name] for name in TOTAL_FIELDS + ("prices_include_tax",)})
    mismatches = sum(issue.code in _ARITHMETIC for issue in reconcile(probe).issues)
    checks = sum(None not in (line.quantity, line.unit_cost, line.line_total) for line in lines)
    checks += (fields["subtotal"] is not None) + (fields["total"] is not None)
    return mismatches, mismatches - checks


def _filled(lines: list[POLine], llm_lines: list[POLine]) -> tuple[list[POLine], int]:
    """Deterministic ``lines`` with the values they lack taken from the LLM's same line (as many lines, and
    every amount both read agrees); returns the lines and how many values were filled."""
    if len(lines) != len(llm_lines):
        return lines, 0
    for mine, theirs in zip(lines, llm_lines, strict=True):
        if any(None not in (getattr(mine, n), getattr(theirs, n)) and getattr(mine, n) != getattr(theirs, n)
               for n in ("quantity", "unit_cost", "line_total")):
            return lines, 0
    filled, count = [], 0
    for mine, theirs in zip(lines, llm_lines, strict=True):
        update = {n: getattr(theirs, n) for n in _FILLABLE if getattr(mine, n) is None and getattr(theirs, n) is not None}
        count += len(update)
        filled.append(mine.model_copy(update=update))
    return filled, count


def _renumbered(lines: list[POLine]) -> list[POLine]:
    return [line.model_copy(update={"line_no": number}) for number, line in enumerate(lines, start=1)]


def _issues(deterministic: ParsedPO, llm: ParsedPO, used_llm: list[str], lines_from: str) -> list[Issue]:
    """The deterministic reading's issues (its line issues only with its lines), the LLM's when it was used."""
    def keep(issue: Issue, own_lines: bool) -> bool:
        return issue.code not in RECONCILIATION_CODES and (own_lines or not issue.message.startswith("line "))

    issues = [i for i in deterministic.issues if keep(i, lines_from == _DETERMINISTIC)]
    if used_llm:
        issues += [i for i in llm.issues if keep(i, lines_from == _LLM)]
        issues.append(Issue(code="LLM_COMPLETED", severity="info",
                            message="the LLM read what the text reader could not: " + ", ".join(used_llm)))
    return issues


def _llm_stats(llm: ParsedPO) -> dict[str, Any]:
    """The LLM's counters (windows, calls, tokens, cost...) as the stage reports them."""
    return {name: value for name, value in llm.stats.items() if name not in ("pages", "text_chars")}


def _hybrid_stats(llm: ParsedPO, why: list[str], sources: dict[str, str]) -> dict[str, Any]:
    return {
        "asked_because": why,
        "sources": sources,
        "prompt_tokens": llm.stats.get("prompt_tokens", 0),
        "completion_tokens": llm.stats.get("completion_tokens", 0),
        "cost": llm.stats.get("cost"),
    }
