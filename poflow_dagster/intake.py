"""Upload intake: content-addressed file store, CLI uploads and the inbox folder."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import shutil
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.db import Database
from poflow_dagster.store.merchants import validate_merchant_id
from poflow_dagster.store.schema import Upload
from poflow_dagster.store.uploads import StoredFile, register_upload

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
_CHUNK = 1024 * 1024


def sanitize_filename(name: str) -> str:
    """A safe single path component: no directories, no control or shell-special characters."""
    name = unicodedata.normalize("NFKC", name.replace("\\", "/").split("/")[-1])
    name = re.sub(r"[^\w.\- ]+", "_", name).strip(" .")
    name = re.sub(r"\s+", "_", name)
    return (name or "upload")[:200]


def store_file(home: Path, source: Path, original_filename: str | None = None) -> StoredFile:
    """Copy ``source`` into ``home/uploads/<sha256>/<sanitised name>``; identical bytes are stored once."""
    if not source.is_file():
        raise PoflowError("file_not_found", f"{source} is not a readable file")
    size = source.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise PoflowError("file_too_large", f"{size} bytes is over the {MAX_UPLOAD_BYTES} byte upload limit")
    digest = hashlib.sha256()
    store_root = (home / "uploads").resolve()
    store_root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=store_root, delete=False, prefix=".incoming-") as tmp:
        with source.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                tmp.write(chunk)
    sha256 = digest.hexdigest()
    original = original_filename or source.name
    safe_name = sanitize_filename(original)
    target = (store_root / sha256 / safe_name).resolve()
    if store_root not in target.parents:  # belt and braces: nothing escapes the store
        os.unlink(tmp.name)
        raise PoflowError("invalid_filename", f"{original!r} cannot be stored safely")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.unlink(tmp.name)
    else:
        os.replace(tmp.name, target)
    mime = mimetypes.guess_type(safe_name)[0] or "application/octet-stream"
    return StoredFile(sha256=sha256, size_bytes=size, mime_type=mime, stored_path=str(target), original_filename=original)


def upload_file(db: Database, home: Path, merchant_id: str, source: Path, *, source_kind: str = "cli") -> Upload:
    """Store a file and register it as an upload of ``merchant_id`` (a duplicate if seen before)."""
    validate_merchant_id(merchant_id)
    stored = store_file(home, source)
    return register_upload(db, merchant_id, stored, source=source_kind)


@dataclass(frozen=True)
class InboxResult:
    uploads: list[Upload]
    rejected: list[tuple[Path, str]]  # (where the file was moved, why)


def inbox_dir(home: Path) -> Path:
    return home / "inbox"


def ingest_inbox(db: Database, home: Path, *, limit: int = 100, min_age_seconds: float = 0.5) -> InboxResult:
    """Turn files in ``inbox/<merchant>/`` into uploads. Files are moved, never lost:
    stored ones to ``inbox/<merchant>/.processed/``, rejected ones to ``.rejected/`` with a ``.reason`` file.

    Files younger than ``min_age_seconds`` are left for the next pass (they may still be being written);
    names starting with ``.`` are ignored.
    """
    uploads: list[Upload] = []
    rejected: list[tuple[Path, str]] = []
    root = inbox_dir(home)
    if not root.is_dir():
        return InboxResult(uploads, rejected)
    now = time.time()
    for merchant_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in merchant_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            if len(uploads) + len(rejected) >= limit:
                return InboxResult(uploads, rejected)
            if now - path.stat().st_mtime < min_age_seconds:
                continue
            try:
                upload = upload_file(db, home, merchant_dir.name, path, source_kind="inbox")
            except PoflowError as error:
                rejected.append((_move_aside(path, merchant_dir / ".rejected", str(error)), str(error)))
                continue
            _move_aside(path, merchant_dir / ".processed", None)
            uploads.append(upload)
    return InboxResult(uploads, rejected)


def _move_aside(path: Path, folder: Path, reason: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    counter = 1
    while target.exists():
        target = folder / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    shutil.move(str(path), target)
    if reason:
        target.with_name(target.name + ".reason").write_text(reason + "\n")
    return target
