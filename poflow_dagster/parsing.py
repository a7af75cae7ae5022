"""The ai_parsing stage's core: turn an upload into a ``ParsedPO`` (or a clear ``PoflowError``)."""

from __future__ import annotations

from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction import extract_file
from poflow_dagster.store.uploads import UploadInfo


def parse_upload(upload: UploadInfo) -> ParsedPO:
    if upload.duplicate_of:
        raise PoflowError("duplicate_upload", f"same bytes as upload {upload.duplicate_of}; its PO is the one to use")
    path = Path(upload.stored_path)
    if not path.is_file():
        raise PoflowError("file_missing", f"stored file for upload {upload.id} is missing: {path.name}")
    return extract_file(path, filename=upload.original_filename)
