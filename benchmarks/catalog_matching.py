"""Catalog matching benchmark (issue 10, part 1): precision and recall of ``match_lines`` on a generated catalog.

    .venv/bin/python benchmarks/catalog_matching.py [--seed 1] [--seeds 1,2,3] [--vendors 20] [--variants 5000]

The catalog: ``--variants`` variants across ``--vendors`` vendors (food, apparel and home goods), built from
products that are near-duplicates on purpose: one noun with several modifiers ("Organic Green Tea", "Green Tea",
"Organic Green Tea Bags"), every product in several sizes / colours / pack counts, the same titles at other
vendors. POs (one per vendor, the supplier named as the vendor is, give or take a legal form and case) whose
lines are

- (a) ``sku``: the merchant's SKU, retyped (case, dashes, spaces), the description noisy;
- (b) ``barcode``: an unknown supplier SKU and the variant's barcode, as UPC-A, EAN-13 or GTIN-14, spaced;
- (c) ``supplier_sku``: a supplier SKU learned earlier (``supplier_sku_map``) and the supplier's own wording;
- (d) ``title``: no usable SKU, the variant's title with noise: case, punctuation, reordered words, unit and pack
  spellings (``500ML``, ``x12``, ``pack of 12``), colour / size spellings, a typo, a dropped or added word;
- (e) ``new``: products the store does not have that resemble ones it does (a size, colour or pack count not
  offered, a sibling flavour, a longer product name).

A line's prediction is the variant of a ``matched`` result; ``ambiguous`` and ``unmatched`` lines predict nothing
(they go to a reviewer). Precision = right predictions / predictions; recall = right predictions / lines whose
product exists. Reported per line kind and per method at the default threshold, then a threshold sweep, then
other seeds, then the time per 1,000 lines (matching alone, and reading the candidates from SQLite + matching).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import random
import statistics
import string
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from poflow_dagster.catalog.config import DEFAULT_FUZZY_THRESHOLD, MatchConfig  # noqa: E402
from poflow_dagster.catalog.match import match_lines  # noqa: E402
from poflow_dagster.catalog.models import CatalogVariant, LineMatch  # noqa: E402
from poflow_dagster.catalog.normalize import sku_key  # noqa: E402
from poflow_dagster.domain.models import POLine  # noqa: E402

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

FOOD = {
    "nouns": ["Tea", "Coffee Beans", "Olive Oil", "Honey", "Pasta", "Granola", "Chocolate Bar", "Peanut Butter",
              "Hot Sauce", "Rice", "Maple Syrup", "Crackers"],
    "modifiers": ["Organic", "Extra Virgin", "Raw Wildflower", "Dark", "Smoked", "Spicy", "Classic", "Artisan",
                  "Whole Grain", "Italian", "Roasted", "Sea Salt", "Vanilla", "Cinnamon", "Lemon", "Ginger",
                  "Earl Grey", "Jasmine", "Chamomile", "Hazelnut", "Almond", "Coconut"],
    "axes": [["100 g", "250 g", "500 g", "1 kg", "250 ml", "500 ml", "750 ml", "1 l"],
             ["6 pack", "12 pack", "24 pack"]],
}
APPAREL = {
    "nouns": ["Crew Tee", "V-Neck Tee", "Hoodie", "Beanie", "Socks", "Tank Top", "Joggers", "Polo Shirt",
              "Sweatshirt", "Cap"],
    "modifiers": ["Cotton", "Organic Cotton", "Merino", "Fleece", "Heavyweight", "Slim Fit", "Relaxed", "Vintage",
                  "Essential", "Performance", "Linen", "Ribbed"],
    "axes": [["Black", "White", "Navy", "Grey", "Red", "Green", "Olive", "Burgundy", "Beige"],
             ["XS", "S", "M", "L", "XL", "XXL"]],
}
HOME = {
    "nouns": ["Water Bottle", "Travel Mug", "Candle", "Bath Towel", "Cutting Board", "Storage Jar", "Tumbler",
              "Lunch Box", "Planter", "Serving Bowl"],
    "modifiers": ["Stainless Steel", "Bamboo", "Glass", "Ceramic", "Insulated", "Scented", "Recycled", "Enamel",
                  "Stoneware", "Copper"],
    "axes": [["350 ml", "500 ml", "750 ml", "1 l", "20 cm", "30 cm"], ["Black", "White", "Blue", "Pink", "Teal",
                                                                         "Silver"]],
}
CATEGORIES = [FOOD, APPAREL, HOME]
VENDOR_WORDS = ["Acme", "Blue River", "Northwind", "Harbor", "Summit", "Oak & Stone", "Golden Field", "Pioneer",
                "Redwood", "Silverline", "Maple Leaf", "Evergreen", "Brightside", "Coastal", "Highland", "Urban",
                "Willow", "Granite", "Sunrise", "Riverbend", "Foxglove", "Ironwood"]
VENDOR_SUFFIXES = ["Foods", "Trading", "Supply", "Goods", "Wholesale"]
LEGAL_FORMS = ["Inc.", "LLC", "Ltd", "Co.", "GmbH", ""]
COLOUR_SPELLINGS = {"Grey": ["Gray", "GREY", "grey"], "Navy": ["NAVY", "navy"], "Burgundy": ["burgundy"]}
SIZE_SPELLINGS = {"XL": ["X-Large", "xl"], "XXL": ["2XL", "XX-Large"], "S": ["Small", "s"], "M": ["Medium", "m"],
                  "L": ["Large", "l"], "XS": ["xs", "X-Small"]}
FILLERS = ["Premium", "New", "Case", "Retail", "Std"]


@dataclasses.dataclass(frozen=True)
class Product:
    vendor: str
    title: str
    options: list[tuple[str, ...]]  # every option combination the store offers
    missing: list[tuple[str, ...]]  # combinations it does not (for "new" lines)


# --- the catalog -----------------------------------------------------------------------------------------------

def make_catalog(rng: random.Random, vendors: int, variants: int) -> tuple[list[CatalogVariant], list[Product],
                                                                          list[Product]]:
    """The catalog, its products, and products the store does not have (siblings of its own)."""
    names = vendor_names(rng, vendors)
    per_vendor = variants // vendors
    catalog: list[CatalogVariant] = []
    products: list[Product] = []
    absent: list[Product] = []
    counter = 0
    shared_titles: list[tuple[dict, str]] = []
    for v, vendor in enumerate(names):
        category = CATEGORIES[v % len(CATEGORIES)]
        titles = product_titles(rng, category, shared_titles)
        made = 0
        for title in titles:
            if made >= per_vendor:
                absent.append(Product(vendor, title, [], offered_options(rng, category)[0]))
                continue
            options, missing = offered_options(rng, category)
            options = options[:per_vendor - made]
            products.append(Product(vendor, title, options, missing))
            for combo in options:
                counter += 1
                catalog.append(catalog_variant(rng, counter, vendor, title, combo))
                made += 1
    return catalog, products, absent


def vendor_names(rng: random.Random, count: int) -> list[str]:
    words = rng.sample(VENDOR_WORDS, count)
    return [f"{word} {rng.choice(VENDOR_SUFFIXES)}" for word in words]


def product_titles(rng: random.Random, category: dict, shared: list[tuple[dict, str]]) -> list[str]:
    """Near-duplicate titles: each noun with several modifiers, some with two, some with a longer name; a few
    titles also sold by another vendor of the category."""
    titles: list[str] = []
    for noun in rng.sample(category["nouns"], len(category["nouns"])):
        modifiers = rng.sample(category["modifiers"], 4)
        titles += [f"{modifiers[0]} {noun}", f"{modifiers[1]} {noun}", f"{modifiers[0]} {modifiers[2]} {noun}",
                   noun, f"{modifiers[3]} {noun}"]
    rng.shuffle(titles)
    borrowed = [title for cat, title in shared if cat is category][:3]
    shared.extend((category, title) for title in titles[:3])
    return list(dict.fromkeys(borrowed + titles))  # each title once per vendor


def offered_options(rng: random.Random, category: dict) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    first, second = category["axes"]
    a = rng.sample(first, min(len(first), rng.randint(2, 4)))
    b = rng.sample(second, min(len(second), rng.randint(1, 3)))
    offered = [(x, y) for x in a for y in b]
    not_a = [x for x in first if x not in a]
    not_b = [y for y in second if y not in b]
    missing = [(x, y) for x in not_a[:2] for y in b[:1]] + [(x, y) for x in a[:1] for y in not_b[:2]]
    return offered, missing


def catalog_variant(rng: random.Random, n: int, vendor: str, title: str, combo: tuple[str, ...]) -> CatalogVariant:
    prefix = "".join(w[0] for w in vendor.split()).upper()
    return CatalogVariant(
        product_gid=f"gid://shopify/Product/{vendor}/{title}".replace(" ", "-"),
        variant_gid=f"gid://shopify/ProductVariant/{n}", inventory_item_gid=f"gid://shopify/InventoryItem/{n}",
        sku=f"{prefix}-{n:05d}", barcode=gtin13(rng) if rng.random() < 0.7 else None, product_title=title,
        variant_title=" / ".join(combo), vendor=vendor, unit_cost=None, price=Decimal("9.99"),
        product_status="ACTIVE", updated_at=T0,
    )


def gtin13(rng: random.Random) -> str:
    body = ("0" if rng.random() < 0.5 else str(rng.randint(1, 9))) + "".join(rng.choices(string.digits, k=11))
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


# --- PO lines --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # sku | barcode | supplier_sku | title | new
    vendor: str
    line: POLine
    barcode: str | None
    expected: str | None  # variant GID, None for a new product
    detail: str = ""  # new products: option (not offered) | sibling (another title) | longer (title + a word)


def make_cases(rng: random.Random, catalog: list[CatalogVariant], products: list[Product], absent: list[Product],
               per_kind: int) -> tuple[list[Case], dict[str, dict[str, str]]]:
    """``per_kind`` lines of each kind, and each supplier's learned SKUs."""
    learned: dict[str, dict[str, str]] = defaultdict(dict)
    cases: list[Case] = []
    with_barcode = [v for v in catalog if v.barcode]
    titles: dict[str, set[frozenset[str]]] = defaultdict(set)
    for product in products:
        titles[product.vendor].add(frozenset(product.title.lower().split()))
    no = 0

    def add(kind: str, vendor: str, sku: str | None, description: str, barcode: str | None, expected: str | None,
            detail: str = ""):
        nonlocal no
        no += 1
        cases.append(Case(kind, vendor, POLine(line_no=no, sku=sku, description=description), barcode, expected,
                          detail))

    for variant in rng.sample(catalog, per_kind):
        add("sku", variant.vendor, retype_sku(rng, variant.sku), noisy_title(rng, variant, titles), None,
            variant.variant_gid)
    for variant in rng.sample(with_barcode, per_kind):
        code = supplier_sku(rng)
        description = rng.choice(["", "see spec", noisy_title(rng, variant, titles)])
        add("barcode", variant.vendor, code, description, spaced_barcode(rng, variant.barcode), variant.variant_gid)
    for variant in rng.sample(catalog, per_kind):
        code = supplier_sku(rng)
        learned[variant.vendor][sku_key(code)] = variant.variant_gid
        add("supplier_sku", variant.vendor, code, f"ITEM {rng.randint(100, 999)} {rng.choice(FILLERS)}", None,
            variant.variant_gid)
    for variant in rng.sample(catalog, per_kind):
        add("title", variant.vendor, rng.choice([None, supplier_sku(rng)]), noisy_title(rng, variant, titles), None,
            variant.variant_gid)
    for _ in range(per_kind):
        detail, vendor, description = new_product_line(rng, products, absent)
        add("new", vendor, None, description, None, None, detail)
    return cases, learned


def retype_sku(rng: random.Random, sku: str) -> str:
    return rng.choice([sku, sku.lower(), sku.replace("-", ""), sku.replace("-", " "), f" {sku.lower()} "])


def supplier_sku(rng: random.Random) -> str:
    return f"S{rng.randint(1, 9)}-{rng.randint(10000, 99999)}"


def spaced_barcode(rng: random.Random, ean13: str) -> str:
    forms = [ean13, ean13.zfill(14), f"{ean13[0]} {ean13[1:7]} {ean13[7:]}"]
    if ean13.startswith("0"):
        forms.append(ean13[1:])  # as UPC-A
    return rng.choice(forms)


def noisy_title(rng: random.Random, variant: CatalogVariant, titles: dict[str, set[frozenset[str]]]) -> str:
    """The variant's title with noise; a dropped word never leaves exactly another product's title of the vendor
    (such a line names that other product: it has no right answer)."""
    return noisy(rng, variant.product_title, tuple((variant.variant_title or "").split(" / ")),
                 titles[variant.vendor] - {frozenset(variant.product_title.lower().split())})


def noisy(rng: random.Random, title: str, combo: tuple[str, ...],
          others: set[frozenset[str]] | None = None) -> str:
    """A supplier's way of writing a product: same product, different text. Words are dropped only when
    ``others`` (other products' titles as word sets) is given and the result is none of them."""
    words = title.split()
    options = [respell(rng, option) for option in combo if option]
    ops = rng.sample(["reorder", "typo", "case", "drop", "filler", "punct", "none"], 2)
    if "drop" in ops and others is not None and len(words) >= 3:
        shorter = words[:]
        shorter.pop(rng.randrange(len(words)))
        if frozenset(w.lower() for w in shorter) not in others:
            words = shorter
    if "reorder" in ops:
        rng.shuffle(words)
    if "typo" in ops:
        long = [i for i, w in enumerate(words) if len(w) >= 5]
        if long:
            i = rng.choice(long)
            words[i] = typo(rng, words[i])
    if "filler" in ops:
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
    sep = rng.choice([" ", ", ", " - "]) if "punct" in ops else " "
    name, sizes = " ".join(words), " ".join(options)
    text = name + sep + sizes if rng.random() < 0.8 else sizes + sep + name
    if "case" in ops:
        text = rng.choice([text.upper(), text.lower()])
    return text


def respell(rng: random.Random, option: str) -> str:
    if option in COLOUR_SPELLINGS and rng.random() < 0.5:
        return rng.choice(COLOUR_SPELLINGS[option])
    if option in SIZE_SPELLINGS and rng.random() < 0.5:
        return rng.choice(SIZE_SPELLINGS[option])
    number, _, unit = option.partition(" ")
    if unit == "pack":
        return rng.choice([f"{number} pack", f"x{number}", f"pack of {number}", f"{number}pk", f"{number}-pack"])
    if unit in ("g", "kg", "ml", "l", "cm"):
        return rng.choice([option, f"{number}{unit}", f"{number}{unit.upper()}", f"{number} {unit.upper()}"])
    return option


def typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["swap", "drop", "double"])
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def new_product_line(rng: random.Random, products: list[Product], absent: list[Product]) -> tuple[str, str, str]:
    """A product the store lacks (kind, vendor, description): an option not offered, a sibling title of the
    vendor, or a longer name."""
    kind = rng.choice(["option", "sibling", "longer"])
    if kind == "sibling" and absent:
        product = rng.choice(absent)
        return kind, product.vendor, noisy(rng, product.title, rng.choice(product.missing))
    product = rng.choice([p for p in products if p.missing])
    if kind == "option":
        return kind, product.vendor, noisy(rng, product.title, rng.choice(product.missing))
    longer = f"{product.title} {rng.choice(['Refill', 'Gift Set', 'Mini', 'Sampler', 'Travel Kit'])}"
    return "longer", product.vendor, noisy(rng, longer, rng.choice(product.options))


# --- running and scoring ---------------------------------------------------------------------------------------

def supplier_name(rng: random.Random, vendor: str) -> str:
    name = f"{vendor} {rng.choice(LEGAL_FORMS)}".strip()
    return rng.choice([name, name.upper(), name.lower()])


def run(cases: list[Case], catalog: list[CatalogVariant], learned: dict[str, dict[str, str]],
        suppliers: dict[str, str], config: MatchConfig) -> list[tuple[Case, LineMatch]]:
    """One PO per vendor, matched against the whole catalog."""
    by_vendor: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_vendor[case.vendor].append(case)
    results: list[tuple[Case, LineMatch]] = []
    for vendor, vendor_cases in sorted(by_vendor.items()):
        matches = match_lines([c.line for c in vendor_cases], catalog, learned.get(vendor, {}),
                              supplier=suppliers[vendor], config=config,
                              barcodes={c.line.line_no: c.barcode for c in vendor_cases if c.barcode})
        results += zip(vendor_cases, matches, strict=True)
    return results


@dataclasses.dataclass
class Tally:
    lines: int = 0
    predicted: int = 0
    right: int = 0
    ambiguous: int = 0
    exists: int = 0

    def add(self, case: Case, match: LineMatch) -> None:
        self.lines += 1
        self.exists += case.expected is not None
        self.ambiguous += match.status == "ambiguous"
        if match.status == "matched":
            self.predicted += 1
            self.right += match.variant_gid == case.expected

    @property
    def precision(self) -> float:
        return self.right / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.right / self.exists if self.exists else float("nan")


def tallies(results: Iterable[tuple[Case, LineMatch]], key) -> dict[str, Tally]:
    out: dict[str, Tally] = defaultdict(Tally)
    for case, match in results:
        out[key(case, match)].add(case, match)
        out["overall"].add(case, match)
    return out


def fmt(value: float) -> str:
    return "—" if value != value else f"{value:.3f}"


def report_kinds(results) -> None:
    print("\n| line kind | lines | matched | right | wrong | ambiguous | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, tally in sorted(tallies(results, lambda c, m: c.kind).items(), key=lambda kv: kv[0] == "overall"):
        print(f"| {kind} | {tally.lines} | {tally.predicted} | {tally.right} | {tally.predicted - tally.right} | "
              f"{tally.ambiguous} | {fmt(tally.precision)} | {fmt(tally.recall)} |")
    print("\n| method (as matched) | matched | right | wrong | precision |")
    print("|---|---:|---:|---:|---:|")
    by_method = tallies(((c, m) for c, m in results if m.status == "matched"), lambda c, m: m.method)
    for method, tally in sorted(by_method.items(), key=lambda kv: kv[0] == "overall"):
        print(f"| {method} | {tally.predicted} | {tally.right} | {tally.predicted - tally.right} | "
              f"{fmt(tally.precision)} |")
    print("\n| status | lines |")
    print("|---|---:|")
    for status, count in sorted(Counter(m.status for _, m in results).items()):
        print(f"| {status} | {count} |")


def sweep(cases, catalog, learned, suppliers, thresholds) -> None:
    print("\n| threshold | overall precision | overall recall | title-line recall | fuzzy matches | fuzzy wrong | "
          "new products matched: option / sibling / longer |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for threshold in thresholds:
        results = run(cases, catalog, learned, suppliers, MatchConfig(fuzzy_threshold=threshold))
        overall = tallies(results, lambda c, m: c.kind)
        fuzzy = [(c, m) for c, m in results if m.status == "matched" and m.method == "fuzzy_title"]
        wrong = sum(m.variant_gid != c.expected for c, m in fuzzy)
        mark = " (default)" if threshold == DEFAULT_FUZZY_THRESHOLD else ""
        new = Counter(c.detail for c, m in results if c.kind == "new" and m.status == "matched")
        print(f"| {threshold:g}{mark} | {fmt(overall['overall'].precision)} | {fmt(overall['overall'].recall)} | "
              f"{fmt(overall['title'].recall)} | {len(fuzzy)} | {wrong} | "
              f"{new['option']} / {new['sibling']} / {new['longer']} |")


def margin_sweep(cases, catalog, learned, suppliers, margins) -> None:
    print("\n| ambiguity margin (default threshold) | overall precision | overall recall | fuzzy wrong | "
          "ambiguous lines |")
    print("|---:|---:|---:|---:|---:|")
    for margin in margins:
        results = run(cases, catalog, learned, suppliers, MatchConfig(ambiguity_margin=margin))
        overall = tallies(results, lambda c, m: c.kind)["overall"]
        mark = " (default)" if margin == MatchConfig().ambiguity_margin else ""
        print(f"| {margin:g}{mark} | {fmt(overall.precision)} | {fmt(overall.recall)} | "
              f"{overall.predicted - overall.right} | {overall.ambiguous} |")


def timing(cases, catalog, learned, suppliers, repeat: int) -> None:
    """Matching alone (the whole catalog given, as above), and candidates read from SQLite then matched."""
    config = MatchConfig()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(cases, catalog, learned, suppliers, config)
        seconds.append(time.perf_counter() - started)
    per_1000 = statistics.median(seconds) / len(cases) * 1000
    print(f"\nmatch_lines, whole catalog ({len(catalog):,} variants) given to each of {len(suppliers)} POs: "
          f"{len(cases):,} lines in {statistics.median(seconds) * 1000:.0f} ms (median of {repeat}) = "
          f"{per_1000 * 1000:.0f} ms per 1,000 lines")
    timing_sqlite(cases, catalog, learned, suppliers, repeat)


def timing_sqlite(cases, catalog, learned, suppliers, repeat: int) -> None:
    from poflow_dagster.catalog.store import learn_supplier_sku, load_match_inputs, upsert_catalog_variants
    from poflow_dagster.store.db import Database
    from poflow_dagster.store.schema import Merchant

    shop = "https://bench.myshopify.com"
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.sqlite3")
        db.migrate()
        with db.session() as session:
            session.add(Merchant(id="bench", name="bench", markup_percent=Decimal(40)))
        started = time.perf_counter()
        upsert_catalog_variants(db, "bench", shop, catalog)
        upsert_seconds = time.perf_counter() - started
        with db.session() as session:
            for vendor, skus in learned.items():
                for key, gid in skus.items():
                    learn_supplier_sku(session.connection(), "bench", shop, suppliers[vendor], key, gid, None)
        by_vendor: dict[str, list[Case]] = defaultdict(list)
        for case in cases:
            by_vendor[case.vendor].append(case)
        seconds, read_seconds, candidates = [], [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            read = 0.0
            candidates = 0
            for vendor, vendor_cases in sorted(by_vendor.items()):
                lines = [c.line for c in vendor_cases]
                barcodes = {c.line.line_no: c.barcode for c in vendor_cases if c.barcode}
                before = time.perf_counter()
                inputs = load_match_inputs(db, "bench", shop, suppliers[vendor], lines, barcodes)
                read += time.perf_counter() - before
                candidates += len(inputs.catalog)
                match_lines(lines, inputs.catalog, inputs.supplier_map, supplier=suppliers[vendor],
                            barcodes=barcodes)
            seconds.append(time.perf_counter() - started)
            read_seconds.append(read)
        db.dispose()
    total = statistics.median(seconds)
    print(f"SQLite: catalog upsert of {len(catalog):,} variants {upsert_seconds * 1000:.0f} ms; per PO, candidates "
          f"read ({candidates:,} rows in all) then matched: {total * 1000:.0f} ms for {len(cases):,} lines "
          f"(reads {statistics.median(read_seconds) * 1000:.0f} ms) = {total / len(cases) * 1e6:.0f} ms per "
          f"1,000 lines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", default="2,3,4", help="more seeds, overall numbers only")
    parser.add_argument("--vendors", type=int, default=20)
    parser.add_argument("--variants", type=int, default=5000)
    parser.add_argument("--per-kind", type=int, default=400, help="PO lines of each kind")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    def build(seed: int):
        rng = random.Random(seed)
        catalog, products, absent = make_catalog(rng, args.vendors, args.variants)
        cases, learned = make_cases(rng, catalog, products, absent, args.per_kind)
        suppliers = {vendor: supplier_name(rng, vendor) for vendor in {v.vendor for v in catalog}}
        return cases, catalog, learned, suppliers

    cases, catalog, learned, suppliers = build(args.seed)
    print(f"seed {args.seed}: {len(catalog):,} variants, {len({v.vendor for v in catalog})} vendors, "
          f"{len({(v.vendor, v.product_title) for v in catalog}):,} products; {len(cases):,} PO lines; default "
          f"threshold {DEFAULT_FUZZY_THRESHOLD:g}, ambiguity margin {MatchConfig().ambiguity_margin:g}")
    report_kinds(run(cases, catalog, learned, suppliers, MatchConfig()))
    sweep(cases, catalog, learned, suppliers, [60, 70, 75, 80, 85, 88, 90, 92, 95, 98])
    margin_sweep(cases, catalog, learned, suppliers, [0, 2, 5, 10, 15])
    print("\n| seed | overall precision | overall recall | title-line recall | fuzzy precision | wrong | "
          "new products matched |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for seed in [args.seed] + [int(s) for s in args.seeds.split(",") if s]:
        results = run(*build(seed), MatchConfig())
        t = tallies(results, lambda c, m: c.kind)
        fuzzy = tallies(((c, m) for c, m in results if m.method == "fuzzy_title"), lambda c, m: m.method)
        print(f"| {seed} | {fmt(t['overall'].precision)} | {fmt(t['overall'].recall)} | {fmt(t['title'].recall)} | "
              f"{fmt(fuzzy['overall'].precision)} ({fuzzy['overall'].right}/{fuzzy['overall'].predicted}) | "
              f"{t['overall'].predicted - t['overall'].right} | {t['new'].predicted} |")
    timing(cases, catalog, learned, suppliers, args.repeat)


if __name__ == "__main__":
    main()
