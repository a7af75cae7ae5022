"""The ai_parsing stage's core: an upload becomes a ``ParsedPO`` (or a clear ``PoflowError``).

Parses are cached per upload and bytes, so approval runs and re-runs never parse (or pay an LLM) twice;
a PO with the same supplier and PO number as an earlier upload of the merchant is a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction import extract_file_bounded
from poflow_dagster.extraction.llm import LLMSettings
from poflow_dagster.store.db import Database
from poflow_dagster.store.parse_cache import load_parse, store_parse
from poflow_dagster.store.purchase_orders import find_duplicate_po
from poflow_dagster.store.uploads import UploadInfo


@dataclass(frozen=True)
class ParseOutcome:
    parsed: ParsedPO
    reused: bool  # taken from the cache: nothing was parsed this time
    duplicate_of: str | None  # an earlier upload with the same supplier + PO number


def parse_upload(
    db: Database,
    upload: UploadInfo,
    *,
    llm: LLMSettings | None,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ParseOutcome:
    if upload.duplicate_of:
        raise PoflowError("duplicate_upload", f"same bytes as upload {upload.duplicate_of}; its PO is the one to use")
    cached = None if force else load_parse(db, upload.id, upload.sha256)
    if cached is not None:
        parsed = cached
    else:
        path = Path(upload.stored_path)
        if not path.is_file():
            raise PoflowError("file_missing", f"stored file for upload {upload.id} is missing: {path.name}")
        parsed = extract_file_bounded(path, filename=upload.original_filename, llm=llm, on_progress=on_progress)
        store_parse(db, upload.id, upload.sha256, parsed)
    return ParseOutcome(parsed, reused=cached is not None, duplicate_of=find_duplicate_po(db, upload.id, parsed))
