"""Page layout: the words of a PDF page as visual lines of positioned cells, and column alignment.

* :func:`document_lines` - every page's text as :class:`Line` s (top to bottom), each a row of
  :class:`Cell` s: a ruled-table row (one cell per table cell), or words grouped by position and split
  into cells at gaps wider than about two spaces (of the page's own spacing: some PDFs set words far
  apart). A right-to-left cell's words are joined right to left.
* :func:`align_columns` - which header column a body column of a text table belongs to. Real documents
  rarely print values under the middle of their header: numbers are right-aligned past a centred ``QTY``,
  a price sits between two labels. Assigning each value to the header cell it overlaps most then puts a
  quantity into the price column. Instead the body's own columns are found first - the x ranges where the
  cells of the table's rows line up (*bands*, :func:`bands_of`: overlapping cells of different rows merged)
  - and the bands are matched to the header columns *in order*, left to right, by a small dynamic program
  that keeps every band in one column, prefers one band per column, and otherwise keeps each band near
  its column.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poflow_dagster.extraction.text_norm import is_rtl

if TYPE_CHECKING:
    from poflow_dagster.extraction.pdf import PdfDocument, PdfTableRow, PdfWord

__all__ = ["Cell", "Column", "Line", "Span", "align_columns", "bands_of", "cell_of", "document_lines", "overlap"]

Span = tuple[float, float]

#: Cost of a header column that gets no band, and of a band that shares a column with its left neighbour
#: (in points; much larger than any distance on a page so the counts decide first).
_EMPTY_COLUMN = 2000.0
_SHARED_COLUMN = 1500.0


def bands_of(rows: Sequence[Sequence[Span]]) -> list[Span]:
    """The x ranges where cells of several rows line up: overlapping cells merged, left to right."""
    spans = sorted(span for row in rows for span in row)
    bands: list[list[float]] = []
    for x0, x1 in spans:
        if bands and x0 < bands[-1][1]:
            bands[-1][1] = max(bands[-1][1], x1)
        else:
            bands.append([x0, x1])
    return [(a, b) for a, b in bands]


def _distance(band: Span, column: Span) -> float:
    """The gap between them (0 when they overlap), ties broken by how far apart their centres are."""
    gap = max(0.0, max(band[0], column[0]) - min(band[1], column[1]))
    centres = abs((band[0] + band[1]) - (column[0] + column[1])) / 2
    return gap + 0.01 * centres


def align_columns(columns: Sequence[Span], bands: Sequence[Span]) -> list[int | None]:
    """For each band, the index of the header column it belongs to (order kept), or None if no columns."""
    if not columns or not bands:
        return [None] * len(bands)

    @functools.lru_cache(maxsize=None)
    def best(b: int, c: int, open_: bool) -> tuple[float, tuple[int, ...]]:
        """Cheapest placement of bands[b:] when column c is the current one (``open_``: it has no band yet)."""
        if b == len(bands):
            empty = (1 if open_ else 0) + (len(columns) - c - 1)
            return empty * _EMPTY_COLUMN, ()
        options = []
        here = _distance(bands[b], columns[c]) + (0.0 if open_ else _SHARED_COLUMN)
        cost, rest = best(b + 1, c, False)
        options.append((here + cost, (c, *rest)))
        if c + 1 < len(columns):
            cost, rest = best(b, c + 1, True)
            options.append((cost + (_EMPTY_COLUMN if open_ else 0.0), rest))
        return min(options)

    return list(best(0, 0, True)[1])


# --- lines of positioned cells ------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A run of text on one line (a phrase, or a ruled-table cell)."""

    text: str
    x0: float
    x1: float
    words: tuple[PdfWord, ...] = ()


@dataclass(frozen=True)
class Line:
    """One visual line (or ruled-table row) of a page, cells left to right."""

    page: int
    top: float
    bottom: float
    cells: tuple[Cell, ...]

    @property
    def text(self) -> str:
        return " ".join(cell.text for cell in self.cells)

    @property
    def height(self) -> float:
        heights = [w.bottom - w.top for c in self.cells for w in c.words]
        return sorted(heights)[len(heights) // 2] if heights else self.bottom - self.top


def document_lines(doc: PdfDocument, *, ruled: bool = True) -> list[Line]:
    """All lines of the document in reading order (page, then top to bottom); ``ruled=False`` reads the
    words only, ignoring what pdfplumber took for ruled tables (a page frame is no table)."""
    lines: list[Line] = []
    for page in doc.pages:
        tables = page.tables if ruled else []
        page_lines = [_table_line(page.number, row) for table in tables for row in table.rows]
        free = [w for w in page.words if not any(_inside(w, t.bbox) for t in tables)]
        rows = _group_rows(free)
        space = _word_space(rows)
        page_lines += [_word_line(page.number, row, space) for row in rows]
        lines += sorted(page_lines, key=lambda line: (line.top, line.cells[0].x0))
    return lines


def _inside(word: PdfWord, bbox: tuple[float, float, float, float]) -> bool:
    cx, cy = (word.x0 + word.x1) / 2, (word.top + word.bottom) / 2
    return bbox[0] <= cx <= bbox[2] and bbox[1] <= cy <= bbox[3]


def _table_line(page: int, row: PdfTableRow) -> Line:
    return Line(page, row.top, row.bottom, tuple(Cell(c.text, c.x0, c.x1) for c in row.cells))


def _group_rows(words: Sequence[PdfWord]) -> list[list[PdfWord]]:
    """Group words into visual lines (vertical centre within the line's band)."""
    rows: list[list[PdfWord]] = []
    band = (0.0, 0.0)
    for word in sorted(words, key=lambda w: (w.top, w.x0)):
        middle = (word.top + word.bottom) / 2
        if rows and band[0] <= middle <= band[1]:
            rows[-1].append(word)
        else:
            rows.append([word])
            band = (word.top, word.bottom)
    return rows


#: Word gap / font height above which a page counts as set with wide word spacing (normal text: ~0.25).
_WIDE_SPACING = 0.4


def _word_space(rows: Sequence[Sequence[PdfWord]]) -> float:
    """The page's typical gap between two words of a phrase when the page sets words unusually far apart
    (median of the gaps narrower than the font), else 0."""
    ratios = []
    for row in rows:
        ordered = sorted(row, key=lambda w: w.x0)
        for prev, word in zip(ordered, ordered[1:]):
            gap, height = word.x0 - prev.x1, prev.bottom - prev.top
            if 0 < gap < height:
                ratios.append((gap / height, gap))
    if len(ratios) < 5:
        return 0.0
    ratio, gap = sorted(ratios)[len(ratios) // 2]
    return gap if ratio > _WIDE_SPACING else 0.0


def _word_line(page: int, words: list[PdfWord], space: float = 0.0) -> Line:
    """A line of words split into cells wherever the gap is wider than about two spaces (of this page's
    usual word spacing: some PDFs set words far apart)."""
    words = sorted(words, key=lambda w: w.x0)
    groups: list[list[PdfWord]] = [[words[0]]]
    for prev, word in zip(words, words[1:]):
        gap = word.x0 - prev.x1
        if gap > max(3.0, 0.5 * (prev.bottom - prev.top), 1.6 * space):
            groups.append([word])
        else:
            groups[-1].append(word)
    cells = tuple(cell_of(group) for group in groups)
    return Line(page, min(w.top for w in words), max(w.bottom for w in words), cells)


def cell_of(words: Sequence[PdfWord]) -> Cell:
    """A cell of words left to right; a right-to-left cell's words are joined right to left."""
    text = " ".join(w.text for w in words)
    if len(words) > 1 and is_rtl(text):
        text = " ".join(w.text for w in reversed(words))
    return Cell(text, min(w.x0 for w in words), max(w.x1 for w in words), tuple(words))


@dataclass(frozen=True)
class Column:
    """A header cell: the field it holds (None = a column we do not read) and its span."""

    name: str | None
    x0: float
    x1: float


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)
