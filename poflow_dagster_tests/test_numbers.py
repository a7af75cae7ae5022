"""Locale-aware number, date and currency parsing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from poflow_dagster.extraction.numbers import (
    detect_currency,
    guess_decimal_comma,
    parse_date,
    parse_decimal,
    to_decimal,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.234,56", "1234.56"),
        ("1,234.56", "1234.56"),
        ("1 234,56", "1234.56"),
        ("1\u00a0234,56", "1234.56"),  # non-breaking space (French Excel)
        ("1\u202f234,56", "1234.56"),  # narrow no-break space
        ("1'234.56", "1234.56"),
        ("1’234.56", "1234.56"),
        ("12,5", "12.5"),
        ("12.90", "12.90"),
        ("$12.90", "12.90"),
        ("€ 12,90", "12.90"),
        ("12,90 €", "12.90"),
        ("12.90 CAD", "12.90"),
        ("12.90CAD", "12.90"),
        ("EUR 1.234,56", "1234.56"),
        ("US$ 3.50", "3.50"),
        ("(12.00)", "-12.00"),
        ("($1,200.00)", "-1200.00"),
        ("-5", "-5"),
        ("-$5.25", "-5.25"),
        ("12.00-", "-12.00"),
        ("1.234.567", "1234567"),
        ("1,234,567.89", "1234567.89"),
        ("0,125", "0.125"),
        (".5", "0.5"),
        ("42", "42"),
        ("  7  ", "7"),
        ("Kč 12.100,-", "12100"),  # whole units written with a dash for the cents
    ],
)
def test_parse_decimal_locales(text: str, expected: str) -> None:
    assert parse_decimal(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text", [None, "", "   ", "abc", "Subtotal", "19%", "12 34", "1,23,4", "1.2.3", "12-34", "N/A", "1.234,5.6"]
)
def test_parse_decimal_rejects_non_numbers(text: str | None) -> None:
    assert parse_decimal(text) is None


def test_parse_decimal_lone_three_digit_group_follows_document_style() -> None:
    # Without a hint a lone "1,234"/"1.234" is a thousands group.
    assert parse_decimal("1,234") == Decimal("1234")
    assert parse_decimal("1.234") == Decimal("1234")
    # A comma-decimal document: "1,234" is one-point-two, "1.234" is a thousand.
    assert parse_decimal("1,234", decimal_comma=True) == Decimal("1.234")
    assert parse_decimal("1.234", decimal_comma=True) == Decimal("1234")
    # A dot-decimal document: the reverse.
    assert parse_decimal("1.234", decimal_comma=False) == Decimal("1.234")
    assert parse_decimal("1,234", decimal_comma=False) == Decimal("1234")


def test_parse_decimal_native_numbers_have_no_float_noise() -> None:
    assert parse_decimal(12) == Decimal(12)
    assert parse_decimal(12.5) == Decimal("12.5")
    assert parse_decimal(3 * 19.99) == Decimal("59.97")
    assert parse_decimal(float("nan")) is None
    assert to_decimal(100.0) == Decimal(100)
    assert str(to_decimal(100.0)) == "100"


def test_guess_decimal_comma() -> None:
    assert guess_decimal_comma(["Schraube", "0,35", "1.234,56", "12"]) is True
    assert guess_decimal_comma(["Widget", "12.50", "1,234.56"]) is False
    assert guess_decimal_comma(["Widget", "12", "1,234", "14.09.2026"]) is None
    assert guess_decimal_comma([12.5, None]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-09-14", dt.date(2026, 9, 14)),
        ("2026-09-14T10:30:00", dt.date(2026, 9, 14)),
        ("2026/09/14", dt.date(2026, 9, 14)),
        ("14.09.2026", dt.date(2026, 9, 14)),
        ("4.9.2026", dt.date(2026, 9, 4)),
        ("14.09.26", dt.date(2026, 9, 14)),
        ("09/14/2026", dt.date(2026, 9, 14)),  # month-first, decided by 14 > 12
        ("14/09/2026", dt.date(2026, 9, 14)),  # day-first, decided by 14 > 12
        ("14-09-2026", dt.date(2026, 9, 14)),
        ("March 3, 2026", dt.date(2026, 3, 3)),
        ("Mar 3 2026", dt.date(2026, 3, 3)),
        ("3 March 2026", dt.date(2026, 3, 3)),
        ("Tuesday, March 3rd, 2026", dt.date(2026, 3, 3)),
        ("14. September 2026", dt.date(2026, 9, 14)),
        ("3. März 2026", dt.date(2026, 3, 3)),
        ("14 septembre 2026", dt.date(2026, 9, 14)),
        ("3 de marzo de 2026", dt.date(2026, 3, 3)),
        ("20 maggio 2026", dt.date(2026, 5, 20)),
        ("1 oktober 2026", dt.date(2026, 10, 1)),
        ("Jan 1, 2022", dt.date(2022, 1, 1)),
        ("1. Januar 2022", dt.date(2022, 1, 1)),
        ("2022年1月1日", dt.date(2022, 1, 1)),
        ("２０２２年１２月３日", dt.date(2022, 12, 3)),  # full-width digits
        ("令和4年1月1日", dt.date(2022, 1, 1)),  # Japanese era years
        ("平成元年1月8日", dt.date(1989, 1, 8)),
        ("昭和64年1月7日", dt.date(1989, 1, 7)),
        ("R4.1.1", dt.date(2022, 1, 1)),
        ("02/28/2017 21:29:06", dt.date(2017, 2, 28)),  # a time after the date
        ("Jan 1, 2022, 10:30 AM", dt.date(2022, 1, 1)),
    ],
)
def test_parse_date_formats(text: str, expected: dt.date) -> None:
    assert parse_date(text) == expected


def test_parse_date_ambiguous_slashes_use_day_first_flag() -> None:
    assert parse_date("03/04/2026") == dt.date(2026, 3, 4)  # default month-first (US)
    assert parse_date("03/04/2026", day_first=True) == dt.date(2026, 4, 3)
    # Unambiguous dates ignore the flag.
    assert parse_date("09/14/2026", day_first=True) == dt.date(2026, 9, 14)
    assert parse_date("14/09/2026", day_first=False) == dt.date(2026, 9, 14)


@pytest.mark.parametrize("text", [None, "", "soon", "31/31/2026", "2026-02-30", "March 2026", "12.50"])
def test_parse_date_rejects_non_dates(text: str | None) -> None:
    assert parse_date(text) is None


def test_parse_date_passes_native_dates_through() -> None:
    assert parse_date(dt.datetime(2026, 5, 20, 8, 0)) == dt.date(2026, 5, 20)
    assert parse_date(dt.date(2026, 5, 20)) == dt.date(2026, 5, 20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$12.90", "USD"),
        ("€ 12,90", "EUR"),
        ("£4.00", "GBP"),
        ("12.90 CAD", "CAD"),
        ("$12.90 CAD", "CAD"),  # an explicit ISO code beats the bare symbol
        ("CA$ 5", "CAD"),
        ("US$ 5", "USD"),
        ("A$ 5", "AUD"),
        ("Unit Price (EUR)", "EUR"),
        ("eur", "EUR"),
        ("Euro", "EUR"),
        ("CHF 12.00", "CHF"),
    ],
)
def test_detect_currency(text: str, expected: str) -> None:
    assert detect_currency(text) == expected


@pytest.mark.parametrize("text", [None, "", "12.90", "Widgets and gadgets", "Europe", "abc"])
def test_detect_currency_none(text: str | None) -> None:
    assert detect_currency(text) is None
