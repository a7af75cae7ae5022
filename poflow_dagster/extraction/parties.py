"""Who sent the document, when no ``Supplier:`` label says so, and the number and date a title carries.

* :func:`supplier_candidate` - documents rarely label their sender: the letterhead, the small return-address
  line above the recipient (``Acme GmbH • Europa-Allee 1 • Frankfurt``, taken first) and the footer name it.
  Other candidates are phrases with a legal form (GmbH, Ltd, Inc., SARL, S.A., B.V., 株式会社, בע"מ ...) outside the buyer's
  block (under ``Bill to`` / ``Kunde`` / ``Client`` ...); the topmost wins. Without any legal form, the first
  plain name at the top of the first page (not a title, label, number or address) is taken.
* :func:`title_reference` - ``Rechnung Nr. 42``, ``Invoice R-2024/00001``, ``Quotation # SO008``,
  ``Handelsrechnung Nr. TX-471102 vom 30.10.2018``: the document number and date printed in its title.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from poflow_dagster.extraction.numbers import parse_date
from poflow_dagster.extraction.spreadsheet import normalize_label
from poflow_dagster.extraction.vocabulary import document_type_of, is_title_phrase

__all__ = ["Phrase", "clean_name", "is_buyer_label", "supplier_candidate", "title_reference"]


@dataclass(frozen=True)
class Phrase:
    """A cell of text on a page (position in points from the top-left corner)."""

    text: str
    page: int
    x0: float
    x1: float
    top: float


_LEGAL_FORM_RE = re.compile(
    r"(?:^|[\s,])(GmbH|GMBH|AG|KG|OHG|UG|e\.\s?K\.|Ltd\.?|LTD\.?|Limited|LIMITED|Inc\.?|INC\.?|LLC|L\.L\.C\.|LLP|PLC|plc|"
    r"Corp\.?|CORP\.?|Corporation|Co\.|Company|COMPANY|SARL|S\.A\.R\.L\.|SAS|S\.A\.S\.|SASU|EURL|S\.A\.U?\.?|SA|"
    r"S\.L\.U?\.?|SL|S\.r\.l\.|Srl|SRL|S\.p\.A\.|SpA|B\.V\.|BV|N\.V\.|NV|Oy|AB|A/S|ApS|AS|Pty|K\.K\.|s\.r\.o\.|"
    r"sp\.\s?z\s?o\.o\.|GbR|mbH)(?=$|[\s,.)])"
    r"|株式会社|有限会社|合同会社|בע\"מ|בע״מ|ش\.م|ذ\.م\.م"
)
#: Labels that open the buyer's block: a name under or after one is the customer, not the supplier.
_BUYER_LABELS = frozenset(
    normalize_label(label)
    for label in (
        "bill to", "billed to", "sold to", "ship to", "shipped to", "deliver to", "delivery address", "invoice to",
        "customer", "client", "buyer", "recipient", "to", "kunde", "kunden", "käufer", "rechnungsempfänger",
        "leistungsempfänger", "lieferadresse", "rechnungsadresse", "empfänger", "acheteur", "destinataire",
        "adresse du client", "facturé à", "livré à", "adresse de livraison", "cliente", "comprador",
        "destinatario", "klant", "afnemer", "kupující", "odběratel", "請求先", "お客様", "לקוח", "العميل",
        "invoicing and shipping address", "invoicing address", "shipping address", "purchaser", "bill to party",
        "warenempfanger", "customer details", "client details",
    )
)
_SPLIT_RE = re.compile(r"\s*(?:[•●·|]|\s-\s|\s–\s)\s*")
_CONTACT_RE = re.compile(r"@|www\.|https?:|\+\d|\btel\b|\bfax\b|\bphone\b", re.IGNORECASE)
#: How far below a buyer label its block reaches (points).
_BLOCK_DEPTH = 90.0


def clean_name(text: str) -> str | None:
    """A company name as printed, cut before contact details or a following label (``ADDRESS:``)."""
    kept = []
    for token in text.split():
        if _CONTACT_RE.search(token) or (token.endswith(":") and kept):
            break
        kept.append(token)
    name = " ".join(kept).strip(" ,;:-–\u200b")
    return name if name and any(ch.isalpha() for ch in name) and len(name) <= 80 else None


def is_buyer_label(text: str) -> bool:
    """True for ``Bill to`` / ``Kunde:`` / ``Käufer`` ...: a label of the buyer's block."""
    return normalize_label(text.rstrip(":")) in _BUYER_LABELS


def _in_buyer_block(phrase: Phrase, phrases: Sequence[Phrase]) -> bool:
    """True if a buyer label is on the phrase's own line to its left, or above it in the same column."""
    for other in phrases:
        if other.page != phrase.page or not is_buyer_label(other.text):
            continue
        same_line = abs(other.top - phrase.top) < 3 and other.x1 <= phrase.x0 + 2
        above = 0 < phrase.top - other.top <= _BLOCK_DEPTH and other.x0 - 30 <= phrase.x0 <= other.x1 + 30
        if same_line or above:
            return True
    return False


def _is_plain_name(text: str) -> bool:
    """Letters, at most a few digits, no label, no title, no contact details: something a sender is called."""
    if ":" in text or _CONTACT_RE.search(text) or document_type_of(text) or len(text) > 60:
        return False
    if len(text.split()) > 5 or re.search(r"[,;!?]|\.\s*$", text):
        return False  # a sentence, not a name
    letters = sum(ch.isalpha() for ch in text)
    digits = sum(ch.isdigit() for ch in text)
    words = set(normalize_label(text).split())
    return letters >= 3 and digits == 0 and not words & {"logo", "page", "seite"} and not is_buyer_label(text)


def supplier_candidate(phrases: Sequence[Phrase], page_height: float) -> str | None:
    """The supplier's name from the first page (see the module docstring), or None."""
    first = [p for p in phrases if p.page == phrases[0].page] if phrases else []
    sender = _sender_line([p for p in first if p.top <= 0.4 * page_height])
    if sender:
        return sender
    legal: list[tuple[float, str]] = []
    for phrase in first:
        for part in _SPLIT_RE.split(phrase.text):
            if _LEGAL_FORM_RE.search(part) and ":" not in part and not _in_buyer_block(phrase, first):
                name = clean_name(part)
                if name:
                    legal.append((phrase.top, name))
    if legal:
        return min(legal)[1]
    top = [p for p in first if p.top <= 0.25 * page_height and _is_plain_name(p.text)]
    top = [p for p in top if not _in_buyer_block(p, first)]
    return min(top, key=lambda p: (p.top, p.x0)).text.strip() if top else None


_SENDER_SEPARATORS_RE = re.compile(r"\s[•●·|]\s|\s[-–]\s")


def _sender_line(phrases: Sequence[Phrase]) -> str | None:
    """The return-address line printed above the recipient (``weclapp.com | Somestreet 42 | 08155 City``):
    three or more parts, one with digits (the street or postcode); its first part names the sender."""
    for phrase in phrases:
        parts = [part.strip() for part in _SENDER_SEPARATORS_RE.split(phrase.text) if part.strip()]
        if len(parts) < 3 or not any(ch.isdigit() for ch in " ".join(parts[1:])):
            continue
        name = clean_name(parts[0])
        if name and not any(ch.isdigit() for ch in name) and ":" not in phrase.text and not is_buyer_label(name):
            return name
    return None


_FILLERS = frozenset({"no", "nr", "number", "num", "numero", "nummer", "n", "c", "ref", "id"})
_DATE_WORDS = frozenset(
    {"vom", "von", "du", "del", "of", "dated", "from", "date", "le", "dd", "ze", "datum", "issued", "at", "on", "en"}
)


def _is_filler(token: str) -> bool:
    """``Nr.``, ``#``, ``:``, ``N°``, ``(380)``: words between a title and its number."""
    if re.fullmatch(r"\(\d+\)", token):
        return True
    key = normalize_label(token)
    return key in _FILLERS or (not key and not any(ch.isdigit() for ch in token))


def title_reference(text: str, *, day_first: bool) -> tuple[str | None, str | None]:
    """``(number, date text)`` a document title carries (``Rechnung Nr. 42 vom 1.2.2024``), else (None, None)."""
    tokens = text.split()
    for n in range(min(4, len(tokens)), 0, -1):
        if not is_title_phrase(" ".join(tokens[:n])) or normalize_label(" ".join(tokens[:n])) in {"order", "po"}:
            continue
        rest = [t for t in tokens[n:] if not _is_filler(t)]
        if not rest or not any(ch.isdigit() for ch in rest[0]):
            return None, None
        taken = 1
        while rest[0].isdigit() and taken < len(rest) and rest[taken].isdigit():
            taken += 1  # a number printed in groups: "1 24 0005 0001201345"
        number = " ".join(rest[:taken]).strip(".,;:")
        after = rest[taken:]
        while after and normalize_label(after[0]) in _DATE_WORDS:
            after = after[1:]
        candidate = " ".join(after)
        date = candidate if len(after) < len(rest) - taken and parse_date(candidate, day_first=day_first) else None
        if parse_date(number, day_first=day_first) is not None:
            return None, number
        return number, date
    return None, None
