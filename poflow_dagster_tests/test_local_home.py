"""The local Dagster home (``config.dagster_home()``, ``local_instance``) and the run tags of PO runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from poflow_dagster import config
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.run_tags import FILE_TAG, MAX_TAG_CHARS, MERCHANT_TAG, po_run_tags
from poflow_dagster.pipeline.sensors import upload_sensor
from poflow_dagster.resources import DatabaseResource, StorageResource


def test_dagster_home_defaults_under_poflow_home_with_the_bundled_settings(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("POFLOW_HOME", str(tmp_path / "home"))
    home = config.dagster_home()
    assert home == tmp_path / "home" / "dagster"
    settings = (home / "dagster.yaml").read_text()
    bundled = (Path(config.__file__).parent / "dagster_home.yaml").read_text()
    assert settings == bundled and "max_concurrent_runs" in settings
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # the user's own settings stay
    assert config.dagster_home() == home and (home / "dagster.yaml").read_text().startswith("telemetry")

    own = tmp_path / "own"
    monkeypatch.setenv("DAGSTER_HOME", str(own))
    assert config.dagster_home() == own and own.is_dir() and not (own / "dagster.yaml").exists()


_OPEN = """
import sys
from poflow_dagster.pipeline.local import local_instance
with local_instance() as instance:
    assert instance.get_runs_count() == 0
print("ok")
"""


def test_processes_opening_a_fresh_home_at_once_all_succeed(tmp_path: Path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["POFLOW_HOME"] = str(tmp_path / "home")
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert all(out.strip() == "ok" for out, _ in outs)


@pytest.mark.parametrize("text", ["a\x00b\nc", "x" * 500, "", "   "])
def test_run_tags_are_one_line_and_bounded(text):
    tags = po_run_tags("acme", text)
    value = tags[FILE_TAG]
    assert tags[MERCHANT_TAG] == "acme" and value and len(value) <= MAX_TAG_CHARS
    assert "\n" not in value and "\x00" not in value and value == value.strip()


def test_sensor_run_requests_carry_merchant_and_file_tags(home, db, instance, samples):
    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    second = upload_file(db, home, "lumiere", samples["lumiere-commande-3003.xlsx"])
    context = dg.build_sensor_context(
        instance=instance,
        resources={"db": DatabaseResource(url=db.url), "storage": StorageResource(home=str(home))},
    )
    result = upload_sensor(context)
    tags = {r.partition_key: r.tags for r in result.run_requests}
    assert tags[first.id][MERCHANT_TAG] == "acme" and tags[first.id][FILE_TAG] == "acme-po-1001.csv"
    assert tags[second.id][MERCHANT_TAG] == "lumiere" and tags[second.id][FILE_TAG] == "lumiere-commande-3003.xlsx"


def test_local_runs_carry_the_tags(home, db, shop, instance, samples):
    from poflow_dagster.definitions import defs
    from poflow_dagster.pipeline.local import run_upload

    upload = upload_file(db, home, "acme", samples["nordwind-bestellung-2002.tsv"])
    result = run_upload(defs, instance, db, upload.id, log_level="ERROR")
    assert result.success and result.images is not None  # images ran in this same run
    expected = {MERCHANT_TAG: "acme", FILE_TAG: "nordwind-bestellung-2002.tsv"}
    [run] = instance.get_runs()
    assert run.run_id == result.run_id
    assert {k: run.tags.get(k) for k in expected} == expected and run.tags["dagster/partition"] == upload.id


def test_bundled_instance_settings_match_the_repository_dagster_yaml():
    """``dagster dev`` in the repository and a pip-installed poflow's home get the same instance settings."""
    import yaml

    root = Path(__file__).resolve().parents[1] / "dagster.yaml"
    bundled = Path(config.__file__).parent / "dagster_home.yaml"
    assert yaml.safe_load(bundled.read_text()) == yaml.safe_load(root.read_text())
