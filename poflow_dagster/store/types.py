"""Column types that behave the same on SQLite and PostgreSQL: exact decimals and UTC timestamps."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import cache

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def normalize_decimal(value: Decimal, min_places: int) -> Decimal:
    """Drop storage padding (``12.9000`` -> ``12.90``) but keep at least ``min_places`` decimals."""
    if not value.is_finite():
        return value.normalize()
    padded = value.quantize(_quantum(min_places))  # exact (equal) when the value has at most min_places decimals
    return padded if padded == value else value.normalize()


@cache
def _quantum(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


#: The scale of the stored decimals: NUMERIC(18, 4) on PostgreSQL, this many places of text on SQLite.
_STORED_PLACES = Decimal("0.0001")


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(18, 4) on PostgreSQL; an exact decimal string on SQLite (which has no NUMERIC).

    Values come back as ``Decimal`` with at least ``min_places`` decimals on both databases.
    """

    impl = Numeric(18, 4)
    cache_ok = True

    def __init__(self, min_places: int = 2) -> None:
        super().__init__()
        self.min_places = min_places

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):  # a Decimal is used as it is: no copy (this runs once per value)
            value = Decimal(value)
        if dialect.name == "sqlite":
            return format(value.quantize(_STORED_PLACES), "f")
        return value

    def process_result_value(self, value, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return normalize_decimal(value if isinstance(value, Decimal) else Decimal(str(value)), self.min_places)


def Money() -> ExactDecimal:  # noqa: N802 - reads like a type in the schema
    """Money: exact, at least two decimals when read back."""
    return ExactDecimal(2)


def Quantity() -> ExactDecimal:  # noqa: N802
    """Quantities: exact, no forced decimals (``12``, ``2.5``)."""
    return ExactDecimal(0)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on both databases (SQLite drops tzinfo; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
