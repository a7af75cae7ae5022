"""Upload intake: content-addressed file store, CLI uploads and the inbox folder."""

from __future__ import annotations

import fcntl
import hashlib
import mimetypes
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.regular_file import open_regular
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


def store_file(
    home: Path, source: Path, original_filename: str | None = None, *, follow_symlinks: bool = True
) -> StoredFile:
    """Copy ``source`` into ``home/uploads/<sha256>/<sanitised name>``; identical bytes are stored once.

    Only a regular file is read. With ``follow_symlinks=False`` (the inbox) a symlink is refused even if it
    was swapped in after the caller looked (``O_NOFOLLOW``): ``not_a_regular_file``. The CLI follows links:
    its user named the file.
    """
    with open_regular(source, follow_symlinks=follow_symlinks) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_UPLOAD_BYTES:
            raise PoflowError("file_too_large", f"{size} bytes is over the {MAX_UPLOAD_BYTES} byte upload limit")
        digest = hashlib.sha256()
        store_root = (home / "uploads").resolve()
        store_root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=store_root, delete=False, prefix=".incoming-") as tmp:
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


def upload_file(
    db: Database, home: Path, merchant_id: str, source: Path, *, source_kind: str = "cli", follow_symlinks: bool = True
) -> Upload:
    """Store a file and register it as an upload of ``merchant_id`` (a duplicate if seen before)."""
    validate_merchant_id(merchant_id)
    stored = store_file(home, source, follow_symlinks=follow_symlinks)
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
    names starting with ``.`` are ignored. Only regular files physically inside the inbox are read: a
    symlinked merchant folder (and any other non-directory) is ignored; a symlink, FIFO, socket or device
    in a merchant folder is moved to ``.rejected/`` (the link itself, never its target) with reason
    ``not_a_regular_file``, and a link swapped in while the file is read is refused (``O_NOFOLLOW``).
    """
    root = inbox_dir(home)
    if not root.is_dir():
        return InboxResult([], [])
    with _exclusive(root / INGEST_LOCK) as ours:
        if not ours:  # another process (upload_sensor, `poflow inbox-watch`) is reading the inbox right now
            return InboxResult([], [])
        return _ingest(db, home, root, limit=limit, min_age_seconds=min_age_seconds)


#: Lock file in the inbox: one reader at a time, so two processes never both read a file before it is moved.
INGEST_LOCK = ".ingest.lock"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """A non-blocking exclusive ``flock`` on ``lock_path``: yields whether this process holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _ingest(db: Database, home: Path, root: Path, *, limit: int, min_age_seconds: float) -> InboxResult:
    uploads: list[Upload] = []
    rejected: list[tuple[Path, str]] = []
    now = time.time()
    for merchant_dir in _merchant_dirs(root):
        for path, info in _inbox_entries(merchant_dir):
            if len(uploads) + len(rejected) >= limit:
                return InboxResult(uploads, rejected)
            if now - info.st_mtime < min_age_seconds:
                continue
            try:
                if not stat.S_ISREG(info.st_mode) or path.resolve().parent != merchant_dir.resolve():
                    raise PoflowError("not_a_regular_file", f"{path.name} is not a regular file; it was not read")
                upload = upload_file(db, home, merchant_dir.name, path, source_kind="inbox", follow_symlinks=False)
            except PoflowError as error:
                rejected.append((_move_aside(path, merchant_dir / ".rejected", str(error)), str(error)))
                continue
            _move_aside(path, merchant_dir / ".processed", None)
            uploads.append(upload)
    return InboxResult(uploads, rejected)


def _merchant_dirs(root: Path) -> list[Path]:
    """Real (not symlinked) merchant folders directly in the inbox, by name."""
    with os.scandir(root) as entries:
        return sorted(
            Path(entry.path) for entry in entries
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
        )


def _inbox_entries(merchant_dir: Path) -> list[tuple[Path, os.stat_result]]:
    """Everything in a merchant folder except dot-names and real sub-folders, with its ``lstat``."""
    found = []
    with os.scandir(merchant_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.is_dir(follow_symlinks=False):
                continue
            try:
                found.append((Path(entry.path), entry.stat(follow_symlinks=False)))
            except OSError:
                continue  # vanished meanwhile
    return sorted(found, key=lambda item: item[0].name)


def _move_aside(path: Path, folder: Path, reason: str | None) -> Path:
    """Move ``path`` (a link itself, never its target) into ``folder``, with a ``.reason`` file if given.

    ``.processed``/``.rejected`` must be real folders: a symlink planted under that name is removed first.
    """
    if folder.is_symlink():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    counter = 1
    while os.path.lexists(target):
        target = folder / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    shutil.move(str(path), target)
    if reason:
        reason_path = target.with_name(target.name + ".reason")
        fd = os.open(reason_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(reason + "\n")
    return target
