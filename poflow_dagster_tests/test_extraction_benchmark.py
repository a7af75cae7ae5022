"""The corpus scores of benchmarks/extraction.py on small hand-made cases."""

from __future__ import annotations

import importlib.util
import random
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "extraction.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("extraction_benchmark", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def line(sku: str | None, description: str | None, quantity: str | None, unit_cost: str | None,
         line_total: str | None) -> dict[str, Any]:
    return {"sku": sku, "description": description, "quantity": quantity, "unit_cost": unit_cost,
            "line_total": line_total}


WIDGET = line("W-1", "Blue widget, 10 mm", "5", "12.50", "62.50")
GADGET = line("G-2", "Industrial gadget", "1", "1234.56", "1234.56")


def test_a_right_line_despite_spacing_case_and_number_format(bench: Any) -> None:
    got = line("W-1", "BLUE  widget,  10 mm", "5.00", "12.5", "62.5")
    assert bench.line_right(WIDGET, got)
    assert bench.line_score([WIDGET], [got]) == (1, 1)


def test_a_wrong_quantity_is_a_wrong_line(bench: Any) -> None:
    got = {**WIDGET, "quantity": "6"}
    assert not bench.line_right(WIDGET, got)
    assert bench.line_score([WIDGET], [got]) == (0, 1)


def test_a_description_below_85_is_a_wrong_line(bench: Any) -> None:
    assert not bench.line_right(WIDGET, {**WIDGET, "description": "Red gizmo"})


def test_an_extra_line_costs_one_and_order_does_not_matter(bench: Any) -> None:
    extra = line("X-9", "Something else", "2", "3.00", "6.00")
    assert bench.align_lines([WIDGET, GADGET], [GADGET, extra, WIDGET]) == [(0, 2), (1, 0)]
    assert bench.line_score([WIDGET, GADGET], [GADGET, extra, WIDGET]) == (2, 3)


def test_a_dropped_line_costs_one(bench: Any) -> None:
    assert bench.line_score([WIDGET, GADGET], [GADGET]) == (1, 2)


def test_a_null_expected_line_field_is_ignored(bench: Any) -> None:
    amount_only = line(None, "Freight handling", None, None, "40.00")
    got = line("FR", "Freight handling", "1", "40.00", "40.00")
    assert bench.line_right(amount_only, got)
    assert not bench.line_right(amount_only, {**got, "line_total": "41.00"})


def test_header_fields_null_expected_ignored_supplier_loose_money_as_decimal(bench: Any) -> None:
    expected = {"po_number": "PO-1", "supplier_name": "Acme  Tools GmbH", "order_date": "2026-03-14",
                "currency": "EUR", "document_type": None, "subtotal": "100.00", "tax": None, "shipping": None,
                "total": "119"}
    got = {"po_number": "PO-1", "supplier_name": "ACME tools gmbh", "order_date": "2026-03-14", "currency": "EUR",
           "document_type": "invoice", "subtotal": "100", "tax": "19.00", "shipping": None, "total": "119.00"}
    assert bench.header_score(expected, got) == (6, 6)  # document_type and tax not scored: expected null
    assert bench.header_score(expected, {**got, "order_date": "2026-03-15", "total": None}) == (4, 6)
    assert bench.header_score(expected, None) == (0, 6)  # refused: nothing right, still scored


def test_a_refused_document_scores_nothing_but_counts(bench: Any) -> None:
    assert bench.line_score([WIDGET, GADGET], None) == (0, 2)


def test_the_simulated_model_perturbs_reproducibly(bench: Any) -> None:
    expected = {"po_number": "PO-1", "supplier_name": "Acme", "order_date": "2026-03-14", "currency": "EUR",
                "document_type": "invoice", "prices_include_tax": False, "subtotal": "1297.06", "tax": None,
                "shipping": None, "total": "1297.06", "lines": [WIDGET, GADGET]}
    faithful = bench.simulated_answer(expected, "faithful", random.Random(1))
    assert [(a["sku"], a["unit_cost"]) for a in faithful["lines"]] == [("W-1", "12.50"), ("G-2", "1234.56")]
    dropped = bench.simulated_answer(expected, "dropped_line", random.Random(1))
    assert len(dropped["lines"]) == 1
    wrong = bench.simulated_answer(expected, "wrong_number", random.Random(1))
    changed = [a["unit_cost"] for a, b in zip(wrong["lines"], faithful["lines"], strict=True)
               if a["unit_cost"] != b["unit_cost"]]
    assert len(changed) == 1 and Decimal(changed[0]) not in (Decimal("12.50"), Decimal("1234.56"))
    missing = bench.simulated_answer(expected, "missing_field", random.Random(1))
    assert sum(missing[name] is None for name in ("po_number", "supplier_name", "order_date", "total")) == 1
    assert bench.simulated_answer(expected, "wrong_number", random.Random(1)) == wrong


def test_the_simulated_usage_grows_with_the_text_and_the_images() -> None:
    from poflow_dagster_tests.openai_server import TOKENS_PER_IMAGE, estimated_prompt_tokens

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}

    def body(text: str, images: int) -> dict[str, Any]:
        return {"messages": [{"role": "system", "content": "x" * 400},
                             {"role": "user", "content": [{"type": "text", "text": text}] + [image] * images}]}

    assert estimated_prompt_tokens(body("y" * 800, 0)) == 300
    assert estimated_prompt_tokens(body("y" * 800, 2)) == 300 + 2 * TOKENS_PER_IMAGE
