"""Parsed POs kept per upload, so a later run (approval, re-run) never parses or pays an LLM twice."""

from __future__ import annotations

import hashlib

from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import ParseResult


def parsed_hash(parsed: ParsedPO) -> str:
    """Content hash of what was parsed (extraction stats such as timings are not content)."""
    return hashlib.sha256(parsed.model_dump_json(exclude={"stats"}).encode()).hexdigest()


def load_parse(db: Database, upload_id: str, sha256: str) -> ParsedPO | None:
    """The cached parse of these exact bytes, if any."""
    with db.session() as session:
        row = session.get(ParseResult, upload_id)
        if row is None or row.sha256 != sha256:
            return None
        return ParsedPO.model_validate_json(row.parsed_json)


def store_parse(db: Database, upload_id: str, sha256: str, parsed: ParsedPO) -> None:
    with db.session() as session:
        row = session.get(ParseResult, upload_id) or ParseResult(upload_id=upload_id)
        row.sha256 = sha256
        row.extractor = parsed.extractor
        row.parsed_json = parsed.model_dump_json()
        session.add(row)


def cached_parse(db: Database, upload_id: str) -> ParsedPO | None:
    """The upload's kept parse, whatever bytes it was of (``None``: never parsed)."""
    with db.session() as session:
        row = session.get(ParseResult, upload_id)
        return None if row is None else ParsedPO.model_validate_json(row.parsed_json)
