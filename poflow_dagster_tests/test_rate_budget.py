"""The shared Shopify rate budget: its accounting (in-process and in real Redis), and real syncs through it.

The accounting tests drive the budget directly with made-up ``throttleStatus`` numbers; the sync tests run
real clients over HTTP against the emulator (threads, and separate processes sharing Redis) and count the
THROTTLED answers the emulator gave.
"""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, handle_for_sku
from poflow_dagster.shopify.emulator import start_emulator
from poflow_dagster.shopify.rate_budget import (
    InProcessBudget,
    Observation,
    RateBudget,
    RedisBudget,
    budget_key,
    shared_budget,
)
from poflow_dagster.shopify.sync import sync_products

from poflow_dagster_tests.conftest import REDIS_TEST_URL as REDIS_URL  # POFLOW_TEST_REDIS_URL
TOKEN = "budget-test-token"
HOLD = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _unique_prefix() -> str:
    return f"poflow-test:{secrets.token_hex(6)}"


@pytest.fixture
def redis_budgets() -> Iterator[Callable[[str], RedisBudget]]:
    """Budgets in the real Redis under a unique prefix; their keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    made: list[RedisBudget] = []
    prefix = _unique_prefix()

    def make(shop: str) -> RedisBudget:
        budget = RedisBudget(client, budget_key(shop, prefix))
        made.append(budget)
        return budget

    yield make
    for budget in made:
        budget.clear()
    client.close()


@pytest.fixture(params=["in-process", "redis"])
def budget(request, redis_budgets) -> RateBudget:
    if request.param == "redis":
        return redis_budgets("https://acme.myshopify.com")
    return InProcessBudget("test:acme")


def _learn(budget: RateBudget, *, available: float, maximum: float, rate: float) -> None:
    """Let a probe request teach the budget the bucket."""
    grant = budget.reserve(1, hold=HOLD)
    assert grant.reservation is not None
    budget.observe(grant.reservation, Observation(available, maximum, rate, charged=1))


def test_first_request_probes_alone_until_the_bucket_is_known(budget: RateBudget) -> None:
    probe = budget.reserve(10, hold=HOLD)
    assert probe.reservation is not None and probe.wait == 0
    behind = budget.reserve(10, hold=HOLD)
    assert behind.reservation is None and behind.wait > 0  # nothing reserved: ask again shortly
    budget.observe(probe.reservation, Observation(available=90, maximum=100, restore_rate=10, charged=10))
    after = budget.reserve(10, hold=HOLD)
    assert after.reservation is not None and after.wait == 0
    state = budget.state()
    assert state.known and state.maximum == 100 and state.restore_rate == 10 and state.in_flight == 1


def test_an_answer_does_not_erase_reservations_still_in_flight(budget: RateBudget) -> None:
    """The old client's bug: four threads reserve, the first answer resets the estimate to what Shopify saw,
    forgetting the three requests it had not charged yet, so a fifth fires at once and overdraws."""
    _learn(budget, available=40, maximum=40, rate=10)
    grants = [budget.reserve(10, hold=HOLD) for _ in range(4)]
    assert [g.wait == 0 for g in grants] == [True, True, True, False]  # 40 points: three fit now, one queues
    # Shopify charged only the first so far: it says 30 points are left.
    budget.observe(grants[0].reservation, Observation(available=30, maximum=40, restore_rate=10, charged=10))
    fifth = budget.reserve(10, hold=HOLD)
    # Old logic: estimate = 30, so the fifth would go now. Three 10-point requests are still owed: the
    # mirror holds 30 - 30 = 0 (give or take the few ms of refill), so the fifth waits ~(10 + margin) / 10 s.
    assert fifth.wait > 0.9
    assert budget.state().in_flight == 4


def test_a_throttled_answer_waits_for_the_restore_time_it_implies(budget: RateBudget) -> None:
    _learn(budget, available=50, maximum=50, rate=10)
    grant = budget.reserve(10, hold=HOLD)
    budget.observe(grant.reservation, Observation(available=4, maximum=50, restore_rate=10, charged=None))
    retry = budget.reserve(10, hold=HOLD)
    # 6 points missing (+1 margin) at 10 points/s.
    assert 0.6 < retry.wait <= 0.7 + 1e-9


def test_answers_arriving_out_of_order_never_overstate_the_bucket() -> None:
    clock = FakeClock()
    budget = InProcessBudget("test:ooo", clock=clock)
    _learn(budget, available=100, maximum=100, rate=10)
    a = budget.reserve(10, hold=HOLD)
    b = budget.reserve(10, hold=HOLD)
    # Shopify charges A (90 left), then B (80 left); B's answer reaches us first, A's stale one after.
    clock.now += 0.001
    budget.observe(b.reservation, Observation(available=80, maximum=100, restore_rate=10, charged=10))
    budget.observe(a.reservation, Observation(available=90, maximum=100, restore_rate=10, charged=10))
    # 90 is stale: B was charged after it. The mirror must not believe more than 80.
    assert budget.state().level <= 80


def test_a_waiting_request_confirms_against_the_bucket_before_it_is_sent() -> None:
    """Waits are planned ahead; if an answer meanwhile shows the bucket lower than planned (drained by
    someone else, or by requests that were sent late after a stall), the waiting request must not go."""
    clock = FakeClock()
    budget = InProcessBudget("test:confirm", clock=clock)
    _learn(budget, available=20, maximum=20, rate=10)
    clock.now += 0.01
    first = budget.reserve(10, hold=HOLD)
    second = budget.reserve(10, hold=HOLD)
    assert first.wait == 0 and second.wait == pytest.approx(0.1)  # 10 left, 11 wanted (cost + margin)
    clock.now += 0.05
    budget.observe(first.reservation, Observation(available=0, maximum=20, restore_rate=10, charged=10))
    clock.now += 0.05  # second's planned send time: the bucket holds 0.5 points, not 11
    assert budget.confirm(second.reservation, hold=HOLD) == pytest.approx(1.05)
    clock.now += 1.06
    assert budget.confirm(second.reservation, hold=HOLD) == 0  # now it goes, and counts as sent


def test_reservations_of_a_dead_process_expire() -> None:
    clock = FakeClock()
    budget = InProcessBudget("test:expiry", clock=clock)
    probe = budget.reserve(10, hold=5)
    assert probe.reservation is not None
    assert budget.reserve(10, hold=5).reservation is None  # the probe blocks others...
    clock.now += 6
    again = budget.reserve(10, hold=5)  # ...until it expires (treated as charged, then forgotten)
    assert again.reservation is not None and budget.state().in_flight == 1


def test_one_budget_per_shop_per_process(monkeypatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    a = shared_budget("http://127.0.0.1:1234/")
    b = shared_budget("HTTP://127.0.0.1:1234")
    assert a is b and isinstance(a, InProcessBudget)
    assert shared_budget("http://127.0.0.1:1235") is not a
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    assert isinstance(shared_budget("http://127.0.0.1:1234"), RedisBudget)


def test_redis_down_falls_back_to_the_process_budget() -> None:
    # Nothing listens on port 1; no client-side retries, so the test does not wait for them.
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    budget = RedisBudget(dead, budget_key("https://down.myshopify.com", _unique_prefix()))
    grant = budget.reserve(10, hold=HOLD)
    assert grant.reservation is not None and grant.reservation.startswith("local:")
    budget.observe(grant.reservation, Observation(available=90, maximum=100, restore_rate=10, charged=10))
    assert budget.reserve(10, hold=HOLD).reservation.startswith("local:")  # Redis is not asked again at once


# --------------------------------------------------------------------------------------------
# Real syncs through the budget
# --------------------------------------------------------------------------------------------


def specs(prefix: str, n: int) -> list[ProductSpec]:
    return [
        ProductSpec(sku=f"{prefix}-{i:04d}", title=f"{prefix} item {i}", price=Decimal("9.99") + i,
                    handle=handle_for_sku("budget-test", f"{prefix}-{i:04d}"))
        for i in range(n)
    ]


def test_four_threads_of_one_client_never_overdraw_a_small_bucket() -> None:
    """The issue's per-client scenario: with the old accounting each answer erased the other threads'
    reservations and this run was THROTTLED repeatedly (bucket 60 = ~5 productSets, 4 threads)."""
    with start_emulator(access_token=TOKEN, bucket_size=60, restore_rate=300) as emu:
        with ShopifyClient(emu.url, TOKEN, budget=InProcessBudget(f"test:{emu.url}")) as client:
            results = sync_products(client, specs("THREADS", 60), max_workers=4)
        assert len(results) == 60 and emu.count_products() == 60
        assert emu.stats.throttled == 0 and client.stats.retries == 0
        assert client.stats.paced_sleeps > 0  # the bucket really was the bottleneck


def _sync_in_child(args: tuple[str, str, str, int]) -> tuple[int, int, int]:
    """One 'run' in its own process: its own client, the shop's budget in Redis."""
    url, prefix, name, n = args
    budget = shared_budget(url, redis_url=REDIS_URL, prefix=prefix)
    with ShopifyClient(url, TOKEN, budget=budget) as client:
        results = sync_products(client, specs(name, n), max_workers=4)
        return len(results), client.stats.throttled, client.stats.retries


def test_three_processes_share_one_budget_through_redis() -> None:
    prefix = _unique_prefix()
    with start_emulator(access_token=TOKEN, bucket_size=60, restore_rate=300) as emu:
        context = multiprocessing.get_context("spawn")
        with context.Pool(3) as pool:
            outcomes = pool.map(_sync_in_child, [(emu.url, prefix, f"P{i}", 40) for i in range(3)])
        assert [o[0] for o in outcomes] == [40, 40, 40] and emu.count_products() == 120
        assert emu.stats.throttled == 0 and all(o[1] == 0 and o[2] == 0 for o in outcomes)
        assert emu.stats.operations == {"productSet": 120}
    redis_client = redis.Redis.from_url(REDIS_URL)
    RedisBudget(redis_client, budget_key(emu.url, prefix)).clear()
    redis_client.close()


def test_a_300_sku_po_at_standard_limits_is_never_throttled() -> None:
    """Standard plan: 2000 points, 100/s, productSet 10.2 points (API 2025-10): 300 products need ~10.6 s
    of restore beyond the full bucket; the sync paces itself into it without a single THROTTLED answer."""
    with start_emulator(access_token=TOKEN, bucket_size=2000, restore_rate=100) as emu:
        with ShopifyClient(emu.url, TOKEN, budget=InProcessBudget(f"test:{emu.url}")) as client:
            results = sync_products(client, specs("STD", 300), max_workers=4)
        assert len(results) == 300 and emu.count_products() == 300
        assert emu.stats.throttled == 0 and emu.stats.injected_failures == 0 and client.stats.retries == 0
        assert client.throttle is not None and client.throttle.last_query_cost == 10.2
