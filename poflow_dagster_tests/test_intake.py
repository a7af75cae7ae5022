"""Upload intake: content-addressed store, safe names, duplicates, the inbox folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.intake import ingest_inbox, sanitize_filename, upload_file


@pytest.mark.parametrize(
    "name, expected",
    [("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"), ("po 2026 (final).csv", "po_2026__final_.csv"),
     ("...", "upload"), ("$(rm -rf).csv", "_rm_-rf_.csv")],
)
def test_sanitize_filename(name, expected):
    assert sanitize_filename(name) == expected


def test_upload_is_content_addressed_and_kept(db, tmp_path: Path):
    home = tmp_path / "home"
    src = tmp_path / "../evil name.csv"
    src = tmp_path / "evil name.csv"
    src.write_bytes(b"sku,qty\nA,1\n")
    upload = upload_file(db, home, "m1", src)
    stored = Path(upload.stored_path)
    assert stored.read_bytes() == src.read_bytes()
    assert stored.parent.name == upload.sha256 and (home / "uploads").resolve() in stored.parents
    assert upload.original_filename == "evil name.csv" and stored.name == "evil_name.csv"
    again = upload_file(db, home, "m1", src)
    assert again.duplicate_of == upload.id and again.stored_path == upload.stored_path


def test_bad_merchant_and_missing_file_are_clear_errors(db, tmp_path: Path):
    with pytest.raises(PoflowError) as err:
        upload_file(db, tmp_path, "../x", tmp_path / "nope.csv")
    assert err.value.code == "invalid_merchant"
    with pytest.raises(PoflowError) as err:
        upload_file(db, tmp_path, "m1", tmp_path / "nope.csv")
    assert err.value.code == "file_not_found"


def test_inbox_files_become_uploads_and_are_moved_not_lost(db, tmp_path: Path):
    home = tmp_path / "home"
    box = home / "inbox" / "shop-7"
    box.mkdir(parents=True)
    (box / "a.csv").write_bytes(b"sku,qty\nA,1\n")
    (box / ".hidden").write_bytes(b"ignored")
    bad = home / "inbox" / "bad merchant!"
    bad.mkdir()
    (bad / "b.csv").write_bytes(b"x")
    fresh = box / "still-writing.csv"
    fresh.write_bytes(b"partial")
    past = time.time() - 10
    for path in (box / "a.csv", bad / "b.csv"):
        os.utime(path, (past, past))
    result = ingest_inbox(db, home, min_age_seconds=5)
    assert [u.merchant_id for u in result.uploads] == ["shop-7"]
    assert (box / ".processed" / "a.csv").read_bytes() == b"sku,qty\nA,1\n"
    assert not (box / "a.csv").exists() and fresh.exists()  # too young: left for the next pass
    [(moved, reason)] = result.rejected
    assert moved == bad / ".rejected" / "b.csv" and moved.read_bytes() == b"x"
    assert reason.startswith("invalid_merchant:")
    assert (bad / ".rejected" / "b.csv.reason").read_text().startswith("invalid_merchant")
    assert ingest_inbox(db, home, min_age_seconds=5).uploads == []
