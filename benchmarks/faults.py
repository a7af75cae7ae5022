"""Fault benchmark: 20 concurrent POs through a real dagster-daemon while everything misbehaves.

    .venv/bin/python benchmarks/faults.py [--outage-seconds 45] [--timeout 900] [--keep]

What it builds (all started here, all stopped again, even on Ctrl-C):

* a private PostgreSQL cluster (initdb into a temp dir, free port, trust auth) as the app database
  (``POFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:PORT/postgres``); the Dagster instance is SQLite in a
  temp ``DAGSTER_HOME`` with the project's ``dagster.yaml`` (``--dagster-storage postgres``: a ``dagster``
  database in the same private cluster, so the restart hits the instance too);
* the bundled Shopify emulator with a small cost bucket (200 points, 20/s) behind ``fault_proxy.py``, which
  answers 502 for 20 % of requests (half before, half after the emulator executed them), in its own process;
* the local OpenAI chat-completions server (``poflow_dagster_tests/openai_server.py``) answering 429 with
  ``Retry-After: 1`` for 30 % of calls; it reads our free-text and scanned POs (``fault_documents.py``);
* a ``dagster-daemon`` (its own process group) and 20 distinct POs of nine kinds (four with 100-150 SKUs)
  dropped at once into ``$POFLOW_HOME/inbox/<merchant>/``.

Faults: one ``kill -9`` of a run worker while a run is in a stage (``shopify_sync`` preferred), and one
restart of the private PostgreSQL (stop, ``--outage-seconds``, start) while runs are in flight.

It waits until every run has ended and every workflow is terminal (or ``--settle`` seconds after the last
run ended, for a reconciler to act; or ``--timeout``), then prints: POs completed / total, duplicate
POs / lines / drafts / Shopify products, workflows whose status disagrees with the latest Dagster run of
their partition, failed Shopify calls (``shopify_sync`` step failures and retries, read-back check failures),
the faults injected, every failure seen (upload, stage, error), and the time to drain.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import glob
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import dagster as dg  # noqa: E402

from daemon_process import group_members, start_daemon, stop_group  # noqa: E402
from fault_documents import Doc, FakeLLM, build_documents  # noqa: E402
from poflow_dagster.shopify.connection import EMULATOR_TOKEN  # noqa: E402
from poflow_dagster.store.db import close_database, get_database  # noqa: E402
from poflow_dagster_tests.openai_server import API_KEY, start_openai_server  # noqa: E402

MERCHANT = "faultbench"
PARTITION_TAG = "dagster/partition"
TERMINAL_WORKFLOW = {"completed", "failed", "needs_review"}
IN_FLIGHT_RUN = {
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.MANAGED,
}
ENGINE_MARKERS = ("terminated by signal", "unexpectedly", "Retrying the run", "died", "Run timed out")
PID_EVENT = re.compile(r"Started process for run \(pid: (\d+)\)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the private PostgreSQL cluster ---------------------------------------------------------------


class PrivatePostgres:
    """A throw-away cluster owned by the ``postgres`` OS user, in ``root``, on its own port."""

    def __init__(self, root: Path) -> None:
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
        if not versions:
            raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(versions[-1])
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.started = False

    def _as_postgres(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def init(self) -> None:
        self.root.mkdir(parents=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                   "-c fsync=off -c synchronous_commit=off")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                          "-o", options, "-w", "-t", "60", "start")
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                          check=False)

    def create_database(self, name: str) -> None:
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                          name)

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def cleanup(self) -> None:
        if not self.started:
            return
        self.stop("immediate")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # still there: kill the postmaster we started (by its pid), nothing else
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        self.started = False


# --- helpers ----------------------------------------------------------------------------------------


def start_shop(workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    log_file = (workdir / "shop.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "fault_proxy.py"), "--state", str(workdir / "shop.sqlite3"),
         "--token", EMULATOR_TOKEN, "--bucket-size", str(args.bucket_size), "--restore-rate", str(args.restore_rate),
         "--fail-rate", str(args.shopify_502_rate), "--seed", str(args.seed)],
        stdout=subprocess.PIPE, stderr=log_file, start_new_session=True, text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        stop_group(process)
        raise SystemExit(f"fault proxy did not start: {line!r} (see {workdir / 'shop.log'})")
    return process, match.group(1)


def shop_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/__stats", timeout=10) as response:
        return json.loads(response.read())


def allow_list_env(shop_url: str) -> dict[str, str]:
    """Whatever allow-list variable ``shopify/connection.py`` reads now, set for the local shop."""
    source = (REPO / "poflow_dagster" / "shopify" / "connection.py").read_text()
    names = sorted(set(re.findall(r"POFLOW_[A-Z_]*ALLOW[A-Z_]*", source)))
    host_port = shop_url.split("://", 1)[1]
    return {name: f"127.0.0.1,{host_port}" for name in names}


def redis_url(value: str) -> str | None:
    if value == "none":
        return None
    try:
        import redis

        client = redis.Redis.from_url(value, socket_timeout=2)
        client.ping()
        client.close()
        return value
    except Exception:  # noqa: BLE001 - Redis is optional: without it the pipeline uses its fallbacks
        return None


def worker_pid(instance: dg.DagsterInstance, run_id: str, daemon_pid: int) -> int | None:
    """The pid of the process executing ``run_id`` (its engine event), if it is one of the daemon's group."""
    members = set(group_members(daemon_pid))
    for record in instance.all_logs(run_id):
        match = PID_EVENT.search(record.message or "") if record.is_dagster_event else None
        if match and int(match.group(1)) in members:
            return int(match.group(1))
    return None


def query_uploads(engine: sa.Engine) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT u.id, u.original_filename, u.status AS upload_status, u.duplicate_of, u.error_code AS upload_error,"
            " w.status, w.current_stage, w.run_id, w.error_code, w.error_message, w.verification_status,"
            " w.verification_message FROM uploads u LEFT JOIN workflow_executions w ON w.upload_id = u.id"
            " WHERE u.merchant_id = :m ORDER BY u.seq"), {"m": MERCHANT})
        return [dict(r._mapping) for r in rows]


def po_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name="po_job")))


# --- the outage ---------------------------------------------------------------------------------------


class Outage(threading.Thread):
    def __init__(self, pg: PrivatePostgres, seconds: float) -> None:
        super().__init__(daemon=True)
        self.pg, self.seconds = pg, seconds
        self.stopped_at: float | None = None
        self.started_at: float | None = None
        self.error: str | None = None
        self.cancelled = threading.Event()

    def run(self) -> None:
        try:
            self.pg.stop("fast")
            self.stopped_at = time.monotonic()
            log(f"PostgreSQL stopped (fast); down for {self.seconds:g} s")
            if self.cancelled.wait(self.seconds):
                return  # the benchmark is being torn down: leave the cluster stopped
            self.pg.start()
            self.started_at = time.monotonic()
            log("PostgreSQL started again")
        except Exception as error:  # noqa: BLE001
            self.error = f"{type(error).__name__}: {error}"
            log(f"outage thread failed: {self.error}")


# --- the benchmark ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path, cleanups: list) -> dict:
    pg = PrivatePostgres(workdir / "pg")
    pg.init()
    pg.start()
    cleanups.append(pg.cleanup)
    app_url = pg.url()
    log(f"private PostgreSQL on 127.0.0.1:{pg.port} ({pg.bin.parent.name}); app DB {app_url}")

    shop, shop_url = start_shop(workdir, args)
    cleanups.append(lambda: stop_group(shop))
    log(f"Shopify: fault proxy {shop_url} ({args.shopify_502_rate:.0%} 502s), bucket {args.bucket_size:g} "
        f"points, restore {args.restore_rate:g}/s")

    docs = build_documents(workdir / "docs", count=args.pos, scale=args.scale, seed=args.seed)
    expected_skus = {line.sku for doc in docs for line in doc.lines}
    log(f"{len(docs)} POs, {sum(len(d.lines) for d in docs)} lines, {len(expected_skus)} distinct SKUs, "
        f"{sum(d.uses_llm for d in docs)} through the LLM")

    fake_llm = FakeLLM(docs, rate_limit_share=args.llm_429_rate, seed=args.seed)
    llm_server_cm = start_openai_server(fake_llm)
    llm_server = llm_server_cm.__enter__()
    cleanups.append(lambda: llm_server_cm.__exit__(None, None, None))

    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir()
    instance_yaml = (REPO / "dagster.yaml").read_text()
    if args.dagster_storage == "postgres":
        pg.create_database("dagster")
        instance_yaml += f"\nstorage:\n  postgres:\n    postgres_url: {pg.url('dagster', 'postgresql+psycopg2')}\n"
    (dagster_home / "dagster.yaml").write_text(instance_yaml)

    home = workdir / "home"
    db = get_database(app_url)  # migrates before anything else starts
    engine = db.engine
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHOPIFY_", "REDIS_URL", "OPENAI_", "POFLOW_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(dagster_home), POFLOW_HOME=str(home), POFLOW_DATABASE_URL=app_url,
        SHOPIFY_SHOP_URL=shop_url, SHOPIFY_ACCESS_TOKEN=EMULATOR_TOKEN,
        OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=llm_server.base_url, POFLOW_LLM_WINDOW_PAGES="1",
        **allow_list_env(shop_url),
    )
    redis = redis_url(args.redis_url)
    if redis:
        env["REDIS_URL"] = redis
    log(f"env: REDIS_URL={redis or 'unset'}; allow-list: {allow_list_env(shop_url) or 'none read by connection.py'}")

    # Create the instance's storage here, before the daemon and its code server start: several processes
    # initialising a fresh SQLite instance at once can stamp its alembic_version twice ("more than one head").
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    cleanups.append(instance.dispose)
    daemon_log = (workdir / "daemon.log").open("wb")
    daemon = start_daemon(env, log=daemon_log)
    cleanups.append(lambda: stop_group(daemon))
    log(f"dagster-daemon pid {daemon.pid}; DAGSTER_HOME {dagster_home} ({args.dagster_storage} storage)")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        beats = instance.get_daemon_heartbeats()
        if "SENSOR" in beats and "QUEUED_RUN_COORDINATOR" in beats:
            break
        if daemon.poll() is not None:
            raise SystemExit(f"dagster-daemon exited ({daemon.returncode}); see {workdir / 'daemon.log'}")
        time.sleep(0.5)

    inbox = home / "inbox" / MERCHANT
    inbox.mkdir(parents=True)
    for doc in docs:
        (inbox / f".{doc.filename}.part").write_bytes((workdir / "docs" / doc.filename).read_bytes())
    dropped = time.monotonic()
    for doc in docs:
        (inbox / f".{doc.filename}.part").rename(inbox / doc.filename)
    log(f"dropped {len(docs)} files into {inbox}")

    kill: dict | None = None
    outage: Outage | None = None
    monitor_errors = collections.Counter()
    all_runs_ended_at: float | None = None
    drained_at: float | None = None
    uploads: list[dict] = []
    timed_out = False
    last_line, last_logged = "", 0.0
    while True:
        now = time.monotonic()
        elapsed = now - dropped
        try:
            uploads = query_uploads(engine)
            db_ok = True
        except sa.exc.SQLAlchemyError as error:
            monitor_errors[type(error).__name__] += 1
            db_ok = False
        try:
            runs = po_runs(instance)
        except Exception as error:  # noqa: BLE001 - the instance may live in the restarted cluster
            monitor_errors[f"dagster:{type(error).__name__}"] += 1
            runs = None

        # kill -9 one run worker while it is inside a stage
        if kill is None and db_ok and runs is not None and not args.no_kill:
            preferred = [u for u in uploads if u["status"] == "processing" and u["current_stage"] == args.kill_stage]
            candidates = preferred or ([u for u in uploads if u["status"] == "processing" and u["current_stage"]]
                                       if elapsed > args.kill_wait else [])
            for upload in candidates:
                run_record = instance.get_run_by_id(upload["run_id"]) if upload["run_id"] else None
                if run_record is None or run_record.status != dg.DagsterRunStatus.STARTED:
                    continue
                pid = worker_pid(instance, upload["run_id"], daemon.pid)
                if pid is None:
                    continue
                os.kill(pid, signal.SIGKILL)
                kill = {"upload": upload["id"], "file": upload["original_filename"], "run_id": upload["run_id"],
                        "stage": upload["current_stage"], "pid": pid, "at_s": round(elapsed, 1)}
                log(f"kill -9 {pid}: run {upload['run_id'][:8]} of {upload['original_filename']} in "
                    f"{upload['current_stage']}")
                break

        # one restart of the private PostgreSQL while runs are in flight
        if outage is None and not args.no_restart:
            in_flight = runs is not None and any(r.status in IN_FLIGHT_RUN for r in runs)
            due = (kill is not None and elapsed > kill["at_s"] + args.restart_delay) or elapsed > args.restart_at
            if due and in_flight:
                outage = Outage(pg, args.outage_seconds)
                cleanups.append(outage.cancelled.set)
                outage.start()
                log(f"restarting PostgreSQL ({sum(r.status in IN_FLIGHT_RUN for r in runs)} runs in flight)")

        idle = runs is not None and not any(r.status in IN_FLIGHT_RUN for r in runs)
        kill_settled = kill is not None or args.no_kill or (idle and elapsed > args.kill_wait)
        outage_settled = (args.no_restart or (outage is not None and not outage.is_alive())
                          or (outage is None and idle and elapsed > args.restart_at))
        faults_done = kill_settled and outage_settled
        if db_ok and runs is not None:
            rejected = list((inbox / ".rejected").glob("*")) if (inbox / ".rejected").is_dir() else []
            ingested = len(uploads) + len([r for r in rejected if not r.name.endswith(".reason")]) >= len(docs)
            runs_ended = ingested and not any(r.status in IN_FLIGHT_RUN for r in runs)
            terminal = ingested and all(u["status"] in TERMINAL_WORKFLOW or u["upload_status"] == "duplicate"
                                        for u in uploads)
            if runs_ended and faults_done:
                all_runs_ended_at = all_runs_ended_at or now
                if terminal:
                    drained_at = now
                    break
                if now - all_runs_ended_at > args.settle:
                    log(f"runs ended {args.settle:g} s ago but some workflows are not terminal: stopping")
                    break
            else:
                all_runs_ended_at = None
            counts = collections.Counter(u["status"] or u["upload_status"] for u in uploads)
            run_counts = collections.Counter(r.status.value for r in runs)
            line = (f"t={elapsed:5.0f}s uploads={len(uploads)} workflows={dict(sorted(counts.items()))} "
                    f"runs={dict(sorted(run_counts.items()))}")
            if line.split(" ", 1)[1] != last_line or now - last_logged > 30:
                log(line)
                last_line, last_logged = line.split(" ", 1)[1], now
        if elapsed > args.timeout:
            timed_out = True
            log(f"timeout after {args.timeout:g} s")
            break
        if daemon.poll() is not None:
            log(f"dagster-daemon exited with {daemon.returncode}")
            break
        time.sleep(1)

    if outage is not None and outage.is_alive():
        outage.join()
    for _ in range(30):  # the report needs the database
        try:
            uploads = query_uploads(engine)
            break
        except sa.exc.SQLAlchemyError:
            time.sleep(2)
    result = report(instance, engine, docs, uploads, shop_url, workdir, fake_llm)
    rejected_dir = inbox / ".rejected"
    result["inbox_rejected"] = {r.name: r.read_text(errors="replace").strip()[:200] for r in rejected_dir.glob("*.reason")} \
        if rejected_dir.is_dir() else {}
    result.update(
        kill=kill, timed_out=timed_out, monitor_errors=dict(monitor_errors),
        drain_seconds=round(drained_at - dropped, 1) if drained_at else None,
        stopped_after_seconds=round(time.monotonic() - dropped, 1),
        outage=None if outage is None else {
            "seconds": args.outage_seconds, "stopped_at_s": round(outage.stopped_at - dropped, 1)
            if outage.stopped_at else None,
            "started_at_s": round(outage.started_at - dropped, 1) if outage.started_at else None,
            "error": outage.error},
    )
    close_database(app_url)
    return result


# --- the report -----------------------------------------------------------------------------------------


def root_message(error) -> str:
    while error is not None and error.cause is not None:
        error = error.cause
    return (error.message.strip().splitlines() or [""])[0] if error is not None else ""


def classify(text: str) -> str:
    """What a step failure was about: the app database, Shopify, the LLM, resource limits, or other."""
    lowered = text.lower()
    if any(m in lowered for m in ("psycopg", "operationalerror", "sqlalchemy", "database", "server closed the connection")):
        return "database"
    if "shopify" in lowered or "throttled" in lowered or "max_cost" in lowered or "502" in lowered:
        return "shopify"
    if "llm" in lowered or "openai" in lowered or "rate limit" in lowered:
        return "llm"
    if any(m in lowered for m in ("resource_limit", "file_too_complex", "max_runtime", "timed out")):
        return "limits"
    return "other"


def expected_workflow(run: dg.DagsterRun | None) -> set[str]:
    if run is None:
        return {"pending", None}
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return {"completed", "needs_review"}
    if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return {"failed"}
    return {"pending", "processing"}


def report(instance, engine, docs: list[Doc], uploads: list[dict], shop_url: str, workdir: Path,
           fake_llm: FakeLLM) -> dict:
    by_file = {d.filename: d for d in docs}
    runs = po_runs(instance)
    runs_by_partition: dict[str, list[dg.DagsterRun]] = collections.defaultdict(list)
    for r in runs:
        runs_by_partition[r.tags.get(PARTITION_TAG, "")].append(r)
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(dg.RunsFilter(job_name="po_job"))}

    # Events of every PO run: step failures and retries, check results, run failures.
    failures: list[dict] = []
    shopify_problems = collections.Counter()
    by_cause: collections.Counter = collections.Counter()
    readback_mismatches: list[str] = []
    upload_of_run = {r.run_id: r.tags.get(PARTITION_TAG) for r in runs}
    file_of_upload = {u["id"]: u["original_filename"] for u in uploads}
    for r in runs:
        for record in instance.all_logs(r.run_id):
            event = record.dagster_event if record.is_dagster_event else None
            if event is None:
                continue
            base = {"upload": upload_of_run[r.run_id], "file": file_of_upload.get(upload_of_run[r.run_id]),
                    "run": r.run_id[:8], "step": event.step_key}
            kind = event.event_type
            if kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY):
                kind = kind.value
                data = event.event_specific_data
                error = getattr(data, "error", None)
                text = root_message(error) if error is not None else (record.message or "")
                cause = classify(text)
                failures.append({**base, "event": kind, "error": text[:300], "cause": cause})
                by_cause[(event.step_key or "").split(".")[-1], cause, kind] += 1
                if cause == "shopify":
                    shopify_problems[f"{kind.lower()} {(event.step_key or '').split('.')[-1]}"] += 1
            elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                data = event.event_specific_data
                if not data.passed:
                    meta = {k: str(getattr(v, "value", v))[:200] for k, v in (data.metadata or {}).items()}
                    # A check that could not read Shopify (error code) is a failed call; one that read it and
                    # found differences is a mismatch (reported apart).
                    cause = "call_error" if "error_code" in meta else "mismatch"
                    failures.append({**base, "event": f"CHECK_FAILED {data.check_name}", "error": json.dumps(meta)[:300],
                                     "cause": cause})
                    by_cause[data.check_name, cause, "CHECK_FAILED"] += 1
                    if "shopify" in data.check_name and cause == "call_error":
                        shopify_problems[f"check_error {data.check_name}"] += 1
                    elif "shopify" in data.check_name:
                        readback_mismatches.append(f"{base['file']}: {meta.get('reason') or meta.get('problems', '')}"[:240])
            elif kind == dg.DagsterEventType.RUN_FAILURE:
                failures.append({**base, "event": "RUN_FAILURE", "error": (record.message or "")[:300]})
            elif kind == dg.DagsterEventType.ENGINE_EVENT and any(
                    marker in (record.message or "") for marker in ENGINE_MARKERS):
                failures.append({**base, "event": "ENGINE_EVENT", "error": record.message.splitlines()[0][:200]})

    rows = []
    mismatches = []
    for u in uploads:
        partition_runs = sorted(runs_by_partition.get(u["id"], []),
                                key=lambda r: records[r.run_id].create_timestamp if r.run_id in records else 0)
        latest = partition_runs[-1] if partition_runs else None
        if u["upload_status"] != "duplicate" and u["status"] not in expected_workflow(latest):
            mismatches.append({"upload": u["id"], "file": u["original_filename"], "workflow": u["status"],
                               "workflow_run": (u["run_id"] or "")[:8], "latest_run": latest.run_id[:8] if latest else None,
                               "latest_run_status": latest.status.value if latest else None})
        doc = by_file.get(u["original_filename"])
        rows.append({
            "file": u["original_filename"], "upload": u["id"], "lines": len(doc.lines) if doc else None,
            "upload_status": u["upload_status"], "workflow": u["status"], "stage": u["current_stage"],
            "error": f"{u['error_code']}: {(u['error_message'] or '').splitlines()[0][:160]}" if u["error_code"] else None,
            "verification": u["verification_status"],
            "runs": [f"{r.run_id[:8]}:{r.status.value}" for r in partition_runs],
        })
    missing_files = sorted(set(by_file) - {u["original_filename"] for u in uploads})

    # Duplicates in the app database.
    with engine.connect() as c:
        pos = [dict(r._mapping) for r in c.execute(sa.text(
            "SELECT p.id, p.upload_id, p.supplier_id, p.po_number, (SELECT count(*) FROM line_items l WHERE l.po_id = p.id)"
            " AS lines FROM purchase_orders p WHERE p.merchant_id = :m"), {"m": MERCHANT})]
        dup_line_keys = c.execute(sa.text(
            "SELECT count(*) FROM (SELECT l.po_id, l.line_no FROM line_items l JOIN purchase_orders p ON p.id = l.po_id"
            " WHERE p.merchant_id = :m GROUP BY l.po_id, l.line_no HAVING count(*) > 1) x"), {"m": MERCHANT}).scalar()
        drafts = [r[0] for r in c.execute(sa.text("SELECT sku FROM product_drafts WHERE merchant_id = :m"),
                                          {"m": MERCHANT})]
        synced_rows = [tuple(r) for r in c.execute(sa.text(
            "SELECT d.sku, s.handle, d.title, d.price FROM shopify_products s JOIN product_drafts d"
            " ON d.id = s.draft_id WHERE d.merchant_id = :m"), {"m": MERCHANT})]
    synced = [r[0] for r in synced_rows]
    po_numbers = collections.Counter(p["po_number"] for p in pos)
    expected_lines = {d.po_number: len(d.lines) for d in docs}
    duplicate_pos = sum(n - 1 for n in po_numbers.values() if n > 1)
    duplicate_lines = dup_line_keys + sum(max(0, p["lines"] - expected_lines.get(p["po_number"], p["lines"]))
                                          for p in pos)
    short_pos = [p["po_number"] for p in pos if p["lines"] < expected_lines.get(p["po_number"], 0)]
    duplicate_drafts = len(drafts) - len(set(drafts))

    # Duplicates in Shopify (the emulator's own store).
    shop = sqlite3.connect(f"file:{workdir / 'shop.sqlite3'}?mode=ro", uri=True)
    products = shop.execute("SELECT count(*) FROM products").fetchone()[0]
    variant_skus = collections.Counter(r[0] for r in shop.execute(
        "SELECT sku FROM variants GROUP BY product_id, sku"))
    in_shop = {handle: (title, price) for handle, title, price in shop.execute(
        "SELECT p.handle, p.title, v.price FROM products p JOIN variants v ON v.product_id = p.id")}
    shop.close()
    # At the end, does Shopify hold what the merchant's drafts say (last writer the same on both sides)?
    diverged = []
    for sku, handle, title, price in synced_rows:
        shop_title, shop_price = in_shop.get(handle, (None, None))
        if shop_title != title or shop_price is None or Decimal(shop_price) != Decimal(price):
            diverged.append(f"{sku}: draft {title!r} {price} / Shopify {shop_title!r} {shop_price}")
    duplicate_products = sum(n - 1 for n in variant_skus.values() if n > 1)
    completed_files = {u["original_filename"] for u in uploads if u["status"] == "completed"}
    expected_in_shop = {l.sku for d in docs if d.filename in completed_files for l in d.lines}
    missing_in_shop = sorted(expected_in_shop - set(variant_skus))

    try:
        shop_counts = shop_stats(shop_url)
    except OSError as error:
        shop_counts = {"error": str(error)}
    completed = sum(1 for u in uploads if u["status"] == "completed")
    return {
        "completed": completed, "total": len(docs), "rows": rows, "missing_uploads": missing_files,
        "duplicates": {"pos": duplicate_pos, "lines": duplicate_lines, "drafts": duplicate_drafts,
                       "shopify_products": duplicate_products},
        "saved": {"pos": len(pos), "drafts": len(drafts), "synced_drafts": len(synced), "shop_products": products,
                  "shop_skus_missing_for_completed_pos": len(missing_in_shop), "pos_with_missing_lines": short_pos},
        "drafts_differing_from_shopify_at_end": diverged,
        "status_mismatches": mismatches,
        "failed_shopify_calls": dict(shopify_problems),
        "readback_mismatches": readback_mismatches,
        "step_problems_by_cause": {" / ".join(k): v for k, v in sorted(by_cause.items())},
        "failures": failures,
        "faults": {"shopify": shop_counts, "llm": dict(fake_llm.counts)},
        "runs": {"po_job": len(runs), "by_status": dict(collections.Counter(r.status.value for r in runs))},
    }


def print_report(result: dict) -> None:
    print()
    print("=" * 100)
    print(f"fault benchmark, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    for row in result["rows"]:
        print(f"  {row['file']:<26} {row['lines'] or 0:>4} lines  {str(row['workflow']):<12} "
              f"verif={str(row['verification']):<7} runs={','.join(row['runs'])}"
              + (f"\n      {row['stage']}: {row['error']}" if row["error"] else ""))
    if result["inbox_rejected"]:
        print(f"  rejected by the inbox: {result['inbox_rejected']}")
    if result["missing_uploads"]:
        print(f"  never became uploads: {result['missing_uploads']}")
    print()
    if result["failures"]:
        print("failures seen (step failures, op retries, failed checks, run failures):")
        grouped = collections.Counter(
            (f["file"] or f["upload"], f["run"], f["event"], f["step"] or "", f.get("cause", ""), f["error"][:220])
            for f in result["failures"])
        for (file, run_id, event, step, cause, error), count in sorted(grouped.items()):
            print(f"  {file} run {run_id} {event}{f' x{count}' if count > 1 else ''} {step}"
                  f"{f' [{cause}]' if cause else ''}: {error}")
        print()
    d = result["duplicates"]
    faults = result["faults"]
    shop = faults["shopify"]
    print(f"POs completed / total:            {result['completed']} / {result['total']}")
    print(f"duplicates POs/lines/drafts/products: {d['pos']} / {d['lines']} / {d['drafts']} / {d['shopify_products']}")
    print(f"saved: {result['saved']}")
    print(f"drafts whose Shopify product differs at the end: {len(result['drafts_differing_from_shopify_at_end'])}"
          + "".join(f"\n    {line}" for line in result["drafts_differing_from_shopify_at_end"][:10]))
    print(f"workflow status != Dagster run:   {len(result['status_mismatches'])}"
          + "".join(f"\n    {m}" for m in result["status_mismatches"]))
    print(f"step failures/retries by (step, cause, event): {result['step_problems_by_cause']}")
    print(f"failed Shopify calls (surfaced):  {sum(result['failed_shopify_calls'].values())} "
          f"{result['failed_shopify_calls'] or ''}")
    print(f"read-back mismatches (check ran, found differences): {len(result['readback_mismatches'])}"
          + "".join(f"\n    {line}" for line in result["readback_mismatches"]))
    print(f"injected: Shopify 502 {shop.get('injected_502_before', '?')} before + {shop.get('injected_502_after', '?')}"
          f" after forwarding of {shop.get('requests', '?')} requests; emulator THROTTLED "
          f"{shop.get('emulator', {}).get('throttled', '?')}; LLM 429 {faults['llm']['rate_limited_429']} of "
          f"{faults['llm']['requests']} (unrecognised {faults['llm']['unrecognised']}); kill -9 {result['kill']}; "
          f"DB restart {result['outage']}")
    print(f"PO runs: {result['runs']}")
    drain = result["drain_seconds"]
    print(f"time to drain:                    {f'{drain:.0f} s' if drain else 'did not drain'} "
          f"(stopped after {result['stopped_after_seconds']:.0f} s{', TIMEOUT' if result['timed_out'] else ''})")
    if result["monitor_errors"]:
        print(f"harness DB/instance errors while polling (expected during the outage): {result['monitor_errors']}")
    ok = (result["completed"] == result["total"] and not any(d.values()) and not result["status_mismatches"]
          and not result["failed_shopify_calls"])
    print(f"goal (100 % complete, 0 duplicates, 0 mismatches, 0 failed Shopify calls): {'MET' if ok else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pos", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every PO's line count (min 4)")
    parser.add_argument("--outage-seconds", type=float, default=45)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--settle", type=float, default=90,
                        help="after the last run ended, how long a non-terminal workflow may take to be repaired")
    parser.add_argument("--bucket-size", type=float, default=200)
    parser.add_argument("--restore-rate", type=float, default=20)
    parser.add_argument("--shopify-502-rate", type=float, default=0.2)
    parser.add_argument("--llm-429-rate", type=float, default=0.3)
    parser.add_argument("--kill-stage", default="shopify_sync")
    parser.add_argument("--kill-wait", type=float, default=120,
                        help="seconds to wait for a run in --kill-stage before killing one in any stage")
    parser.add_argument("--restart-delay", type=float, default=20, help="seconds after the kill")
    parser.add_argument("--restart-at", type=float, default=180, help="restart by then even without a kill")
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--dagster-storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5",
                        help="used if it answers PING ('none': never)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = parser.parse_args()

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="poflow-faults-"))
    workdir.chmod(0o755)  # the postgres OS user must reach its data directory inside
    cleanups: list = []
    log(f"workdir {workdir}")
    try:
        try:
            result = run(args, workdir, cleanups)
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            raise SystemExit(130) from None
        print_report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
        (workdir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave things running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as error:  # noqa: BLE001 - clean up everything else regardless
                log(f"cleanup step failed: {type(error).__name__}: {error}")
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
