"""`poflow demo`, the README's first command, on a fresh home with nothing configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from poflow_dagster.samples import SAMPLE_EXPECTATIONS


def test_demo_runs_every_sample_and_exits_zero(tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POFLOW_", "SHOPIFY_", "REDIS_URL", "OPENAI_", "DAGSTER_HOME"))}
    result = subprocess.run(
        [sys.executable, "-m", "poflow_dagster.cli", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name, expected in SAMPLE_EXPECTATIONS.items():
        row = next(line for line in out.splitlines() if name in line)
        cells = row.split()
        assert expected["po_number"] in cells and str(expected["line_count"]) in cells and "2/2" in cells
    assert "recorded as duplicate of" in out
    assert (tmp_path / ".poflow" / "poflow.sqlite3").exists()  # the embedded default database
    assert "Traceback" not in result.stderr

    # The runs stay on the persistent local Dagster instance (POFLOW_HOME/dagster), tagged with merchant and file,
    # and the demo says how to open them in the UI.
    dagster_home = tmp_path / ".poflow" / "dagster"
    assert f"DAGSTER_HOME={dagster_home} dagster dev" in out
    merchant = out.split("merchant ", 1)[1].split(",", 1)[0]
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="po_job", tags={"poflow/merchant": merchant}))
        assert len(runs) == len(SAMPLE_EXPECTATIONS)
        assert {run.tags["poflow/file"] for run in runs} == set(SAMPLE_EXPECTATIONS)
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        assert all(run.tags.get("dagster/partition", "").startswith("up-") for run in runs)

    # The demo's runs are in the run history, so `poflow report` tells where their time went.
    report = subprocess.run(
        [sys.executable, "-m", "poflow_dagster.cli", "report", "--format", "json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    import json

    data = json.loads(report.stdout)
    parsing = next(s for s in data["stages"] if s["stage"] == "ai_parsing")
    assert parsing["runs"] == len(SAMPLE_EXPECTATIONS) and parsing["p50_s"] > 0
    assert data["end_to_end"]["runs"] == len(SAMPLE_EXPECTATIONS)
