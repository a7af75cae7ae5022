"""Text as printed -> text as written: full-width forms folded, right-to-left words put in reading order.

* :func:`fold_width` turns CJK full-width digits, letters and punctuation (``１２，３４０円``) and other
  compatibility forms (ligatures ``ﬁ``, Arabic presentation forms) into their plain forms with Unicode
  NFKC, but only in text that has such characters, so ordinary text is never touched.
* PDFs store glyphs where they are drawn, and pdfplumber reads them left to right. For Hebrew or Arabic
  that is the *visual* order: the letters of a word come out reversed. :func:`logical_order` re-orders
  one word (letters of right-to-left runs reversed, numbers and Latin runs kept as they read), and
  :func:`is_rtl` says whether a run of words is right-to-left so the words of a cell can be joined right
  to left. The direction of each character comes from ``unicodedata.bidirectional`` (no bidi library).
"""

from __future__ import annotations

import unicodedata

__all__ = ["fold_width", "is_rtl", "logical_line", "logical_order", "normalize_word"]

#: Bidi classes of strong right-to-left characters (Hebrew; Arabic letters).
_RTL = frozenset({"R", "AL"})
#: Bidi classes that read left to right inside right-to-left text (Latin letters, digits).
_LTR = frozenset({"L", "EN", "AN"})
#: Separators that stay inside a number run (``1,234.50``, ``12/03/2026``, ``10%``).
_NUMBER_JOINERS = frozenset(".,:/-%'")
_MIRRORED = str.maketrans("()[]{}<>", ")(][}{><")


def _needs_fold(char: str) -> bool:
    code = ord(char)
    return 0xFF00 <= code <= 0xFFEF or code == 0x3000 or 0xFB00 <= code <= 0xFDFF or 0xFE70 <= code <= 0xFEFF


def fold_width(text: str) -> str:
    """NFKC-fold full-width and presentation forms (``２０２２年`` -> ``2022年``); other text unchanged."""
    if text.isascii() or not any(_needs_fold(c) for c in text):
        return text
    return unicodedata.normalize("NFKC", text)


def _direction(char: str) -> str:
    kind = unicodedata.bidirectional(char)
    if kind in _RTL:
        return "R"
    if kind in _LTR:
        return "L"
    return "N"


def is_rtl(text: str) -> bool:
    """True when most strong (letter) characters of ``text`` are right-to-left."""
    rtl = sum(1 for c in text if unicodedata.bidirectional(c) in _RTL)
    ltr = sum(1 for c in text if unicodedata.bidirectional(c) == "L")
    return rtl > 0 and rtl >= ltr


def logical_order(word: str) -> str:
    """A word read from a PDF in visual order, in reading order (only words with right-to-left letters change).

    The visual string is reversed as a whole, then every left-to-right run (Latin letters, digits and the
    separators between digits) is reversed back, and brackets are mirrored: ``םולש`` -> ``שלום``,
    ``05.12 ריחמ`` -> ``מחיר 12.50``.
    """
    if not any(unicodedata.bidirectional(c) in _RTL for c in word):
        return word
    reversed_text = word[::-1]
    out: list[str] = []
    run: list[str] = []
    for index, char in enumerate(reversed_text):
        kind = _direction(char)
        joins_number = (
            char in _NUMBER_JOINERS
            and run
            and 0 < index < len(reversed_text) - 1
            and _direction(reversed_text[index + 1]) == "L"
        )
        if kind == "L" or joins_number:
            run.append(char)
            continue
        if run:
            out.append("".join(reversed(run)))
            run = []
        out.append(char.translate(_MIRRORED))
    if run:
        out.append("".join(reversed(run)))
    return "".join(out)


def normalize_word(text: str) -> str:
    """One word as extracted from a PDF, folded and in reading order."""
    return logical_order(fold_width(text))


def logical_line(text: str) -> str:
    """A run of words read in visual order, in reading order: each word re-ordered, and the words of a
    right-to-left run joined right to left (``12.50 ריחמ`` -> ``מחיר 12.50``)."""
    words = [normalize_word(w) for w in text.split()]
    if len(words) > 1 and is_rtl(text):
        words.reverse()
    return " ".join(words)
