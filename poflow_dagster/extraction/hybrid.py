"""The hybrid: a deterministic reading completed, where it falls short, by the LLM's.

A deterministic extractor (the PDF text reader) is exact when it finds what it looks for and silent when it
does not. :func:`gaps` says why a reading is not enough: no lines, an essential header field missing
(``po_number``, ``supplier_name``, ``order_date``, or neither subtotal nor total to check the lines against),
or numbers that do not reconcile (``LINE_AMOUNT_MISMATCH``, ``SUBTOTAL_MISMATCH``, ``TOTAL_MISMATCH``). A
reading without gaps is used as it is: the LLM is never asked. Otherwise the LLM reads the whole document and
:func:`merge` combines both readings:

* header fields and totals: the deterministic value when it has one, else the LLM's;
* lines: the deterministic lines when they reconcile (each line, and their sum against the subtotal/total),
  else the LLM's when those reconcile, else the deterministic lines when there are any (the mismatch goes to a
  reviewer), else the LLM's;
* totals that disagree with the chosen lines while the LLM's agree are taken from the LLM
  (a misread subtotal never condemns right lines).

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
TOTAL_FIELDS = ("subtotal", "tax", "shipping", "total")
_ARITHMETIC = frozenset({LINE_AMOUNT_MISMATCH, SUBTOTAL_MISMATCH, TOTAL_MISMATCH})
_DETERMINISTIC, _LLM = "deterministic", "llm"


def has_header(po: ParsedPO) -> bool:
    """True when the reading found at least one header field or total."""
    return any(getattr(po, name) is not None for name in HEADER_FIELDS + TOTAL_FIELDS)


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


def lines_not_found(po: ParsedPO, *, llm_tried: bool) -> ParsedPO:
    """``po`` (header read, no lines) with the error issue that sends it to a person instead of refusing it."""
    how = "nor by the LLM: a person must add them" if llm_tried else \
        "a person must add them, or configure an LLM (OPENAI_API_KEY) to read them"
    issue = Issue(code=LINES_NOT_FOUND, severity="error",
                  message=f"the header was read but no order lines could be found ({how})")
    return po.model_copy(update={"issues": [*po.issues, issue]})


def merge(deterministic: ParsedPO, llm: ParsedPO, *, why: list[str]) -> ParsedPO:
    """One purchase order from both readings (rules in the module docstring)."""
    sources: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for name in HEADER_FIELDS + TOTAL_FIELDS:
        fields[name], source = _prefer(getattr(deterministic, name), getattr(llm, name))
        if source:
            sources[name] = source
    lines, lines_from, totals_from_llm = _pick_lines(deterministic, llm, fields)
    for name in totals_from_llm:
        fields[name], sources[name] = getattr(llm, name), _LLM
    sources["lines"] = lines_from
    used_llm = sorted(name for name, source in sources.items() if source == _LLM)
    issues = _issues(deterministic, llm, used_llm, lines_from)
    po = deterministic.model_copy(update={
        **fields,
        "lines": _renumbered(lines),
        "issues": issues,
        "extractor": f"{deterministic.extractor}+llm" if used_llm else deterministic.extractor,
        "confidence": llm.confidence if used_llm else deterministic.confidence,
        "stats": {**deterministic.stats, **_llm_stats(llm), "hybrid": _hybrid_stats(llm, why, sources)},
    })
    if not po.lines:
        return lines_not_found(po, llm_tried=True)
    return po


def _prefer(mine: Any, theirs: Any) -> tuple[Any, str | None]:
    if mine is not None:
        return mine, _DETERMINISTIC
    if theirs is not None:
        return theirs, _LLM
    return None, None


def _pick_lines(deterministic: ParsedPO, llm: ParsedPO, fields: dict[str, Any]) -> tuple[list[POLine], str, list[str]]:
    """(lines, where from, total fields to take from the LLM so they agree with those lines)."""
    llm_totals = {**fields, **{name: getattr(llm, name) for name in TOTAL_FIELDS if getattr(llm, name) is not None}}
    for candidate, source in ((deterministic, _DETERMINISTIC), (llm, _LLM)):
        if _reconciles(candidate.lines, fields):
            return candidate.lines, source, []
    for candidate, source in ((deterministic, _DETERMINISTIC), (llm, _LLM)):
        if _reconciles(candidate.lines, llm_totals):
            changed = [name for name in TOTAL_FIELDS if llm_totals[name] != fields[name]]
            return candidate.lines, source, changed
    if deterministic.lines:
        return deterministic.lines, _DETERMINISTIC, []
    return llm.lines, _LLM, []


def _reconciles(lines: list[POLine], fields: dict[str, Any]) -> bool:
    """Lines that check out one by one and against the subtotal/total in ``fields``."""
    if not lines:
        return False
    probe = ParsedPO(lines=lines, **{name: fields[name] for name in TOTAL_FIELDS + ("prices_include_tax",)})
    return not any(issue.code in _ARITHMETIC for issue in reconcile(probe).issues)


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
