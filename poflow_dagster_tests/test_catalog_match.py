"""Catalog matching rules (pure): match keys, and which variant each PO line is."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from poflow_dagster.catalog.config import DEFAULT_FUZZY_THRESHOLD, MatchConfig
from poflow_dagster.catalog.match import match_lines
from poflow_dagster.catalog.models import CatalogVariant
from poflow_dagster.catalog.normalize import barcode_key, sku_key, supplier_key, title_key
from poflow_dagster.domain.models import POLine

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def variant(gid: str, title: str, *, sku: str | None = None, barcode: str | None = None, vendor: str = "Acme",
            variant_title: str | None = None) -> CatalogVariant:
    return CatalogVariant(
        product_gid=f"gid://shopify/Product/{gid}", variant_gid=f"gid://shopify/ProductVariant/{gid}",
        inventory_item_gid=None, sku=sku, barcode=barcode, product_title=title, variant_title=variant_title,
        vendor=vendor, unit_cost=None, price=Decimal("9.99"), product_status="ACTIVE", updated_at=T0,
    )


def gid(n: str) -> str:
    return f"gid://shopify/ProductVariant/{n}"


def line(no: int = 1, sku: str | None = None, description: str | None = None) -> POLine:
    return POLine(line_no=no, sku=sku, description=description)


def match_one(po_line: POLine, catalog, supplier_map=None, *, supplier="Acme", barcodes=None, config=None):
    [result] = match_lines([po_line], catalog, supplier_map or {}, supplier=supplier, config=config,
                           barcodes=barcodes)
    return result


# --- keys ------------------------------------------------------------------------------------------------------

def test_sku_keys_ignore_case_spaces_and_dashes_but_never_merge_different_characters():
    assert sku_key(" ab-12 x") == sku_key("AB12X") == sku_key("ab\u201312\u00a0X") == "AB12X"
    assert sku_key("007") != sku_key("7")
    assert sku_key("AB12X") != sku_key("AB12Y")
    assert sku_key("AB.12") != sku_key("AB12")
    assert sku_key(" - ") is None and sku_key(None) is None


def test_upc_a_ean_13_and_gtin_14_of_one_item_share_a_key():
    assert barcode_key("012345678905") == barcode_key("0012345678905") == barcode_key("00012345678905")
    assert barcode_key("0 12345 67890 5") == barcode_key("012345678905") == "00012345678905"
    assert barcode_key("4006381333931") == "04006381333931"  # an EAN-13
    assert barcode_key("96385074") == "00000096385074"  # a GTIN-8


@pytest.mark.parametrize("code", ["012345678906", "12345678905", "0123456789AB", "", "00000000000000", None])
def test_barcodes_with_a_wrong_check_digit_length_or_characters_have_no_key(code):
    assert barcode_key(code) is None


def test_supplier_keys_ignore_legal_forms_case_and_punctuation():
    assert supplier_key("ACME, Inc.") == supplier_key("Acme") == supplier_key("The Acme Co.") == "acme"
    assert supplier_key("Smith & Sons Ltd") == supplier_key("smith and sons") == "smith and sons"
    assert supplier_key("Acme") != supplier_key("Acme Foods")


def test_title_keys_keep_sizes_units_packs_and_colours_as_exact_attributes():
    assert title_key("Olive Oil 500 ML").attributes == title_key("olive oil 500ml").attributes
    assert title_key("Olive Oil 500 ml").attributes != title_key("Olive Oil 0.5 l").attributes
    assert title_key("Cola 12 x 330ml").attributes == title_key("Cola 330 ml (pack of 12)").attributes
    assert title_key("Cola 330ml 1-pack").attributes == title_key("Cola 330ml").attributes
    assert title_key("Tee X-Large Gray").attributes == title_key("tee grey XL").attributes
    assert title_key("Tee Red M").attributes != title_key("Tee Blue M").attributes
    assert title_key("Drill A200").attributes != title_key("Drill A300").attributes
    assert title_key("Café Crème Biscuits").words == title_key("cafe creme biscuits").words


# --- matching --------------------------------------------------------------------------------------------------

def test_an_exact_sku_matches_whatever_the_title_says():
    catalog = [variant("1", "Olive Oil 500 ml", sku="OO-500"), variant("2", "Olive Oil 1 l", sku="OO-1000")]
    result = match_one(line(sku="oo 500", description="something else entirely"), catalog)
    assert (result.status, result.method, result.variant_gid, result.score) == ("matched", "sku", gid("1"), 100)


def test_a_barcode_matches_across_upc_and_ean_spellings():
    catalog = [variant("1", "Olive Oil 500 ml", barcode="0012345678905"), variant("2", "Other", sku="X")]
    result = match_one(line(sku="SUP-9", description="Oil"), catalog, barcodes={1: "012345678905"})
    assert (result.status, result.method, result.variant_gid) == ("matched", "barcode", gid("1"))
    assert match_one(line(sku="SUP-9"), catalog, barcodes={1: "012345678906"}).status == "unmatched"


def test_a_sku_on_several_variants_is_ambiguous_unless_one_is_the_suppliers_vendor():
    catalog = [variant("1", "Mug", sku="M-1", vendor="Acme"), variant("2", "Mug", sku="M-1", vendor="Acme"),
               variant("3", "Mug", sku="M-1", vendor="Other Co")]
    result = match_one(line(sku="M-1"), catalog)
    assert (result.status, result.method, result.variant_gid) == ("ambiguous", "sku", None)
    assert [c.variant_gid for c in result.candidates] == [gid("1"), gid("2")]
    narrowed = match_one(line(sku="M-1"), catalog[1:])
    assert (narrowed.status, narrowed.variant_gid) == ("matched", gid("2"))


def test_a_barcode_on_several_variants_is_ambiguous():
    catalog = [variant("1", "Mug", barcode="012345678905"), variant("2", "Cup", barcode="0012345678905")]
    result = match_one(line(), catalog, barcodes={1: "12345678905".zfill(12)})
    assert (result.status, result.method) == ("ambiguous", "barcode")
    assert {c.variant_gid for c in result.candidates} == {gid("1"), gid("2")}


def test_a_learned_supplier_sku_matches_and_overrides_a_disagreeing_sku_hit():
    catalog = [variant("1", "Store's own item", sku="100"), variant("2", "Olive Oil 500 ml", vendor="Elsewhere")]
    learned = {sku_key("100"): gid("2")}
    result = match_one(line(sku="100", description="EVOO half litre"), catalog, learned)
    assert (result.status, result.method, result.variant_gid) == ("matched", "supplier_sku", gid("2"))
    assert match_one(line(sku="100"), catalog).variant_gid == gid("1")  # not learned: the SKU hit stands
    gone = match_one(line(sku="200"), catalog[:1], {sku_key("200"): gid("2")})  # learned variant left the catalog
    assert gone.status == "unmatched"


def test_titles_match_with_noise_reordering_and_typos_within_the_suppliers_vendor():
    catalog = [variant("1", "Extra Virgin Olive Oil", variant_title="500 ml"),
               variant("2", "Extra Virgin Olive Oil", variant_title="1 l"),
               variant("3", "Balsamic Vinegar 500 ml")]
    result = match_one(line(description="OLIVE OIL, EXTRA VIRGN - 500ML"), catalog)
    assert (result.status, result.method, result.variant_gid) == ("matched", "fuzzy_title", gid("1"))
    assert DEFAULT_FUZZY_THRESHOLD <= result.score < 100


def test_near_duplicates_differing_in_size_colour_or_pack_never_match():
    catalog = [variant("1", "Cotton Tee", variant_title="Red / M"), variant("2", "Olive Oil 500 ml"),
               variant("3", "Sparkling Water 12 x 330 ml")]
    for description in ("Cotton Tee Blue M", "Cotton Tee Red L", "Olive Oil 750 ml", "Olive Oil 0.5 l",
                        "Sparkling Water 24 x 330 ml", "Sparkling Water 330 ml", "Cotton Tee"):
        result = match_one(line(description=description), catalog)
        assert (result.status, result.variant_gid) == ("unmatched", None), description


def test_fuzzy_matching_looks_only_at_the_suppliers_vendor():
    catalog = [variant("1", "Olive Oil 500 ml", vendor="Other Co")]
    assert match_one(line(description="Olive Oil 500 ml"), catalog).status == "unmatched"
    assert match_one(line(description="Olive Oil 500 ml"), catalog, supplier="OTHER CO, LLC").status == "matched"
    assert match_one(line(description="Olive Oil 500 ml"), catalog, supplier=None).status == "unmatched"


def test_two_close_title_candidates_are_ambiguous_with_both_listed():
    catalog = [variant("1", "Organic Green Tea Bags 20 pack"), variant("2", "Organic Green Tea Bag 20 pack")]
    result = match_one(line(description="organic green tea bags x20"), catalog)
    assert (result.status, result.method, result.variant_gid) == ("ambiguous", "fuzzy_title", None)
    assert [c.variant_gid for c in result.candidates] == [gid("1"), gid("2")]
    assert result.candidates[0].score >= result.candidates[1].score


def test_the_threshold_comes_from_the_config(monkeypatch):
    catalog = [variant("1", "Extra Virgin Olive Oil 500 ml")]
    po_line = line(description="Virgin Olive Oil 500 ml")
    loose = match_one(po_line, catalog, config=MatchConfig(fuzzy_threshold=70))
    strict = match_one(po_line, catalog, config=MatchConfig(fuzzy_threshold=loose.score + 1))
    assert (loose.status, strict.status) == ("matched", "unmatched")
    assert strict.candidates[0].variant_gid == gid("1")  # kept as a suggestion for a reviewer
    monkeypatch.setenv("POFLOW_MATCH_FUZZY_THRESHOLD", "72.5")
    assert MatchConfig.from_env().fuzzy_threshold == 72.5
    monkeypatch.setenv("POFLOW_MATCH_FUZZY_THRESHOLD", "high")
    assert MatchConfig.from_env().fuzzy_threshold == DEFAULT_FUZZY_THRESHOLD


def test_results_do_not_depend_on_catalog_order():
    catalog = [variant(str(n), f"Widget {c}", sku=f"W{n}") for n, c in enumerate(["Red", "Blue", "Green"] * 3)]
    lines = [line(1, description="widget red"), line(2, sku="w4"), line(3, description="widget blue")]
    forward = match_lines(lines, catalog, {}, supplier="Acme")
    backward = match_lines(lines, list(reversed(catalog)), {}, supplier="Acme")
    assert forward == backward
    assert [m.line_no for m in forward] == [1, 2, 3]
    assert forward[0].status == "ambiguous" and len(forward[0].candidates) == 3


def test_the_lines_own_sku_in_its_description_does_not_stop_a_title_match():
    catalog = [variant("1", "Olive Oil 500 ml", sku="OWN-1")]
    result = match_one(line(sku="SUP-0042", description="sup-0042 Olive Oil 500 ml"), catalog)
    assert (result.status, result.method, result.variant_gid) == ("matched", "fuzzy_title", gid("1"))
    assert match_one(line(sku="SUP-0042", description="SUP-0043 Olive Oil 500 ml"), catalog).status == "unmatched"
