"""Which variant of the merchant's Shopify catalog each PO line is: a pure, deterministic function.

The order of evidence, strongest first:

1. **SKU**: the line's SKU equals a variant's SKU (``sku_key``: case, spaces and dashes ignored).
2. **Barcode**: the line's barcode equals a variant's barcode as GTIN-14 (UPC-A = EAN-13 = GTIN-14).
3. **Supplier SKU**: a reviewer approved this supplier's SKU as this variant before (``supplier_sku_map``).
   A learned entry also overrides a SKU or barcode hit that disagrees with it: it records a reviewer's
   correction of exactly that hit (the supplier's SKU happened to be another product's SKU in the store).
4. **Fuzzy title**: the line's description against the titles of the PO supplier's vendor only, with sizes,
   units, pack counts, colours and other numbers required to be identical (``title_key``) and the remaining
   words scored with rapidfuzz ``token_sort_ratio``; a score at or above ``fuzzy_threshold`` matches.

A SKU or barcode found on several variants (narrowed to the supplier's vendor's when it has any), or a
second fuzzy candidate within ``ambiguity_margin`` of the best, makes the line ``ambiguous``: every such
candidate is listed and none is chosen. Ties are broken by variant GID, so the result never depends on
catalog order.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from poflow_dagster.catalog.config import MatchConfig
from poflow_dagster.catalog.models import Candidate, CatalogVariant, LineMatch, MatchableLine, Method, full_title
from poflow_dagster.catalog.normalize import barcode_key, sku_key, supplier_key, title_key

EXACT_SCORE = 100.0


def match_lines(
    lines: Iterable[MatchableLine],
    catalog: Iterable[CatalogVariant],
    supplier_map: Mapping[str, str],
    *,
    supplier: str | None,
    config: MatchConfig | None = None,
    barcodes: Mapping[int, str] | None = None,
) -> list[LineMatch]:
    """Match each line (in the order given) against ``catalog``.

    ``supplier_map`` is this supplier's learned ``{sku_key: variant_gid}`` (``learned_supplier_skus``);
    ``supplier`` the PO's supplier name (fuzzy matching looks only at variants whose vendor has the same
    ``supplier_key``); ``barcodes`` the lines' barcodes by ``line_no`` (``POLine.barcode``);
    ``config`` the thresholds (``None``: the defaults; the pipeline passes ``MatchConfig.from_env()``)."""
    index = CatalogIndex(catalog)
    matcher = _LineMatcher(index, supplier_map, supplier_key(supplier), config or MatchConfig())
    barcodes = barcodes or {}
    return [matcher.match(line, barcodes.get(line.line_no)) for line in lines]


@dataclass
class _FuzzyGroup:
    """A vendor's variants whose titles have one set of attributes: their words, in variant-GID order."""

    words: list[str] = field(default_factory=list)
    variants: list[CatalogVariant] = field(default_factory=list)


class CatalogIndex:
    """The catalog by GID, SKU key, barcode key, and vendor key + title attributes (built once per call)."""

    def __init__(self, catalog: Iterable[CatalogVariant]) -> None:
        self.by_gid: dict[str, CatalogVariant] = {}
        for variant in catalog:
            self.by_gid.setdefault(variant.variant_gid, variant)
        self.by_sku: dict[str, list[CatalogVariant]] = defaultdict(list)
        self.by_barcode: dict[str, list[CatalogVariant]] = defaultdict(list)
        self.vendor_of: dict[str, str | None] = {}
        self.fuzzy: dict[tuple[str, frozenset[str]], _FuzzyGroup] = defaultdict(_FuzzyGroup)
        for gid in sorted(self.by_gid):
            self._add(self.by_gid[gid])

    def _add(self, variant: CatalogVariant) -> None:
        if (key := sku_key(variant.sku)) is not None:
            self.by_sku[key].append(variant)
        if (key := barcode_key(variant.barcode)) is not None:
            self.by_barcode[key].append(variant)
        vendor = self.vendor_of[variant.variant_gid] = supplier_key(variant.vendor)
        title = title_key(full_title(variant))
        if vendor is not None and title.words:
            group = self.fuzzy[(vendor, title.attributes)]
            group.words.append(title.words)
            group.variants.append(variant)


class _LineMatcher:
    def __init__(self, index: CatalogIndex, supplier_map: Mapping[str, str], vendor: str | None,
                 config: MatchConfig) -> None:
        self.index, self.supplier_map, self.vendor, self.config = index, supplier_map, vendor, config

    def match(self, line: MatchableLine, barcode: str | None) -> LineMatch:
        key = sku_key(line.sku)
        learned = self.index.by_gid.get(self.supplier_map.get(key, "")) if key is not None else None
        for method, hits in (("sku", self.index.by_sku.get(key or "")),
                             ("barcode", self.index.by_barcode.get(barcode_key(barcode) or ""))):
            if hits:
                exact = self._exact(line.line_no, hits, method)
                if learned is not None and exact.variant_gid != learned.variant_gid:
                    break  # the reviewer's learned answer for this supplier SKU wins
                return exact
        if learned is not None:
            return self._matched(line.line_no, learned, "supplier_sku", EXACT_SCORE)
        return self._fuzzy(line)

    def _exact(self, line_no: int, hits: Sequence[CatalogVariant], method: Method) -> LineMatch:
        """One variant with this key: matched. Several: those of the supplier's vendor if any; one left is
        matched, several are ambiguous."""
        if len(hits) > 1:
            own = [variant for variant in hits if self.index.vendor_of[variant.variant_gid] == self.vendor]
            hits = own or hits
        if len(hits) == 1:
            return self._matched(line_no, hits[0], method, EXACT_SCORE)
        return LineMatch(line_no=line_no, method=method, score=EXACT_SCORE, status="ambiguous",
                         candidates=tuple(_candidate(v, EXACT_SCORE, method) for v in hits))

    def _matched(self, line_no: int, variant: CatalogVariant, method: Method, score: float) -> LineMatch:
        return LineMatch(line_no=line_no, method=method, score=score, status="matched",
                         variant_gid=variant.variant_gid, candidates=(_candidate(variant, score, method),))

    def _fuzzy(self, line: MatchableLine) -> LineMatch:
        """The vendor's variants with the same title attributes, scored on the remaining words."""
        scored = self._scored(_without_sku(line.description, line.sku))
        config = self.config
        if not scored or scored[0].score < config.fuzzy_threshold:
            return LineMatch(line_no=line.line_no, method="none", score=scored[0].score if scored else 0.0,
                             status="unmatched", candidates=tuple(scored[:config.suggestions]))
        close = [c for c in scored if c.score >= scored[0].score - config.ambiguity_margin]
        if len(close) > 1:
            return LineMatch(line_no=line.line_no, method="fuzzy_title", score=close[0].score, status="ambiguous",
                             candidates=tuple(close))
        best = close[0]
        return LineMatch(line_no=line.line_no, method="fuzzy_title", score=best.score, status="matched",
                         variant_gid=best.variant_gid, candidates=(best,))

    def _scored(self, description: str | None) -> list[Candidate]:
        """Candidates scoring at least ``suggest_floor``, best first (ties by variant GID)."""
        if self.vendor is None:
            return []
        key = title_key(description)
        group = self.index.fuzzy.get((self.vendor, key.attributes))
        if group is None or not key.words:
            return []
        hits = process.extract(key.words, group.words, scorer=fuzz.token_sort_ratio,
                               score_cutoff=self.config.suggest_floor, limit=None)
        scored = [_candidate(group.variants[i], round(score, 1), "fuzzy_title") for _, score, i in hits]
        return sorted(scored, key=lambda c: (-c.score, c.variant_gid))


def _without_sku(description: str | None, sku: str | None) -> str | None:
    """The description without the line's own SKU (``ABC-123 Olive Oil 500 ml``): a code is not a title word."""
    if not description or not sku or not sku.strip():
        return description
    return re.sub(re.escape(sku.strip()), " ", description, flags=re.IGNORECASE)


def _candidate(variant: CatalogVariant, score: float, method: Method) -> Candidate:
    return Candidate(variant_gid=variant.variant_gid, sku=variant.sku, title=full_title(variant),
                     vendor=variant.vendor, score=score, method=method)
