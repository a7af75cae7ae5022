"""Matching settings, read from the environment when asked for (never at import)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The fuzzy-title score (0–100, rapidfuzz ``token_sort_ratio`` of the titles' words) a match needs; chosen by
#: ``benchmarks/catalog_matching.py`` (BENCHMARKS.md, "Catalog matching: precision and recall").
DEFAULT_FUZZY_THRESHOLD = 90.0
#: A second candidate scoring within this many points of the best makes a fuzzy match ambiguous.
DEFAULT_AMBIGUITY_MARGIN = 5.0


@dataclass(frozen=True)
class MatchConfig:
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD
    ambiguity_margin: float = DEFAULT_AMBIGUITY_MARGIN
    #: Near misses kept on an unmatched line for a reviewer: at most this many, scoring at least ``suggest_floor``.
    suggestions: int = 3
    suggest_floor: float = 60.0

    @classmethod
    def from_env(cls) -> MatchConfig:
        """``POFLOW_MATCH_FUZZY_THRESHOLD`` (0–100) and ``POFLOW_MATCH_AMBIGUITY_MARGIN`` (points), else defaults."""
        return cls(
            fuzzy_threshold=_points("POFLOW_MATCH_FUZZY_THRESHOLD", DEFAULT_FUZZY_THRESHOLD),
            ambiguity_margin=_points("POFLOW_MATCH_AMBIGUITY_MARGIN", DEFAULT_AMBIGUITY_MARGIN),
        )


def _points(name: str, default: float) -> float:
    return _number_from_env(name, default, 100.0, "a score from 0 to 100")


def seconds_from_env(name: str, default: float) -> float:
    """A non-negative number of seconds from the environment, else ``default`` (a bad value is logged)."""
    return _number_from_env(name, default, float("inf"), "a number of seconds")


def _number_from_env(name: str, default: float, most: float, what: str) -> float:
    """A number from 0 to ``most`` from the environment, else ``default`` (unset, or bad: logged)."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= most:
        log.warning("%s=%r is not %s; using %s", name, raw, what, default)
        return default
    return value
