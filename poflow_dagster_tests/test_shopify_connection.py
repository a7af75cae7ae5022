"""Merchant settings cannot point our Shopify token at another host or read other secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.connection import resolve_shop
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.schema import Merchant


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "POFLOW_DATABASE_URL", "ACME_TOKEN", "POFLOW_SHOPIFY_TOKEN_",
                                  "poflow_shopify_token_acme", "POFLOW_SHOPIFY_TOKEN_A-B"])
def test_token_env_outside_the_prefix_is_refused(db, name: str) -> None:
    with pytest.raises(PoflowError) as info, db.session() as session:
        configure_merchant(session, "acme", shopify_token_env=name)
    assert info.value.code == "invalid_token_env" and "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["http://acme.myshopify.com", "https://evil.example.com", "https://acme.myshopify.com.evil.io",
                                 "https://x@acme.myshopify.com", "https://acme.myshopify.com:444",
                                 "https://acme.myshopify.com/admin", "http://127.0.0.1:9999", "ftp://acme.myshopify.com"])
def test_shop_urls_outside_myshopify_are_refused(db, monkeypatch, url: str) -> None:
    monkeypatch.delenv("POFLOW_SHOPIFY_ALLOWED_HOSTS", raising=False)
    with pytest.raises(PoflowError) as info, db.session() as session:
        configure_merchant(session, "acme", shop_url=url)
    assert info.value.code == "shop_url_not_allowed"


def test_allowed_settings_are_stored_normalised(db, monkeypatch) -> None:
    monkeypatch.setenv("POFLOW_SHOPIFY_ALLOWED_HOSTS", "127.0.0.1:8787, shop.internal")
    with db.session() as session:
        configure_merchant(session, "acme", shop_url="https://Acme.myshopify.com/", shopify_token_env="POFLOW_SHOPIFY_TOKEN_ACME")
        configure_merchant(session, "local", shop_url="http://127.0.0.1:8787", shopify_token_env="SHOPIFY_ACCESS_TOKEN")
        configure_merchant(session, "internal", shop_url="https://shop.internal")
    with db.session() as session:
        acme, local = session.get(Merchant, "acme"), session.get(Merchant, "local")
        assert (acme.shop_url, acme.shopify_token_env) == ("https://acme.myshopify.com", "POFLOW_SHOPIFY_TOKEN_ACME")
        assert local.shop_url == "http://127.0.0.1:8787"
        configure_merchant(session, "acme", shop_url="", shopify_token_env="")  # empty clears
    with db.session() as session:
        acme = session.get(Merchant, "acme")
        assert (acme.shop_url, acme.shopify_token_env) == (None, None)


def test_resolve_shop_checks_again_at_use_time(monkeypatch, tmp_path: Path) -> None:
    """Settings written before these rules (or straight into the database) are refused when used."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("POFLOW_SHOPIFY_TOKEN_ACME", "shpat_acme")
    monkeypatch.delenv("POFLOW_SHOPIFY_ALLOWED_HOSTS", raising=False)

    def resolve(url: str, env: str):
        return resolve_shop(merchant_shop_url=url, merchant_token_env=env, default_shop_url=None,
                            default_token=None, home=tmp_path)

    with pytest.raises(PoflowError) as info:
        resolve("http://attacker.example:8080", "POFLOW_SHOPIFY_TOKEN_ACME")
    assert info.value.code == "shop_url_not_allowed"
    with pytest.raises(PoflowError) as info:
        resolve("https://acme.myshopify.com", "OPENAI_API_KEY")
    assert info.value.code == "invalid_token_env" and "sk-secret" not in str(info.value)
    target = resolve("https://acme.myshopify.com/", "POFLOW_SHOPIFY_TOKEN_ACME")
    assert (target.url, target.token, target.is_emulator) == ("https://acme.myshopify.com", "shpat_acme", False)
    monkeypatch.setenv("POFLOW_SHOPIFY_ALLOWED_HOSTS", "attacker.example:8080")  # the operator's explicit choice
    assert resolve("http://attacker.example:8080", "POFLOW_SHOPIFY_TOKEN_ACME").url == "http://attacker.example:8080"
