"""Locale-aware parsing of the numbers, dates and currencies found in purchase orders.

Rules (kept deliberately simple so they can be explained to a merchant):

* **Decimals** - when both ``.`` and ``,`` occur, the *last* one is the decimal
  separator (``1.234,56`` and ``1,234.56``). A lone separator followed by exactly
  three digits (``1,234`` / ``1.234``) is a thousands separator unless the caller
  says which decimal style the document uses (``decimal_comma``); any other lone
  separator is the decimal point (``12,5`` -> 12.5). Spaces, non-breaking spaces
  and apostrophes between digits are thousands separators (``1 234,56``,
  ``1'234.56``). Currency symbols and ISO codes around the number are ignored,
  ``(12.00)`` and a trailing minus are negative. Anything else -> ``None``.
* **Dates** - ISO ``2026-09-14`` always; dotted ``14.09.2026`` is always
  day-first; slashed/dashed ``09/14/2026`` is decided by whichever part is > 12;
  when both parts are <= 12 the caller's ``day_first`` decides (the extractors
  pass "the document uses decimal commas", i.e. European documents are
  day-first, everything else month-first). Month names in en/de/fr/es/it/nl/pt
  are understood (``March 3, 2026``, ``3 March 2026``, ``14. September 2026``), so are CJK dates
  (``2022年1月1日``, full-width digits too) and Japanese era years (``令和4年1月1日``, ``平成元年``,
  ``R4.1.1``); a time after the date is ignored. ``12.100,-`` is 12100.
* **Currency** - an ISO code in the text wins (``$12.90 CAD`` -> CAD), then
  prefixed dollar signs (``CA$`` -> CAD), then bare symbols (``$`` -> USD,
  ``€`` -> EUR, ``£`` -> GBP).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

__all__ = [
    "ISO_CURRENCIES",
    "detect_currency",
    "guess_decimal_comma",
    "parse_date",
    "parse_decimal",
    "to_decimal",
]

#: ISO 4217 codes we recognise inside free text (a whitelist keeps words like "AND" out).
ISO_CURRENCIES: frozenset[str] = frozenset(
    {
        "USD", "EUR", "GBP", "CAD", "AUD", "NZD", "CHF", "JPY", "CNY", "HKD", "SGD",
        "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN", "ISK", "TRY", "MXN",
        "BRL", "ARS", "CLP", "COP", "PEN", "INR", "ZAR", "KRW", "TWD", "THB", "ILS",
        "AED", "SAR",
    }
)

# Prefixed dollar/other signs, checked before the bare symbols.
_PREFIXED_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("US$", "USD"),
    ("CA$", "CAD"),
    ("C$", "CAD"),
    ("AU$", "AUD"),
    ("A$", "AUD"),
    ("NZ$", "NZD"),
    ("HK$", "HKD"),
    ("S$", "SGD"),
    ("R$", "BRL"),
    ("MX$", "MXN"),
)
_BARE_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("€", "EUR"),
    ("£", "GBP"),
    ("¥", "JPY"),
    ("₹", "INR"),
    ("₩", "KRW"),
    ("₺", "TRY"),
    ("zł", "PLN"),
    ("Kč", "CZK"),
    ("$", "USD"),
)
_CURRENCY_WORDS: dict[str, str] = {
    "euro": "EUR",
    "euros": "EUR",
    "us dollar": "USD",
    "us dollars": "USD",
    "canadian dollar": "CAD",
    "canadian dollars": "CAD",
    "pound sterling": "GBP",
    "pounds sterling": "GBP",
    "swiss franc": "CHF",
    "swiss francs": "CHF",
}

_ISO_RE = re.compile(r"(?<![A-Za-z])([A-Za-z]{3})(?![A-Za-z])")
_SYMBOL_CHARS = "$€£¥₹₩₺"
_AFFIX = r"(zł|Kč|[A-Za-z]{1,3}\$|[A-Za-z]{3}|[" + re.escape(_SYMBOL_CHARS) + r"])"
_LEAD_AFFIX_RE = re.compile("^" + _AFFIX)
_TRAIL_AFFIX_RE = re.compile(_AFFIX + "$")
_SPACES = "\u0020\u00a0\u2007\u2009\u202f"
_NUMBER_CHARS_RE = re.compile(r"^[0-9.,'’" + _SPACES + r"]+$")
_GROUP_SEP_RE = re.compile(r"[" + _SPACES + r"'’]")
_GROUPED_RE = re.compile(r"\d{1,3}(?:[" + _SPACES + r"'’]\d{3})+(?:[.,]\d+)?")
_THOUSANDS_RE = {sep: re.compile(r"\d{1,3}(?:" + re.escape(sep) + r"\d{3})*") for sep in ".,"}
_COMMA_VOTE_RE = re.compile(r"\d\.\d{3},\d|\d,\d{1,2}(?!\d)(?![.,]\d)")
_DOT_VOTE_RE = re.compile(r"\d,\d{3}\.\d|\d\.\d{1,2}(?!\d)(?![.,]\d)")
_EN_GROUPED_RE = re.compile(r"\d,\d{3}\.\d")


def as_money(value: Decimal | None) -> Decimal | None:
    """Money with at least cents (``189.6`` -> ``189.60``); finer prices (``18.333``) are kept."""
    if value is None or not value.is_finite():
        return value
    exponent = value.as_tuple().exponent
    return value.quantize(Decimal("0.01")) if isinstance(exponent, int) and exponent > -2 else value


def to_decimal(value: float | int | Decimal) -> Decimal:
    """Convert a native number (e.g. an xlsx cell) to Decimal without binary noise.

    ``12.5`` -> ``Decimal("12.5")``, ``59.970000000000006`` -> ``Decimal("59.97")``
    (floats are rounded to 9 decimals first), integral floats become integers.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, int):
        return Decimal(value)
    rounded = round(float(value), 9)
    if rounded.is_integer():
        return Decimal(int(rounded))
    return Decimal(repr(rounded))


def parse_decimal(
    text: object, *, decimal_comma: bool | None = None
) -> Decimal | None:
    """Parse a money/quantity value written in any common locale; ``None`` if it is not one.

    ``decimal_comma`` only matters for a lone separator followed by exactly three
    digits: ``True`` -> ``1,234`` is 1.234 and ``1.234`` is 1234; ``False`` -> the
    reverse; ``None`` -> the separator is a thousands separator (1234 either way).
    Native numbers (int/float/Decimal) are accepted as-is.
    """
    if text is None:
        return None
    if isinstance(text, (int, float, Decimal)):
        if isinstance(text, float) and (text != text or text in (float("inf"), float("-inf"))):
            return None
        return to_decimal(text)
    s = str(text).strip()
    if not s:
        return None

    if s.endswith((",-", ".-", ",--", ".--", ",—", ",–")):  # "12.100,-": whole units, no cents
        s = s.rstrip("-—–")[:-1]
    negative = False
    if s.startswith("(") and s.endswith(")"):
        negative, s = True, s[1:-1].strip()
    # Peel currency symbols / codes and signs off both ends.
    s, neg_sign = _strip_affixes(s)
    negative = negative ^ neg_sign
    if not s or not _NUMBER_CHARS_RE.match(s) or not any(c.isdigit() for c in s):
        return None

    normalised = _normalise_separators(s, decimal_comma)
    if normalised is None:
        return None
    try:
        value = Decimal(normalised)
    except InvalidOperation:  # pragma: no cover - the regexes above guarantee a number
        return None
    return -value if negative else value


def _strip_affixes(s: str) -> tuple[str, bool]:
    """Remove currency symbols/codes and +/- signs around a number; return (rest, negative)."""
    negative = False
    changed = True
    while changed and s:
        changed = False
        s = s.strip(_SPACES)
        if not s:
            break
        if s[0] in "-−–" or s[-1] in "-−–":
            if s[0] in "-−–":
                s = s[1:]
            else:
                s = s[:-1]
            negative, changed = not negative, True
            continue
        if s[:1] == "+":
            s, changed = s[1:], True
            continue
        lead = _LEAD_AFFIX_RE.match(s)
        if lead and _is_currency_token(lead.group(1)):
            s, changed = s[lead.end():], True
            continue
        trail = _TRAIL_AFFIX_RE.search(s)
        if trail and _is_currency_token(trail.group(1)):
            s, changed = s[: trail.start()], True
    return s.strip(_SPACES), negative


def _is_currency_token(token: str) -> bool:
    """True if ``token`` is a currency symbol, a prefixed dollar sign or a known ISO code."""
    if token in _SYMBOL_CHARS or token in ("zł", "Kč"):
        return True
    if token.endswith("$"):
        return any(token.upper() == prefix for prefix, _ in _PREFIXED_SYMBOLS)
    return token.upper() in ISO_CURRENCIES


def _normalise_separators(s: str, decimal_comma: bool | None) -> str | None:
    """Turn ``1.234,56`` / ``1,234.56`` / ``1 234,56`` ... into ``1234.56``; None if malformed."""
    # Spaces and apostrophes are only ever thousands separators (between digit groups).
    if _GROUP_SEP_RE.search(s):
        if not _GROUPED_RE.fullmatch(s):
            return None
        s = _GROUP_SEP_RE.sub("", s)

    has_dot, has_comma = "." in s, "," in s
    if has_dot and has_comma:
        decimal_sep = "." if s.rfind(".") > s.rfind(",") else ","
        thousands_sep = "," if decimal_sep == "." else "."
        int_part, _, frac = s.rpartition(decimal_sep)
        if not _THOUSANDS_RE[thousands_sep].fullmatch(int_part):
            return None
        if not frac.isdigit():
            return None
        return int_part.replace(thousands_sep, "") + "." + frac
    if not has_dot and not has_comma:
        return s if s.isdigit() else None

    sep = "." if has_dot else ","
    parts = s.split(sep)
    if len(parts) > 2:  # several separators of one kind: thousands groups
        if _THOUSANDS_RE[sep].fullmatch(s):
            return s.replace(sep, "")
        return None
    int_part, frac = parts
    if not frac.isdigit() or (int_part and not int_part.isdigit()):
        return None
    if len(frac) == 3 and int_part and int_part != "0" and len(int_part) <= 3:
        # "1,234" / "1.234": thousands unless the document's style says otherwise.
        comma_is_decimal = decimal_comma is True
        dot_is_decimal = decimal_comma is False
        is_decimal = comma_is_decimal if sep == "," else dot_is_decimal
        if not is_decimal:
            return int_part + frac
    return (int_part or "0") + "." + frac


def guess_decimal_comma(texts: Iterable[object], *, max_votes: int = 1000) -> bool | None:
    """Vote on a document's decimal style from its cell texts.

    Returns ``True`` if comma decimals dominate (``12,50``, ``1.234,56``), ``False``
    if dot decimals do (``12.50``, ``1,234.56``), ``None`` if there is no evidence.
    Values with exactly three digits after a lone separator are ambiguous and ignored.
    Stops after ``max_votes`` decisive values.
    """
    comma = dot = 0
    for value in texts:
        if not isinstance(value, str):
            continue
        s = value.strip()
        if not s or len(s) > 40:
            continue
        if _COMMA_VOTE_RE.search(s) and not _EN_GROUPED_RE.search(s):
            comma += 1
        elif _DOT_VOTE_RE.search(s):
            dot += 1
        if comma + dot >= max_votes:
            break
    if comma == dot:
        return None
    return comma > dot


# --- dates -------------------------------------------------------------------------------

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan januar janv janvier enero ene gennaio gen januari jan janeiro",
        "february feb februar fevrier fev fevr febrero febbraio februari fevereiro fev",
        "march mar marz maerz mars marzo maart marco",
        "april apr avril abril aprile",
        "may mai mayo maggio mei maio",
        "june jun juni juin junio giugno junho",
        "july jul juli juillet juil julio luglio lug julho",
        "august aug aout agosto ago augustus",
        "september sep sept septembre septiembre settembre set setembro",
        "october oct oktober octobre octubre ottobre ott outubro out okt",
        "november nov novembre noviembre novembro",
        "december dec dezember dez decembre diciembre dic dicembre dezembro",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS.setdefault(_name, _number)


def _fold(text: str) -> str:
    """Lower-case and strip accents (``März`` -> ``marz``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _make_date(year: int, month: int, day: int) -> dt.date | None:
    if year < 100:
        year += 2000
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


#: Japanese era names and the Gregorian year before each era's first year (令和1 = 2019).
_ERAS: dict[str, int] = {"令和": 2018, "平成": 1988, "昭和": 1925, "大正": 1911, "r": 2018, "h": 1988, "s": 1925}
_CJK_DATE_RE = re.compile(r"(令和|平成|昭和|大正)?\s*(\d{1,4}|元)\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")
_ERA_SHORT_RE = re.compile(r"([rhs])\s*(\d{1,2})[./](\d{1,2})[./](\d{1,2})")


_TIME_RE = re.compile(r"[ t,]+\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?\s*(?:[ap]\.?m\.?)?(?:\s*(?:z|utc|[+-]\d{2}:?\d{2}))?$")


def _cjk_date(s: str) -> dt.date | None:
    """``2022年1月1日``, era years ``令和4年1月1日`` / ``R4.1.1`` (full-width digits are folded already)."""
    m = _CJK_DATE_RE.search(s)
    if m:
        year = 1 if m[2] == "元" else int(m[2])
        if m[1]:
            year += _ERAS[m[1]]
        elif year < 100:
            return None
        return _make_date(year, int(m[3]), int(m[4]))
    m = _ERA_SHORT_RE.fullmatch(s)
    if m:
        return _make_date(_ERAS[m[1]] + int(m[2]), int(m[3]), int(m[4]))
    return None


def parse_date(text: object, *, day_first: bool = False) -> dt.date | None:
    """Parse an order date in the usual PO spellings; ``None`` if it is not a date.

    ``day_first`` only breaks the tie for slashed/dashed dates whose first two parts
    are both <= 12 (``03/04/2026``). Native ``date``/``datetime`` values pass through.
    """
    if text is None:
        return None
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    s = _fold(str(text).strip())
    if not s:
        return None

    s = _TIME_RE.sub("", s).strip()  # "02/28/2017 21:29:06", "2022-01-05 10:00 am"
    cjk = _cjk_date(s)
    if cjk is not None:
        return cjk

    m = re.fullmatch(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[t ].*)?", s)
    if m:  # ISO (with optional time)
        return _make_date(int(m[1]), int(m[2]), int(m[3]))

    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})", s)
    if m:  # dotted: European, day first
        return _make_date(int(m[3]), int(m[2]), int(m[1]))

    m = re.fullmatch(r"(\d{1,2})[/-](\d{1,2})[/-](\d{4}|\d{2})", s)
    if m:
        a, b, year = int(m[1]), int(m[2]), int(m[3])
        if a > 12 >= b:
            return _make_date(year, b, a)
        if b > 12 >= a:
            return _make_date(year, a, b)
        return _make_date(year, b, a) if day_first else _make_date(year, a, b)

    words = re.findall(r"[a-z]+|\d+", s)
    words = [w for w in words if w not in {"de", "del", "of", "the", "th", "st", "nd", "rd"}]
    # strip weekday names like "monday," by ignoring unknown words
    tokens: list[int | str] = []
    for w in words:
        if w.isdigit():
            tokens.append(int(w))
        elif w in _MONTHS:
            tokens.append(w)
    numbers = [t for t in tokens if isinstance(t, int)]
    months = [t for t in tokens if isinstance(t, str)]
    if len(months) == 1 and len(numbers) == 2:
        month = _MONTHS[months[0]]
        years = [n for n in numbers if n > 31]
        if len(years) == 1:
            day = next(n for n in numbers if n is not years[0])
            return _make_date(years[0], month, day)
    return None


# --- currency ----------------------------------------------------------------------------


def detect_currency(text: object) -> str | None:
    """Return the ISO 4217 code a text refers to (``"12.90 CAD"`` -> ``"CAD"``), else ``None``."""
    if text is None or isinstance(text, (int, float, Decimal)):
        return None
    s = str(text)
    for m in _ISO_RE.finditer(s):
        code = m.group(1)
        # Accept upper-case codes anywhere, lower/mixed case only when the text is short
        # (a currency cell like "eur"), so ordinary words are not mistaken for codes.
        if code.upper() in ISO_CURRENCIES and (code.isupper() or len(s.strip()) <= 4):
            return code.upper()
    if "$" in s:
        upper = s.upper()
        for prefix, code in _PREFIXED_SYMBOLS:
            if re.search(r"(?<![A-Z])" + re.escape(prefix), upper):
                return code
    for symbol, code in _BARE_SYMBOLS:
        if symbol in s:
            return code
    folded = " " + " ".join(re.findall(r"[a-z]+", _fold(s))) + " "
    for word, code in _CURRENCY_WORDS.items():
        if f" {word} " in folded:
            return code
    return None
