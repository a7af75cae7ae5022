"""ShopifyClient against the bundled emulator over real HTTP (no HTTP mocks)."""

from __future__ import annotations

import pickle
import re
import socket
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from poflow_dagster.shopify.client import (
    ProductSpec,
    ShopifyAuthError,
    ShopifyClient,
    ShopifyError,
    ShopifyGraphQLError,
    ShopifyThrottledError,
    ShopifyUnreachableError,
    ShopifyUserError,
    handle_for_sku,
    sku_search_query,
)
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.rate_budget import InProcessBudget

TOKEN = "shpat_test_secret_token_123"
MUTATION = """
mutation Set($identifier: ProductSetIdentifiers!, $input: ProductSetInput!) {
  productSet(identifier: $identifier, input: $input) { product { id } userErrors { field message } }
}
"""


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN) as handle:
        yield handle


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[ShopifyClient]:
    with ShopifyClient(emulator.url, TOKEN, timeout=5.0, backoff_base=0.01) as c:
        yield c


def spec(sku: str, price: str = "10.00", **kwargs: object) -> ProductSpec:
    return ProductSpec(
        sku=sku, title=kwargs.pop("title", f"Product {sku}"), price=Decimal(price),  # type: ignore[arg-type]
        handle=handle_for_sku("merchant-1", sku), **kwargs,  # type: ignore[arg-type]
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_product_set_is_an_idempotent_upsert(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    first = client.product_set(spec("SKU-1", "12.50", description="Fits <M> & L", vendor="Acme"))
    known = first.product_gid
    again = client.product_set(spec("SKU-1", "12.50", description="Fits <M> & L", vendor="Acme"), known_product_gid=known)
    updated = client.product_set(spec("SKU-1", "14.00"), known_product_gid=known)

    assert emulator.count_products() == 1
    assert first.created is True and again.created is False and updated.created is False
    # No read-before-write: one productSet request per upsert, nothing else.
    assert emulator.stats.operations == {"productSet": 3} and client.stats.requests == 3
    assert first.product_gid == again.product_gid == updated.product_gid
    assert first.variant_gid == again.variant_gid == updated.variant_gid  # updated in place
    assert re.fullmatch(r"gid://shopify/Product/\d+", first.product_gid)
    assert re.fullmatch(r"gid://shopify/ProductVariant/\d+", first.variant_gid)

    found = client.find_variant_by_sku("SKU-1")
    assert found is not None and found.price == Decimal("14.00") and isinstance(found.price, Decimal)
    assert found.product_status == "DRAFT" and found.handle == first.handle
    data = client.execute("query($id: ID!) { product(id: $id) { descriptionHtml vendor } }", {"id": first.product_gid})
    assert data["product"] == {"descriptionHtml": "Fits &lt;M&gt; &amp; L", "vendor": "Acme"}


def test_product_set_cost_is_what_the_client_reserves(emulator: EmulatorHandle) -> None:
    """productSet costs 10 + 0.2 per variant (Shopify's dynamic cost since 2025-10); the client's first
    reservation, before any answer taught it the cost, is exactly that."""
    budget = InProcessBudget(f"test:{emulator.url}:cost")
    reserved: list[float] = []
    original = budget.reserve

    def spy(cost: float, **kwargs: object):  # type: ignore[no-untyped-def]
        reserved.append(cost)
        return original(cost, **kwargs)  # type: ignore[arg-type]

    budget.reserve = spy  # type: ignore[method-assign]
    with ShopifyClient(emulator.url, TOKEN, timeout=5.0, budget=budget) as fresh:
        fresh.product_set(spec("COST-1"))
        assert reserved == [10.2]
        assert fresh.throttle is not None and fresh.throttle.requested_query_cost == 10.2
        sizes = [str(n) for n in range(100)]
        fresh.execute(MUTATION, {"identifier": {"handle": "many"}, "input": {
            "title": "Many", "productOptions": [{"name": "Size", "values": [{"name": s} for s in sizes]}],
            "variants": [{"optionValues": [{"optionName": "Size", "name": s}], "price": "1"} for s in sizes],
        }})
        assert fresh.throttle.requested_query_cost == 30  # 10 + 100 x 0.2


def test_money_is_decimal_never_float(client: ShopifyClient) -> None:
    client.product_set(spec("PRICE-1", "19.999"))
    found = client.find_variant_by_sku("PRICE-1")
    assert found is not None and found.price == Decimal("19.999")
    with pytest.raises(TypeError):
        ProductSpec(sku="X", title="X", price=1.5, handle="x")  # type: ignore[arg-type]
    assert ProductSpec(sku="X", title="X", price="2.5", handle="x").price == Decimal("2.5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tricky",
    ['has space', 'quote"inside', "single'quote", "colon:in:it", "back\\slash", "(paren) x", "007"],
)
def test_find_variant_by_sku_escapes_and_matches_exactly(client: ShopifyClient, tricky: str) -> None:
    # Near misses that Shopify's fuzzy search would also return.
    for sku in ("7", "0007", "70", "has", "space", "quote", tricky.upper() if tricky.upper() != tricky else tricky + "X"):
        client.product_set(spec(sku, "1.00"))
    made = client.product_set(spec(tricky, "3.21"))

    found = client.find_variant_by_sku(tricky)
    assert found is not None
    assert found.sku == tricky and found.variant_gid == made.variant_gid and found.price == Decimal("3.21")
    assert client.find_variant_by_sku(tricky + " nope") is None


def test_zero_padded_skus_stay_distinct(client: ShopifyClient) -> None:
    for sku, price in (("7", "1"), ("07", "2"), ("007", "3")):
        client.product_set(spec(sku, price))
    assert [client.find_variant_by_sku(s).price for s in ("7", "07", "007")] == [1, 2, 3]  # type: ignore[union-attr]
    assert client.find_variant_by_sku("0007") is None


def test_sku_search_query_quotes_and_escapes() -> None:
    assert sku_search_query('a "b" c:d') == 'sku:"a \\"b\\" c:d"'
    assert sku_search_query("x\\y") == 'sku:"x\\\\y"'


def test_handle_for_sku_is_stable_valid_and_collision_safe() -> None:
    handles = {handle_for_sku("m1", sku) for sku in ("AB-1", "AB.1", "ab-1", "AB 1", "AB_1")}
    assert len(handles) == 5
    assert handle_for_sku("m1", "AB-1") == handle_for_sku("m1", "AB-1")
    assert handle_for_sku("m1", "AB-1") != handle_for_sku("m2", "AB-1")
    for sku in ("AB-1", "!!!", "Ünïcødé ✓", "x" * 600, "  spaced  out  "):
        handle = handle_for_sku("m1", sku)
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", handle), handle
        assert len(handle) <= 255


def test_auth_failure_is_reported_and_token_never_leaks(emulator: EmulatorHandle) -> None:
    with ShopifyClient(emulator.url, "wrong-token-value", backoff_base=0.01) as bad:
        with pytest.raises(ShopifyAuthError) as info:
            bad.execute("{ shop { name } }")
    assert info.value.code == "shopify_auth_failed"
    assert "wrong-token-value" not in str(info.value)
    assert emulator.stats.auth_failures == 1  # not retried

    with ShopifyClient(emulator.url, "", backoff_base=0.01) as empty:
        with pytest.raises(ShopifyAuthError):
            empty.execute("{ shop { name } }")


def test_token_never_in_repr_or_str(client: ShopifyClient) -> None:
    for text in (repr(client), str(client), f"{client}", repr(vars(client).get("_http"))):
        assert TOKEN not in text
    assert TOKEN not in repr({k: v for k, v in vars(client).items() if k != "_http"})


def test_unreachable_url_gives_up_after_bounded_retries() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with ShopifyClient(url, TOKEN, max_attempts=3, backoff_base=0.01, timeout=2.0) as c:
        with pytest.raises(ShopifyUnreachableError) as info:
            c.execute("{ shop { name } }")
        assert c.stats.requests == 3 and c.stats.retries == 2
    assert info.value.code == "shopify_unreachable"
    assert "3 attempts" in info.value.message
    assert time.monotonic() - started < 2.0


def test_graphql_validation_error(client: ShopifyClient) -> None:
    with pytest.raises(ShopifyGraphQLError) as info:
        client.execute("{ productVariants(first: 5) { nodes { noSuchField } } }")
    assert info.value.code == "shopify_graphql_error"
    assert "noSuchField" in info.value.message
    with pytest.raises(ShopifyGraphQLError):
        client.execute("{ this is not graphql")
    # Bad variable values are GraphQL errors too (Money must be numeric).
    with pytest.raises(ShopifyGraphQLError):
        client.execute(MUTATION, {"identifier": {"handle": "h"}, "input": {
            "title": "t", "productOptions": [{"name": "Title", "values": [{"name": "Default Title"}]}],
            "variants": [{"optionValues": [{"optionName": "Title", "name": "Default Title"}], "price": "abc"}]}})


def test_user_errors_raise_with_fields(client: ShopifyClient) -> None:
    with pytest.raises(ShopifyUserError) as info:
        client.product_set(spec("BLANK-TITLE", title="   "))
    assert info.value.code == "shopify_user_error"
    assert info.value.user_errors[0]["field"] == ["input", "title"]
    assert "input.title" in info.value.message


def test_throttled_requests_are_retried_and_every_cost_is_read() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=30, restore_rate=50) as emu:
        with ShopifyClient(emu.url, TOKEN, pacing=False, max_attempts=10, backoff_base=0.01) as c:
            for i in range(6):  # 6 x 10 points through a 30-point bucket
                c.execute(MUTATION, {"identifier": {"handle": f"t-{i}"}, "input": {"title": f"T{i}"}})
            assert emu.count_products() == 6
            assert emu.stats.throttled >= 1 and c.stats.throttled == emu.stats.throttled
            assert c.stats.retries >= 1
            # Every response (throttled or not) carried extensions.cost and the client read it.
            assert c.stats.responses == c.stats.cost_reports == emu.stats.graphql_responses
            assert c.throttle is not None and c.throttle.maximum_available == 30
            assert c.throttle.restore_rate == 50 and c.throttle.last_query_cost == 10


def test_proactive_pacing_avoids_throttling() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=30, restore_rate=50) as emu:
        with ShopifyClient(emu.url, TOKEN, max_attempts=10, backoff_base=0.01) as c:
            for i in range(6):
                c.execute(MUTATION, {"identifier": {"handle": f"p-{i}"}, "input": {"title": f"P{i}"}})
            assert c.stats.paced_sleeps >= 1
            assert emu.stats.throttled <= 1  # the first call can't know the cost yet
            assert c.stats.responses == c.stats.cost_reports


@pytest.mark.parametrize("pacing", [True, False])
def test_throttled_gives_up_only_when_the_wait_outlasts_its_time_budget(pacing: bool) -> None:
    # 10 points at 0.5 points/s: the second call would need ~20 s, past a 1 s throttle budget. max_attempts
    # (for 5xx/transport errors) does not bound throttling at all.
    with start_emulator(access_token=TOKEN, bucket_size=10, restore_rate=0.5) as emu:
        with ShopifyClient(emu.url, TOKEN, pacing=pacing, max_attempts=1, throttle_timeout=1.0,
                           budget=InProcessBudget(f"test:{emu.url}")) as c:
            c.execute(MUTATION, {"identifier": {"handle": "a"}, "input": {"title": "A"}})
            with pytest.raises(ShopifyThrottledError) as info:
                c.execute(MUTATION, {"identifier": {"handle": "b"}, "input": {"title": "B"}})
            # Paced, it never even asks: the budget already knows the wait is too long.
            assert emu.stats.throttled == (0 if pacing else 1)
    assert info.value.code == "shopify_throttled" and "gave up" in info.value.message


def test_retries_5xx_and_429_honouring_retry_after(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    emulator.inject_failures(503, 2, retry_after=0.05)
    emulator.inject_failures(429, 1, retry_after=0.05)
    started = time.monotonic()
    assert client.check_connection() == "poflow emulator"
    assert client.stats.retries == 3 and emulator.stats.injected_failures == 3
    assert time.monotonic() - started >= 0.15

    emulator.inject_failures(502, 10)
    with pytest.raises(ShopifyUnreachableError):
        client.check_connection()


def test_errors_pickle_with_their_code() -> None:
    error = ShopifyUserError("shopify_user_error", "x: bad", errors=[{"field": ["x"], "message": "bad"}])
    clone = pickle.loads(pickle.dumps(error))
    assert isinstance(clone, ShopifyError) and clone.code == "shopify_user_error" and clone.user_errors == error.user_errors


def test_a_throttled_call_waits_exactly_for_the_restore_time_and_then_succeeds() -> None:
    """Someone outside our budget (another app instance, a script) drains the bucket: our first attempt is
    THROTTLED, and the retry waits for the missing points at the restore rate, so one retry is enough."""
    with start_emulator(access_token=TOKEN, bucket_size=40, restore_rate=10) as emu:
        with ShopifyClient(emu.url, TOKEN, budget=InProcessBudget(f"test:{emu.url}")) as c:
            c.execute(MUTATION, {"identifier": {"handle": "first"}, "input": {"title": "First"}})  # learns the bucket
            for i in range(3):  # 30 points spent behind the budget's back
                r = httpx.post(c.endpoint, headers={"X-Shopify-Access-Token": TOKEN}, timeout=5,
                               json={"query": MUTATION, "variables": {"identifier": {"handle": f"x{i}"}, "input": {"title": "X"}}})
                assert "errors" not in r.json()
            c.execute(MUTATION, {"identifier": {"handle": "second"}, "input": {"title": "Second"}})
            assert emu.stats.throttled == 1 and c.stats.throttled == 1 and c.stats.retries == 1
            assert emu.count_products() == 5
