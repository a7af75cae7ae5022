"""Throughput and latency of the whole system, same machine, same run: poflow's production setup (direct
submit through the webserver, CeleryRunLauncher, long-lived run workers, deploy/dagster_home/dagster.yaml)
against a Dagster-defaults setup (default instance: default run launcher = one process per run, sensor only).

    .venv/bin/python benchmarks/throughput.py [--latency 8] [--burst 100] [--baseline-burst 30]
                                              [--workers 1] [--concurrency 4]

(a) latency: upload started -> workflow completed, one small CSV at a time (p50/p95), both setups, through
    `POST /api/uploads` of a running `poflow serve`, through the `poflow upload` command (a new process) on the
    app database, and (poflow only) through `poflow upload` with POFLOW_API_URL/POFLOW_API_TOKEN (the command
    hands the file to the running API: standard library only, no database on the uploader's side);
(b) burst: N small POs uploaded at once by 4 threads of a long-running process, as `POST /api/uploads`
    does it (store + direct submit; the baseline: store only, its sensor starts the runs) -> POs/min from
    the first upload to the last completion, lost (not completed) and duplicated (more than one PO or po_job
    run per upload);
(c) CPU-seconds per PO during the burst: every process of the stack (webserver, daemon, code servers,
    workers, run processes) plus the uploading threads, also per process.
Both setups use PostgreSQL for the app database (a fresh database each) and Redis for progress events; the
poflow setup also keeps Dagster's storage in PostgreSQL. Ratios are what to compare.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poflow_dagster_tests.stack import (  # noqa: E402
    create_pg_database, deploy_instance_yaml, drop_pg_database, new_stack,
)

REDIS = os.environ.get("POFLOW_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
DEFAULTS_YAML = "telemetry:\n  enabled: false\n"


def _csv(index: int) -> bytes:
    """A small PO, different bytes per index (so no upload is a duplicate of another)."""
    lines = [f"BENCH-{index}-{n},Widget {n},{n + 1},2.50,{(n + 1) * 2.5:.2f}" for n in range(5)]
    total = sum((n + 1) * 2.5 for n in range(5))
    return ("PO Number,BENCH-%d\nSupplier,Bench Supplies\n\nSKU,Description,Quantity,Unit Cost,Line Total\n"
            % index + "\n".join(lines) + f"\n,,,Total,{total:.2f}\n").encode()


class Setup:
    def __init__(self, label: str, workdir: Path, *, poflow: bool, workers: int, concurrency: int) -> None:
        self.label, self.workdir, self.poflow = label, workdir, poflow
        self.app_db, app_url = create_pg_database("bench_app")
        self.app_url = app_url.replace("postgresql+psycopg2://", "postgresql+psycopg://")
        self.dagster_db = None
        env = {"POFLOW_DATABASE_URL": self.app_url, "POFLOW_HOME": str(workdir / "home"), "REDIS_URL": REDIS,
               "POFLOW_REDIS_NAMESPACE": f"bench-{secrets.token_hex(3)}"}
        if poflow:
            self.dagster_db, dagster_url = create_pg_database("bench_dagster")
            prefix = f"b{secrets.token_hex(3)}-"
            env.update(DAGSTER_PG_URL=dagster_url, POFLOW_CELERY_BROKER_URL=REDIS, POFLOW_CELERY_QUEUE_PREFIX=prefix,
                       POFLOW_CELERY_DEFAULT_QUEUE=f"{prefix}sheet")
        self.stack = new_stack(workdir, instance_yaml=deploy_instance_yaml() if poflow else DEFAULTS_YAML, env=env)
        # This process uploads like a long-running face (the API): it needs the deployment's settings too
        # (the Celery queue prefix goes into each run's queue tag).
        self._saved_env = dict(os.environ)
        os.environ.update({k: v for k, v in self.stack.env.items() if k.startswith(("POFLOW_", "REDIS_URL"))})
        if poflow:
            self.stack.start_webserver()
        self.stack.start_daemon()
        self.stack.start_api()  # the same HTTP API in both setups; only how runs start and execute differs
        for n in range(workers if poflow else 0):
            self.stack.start_worker(f"worker{n}", ["sheet", "scan"], concurrency)
        self.stack.wait_ready()
        self.engine = sa.create_engine(self.app_url)
        token = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "merchant", "token", "bench"],
                               env=self.stack.env, capture_output=True, text=True, timeout=120)
        self.token = token.stdout.strip().splitlines()[-1].split()[-1]
        self.index = 0
        self.lock = threading.Lock()
        self.cli_submit = poflow

    def upload_api(self) -> tuple[str, float]:
        """One upload through ``POST /api/uploads`` (multipart, as a frontend sends it): (upload id, started)."""
        import json
        import urllib.request

        self.index += 1
        boundary = secrets.token_hex(8)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"po-{self.index}.csv\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + _csv(self.index) + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{self.stack.api_url}/api/uploads", data=body, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["upload_id"], started

    def upload(self, how: str) -> tuple[str, float]:
        """One upload: ``api`` (``POST /api/uploads``), ``cli`` (the command, a new process, on the app database)
        or ``cli-api`` (the command through the running API): (upload id, when it started)."""
        if how == "api":
            return self.upload_api()
        self.index += 1
        path = self.workdir / f"po-{self.index}.csv"
        path.write_bytes(_csv(self.index))
        env = dict(self.stack.env)
        if how == "cli-api":
            env.update(POFLOW_API_URL=self.stack.api_url, POFLOW_API_TOKEN=self.token)
        started = time.monotonic()
        args = [sys.executable, "-m", "poflow_dagster.cli", "upload", str(path), "--merchant", "bench",
                *([] if self.cli_submit else ["--no-submit"])]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise SystemExit(f"upload failed: {done.stderr}")
        return done.stdout.strip(), started

    def completed(self, upload_ids: list[str]) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT upload_id, status FROM workflow_executions WHERE upload_id = ANY(:ids)"), {"ids": upload_ids}
            ).all()
        return {uid: status for uid, status in rows}

    def wait(self, upload_ids: list[str], timeout_s: float) -> dict[str, float]:
        """Completion time (monotonic) of each upload that completed within the timeout."""
        done: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(upload_ids) and time.monotonic() < deadline:
            now = time.monotonic()
            for uid, status in self.completed(upload_ids).items():
                if status in ("completed", "failed") and uid not in done:
                    done[uid] = now
            time.sleep(0.1)
        return done

    def duplicates(self, upload_ids: list[str]) -> int:
        with self.engine.connect() as conn:
            pos = conn.execute(sa.text(
                "SELECT count(*) - count(DISTINCT upload_id) FROM purchase_orders WHERE upload_id = ANY(:ids)"),
                {"ids": upload_ids}).scalar()
        return int(pos or 0) + self.duplicate_runs(upload_ids)

    def duplicate_runs(self, upload_ids: list[str]) -> int:
        import dagster as dg

        saved = {k: os.environ.get(k) for k in self.stack.env}
        os.environ.update(self.stack.env)
        try:
            with dg.DagsterInstance.from_config(self.stack.env["DAGSTER_HOME"]) as instance:
                runs = instance.get_runs(dg.RunsFilter(job_name="po_job"))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        wanted = set(upload_ids)
        partitions = [run.tags.get("dagster/partition") for run in runs if run.tags.get("dagster/partition") in wanted]
        return len(partitions) - len(set(partitions))

    def latency(self, count: int, how: str) -> list[float]:
        results = []
        self.phases: list[dict[str, float]] = []
        for _ in range(count):
            wall_started = time.time()
            upload_id, started = self.upload(how)
            command_s = time.monotonic() - started
            finished = self.wait([upload_id], 300)
            if upload_id not in finished:
                raise SystemExit(f"{self.label}: {upload_id} did not complete in 300 s")
            results.append(finished[upload_id] - started)
            self.phases.append(self._phases(upload_id, wall_started, command_s))
        return results

    def _phases(self, upload_id: str, wall_started: float, command_s: float) -> dict[str, float]:
        """Where one upload's latency went: the upload command, until Dagster had its run (sensor tick or
        direct submit), run queued -> started (dequeue + launch + worker pickup), run start -> PO completed."""
        import dagster as dg

        saved = dict(os.environ)
        os.environ.update(self.stack.env)
        try:
            with dg.DagsterInstance.from_config(self.stack.env["DAGSTER_HOME"]) as instance:
                record = instance.get_run_records(
                    dg.RunsFilter(job_name="po_job", tags={"dagster/partition": upload_id}), limit=1)[0]
        finally:
            os.environ.clear()
            os.environ.update(saved)
        with self.engine.connect() as conn:
            completed = conn.execute(sa.text(
                "SELECT completed_at FROM workflow_executions WHERE upload_id = :u"), {"u": upload_id}).scalar()
        created = record.create_timestamp.timestamp()
        return {"command": command_s, "to_run_created": created - wall_started - command_s,
                "queued_to_started": (record.start_time or created) - created,
                "started_to_completed": completed.timestamp() - (record.start_time or created)}

    def upload_in_process(self) -> str:
        """One upload as a long-running face does it (``POST /api/uploads``, the inbox): store + submit."""
        from poflow_dagster.intake import upload_file
        from poflow_dagster.run_submit import submit_upload_run
        from poflow_dagster.store.db import get_database

        with self.lock:
            self.index += 1
            index = self.index
        path = self.workdir / f"po-{index}.csv"
        path.write_bytes(_csv(index))
        database = get_database(self.app_url)
        upload = upload_file(database, Path(self.stack.env["POFLOW_HOME"]), "bench", path, source_kind="api")
        if self.cli_submit:
            submit_upload_run(database, upload.id, url=self.stack.web_url)
        return upload.id

    def burst(self, count: int) -> dict:
        cpu_before = self.stack.cpu_by_process()
        own_before = time.process_time()
        children_before = os.times().children_user + os.times().children_system
        started = time.monotonic()
        ids: list[str] = []
        lock = threading.Lock()

        def one(_):
            upload_id = self.upload_in_process()
            with lock:
                ids.append(upload_id)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(count)))
        finished = self.wait(ids, 900)
        elapsed = (max(finished.values()) if finished else time.monotonic()) - started
        after = self.stack.cpu_by_process()
        by_process = {name: (after[name] - cpu_before.get(name, 0)) / count for name in after}
        uploader = (time.process_time() - own_before) / count
        cpu = sum(by_process.values()) + uploader
        return {"count": count, "elapsed_s": elapsed, "per_min": len(finished) / elapsed * 60,
                "lost": count - len(finished), "duplicated": self.duplicates(ids),
                "cpu_per_po": cpu, "by_process": {**by_process, "uploader": uploader}, "ids": ids}

    def close(self) -> None:
        os.environ.clear()
        os.environ.update(self._saved_env)
        self.stack.stop()
        self.engine.dispose()
        drop_pg_database(self.app_db)
        if self.dagster_db:
            drop_pg_database(self.dagster_db)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=int, default=8, help="uploads, one at a time, per setup")
    parser.add_argument("--burst", type=int, default=100, help="burst size for poflow")
    parser.add_argument("--baseline-burst", type=int, default=30, help="burst size for the baseline (slow)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    results = {}
    for label, poflow, burst in (("dagster defaults", False, args.baseline_burst), ("poflow", True, args.burst)):
        with tempfile.TemporaryDirectory(prefix="poflow-throughput-") as tmp:
            setup = Setup(label, Path(tmp), poflow=poflow, workers=args.workers, concurrency=args.concurrency)
            modes = ("api", "cli", "cli-api") if poflow else ("api", "cli")
            measured: dict[str, tuple[list[float], list[dict[str, float]]]] = {}
            try:
                setup.latency(1, "api")  # warm-up: code servers loaded, first run done
                for how in modes:
                    measured[how] = (setup.latency(args.latency, how), setup.phases)
                bursts = setup.burst(burst) if burst else None
            finally:
                setup.close()
        results[label] = ({how: values for how, (values, _) in measured.items()}, bursts)
        for how, (values, steps) in measured.items():
            p50, p95 = statistics.median(values), _pct(values, 0.95)
            print(f"{label:<17} {how:<7} upload->completed p50 {p50:5.2f} s  p95 {p95:5.2f} s  "
                  f"({' '.join(f'{v:.1f}' for v in values)})")
            print(f"{'':<17} median phases: " + ", ".join(
                f"{name} {statistics.median(p[name] for p in steps):.2f} s" for name in steps[0]))
        if bursts:
            print(f"{'':<17} burst {bursts['count']}: {bursts['per_min']:.1f} POs/min in {bursts['elapsed_s']:.0f} s, "
                  f"lost {bursts['lost']}, duplicated {bursts['duplicated']}, "
                  f"CPU {bursts['cpu_per_po']:.2f} s/PO ("
                  + ", ".join(f"{k} {v:.2f}" for k, v in bursts["by_process"].items()) + ")")
    base, ours = results["dagster defaults"], results["poflow"]
    base_api, base_cli = statistics.median(base[0]["api"]), statistics.median(base[0]["cli"])
    print("latency p50 ratio poflow/defaults: " + ", ".join(
        f"{how} {statistics.median(values) / (base_api if how == 'api' else base_cli):.2f}"
        for how, values in ours[0].items()) + " (each against the defaults' same face; cli-api against their CLI)")
    if base[1] and ours[1]:
        print(f"burst throughput ratio poflow/defaults: {ours[1]['per_min'] / base[1]['per_min']:.1f}x, "
              f"CPU per PO ratio: {ours[1]['cpu_per_po'] / base[1]['cpu_per_po']:.2f}")


if __name__ == "__main__":
    main()
