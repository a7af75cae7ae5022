"""Read ANSI ASC X12 850 purchase orders into a :class:`ParsedPO`.

Separators come from the fixed-length (106 character) ``ISA`` interchange header:
the element separator is the character at position 3, the component separator is
``ISA16`` and the segment terminator is the character after it (optionally followed
by a newline / CRLF). An interchange wrapped into fixed-width lines (line breaks inside the
ISA segment) is read with its line breaks removed (info issue ``LINE_BREAKS_REMOVED``). Whitespace between segments is ignored; the repetition
separator (``ISA11``) is not used by the elements read here.

Mapping (first ``ST*850`` transaction set of the interchange):

* ``BEG03`` -> po_number, ``BEG05`` (CCYYMMDD) -> order_date, ``DTM*004`` as fallback;
* ``CUR*BY*<code>`` -> currency (another ``CUR`` entity as fallback);
* ``N1*SE`` (selling party), else ``N1*VN`` (vendor), else ``N1*SU`` -> supplier_name (``N102``);
* the document_type is purchase_order (an 850);
* ``PO1``: quantity ``PO102``, unit of measure ``PO103`` (code list 355, read as a unit: ``EA`` -> units,
  ``LB`` -> lb...; the codes as sent are kept in ``stats["line_units"]``),
  unit price ``PO104`` (per hundred/thousand when ``PO105`` is HP/TP/HT; per pound when it is PP: then
  the line amount of a quantity not in pounds is left empty), product IDs in
  qualifier/ID pairs from ``PO106/PO107`` on. The SKU is the first of VP, VN, SK, BP, IN,
  UP found (else the first ID); zero padding is kept. The barcode is the first of UP (UPC-A),
  EN (EAN-13), UI (UPC without check digit), EO (EAN-8), UK (GTIN-14), UA (case code without
  check digit) found; UI/UA get their check digit. ``PID*F`` ``PID05`` -> description.
  a line's ``SAC`` allowances less charges (``SAC05``, two implied decimals) -> discount;
  line_total = quantity x unit price - discount, rounded to cents;
* ``CTT01`` must equal the number of ``PO1`` segments (else ``LINE_COUNT_MISMATCH``);
* ``AMT*1`` (line item total) -> subtotal, ``AMT*TT`` -> total (else the line item total plus tax and
  shipping), ``TXI02`` -> tax (header/summary level; line level when that is all there is), freight ``SAC``
  charges (``SAC05`` has two implied decimals) -> shipping.

Errors (:class:`PoflowError`): ``malformed_edi`` (no/short ISA, no ST, no BEG),
``unsupported_edi_transaction`` (no 850 set, e.g. only ``ST*810``), ``no_line_items``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO, POLine
from poflow_dagster.extraction.barcodes import clean_barcode, with_check_digit
from poflow_dagster.extraction.charges import DocumentCharge, apply_document_charges
from poflow_dagster.extraction.numbers import as_money

__all__ = ["ISA_LENGTH", "Delimiters", "extract_x12_850", "read_delimiters", "split_segments", "unit_of_measure"]

#: Length of the ISA segment including its terminator.
ISA_LENGTH = 106

CENT = Decimal("0.01")

Segment = tuple[str, ...]

#: Product/Service ID qualifiers usable as the SKU, best first.
SKU_QUALIFIERS: tuple[str, ...] = ("VP", "VN", "SK", "BP", "IN", "UP")

#: Product/Service ID qualifiers (element 235) that carry a GTIN, the consumer unit's first:
#: UP UCC-12 (UPC-A), EN EAN/UCC-13, UI U.P.C. consumer package code (1-5-5, no check digit),
#: EO EAN/UCC-8, UK GTIN-14 (EAN/UCC-14), UA U.P.C./EAN case code (2-5-5, no check digit).
BARCODE_QUALIFIERS: tuple[str, ...] = ("UP", "EN", "UI", "EO", "UK", "UA")
#: Qualifiers whose code is sent without its check digit, and the length it then has.
_NO_CHECK_DIGIT = {"UI": 11, "UA": 12}

#: SAC02 codes that mean freight / shipping (code list 1300).
FREIGHT_CODES = frozenset({"D240", "D200", "D230", "G821", "G830", "C040", "C030"})
_FREIGHT_WORDS = re.compile(r"\b(freight|shipping|shipment|delivery|carriage|postage)\b", re.IGNORECASE)

#: Unit of measurement codes (X12 element 355) -> the unit poflow prints; other codes are kept lower-cased.
_UNIT_CODES = {
    **dict.fromkeys(("EA", "PC", "UN", "EACH"), "units"),
    "LB": "lb", "KG": "kg", "GR": "g", "OZ": "oz", "GA": "gal", "LT": "l", "ML": "ml",
    "FT": "ft", "IN": "in", "YD": "yd", "MR": "m", "HR": "h", "DA": "days", "WK": "weeks", "MO": "months",
    "DZ": "dozen", "PR": "pairs", "CA": "cases", "BX": "boxes", "PK": "packs", "RL": "rolls", "ST": "sets",
}

#: PO105 basis-of-unit-price codes that price a weight (PP: price per pound) -> the PO103 unit that weight is in.
_PRICE_PER_WEIGHT = {"PP": "LB"}

#: PO105 basis-of-unit-price codes whose price covers more than one unit.
_PRICE_BASIS_DIVISORS = {"HP": Decimal(100), "TP": Decimal(1000), "HT": Decimal(100_000)}

_TRANSACTION_NAMES = {
    "810": "invoice",
    "820": "payment order",
    "832": "price/sales catalog",
    "846": "inventory advice",
    "855": "purchase order acknowledgment",
    "856": "ship notice",
    "860": "purchase order change",
    "865": "purchase order change acknowledgment",
    "997": "functional acknowledgment",
}

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Delimiters:
    """The separators an interchange declares in its ISA segment."""

    element: str
    component: str
    segment: str
    repetition: str | None = None


@dataclass
class _TransactionSet:
    """The segments between one ST and its SE (envelopes excluded)."""

    code: str
    segments: list[Segment] = field(default_factory=list)


@dataclass
class _LineDraft:
    """A PO1 loop being read: the PO1 segment, its PID descriptions and its SAC allowances less charges."""

    po1: Segment
    descriptions: list[str] = field(default_factory=list)
    allowances: Decimal = Decimal(0)


@dataclass
class _Charge:
    """A SAC segment: allowance (A) or charge (C), its code, amount and text."""

    indicator: str
    code: str
    amount: Decimal | None
    text: str


# --- envelope ---------------------------------------------------------------------------------


def read_delimiters(text: str) -> Delimiters:
    """Read the separators from the ISA segment at the start of ``text``.

    Raises ``PoflowError("malformed_edi")`` when there is no ISA segment or it is not
    the fixed 106-character layout.
    """
    if not text.startswith("ISA"):
        raise PoflowError("malformed_edi", "no ISA interchange header: an X12 file must start with ISA")
    if len(text) < ISA_LENGTH:
        raise PoflowError(
            "malformed_edi", f"the ISA segment is cut short: {len(text)} characters, X12 requires {ISA_LENGTH}"
        )
    element = text[3]
    if element.isalnum() or element in " \t\r\n":  # FS/GS/RS (control characters) are usable separators
        raise PoflowError("malformed_edi", f"unusable element separator {element!r} after ISA")
    elements = text[: ISA_LENGTH - 2].split(element)
    if len(elements) != 17:
        raise PoflowError(
            "malformed_edi",
            f"the ISA segment is not the fixed {ISA_LENGTH}-character layout "
            f"({len(elements) - 1} element separators before ISA16, expected 16)",
        )
    component, terminator = text[ISA_LENGTH - 2], text[ISA_LENGTH - 1]
    if component.isalnum() or terminator.isalnum() or terminator == element:
        raise PoflowError(
            "malformed_edi", f"unusable separators in ISA16 {component!r} / segment terminator {terminator!r}"
        )
    repetition = elements[11] if len(elements[11]) == 1 and not elements[11].isalnum() else None
    return Delimiters(element=element, component=component, segment=terminator, repetition=repetition)


def _interchange(text: str) -> tuple[str, Delimiters, bool]:
    """The text to read, its delimiters and whether line breaks were removed: an interchange wrapped into
    fixed-width lines (breaks inside the ISA segment) is read with its line breaks taken out."""
    try:
        return text, read_delimiters(text), False
    except PoflowError as original:
        joined = text.replace("\r", "").replace("\n", "")
        if joined == text:
            raise
        try:
            return joined, read_delimiters(joined), True
        except PoflowError:
            raise original from None  # the first error describes the file as it is


def split_segments(text: str, delimiters: Delimiters) -> list[Segment]:
    """Split an interchange into segments of elements (whitespace between segments ignored)."""
    segments: list[Segment] = []
    for raw in text.split(delimiters.segment):
        raw = raw.strip(" \t\r\n")
        if raw:
            parts = raw.split(delimiters.element)
            segments.append((parts[0].strip().upper(), *parts[1:]))
    return segments


def _transaction_sets(segments: Iterable[Segment]) -> list[_TransactionSet]:
    """Group segments into transaction sets (a missing SE ends the set at the next ST)."""
    sets: list[_TransactionSet] = []
    current: _TransactionSet | None = None
    for seg in segments:
        if seg[0] == "ST":
            current = _TransactionSet(code=_el(seg, 1))
            sets.append(current)
        elif seg[0] == "SE":
            current = None
        elif current is not None:
            current.segments.append(seg)
    return sets


def _pick_850(sets: Sequence[_TransactionSet]) -> tuple[_TransactionSet, list[Issue]]:
    """Return the first 850 set, plus an info issue when other sets were ignored."""
    if not sets:
        raise PoflowError("malformed_edi", "no ST transaction set header found in the interchange")
    orders = [s for s in sets if s.code == "850"]
    if not orders:
        found = ", ".join(dict.fromkeys(_describe_set(s.code) for s in sets))
        raise PoflowError(
            "unsupported_edi_transaction",
            f"the interchange contains {found}; only X12 850 purchase orders can be read",
        )
    ignored = len(sets) - 1
    if not ignored:
        return orders[0], []
    others = ", ".join(f"ST*{s.code}" for s in sets if s is not orders[0])
    message = f"the interchange holds {len(sets)} transaction sets; read the first 850, ignored {ignored} ({others})"
    return orders[0], [Issue(code="TRANSACTION_SETS_IGNORED", severity="info", message=message)]


def _describe_set(code: str) -> str:
    """``ST*810 (invoice)`` style label for a transaction set code."""
    name = _TRANSACTION_NAMES.get(code)
    return f"ST*{code} ({name})" if name else f"ST*{code}"


# --- element values ---------------------------------------------------------------------------


def _el(seg: Segment, index: int, component: str | None = None) -> str:
    """Element ``index`` of a segment, stripped ("" when absent); first component if composite."""
    if index >= len(seg):
        return ""
    value = seg[index]
    if component and component in value:
        value = value.split(component, 1)[0]
    return value.strip()


def _decimal(raw: str) -> Decimal | None:
    """Parse an X12 ``R`` (explicit decimal) value; ``None`` when it is not one."""
    return Decimal(raw) if _NUMBER.fullmatch(raw) else None


def _implied_cents(raw: str) -> Decimal | None:
    """Parse an X12 ``N2`` value (two implied decimals: ``1500`` -> 15.00)."""
    if "." in raw:  # some senders write an explicit decimal point anyway
        return _decimal(raw)
    return Decimal(raw).scaleb(-2) if re.fullmatch(r"[+-]?\d+", raw) else None




def _edi_date(raw: str) -> dt.date | None:
    """CCYYMMDD (or legacy YYMMDD, read as 20YY) -> date; ``None`` when invalid."""
    if not re.fullmatch(r"\d{6}|\d{8}", raw):
        return None
    text = raw if len(raw) == 8 else "20" + raw
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


# --- the 850 reader ---------------------------------------------------------------------------


class _Reader:
    """Walk the segments of one 850 transaction set and fill a ParsedPO."""

    def __init__(self, delimiters: Delimiters) -> None:
        self.component = delimiters.component
        self.po = ParsedPO(source_format="x12", extractor="x12_850", document_type="purchase_order")
        self.issues: list[Issue] = []
        self.has_beg = False
        self.dtm_date: str | None = None
        self.currencies: dict[str, str] = {}
        self.parties: dict[str, str] = {}
        self.drafts: list[_LineDraft] = []
        self.in_line = False
        self.ctt: str | None = None
        self.header_charges: list[_Charge] = []
        self.header_taxes: list[Decimal] = []
        self.line_taxes: list[Decimal] = []
        self.line_charges = 0
        self.handlers: dict[str, Callable[[Segment], None]] = {
            "BEG": self._beg,
            "DTM": self._dtm,
            "CUR": self._cur,
            "N1": self._n1,
            "PO1": self._po1,
            "PID": self._pid,
            "CTT": self._ctt,
            "AMT": self._amt,
            "SAC": self._sac,
            "TXI": self._txi,
        }

    def el(self, seg: Segment, index: int) -> str:
        """Element ``index`` of ``seg`` (first component)."""
        return _el(seg, index, self.component)

    def read(self, segments: Iterable[Segment]) -> ParsedPO:
        """Consume the set's segments and return the finished PO."""
        for seg in segments:
            handler = self.handlers.get(seg[0])
            if handler is not None:
                handler(seg)
        if not self.has_beg:
            raise PoflowError("malformed_edi", "the 850 transaction set has no BEG segment")
        self._finish_header()
        self._finish_lines()
        self._finish_totals()
        self.po.issues = [*self.issues, *self.po.issues]
        return self.po

    # header segments

    def _beg(self, seg: Segment) -> None:
        """BEG: purpose, type, PO number (03), release (04), date (05)."""
        if self.has_beg:
            return
        self.has_beg = True
        self.po.po_number = self.el(seg, 3) or None
        raw = self.el(seg, 5)
        self.po.order_date = _edi_date(raw) if raw else None
        if raw and self.po.order_date is None:
            self.issues.append(Issue(code="UNREADABLE_DATE", message=f"could not read the BEG05 order date {raw!r}"))

    def _dtm(self, seg: Segment) -> None:
        """DTM*004 (purchase order date) is the fallback order date."""
        if self.el(seg, 1) == "004" and self.dtm_date is None and not self.in_line:
            self.dtm_date = self.el(seg, 2)

    def _cur(self, seg: Segment) -> None:
        """CUR01 entity (BY buyer, SE seller, ...) -> CUR02 currency code."""
        self.currencies.setdefault(self.el(seg, 1), self.el(seg, 2).upper())

    def _n1(self, seg: Segment) -> None:
        """N1 name segments: remember each party's name (N102) by entity code (N101)."""
        name = self.el(seg, 2)
        if name:
            self.parties.setdefault(self.el(seg, 1), name)

    # line segments

    def _po1(self, seg: Segment) -> None:
        """PO1 starts a line item loop."""
        self.drafts.append(_LineDraft(po1=seg))
        self.in_line = True

    def _pid(self, seg: Segment) -> None:
        """PID*F (free-form) PID05 describes the current line."""
        text = " ".join(self.el(seg, 5).split())
        if self.in_line and self.el(seg, 1) == "F" and text:
            self.drafts[-1].descriptions.append(text)

    # summary / charges

    def _ctt(self, seg: Segment) -> None:
        """CTT01: number of line items; ends the detail area."""
        self.in_line = False
        if self.ctt is None:
            self.ctt = self.el(seg, 1)

    def _amt(self, seg: Segment) -> None:
        """Outside the line loops: AMT*TT (total transaction amount) -> total, AMT*1 (line item total) -> subtotal."""
        qualifier = self.el(seg, 1).upper()
        if self.in_line or qualifier not in ("TT", "1"):
            return
        field = "total" if qualifier == "TT" else "subtotal"
        if getattr(self.po, field) is None:
            setattr(self.po, field, self._number(self.el(seg, 2), f"AMT*{qualifier} {field}", money=True))

    def _sac(self, seg: Segment) -> None:
        """SAC: header/summary charges are kept; a line's allowances (A) less its charges (C) with an SAC05
        amount become its discount, other line-level ones are counted."""
        raw = self.el(seg, 5)
        amount = _implied_cents(raw) if raw else None
        if raw and amount is None:
            self._unreadable("SAC05 amount", raw)
        if self.in_line:
            indicator = self.el(seg, 1).upper()
            if amount is None or indicator not in ("A", "C"):
                self.line_charges += 1
            else:
                self.drafts[-1].allowances += amount if indicator == "A" else -amount
            return
        text = " ".join(v for v in (self.el(seg, 15), self.el(seg, 4)) if v)
        self.header_charges.append(_Charge(self.el(seg, 1).upper(), self.el(seg, 2).upper(), amount, text))

    def _txi(self, seg: Segment) -> None:
        """TXI02: tax amount (header/summary, or per line)."""
        raw = self.el(seg, 2)
        amount = self._number(raw, "TXI02 tax", money=True) if raw else None
        if amount is not None:
            (self.line_taxes if self.in_line else self.header_taxes).append(amount)

    # finishing

    def _finish_header(self) -> None:
        """Order date fallback, currency and supplier."""
        if self.po.order_date is None and self.dtm_date:
            self.po.order_date = _edi_date(self.dtm_date)
            if self.po.order_date is None:
                self.issues.append(
                    Issue(code="UNREADABLE_DATE", message=f"could not read the DTM*004 order date {self.dtm_date!r}")
                )
        code = self.currencies.get("BY") or next(iter(self.currencies.values()), "")
        if code:
            if _CURRENCY.fullmatch(code):
                self.po.currency = code
            else:
                self.issues.append(Issue(code="UNREADABLE_CURRENCY", message=f"unknown currency {code!r} in CUR"))
        self.po.supplier_name = next((self.parties[q] for q in ("SE", "VN", "SU") if q in self.parties), None)

    def _finish_lines(self) -> None:
        """Turn the PO1 loops into POLines and check CTT01."""
        if not self.drafts:
            raise PoflowError("no_line_items", "the 850 purchase order has no PO1 line items")
        units: list[str | None] = []
        for draft in self.drafts:
            line, unit = self._line(draft, line_no=len(self.po.lines) + 1)
            self.po.lines.append(line)
            units.append(unit)
        self.po.stats["line_units"] = units
        self._check_line_count()
        if self.line_charges:
            self.issues.append(
                Issue(
                    code="LINE_CHARGES_IGNORED",
                    severity="info",
                    message=f"{self.line_charges} line-level SAC allowance/charge segment(s) were not applied",
                )
            )

    def _line(self, draft: _LineDraft, *, line_no: int) -> tuple[POLine, str | None]:
        """Build one POLine (and its unit of measure) from a PO1 loop."""
        seg = draft.po1
        quantity = self._number(self.el(seg, 2), f"line {line_no}: PO102 quantity")
        price = self._number(self.el(seg, 4), f"line {line_no}: PO104 unit price")
        divisor = _PRICE_BASIS_DIVISORS.get(self.el(seg, 5).upper())
        if price is not None and divisor is not None:
            self.issues.append(
                Issue(
                    code="PRICE_BASIS_CONVERTED",
                    severity="info",
                    message=f"line {line_no}: PO104 {format(price, 'f')} is per {divisor} units ({self.el(seg, 5)})",
                )
            )
            price = price / divisor
        unit_cost = as_money(price)
        discount = as_money(draft.allowances) if draft.allowances > 0 else None
        if draft.allowances < 0:
            self.line_charges += 1  # a net charge: the contract's line has no field for it
        line_total = None
        if quantity is not None and unit_cost is not None and not self._priced_by_weight(seg, line_no):
            line_total = (quantity * unit_cost - (discount or 0)).quantize(CENT, rounding=ROUND_HALF_UP)
        ids = self._product_ids(seg)
        line = POLine(
            line_no=line_no,
            sku=_sku(ids),
            barcode=_barcode(ids),
            description="; ".join(draft.descriptions) or None,
            quantity=quantity,
            unit_cost=unit_cost,
            line_total=line_total,
            unit=unit_of_measure(self.el(seg, 3)),
            discount=discount,
        )
        return line, self.el(seg, 3) or None

    def _priced_by_weight(self, seg: Segment, line_no: int) -> bool:
        """PO105 prices a weight (per pound) while PO103 counts something else: the line amount is unknown."""
        weight_unit = _PRICE_PER_WEIGHT.get(self.el(seg, 5).upper())
        if weight_unit is None or self.el(seg, 3).upper() == weight_unit:
            return False
        message = (f"line {line_no}: the price is per {weight_unit.lower()} (PO105 {self.el(seg, 5)}) but the"
                   f" quantity is in {self.el(seg, 3) or 'no unit'}; the line amount is left empty")
        self.issues.append(Issue(code="PRICE_PER_WEIGHT", severity="warning", message=message))
        return True

    def _product_ids(self, seg: Segment) -> dict[str, str]:
        """The PO106/PO107... qualifier/ID pairs in order (the first ID of each qualifier; strings as sent)."""
        ids: dict[str, str] = {}
        for index in range(6, len(seg) - 1, 2):
            qualifier, value = self.el(seg, index).upper(), self.el(seg, index + 1)
            if value:
                ids.setdefault(qualifier, value)
        return ids

    def _check_line_count(self) -> None:
        """CTT01 must equal the number of PO1 segments."""
        if not self.ctt:
            return
        if not self.ctt.isdigit():
            self._unreadable("CTT01 line count", self.ctt)
            return
        declared, found = int(self.ctt), len(self.drafts)
        if declared != found:
            self.issues.append(
                Issue(
                    code="LINE_COUNT_MISMATCH",
                    severity="error",
                    message=f"CTT01 declares {declared} line item(s) but the order has {found} PO1 segment(s)",
                )
            )

    def _finish_totals(self) -> None:
        """Tax from TXI, shipping from freight SAC charges, other header SAC allowances/charges as discount/charges."""
        taxes = self.header_taxes or self.line_taxes
        if taxes:
            self.po.tax = as_money(sum(taxes, Decimal(0)))
        self.po.shipping, self.po.discount, self.po.charges = apply_document_charges(self.issues, [
            DocumentCharge(c.amount, c.indicator == "C", _is_freight(c), _describe_charge(c))
            for c in self.header_charges if c.indicator in ("A", "C")])
        if self.po.total is None and self.po.subtotal is not None:
            self.po.total = (self.po.subtotal - (self.po.discount or 0) + (self.po.charges or 0)
                             + (self.po.tax or 0) + (self.po.shipping or 0))

    def _number(self, raw: str, what: str, *, money: bool = False) -> Decimal | None:
        """Parse an R value; record an ``unreadable_number`` issue when it is present but bad."""
        if not raw:
            return None
        value = _decimal(raw)
        if value is None:
            self._unreadable(what, raw)
            return None
        return as_money(value) if money else value

    def _unreadable(self, what: str, raw: str) -> None:
        """Record that a value could not be read."""
        self.issues.append(Issue(code="UNREADABLE_NUMBER", message=f"could not read {what} {raw!r}"))


def unit_of_measure(code: str) -> str | None:
    """A PO103 unit code as a unit (``EA`` -> ``units``, ``LB`` -> ``lb``); unknown codes lower-cased."""
    code = code.strip().upper()
    return _UNIT_CODES.get(code, code.lower()) if code else None


def _sku(ids: dict[str, str]) -> str | None:
    """The SKU: the first of ``SKU_QUALIFIERS`` present, else the first ID (zero padding kept)."""
    return next((ids[q] for q in SKU_QUALIFIERS if q in ids), next(iter(ids.values()), None))


def _barcode(ids: dict[str, str]) -> str | None:
    """The line's GTIN: the first of ``BARCODE_QUALIFIERS`` present; a UI/UA code sent in its documented form
    without a check digit (11/12 digits) gets it appended."""
    qualifier = next((q for q in BARCODE_QUALIFIERS if q in ids), None)
    if qualifier is None:
        return None
    barcode = clean_barcode(ids[qualifier])
    if barcode is not None and barcode.isdigit() and len(barcode) == _NO_CHECK_DIGIT.get(qualifier):
        barcode = with_check_digit(barcode)
    return barcode


def _is_freight(charge: _Charge) -> bool:
    """A SAC charge (C) whose code or description says freight/shipping."""
    if charge.indicator != "C":
        return False
    return charge.code in FREIGHT_CODES or bool(_FREIGHT_WORDS.search(charge.text))


def _describe_charge(charge: _Charge) -> str:
    """``allowance C310 12.00`` style label for an issue message."""
    kind = "allowance" if charge.indicator == "A" else "charge"
    amount = "?" if charge.amount is None else format(charge.amount, "f")
    return f"{kind} {charge.code or charge.text or '?'} {amount}"


# --- entry point ------------------------------------------------------------------------------


def extract_x12_850(text: str) -> ParsedPO:
    """Extract the first X12 850 purchase order in an interchange.

    Raises :class:`PoflowError` with ``malformed_edi``, ``unsupported_edi_transaction``
    or ``no_line_items``.
    """
    text, delimiters, unwrapped = _interchange(text.lstrip("\ufeff \t\r\n"))
    chosen, issues = _pick_850(_transaction_sets(split_segments(text, delimiters)))
    po = _Reader(delimiters).read(chosen.segments)
    po.issues.extend(issues)
    if unwrapped:
        message = "the interchange was wrapped into fixed-width lines; the line breaks were removed before reading"
        po.issues.append(Issue(code="LINE_BREAKS_REMOVED", severity="info", message=message))
    po.stats["delimiters"] = {
        "element": delimiters.element,
        "component": delimiters.component,
        "segment": delimiters.segment,
    }
    return po
