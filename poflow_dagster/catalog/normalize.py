"""Match keys: SKUs, barcodes (GTINs), supplier / vendor names and product titles, normalised the way a
merchant would compare them by eye.

Every function is pure and total: unusable input gives ``None`` (or an empty title), never an exception.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

#: Hyphen, minus and dash characters a SKU may be typed with (``AB-12``, ``AB‐12``, ``AB–12``).
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_SKU_NOISE = re.compile(rf"[\s{re.escape(_DASHES)}]+")


def _fold(text: str) -> str:
    """Compatibility-normalised (full-width digits become digits) and case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def _plain(text: str) -> str:
    """Folded, with accents dropped (``Café Crème`` -> ``cafe creme``): names are typed both ways."""
    decomposed = unicodedata.normalize("NFKD", _fold(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def sku_key(sku: str | None) -> str | None:
    """A SKU as a merchant reads it: case, whitespace and dashes ignored (``ab 12-x`` = ``AB12X``).

    Every other character is kept in order, so different letters or digits never share a key (leading zeros
    count: ``007`` is not ``7``); a SKU of only spaces and dashes has no key."""
    if sku is None:
        return None
    key = _SKU_NOISE.sub("", _fold(sku)).upper()
    return key or None


#: GTIN lengths: GTIN-8 (EAN-8), GTIN-12 (UPC-A), GTIN-13 (EAN-13), GTIN-14.
_GTIN_LENGTHS = (8, 12, 13, 14)
_BARCODE_SEPARATORS = re.compile(rf"[\s{re.escape(_DASHES)}.]+")


def barcode_key(barcode: str | None) -> str | None:
    """A barcode as its GTIN-14: digits only, check digit verified, zero-padded to 14 digits.

    UPC-A ``012345678905``, EAN-13 ``0012345678905`` and GTIN-14 ``00012345678905`` are one key. Spaces, dashes
    and dots between digits are ignored; anything else (letters, a wrong length, a wrong check digit, all
    zeros) is not a GTIN and has no key. UPC-E (compressed 8-digit UPC) is read as a GTIN-8, not expanded."""
    if barcode is None:
        return None
    digits = _BARCODE_SEPARATORS.sub("", _fold(barcode))
    if not digits.isascii() or not digits.isdigit() or len(digits) not in _GTIN_LENGTHS:
        return None
    if not gtin_check_digit_ok(digits) or not digits.strip("0"):
        return None
    return digits.zfill(14)


def gtin_check_digit_ok(digits: str) -> bool:
    """The GS1 mod-10 check: weights 3, 1, 3, … from the right, the check digit excluded."""
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


#: Legal-form words dropped from supplier and vendor names (``Acme Inc.`` = ``ACME`` = ``Acme, LLC``).
_LEGAL_FORMS = frozenset({
    "inc", "incorporated", "llc", "ltd", "limited", "co", "corp", "corporation", "company", "gmbh", "ag", "bv",
    "nv", "sa", "sas", "sarl", "srl", "spa", "plc", "pty", "pte", "oy", "ab", "as", "aps", "kg", "lp", "llp",
})
_WORDS = re.compile(r"[^\W_]+")


def supplier_key(name: str | None) -> str | None:
    """A supplier or Shopify vendor name as one key: case, accents, punctuation, spacing, ``&``/``and``, a
    leading ``the`` and trailing legal forms ignored (``The Acme Co.`` = ``ACME, Inc`` = ``acme``)."""
    if name is None:
        return None
    words = _WORDS.findall(_plain(name).replace("&", " and "))
    while len(words) > 1 and words[-1] in _LEGAL_FORMS:
        words.pop()
    if len(words) > 1 and words[0] == "the":
        words.pop(0)
    return " ".join(words) or None


# --- titles --------------------------------------------------------------------------------------------------

#: Units of measure, spelled as POs spell them, and the one spelling each is kept as. Units are never
#: converted: ``500 ml`` and ``0.5 l`` stay two different sizes (a catalog names its sizes one way).
_UNITS = {
    "ml": "ml", "millilitre": "ml", "milliliter": "ml", "millilitres": "ml", "milliliters": "ml",
    "cl": "cl", "dl": "dl",
    "l": "l", "lt": "l", "ltr": "l", "litre": "l", "liter": "l", "litres": "l", "liters": "l",
    "g": "g", "gr": "g", "gram": "g", "grams": "g", "kg": "kg", "kilo": "kg", "kilos": "kg", "mg": "mg",
    "oz": "oz", "floz": "floz", "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb",
    "mm": "mm", "cm": "cm", "m": "m", "in": "in", "inch": "in", "inches": "in", "ft": "ft",
    "w": "w", "kw": "kw", "v": "v", "mah": "mah", "gb": "gb", "tb": "tb",
}
#: Words that count items: ``12 pack``, ``12pk``, ``pack of 12``, ``x12``, ``12 ct`` are one pack size.
_PACK_WORDS = ("pack", "pk", "pcs", "pc", "pieces", "piece", "ct", "count", "box", "case", "set", "rolls")
_COLOURS = {
    "black": "black", "white": "white", "red": "red", "blue": "blue", "green": "green", "yellow": "yellow",
    "orange": "orange", "purple": "purple", "pink": "pink", "brown": "brown", "grey": "grey", "gray": "grey",
    "silver": "silver", "gold": "gold", "beige": "beige", "navy": "navy", "teal": "teal", "maroon": "maroon",
    "cream": "cream", "ivory": "ivory", "charcoal": "charcoal", "khaki": "khaki", "turquoise": "turquoise",
    "lavender": "lavender", "burgundy": "burgundy", "tan": "tan", "clear": "clear", "violet": "violet",
    "magenta": "magenta", "cyan": "cyan", "coral": "coral", "mint": "mint", "lime": "lime", "rose": "rose",
    "copper": "copper", "bronze": "bronze", "indigo": "indigo", "aqua": "aqua", "olive": "olive",
    "natural": "natural", "multicolour": "multicolour", "multicolor": "multicolour", "transparent": "clear",
}
#: Apparel sizes (as whole words): ``XL`` and ``X-Large`` are one size.
_SIZES = {
    "xxs": "xxs", "xxsmall": "xxs", "xs": "xs", "xsmall": "xs", "s": "s", "small": "s", "m": "m", "medium": "m",
    "l": "l", "large": "l",
    "xl": "xl", "xlarge": "xl", "xxl": "xxl", "2xl": "xxl", "xxlarge": "xxl", "xxxl": "xxxl", "3xl": "xxxl",
    "4xl": "4xl", "5xl": "5xl",
}
_NUMBER = r"\d+(?:[.,]\d+)?"
_UNIT_WORDS = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))
_PACK_ALT = "|".join(_PACK_WORDS)
_MEASURE = re.compile(rf"(?<![\w.])({_NUMBER})\s*(?:fl\.?\s*oz|({_UNIT_WORDS}))\b")
_PACK_AFTER = re.compile(rf"(?<![\w.])(\d+)\s*-?\s*(?:{_PACK_ALT})\b")
_PACK_BEFORE = re.compile(rf"\b(?:{_PACK_ALT})\s+of\s+(\d+)\b")
_TIMES = re.compile(r"(?<![\w.])(?:(\d+)\s*[x×*](?=\s*\d|\s|$)|[x×*]\s*(\d+)\b)")
_TOKEN = re.compile(r"[^\W_]+(?:\.[0-9]+)?")
_JOINERS = re.compile(r"(?<=[a-z])-(?=[a-z])")  # x-large -> xlarge, t-shirt -> tshirt


@dataclass(frozen=True)
class TitleKey:
    """A title split for fuzzy matching: its ``words`` (compared fuzzily, in any order) and its ``attributes``
    (sizes, units, pack counts, colours, other numbers) which must be exactly the same for two titles to name
    one product, so ``Olive Oil 500 ml`` never matches ``Olive Oil 1 l`` and ``Tee Red M`` never ``Tee Blue M``."""

    words: str
    attributes: frozenset[str]


@lru_cache(maxsize=65536)
def title_key(title: str | None) -> TitleKey:
    """Normalise a product title (case, accents, punctuation, unit and pack spellings) and split it."""
    text = _JOINERS.sub("", _plain(title or "").replace("&", " and "))
    attributes: set[str] = set()
    text = _MEASURE.sub(lambda m: _mark(attributes, _number(m[1]) + _UNITS.get(m[2] or "floz", "floz")), text)
    text = _PACK_BEFORE.sub(lambda m: _mark(attributes, _pack(m[1])), text)
    text = _PACK_AFTER.sub(lambda m: _mark(attributes, _pack(m[1])), text)
    text = _TIMES.sub(lambda m: _mark(attributes, _pack(m[1] or m[2])), text)
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token in _COLOURS:
            attributes.add("colour:" + _COLOURS[token])
        elif token in _SIZES:
            attributes.add("size:" + _SIZES[token])
        elif token[0].isdigit() and token.replace(".", "", 1).isdigit():
            attributes.add("n:" + _number(token))
        elif any(c.isdigit() for c in token):
            attributes.add(token)  # a model code such as ``a200`` names the product exactly
        else:
            words.append(token)
    return TitleKey(words=" ".join(words), attributes=frozenset(attributes))


def _mark(attributes: set[str], attribute: str | None) -> str:
    """Record an attribute (if any) and take its text out (replaced by a space)."""
    if attribute:
        attributes.add(attribute)
    return " "


def _pack(count: str) -> str | None:
    """``pack12``; a pack of one is the item itself (no attribute)."""
    return None if int(count) == 1 else f"pack{int(count)}"


def _number(text: str) -> str:
    """``0,50`` -> ``0.5``; ``1.0`` -> ``1``; ``007`` -> ``7`` (as a quantity, not as a code)."""
    try:
        value = Decimal(text.replace(",", "."))
    except InvalidOperation:
        return text
    return format(value.normalize(), "f") if value else "0"
