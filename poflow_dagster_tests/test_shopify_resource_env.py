"""One Shopify constructor for code outside Dagster (``ShopifyResource.from_env``): the CLI commands and the HTTP API
honour ``POFLOW_SHOPIFY_MAX_ATTEMPTS`` / ``POFLOW_SHOPIFY_THROTTLE_TIMEOUT`` as the pipeline's resource does."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from poflow_dagster.api.review_routes import shopify_access
from poflow_dagster.api.settings import ApiSettings
from poflow_dagster.cli import main
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.resources import ShopifyResource
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.schema import Merchant


def _merchant(db, merchant_id: str = "acme") -> Merchant:
    with db.session() as session:
        configure_merchant(session, merchant_id)
        return session.get(Merchant, merchant_id)


def test_env_settings_reach_the_client(home, db, shop, monkeypatch):
    monkeypatch.setenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("POFLOW_SHOPIFY_THROTTLE_TIMEOUT", "42")
    shops = ShopifyResource.from_env()
    with shops.client_for(shops.target_for(_merchant(db))) as client:
        assert (client.max_attempts, client.throttle_timeout) == (3, 42)
        assert client.shop_url == shop.url


def test_unset_settings_keep_the_defaults_and_fields_win(home, db, monkeypatch):
    monkeypatch.delenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", raising=False)
    monkeypatch.setenv("POFLOW_SHOPIFY_THROTTLE_TIMEOUT", "42")
    shops = ShopifyResource.from_env(home=str(home), throttle_timeout=7)
    assert (shops.max_attempts, shops.throttle_timeout, shops.home) == (10, 7, str(home))


@pytest.mark.parametrize("value", ["0", "-2", "ten", "1.5"])
def test_a_bad_setting_is_one_line(monkeypatch, value):
    monkeypatch.setenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", value)
    with pytest.raises(PoflowError) as raised:
        ShopifyResource.from_env()
    assert raised.value.code == "bad_config" and "POFLOW_SHOPIFY_MAX_ATTEMPTS" in raised.value.message


def test_the_api_reads_the_same_settings(home, db, monkeypatch):
    monkeypatch.setenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", "2")
    shops = shopify_access(ApiSettings.from_env())
    assert (shops.max_attempts, shops.home) == (2, str(ApiSettings.from_env().home))


def test_cli_catalog_sync_retries_as_many_times_as_the_env_says(home, db, shop, monkeypatch):
    _merchant(db)
    runner = CliRunner()
    monkeypatch.setenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", "1")  # no second attempt: a 503 is the end
    shop.inject_failures(503, 1)

    once = runner.invoke(main, ["catalog", "sync", "acme"])

    assert once.exit_code == 2 and "error: " in once.output and "503" in once.output, once.output
    monkeypatch.setenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", "2")  # one retry gets past one 503
    shop.inject_failures(503, 1)

    twice = runner.invoke(main, ["catalog", "sync", "acme"])

    assert twice.exit_code == 0, twice.output
    assert "acme " in twice.output and "complete" in twice.output
