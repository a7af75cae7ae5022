"""Column alignment: which header column a body column of a text table belongs to.

Real documents rarely print values under the middle of their header: numbers are right-aligned past a
centred ``QTY``, a price sits between two labels. Assigning each value to the header cell it overlaps most
then puts a quantity into the price column. Instead the body's own columns are found first - the x
ranges where the cells of the table's rows line up (*bands*: overlapping cells of different rows merged)
- and the bands are matched to the header columns *in order*, left to right, by a small dynamic
program that keeps every band in one column, prefers one band per column, and otherwise keeps each band
near its column. Each header column is then widened to cover its band(s).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

__all__ = ["Span", "align_columns", "bands_of"]

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
