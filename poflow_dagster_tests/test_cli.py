"""The poflow command as users run it: one line on stdout, clear one-line errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

POFLOW = [sys.executable, "-m", "poflow_dagster.cli"]


def _run(args: list[str], env_home: Path, db_url: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "POFLOW_HOME": str(env_home), "POFLOW_DATABASE_URL": db_url}
    return subprocess.run(POFLOW + args, capture_output=True, text=True, env=env, timeout=120, **kw)


def test_upload_status_and_duplicate(home, db_url, samples):
    first = _run(["upload", str(samples["acme-po-1001.csv"]), "--merchant", "acme"], home, db_url)
    assert first.returncode == 0, first.stderr
    upload_id = first.stdout.strip()
    assert upload_id.startswith("up-") and "\n" not in upload_id
    second = _run(["upload", str(samples["acme-po-1001.csv"]), "--merchant", "acme"], home, db_url)
    assert second.returncode == 0 and f"same bytes as upload {upload_id}" in second.stderr
    status = _run(["status", upload_id, "--format", "json"], home, db_url)
    data = json.loads(status.stdout)
    assert data["upload_id"] == upload_id and data["upload_status"] == "received" and data["workflow"] is None
    dup = json.loads(_run(["status", second.stdout.strip(), "--format", "json"], home, db_url).stdout)
    assert dup["duplicate_of"] == upload_id and dup["upload_status"] == "duplicate"


def test_run_then_status_shows_stage_durations(home, db_url, samples):
    upload_id = _run(["upload", str(samples["lumiere-commande-3003.xlsx"]), "--merchant", "lum"], home, db_url).stdout.strip()
    ran = _run(["run", upload_id], home, db_url)
    assert ran.returncode == 0, ran.stderr
    assert "checks 2/2" in ran.stdout
    table = _run(["status", upload_id], home, db_url).stdout
    assert "workflow    completed  100%" in table
    for stage in ("ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"):
        assert stage in table


@pytest.mark.parametrize(
    "args, code",
    [
        (["status", "up-nope"], "unknown_upload"),
        (["upload", "/nonexistent/po.csv", "--merchant", "acme"], "file_not_found"),
        (["upload", "/etc/hostname", "--merchant", "../../root"], "invalid_merchant"),
        (["merchant", "set", "acme", "--markup", "lots"], "invalid_markup"),
    ],
)
def test_errors_are_one_line_with_a_stable_code(home, db_url, args, code):
    result = _run(args, home, db_url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {code}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_extract_json_contract_and_bad_document(home, db_url, samples, tmp_path):
    result = _run(["extract", str(samples["nordwind-bestellung-2002.tsv"]), "--format", "json"], home, db_url)
    data = json.loads(result.stdout)
    assert set(data) == {"po_number", "supplier_name", "order_date", "currency", "subtotal", "tax", "shipping",
                         "total", "lines", "issues"}
    assert isinstance(data["subtotal"], str) and all(isinstance(l["unit_cost"], str) for l in data["lines"])
    junk = tmp_path / "po.csv"
    junk.write_bytes(bytes(range(256)) * 20)
    bad = _run(["extract", str(junk)], home, db_url)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unsupported_format: ")
    assert bad.stderr.count("\n") == 1 and bad.stdout == ""


def test_merchant_settings(home, db_url):
    out = _run(["merchant", "set", "acme", "--markup", "37.5", "--no-sync", "--token-env", "POFLOW_SHOPIFY_TOKEN_ACME"],
               home, db_url)
    assert out.returncode == 0, out.stderr
    assert "markup 37.50%" in out.stdout and "shopify sync off" in out.stdout and "POFLOW_SHOPIFY_TOKEN_ACME" in out.stdout
