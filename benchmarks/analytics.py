"""Analytics benchmark: is the ETA right, and do the analytics assets keep up with a real history?

    .venv/bin/python benchmarks/analytics.py eta   [--pos 100] [--seed 7] [--llm-latency 1.5]
    .venv/bin/python benchmarks/analytics.py scale [--runs 10000] [--new 100] [--storage sqlite|postgres|both]

``eta`` (issue 7, part 6a): builds a realistic history by really running POs through ``po_job`` (in this
process, on a temp Dagster instance and SQLite app DB): nine formats (spreadsheets, text PDFs, X12, UBL, free
text and scanned PDFs read by the LLM), 4 to 190 lines. The local OpenAI server answers each LLM window after a
latency drawn per call (lognormal around ``--llm-latency`` s) and the bundled Shopify emulator runs at the
standard plan's limits (1,000-point bucket, 100 points/s), so large POs are throttled. Then ``stage_runs`` is
built from the instance's records and the ETA is backtested on the newest 20 % of runs (time-ordered split),
next to the old plan's method in the same call (median of the runs with file size ±20 % over 7 days).
Goal: ≥ 90 % within ±15 s, and better than that baseline.

``scale`` (part 6b): a Dagster instance (SQLite, and PostgreSQL: a fresh database in the local server, dropped
after) holding ``--runs`` finished po_job runs written through Dagster's instance API
(``analytics_history.py``) plus their uploads and stage metrics in an app DB of the same kind. Times a full
build of ``stage_runs`` + ``stage_performance``, then an incremental refresh after ``--new`` more runs. Goals:
full < 60 s, incremental < 5 s. The ratio incremental/full is the machine-independent number.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import dagster as dg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

PG_ADMIN_URL = os.environ.get("POFLOW_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- part a: ETA accuracy on a real history ------------------------------------------------------------


def run_eta(args: argparse.Namespace) -> dict:
    from fault_documents import FakeLLM, build_documents

    from poflow_dagster.analytics.eta import backtest_eta
    from poflow_dagster.analytics.frame import load_stage_runs
    from poflow_dagster.intake import upload_file
    from poflow_dagster.pipeline.local import run_upload
    from poflow_dagster.pipeline.run_history import refresh_stage_runs
    from poflow_dagster.shopify.emulator import start_emulator
    from poflow_dagster.store.db import close_database, get_database
    from poflow_dagster_tests.openai_server import API_KEY, start_openai_server

    class LatencyLLM(FakeLLM):
        """The fault benchmark's document-reading fake, answering after a per-call latency (no 429s)."""

        def __init__(self, docs, *, latency: float, seed: int) -> None:
            super().__init__(docs, rate_limit_share=0.0, seed=seed)
            self._latency_rng = random.Random(seed + 1)
            self.latency = latency

        def __call__(self, body: dict):
            reply = super().__call__(body)
            with self._lock:
                reply.delay = min(self.latency * 4, self._latency_rng.lognormvariate(0, 0.35) * self.latency)
            return reply

    workdir = Path(tempfile.mkdtemp(prefix="poflow-analytics-eta-"))
    (workdir / "dagster").mkdir()
    # Several batches of the fault benchmark's 20 documents at different scales: sizes 4..190 lines.
    scales = [0.3, 0.6, 1.0, 1.25, 0.45, 0.8, 0.2, 1.1]
    docs, paths = [], {}
    for batch in range((args.pos + 19) // 20):
        count = min(20, args.pos - batch * 20)
        folder = workdir / "docs" / f"batch-{batch}"  # file names repeat across batches; bytes do not
        batch_docs = build_documents(folder, count=count, scale=scales[batch % len(scales)], seed=args.seed * 10 + batch,
                                     first_index=batch * 20)
        docs += batch_docs
        paths.update({id(doc): folder / doc.filename for doc in batch_docs})
    random.Random(args.seed).shuffle(docs)
    log(f"{len(docs)} POs, {sum(len(d.lines) for d in docs)} lines; {sum(d.uses_llm for d in docs)} through the LLM")

    app_url = f"sqlite:///{workdir / 'app.sqlite3'}"
    home = workdir / "home"
    env = {"POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": app_url, "OPENAI_API_KEY": API_KEY,
           "POFLOW_LLM_WINDOW_PAGES": "1"}
    saved_env = {k: os.environ.get(k) for k in [*env, "SHOPIFY_SHOP_URL", "SHOPIFY_ACCESS_TOKEN", "OPENAI_BASE_URL",
                                               "REDIS_URL"]}
    os.environ.pop("REDIS_URL", None)
    llm = LatencyLLM(docs, latency=args.llm_latency, seed=args.seed)
    db = get_database(app_url)
    started = time.perf_counter()
    outcomes: dict[str, int] = {}
    try:
        with (
            start_openai_server(llm) as llm_server,
            start_emulator(access_token="bench-token", bucket_size=1000, restore_rate=100) as shop,
            dg.instance_for_test(temp_dir=str(workdir / "dagster")) as instance,
        ):
            os.environ.update(env, OPENAI_BASE_URL=llm_server.base_url, SHOPIFY_SHOP_URL=shop.url,
                              SHOPIFY_ACCESS_TOKEN="bench-token")
            from poflow_dagster.definitions import defs  # after the environment: it picks the LLM and shop

            for number, doc in enumerate(docs, start=1):
                upload = upload_file(db, home, "eta-bench", paths[id(doc)])
                result = run_upload(defs, instance, db, upload.id, with_images=False, log_level="WARNING")
                key = "success" if result.success else f"failed at {result.failed_step}"
                outcomes[key] = outcomes.get(key, 0) + 1
                if number % 10 == 0 or number == len(docs):
                    log(f"{number}/{len(docs)} POs run ({time.perf_counter() - started:.0f} s)")
            refresh = refresh_stage_runs(instance, db)
            frame = load_stage_runs(db)
            result = backtest_eta(frame)
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        close_database(app_url)
    totals = frame[(frame["stage"] == "end_to_end") & (frame["job"] == "po_job")]["duration_s"]
    return {
        "pos": len(docs), "outcomes": outcomes, "history_seconds": round(time.perf_counter() - started, 1),
        "stage_runs_rows": int(len(frame)), "runs_ingested": refresh.new_runs,
        "end_to_end_s": {"min": round(float(totals.min()), 2), "median": round(float(totals.median()), 2),
                         "max": round(float(totals.max()), 2)},
        "backtest": result.as_dict(), "workdir": str(workdir),
    }


# --- part b: scale --------------------------------------------------------------------------------------


@contextlib.contextmanager
def scale_stores(storage: str, workdir: Path):
    """(Dagster instance, app DB URL) on SQLite files, or on fresh PostgreSQL databases (dropped after)."""
    from poflow_dagster.store.db import close_database

    if storage == "sqlite":
        app_url = f"sqlite:///{workdir / 'app.sqlite3'}"
        with dg.instance_for_test(temp_dir=str(workdir / "dagster")) as instance:
            try:
                yield instance, app_url
            finally:
                close_database(app_url)
        return
    name = f"poflow_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}_dagster"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}_app"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    overrides = {"storage": {"postgres": {"postgres_url": f"{base}/{name}_dagster"}}}
    app_url = f"{base}/{name}_app".replace("postgresql+psycopg2://", "postgresql://")
    try:
        with dg.instance_for_test(overrides=overrides, temp_dir=str(workdir / "dagster")) as instance:
            try:
                yield instance, app_url
            finally:
                close_database(app_url)
    finally:
        with admin.connect() as conn:
            for suffix in ("dagster", "app"):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}_{suffix}" WITH (FORCE)')
        admin.dispose()


def run_scale(args: argparse.Namespace, storage: str) -> dict:
    from analytics_history import synthesize

    from poflow_dagster.analytics.frame import load_stage_runs
    from poflow_dagster.analytics.performance import stage_performance
    from poflow_dagster.pipeline.run_history import refresh_stage_runs
    from poflow_dagster.store.db import get_database

    workdir = Path(tempfile.mkdtemp(prefix=f"poflow-analytics-scale-{storage}-"))
    (workdir / "dagster").mkdir()
    with scale_stores(storage, workdir) as (instance, app_url):
        db = get_database(app_url)
        began = time.perf_counter()
        end = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
        synthesize(instance, db, args.runs, seed=args.seed, start=end - dt.timedelta(days=7), end=end)
        log(f"{storage}: {args.runs} runs written in {time.perf_counter() - began:.0f} s")

        def build() -> tuple[float, object, int]:
            started = time.perf_counter()
            refresh = refresh_stage_runs(instance, db)
            frame = load_stage_runs(db, since=dt.datetime.now(dt.UTC) - dt.timedelta(days=8))
            performance = stage_performance(frame, now=dt.datetime.now(dt.UTC), window=dt.timedelta(days=8))
            return time.perf_counter() - started, refresh, len(performance)

        full_s, full, perf_rows = build()
        log(f"{storage}: full build {full_s:.1f} s ({full.new_runs} runs, {full.rows_written} rows)")
        synthesize(instance, db, args.new, seed=args.seed + 1, prefix="new",
                   start=end + dt.timedelta(minutes=1), end=end + dt.timedelta(minutes=20))
        incremental_s, incremental, _ = build()
        log(f"{storage}: incremental {incremental_s:.2f} s ({incremental.new_runs} runs, {incremental.rows_written} rows)")
        nothing_s, nothing, _ = build()
    return {
        "storage": storage, "runs": args.runs, "full_s": round(full_s, 2), "full_runs": full.new_runs,
        "full_rows": full.rows_written, "performance_rows": perf_rows,
        "full_refresh_only_s": full.seconds, "incremental_refresh_only_s": incremental.seconds,
        "incremental_s": round(incremental_s, 3), "incremental_runs": incremental.new_runs,
        "incremental_rows": incremental.rows_written, "no_change_s": round(nothing_s, 3),
        "no_change_runs": nothing.new_runs, "ratio_incremental_to_full": round(incremental_s / full_s, 4),
        "goals_met": full_s < 60 and incremental_s < 5 and incremental.new_runs == args.new and nothing.new_runs == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    eta = sub.add_parser("eta", help="ETA backtest on a real history")
    eta.add_argument("--pos", type=int, default=100)
    eta.add_argument("--seed", type=int, default=7)
    eta.add_argument("--llm-latency", type=float, default=1.5, help="median seconds per LLM window")
    scale = sub.add_parser("scale", help="analytics build time on a 10,000-run instance")
    scale.add_argument("--runs", type=int, default=10_000)
    scale.add_argument("--new", type=int, default=100)
    scale.add_argument("--seed", type=int, default=11)
    scale.add_argument("--storage", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    if args.part == "eta":
        result = run_eta(args)
        b = result["backtest"]
        print(json.dumps(result, indent=2, default=str))
        print(f"\nETA at run start, {b.get('n')} held-out runs: within ±15 s {b.get('within_15s')}, "
              f"within ±15 % {b.get('within_15pct')}, MAE {b.get('mae_s')} s; baseline (size ±20 %, 7 days): "
              f"within ±15 s {b.get('baseline_within_15s')}, ±15 % {b.get('baseline_within_15pct')}, "
              f"MAE {b.get('baseline_mae_s')} s")
        return
    storages = ("sqlite", "postgres") if args.storage == "both" else (args.storage,)
    results = [run_scale(args, storage) for storage in storages]
    print(json.dumps(results, indent=2))
    for r in results:
        print(f"{r['storage']}: full {r['full_s']} s for {r['full_runs']} runs (goal < 60 s); incremental "
              f"{r['incremental_s']} s for {r['incremental_runs']} runs (goal < 5 s); ratio {r['ratio_incremental_to_full']}; "
              f"goals met: {r['goals_met']}")


if __name__ == "__main__":
    main()
