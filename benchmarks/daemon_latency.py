"""File drop -> completed workflow through a real dagster-daemon: our dagster.yaml vs Dagster's defaults.

    .venv/bin/python benchmarks/daemon_latency.py [--files 3]

Both configurations run here, one after the other, on the same machine; the ratio is what to compare
(absolute seconds vary on shared machines). Prints per-file latencies, medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poflow_dagster.samples import generate_samples  # noqa: E402
from poflow_dagster.store.db import close_database, get_database  # noqa: E402
from poflow_dagster.store.schema import Upload, WorkflowExecution  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_process import start_daemon, stop_group  # noqa: E402


def measure(instance_yaml: str | None, files: int, workdir: Path) -> list[float]:
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(instance_yaml or "telemetry:\n  enabled: false\n")
    home = workdir / "home"
    db_url = f"sqlite:///{workdir / 'app.sqlite3'}"
    db = get_database(db_url)
    samples = generate_samples(workdir / "samples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "REDIS_URL", "OPENAI_"))}
    env.update(DAGSTER_HOME=str(dagster_home), POFLOW_HOME=str(home), POFLOW_DATABASE_URL=db_url)
    daemon = start_daemon(env)
    latencies: list[float] = []
    try:
        for index in range(files):
            sample = samples[index % len(samples)]
            inbox = home / "inbox" / f"bench-{index}"  # one merchant per file: same bytes are no duplicate
            inbox.mkdir(parents=True)
            staged = inbox / f".{sample.name}.part"
            staged.write_bytes(sample.read_bytes())
            dropped = time.monotonic()
            staged.rename(inbox / sample.name)
            while time.monotonic() - dropped < 180:
                with db.session() as session:
                    done = session.scalar(
                        sa.select(sa.func.count(WorkflowExecution.id))
                        .join(Upload, Upload.id == WorkflowExecution.upload_id)
                        .where(Upload.merchant_id == f"bench-{index}", WorkflowExecution.status == "completed")
                    )
                if done:
                    latencies.append(time.monotonic() - dropped)
                    break
                time.sleep(0.2)
            else:
                raise SystemExit(f"file {index} did not complete within 180 s")
    finally:
        stop_group(daemon)
        close_database(db_url)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3)
    args = parser.parse_args()
    ours = (REPO / "dagster.yaml").read_text()
    results = {}
    for label, yaml in (("dagster defaults (baseline)", None), ("poflow dagster.yaml", ours)):
        with tempfile.TemporaryDirectory(prefix="poflow-bench-") as tmp:
            results[label] = measure(yaml, args.files, Path(tmp))
        print(f"{label:<30} " + " ".join(f"{s:5.1f}s" for s in results[label])
              + f"   median {statistics.median(results[label]):.1f}s")
    base, new = (statistics.median(v) for v in results.values())
    print(f"file drop -> completed, median ratio poflow/baseline: {new / base:.2f}")


if __name__ == "__main__":
    main()
