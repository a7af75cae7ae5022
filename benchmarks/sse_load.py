"""SSE under load: 100 clients across 10 merchants while 1,000 progress events/s are published, then a reconnect storm.

    .venv/bin/python benchmarks/sse_load.py [--clients 100] [--merchants 10] [--rate 1000] [--seconds 10]
    .venv/bin/python benchmarks/sse_load.py --backend db --database sqlite|postgresql [--rate 1000]

Starts ``poflow serve`` (its own process group; temp POFLOW_HOME, SQLite app DB, the local Redis under a fresh
namespace), issues one API token per merchant, registers one upload per merchant, and opens ``--clients`` SSE
connections to ``GET /api/events`` (``--clients / --merchants`` per merchant) from this process (asyncio + httpx).
A publisher process sends ``--rate`` events/s through ``ProgressBus.publish`` (the path the stages use), spread
evenly over the merchants, each stamped with its send time. Every client must receive every event of its
merchant exactly once. Halfway through, every client drops its connection and reconnects with ``Last-Event-ID``
(the reconnect storm); nothing may be lost or repeated across it. A first phase runs the same load with the
clients reading the merchant's Redis stream directly (XREAD): the baseline that separates the API's cost.

Prints publish → client latency p50/p95/p99 (goal p95 < 200 ms), events lost and duplicated (goal 0), the
publisher's achieved rate, and the server's memory (VmRSS) before and after. A baseline in the same run: the
direct-Redis phase, and the ratio of the two p95s.

``--backend db`` runs the server without Redis: events go to the ``progress_events`` table (``--database sqlite``,
or ``postgresql`` in a fresh schema of ``POFLOW_BENCH_PG_URL``, default the local ``test`` database) and the SSE
endpoint reads them through one shared poller per merchant. No direct baseline then; instead the server's CPU
(user + system seconds per wall second while the load runs), which is what per-client polling used to cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

REDIS_URL = os.environ.get("POFLOW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("POFLOW_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (uvicorn may fork), in KiB."""
    total = 0
    for path in Path("/proc").glob("[0-9]*"):
        try:
            status = (path / "status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", status).group(1))
        if int(path.name) == pid or ppid == pid:
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) if "VmRSS" in status else 0
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup(env: dict[str, str], merchants: int, workdir: Path) -> dict[str, tuple[str, str]]:
    """Per merchant: (API token, upload id), made with the CLI as a user would."""
    out: dict[str, tuple[str, str]] = {}
    for n in range(merchants):
        merchant = f"sse-m{n}"
        sample = workdir / f"po-{n}.csv"
        sample.write_text(f"sku,description,quantity,unit_cost\nSSE-{n},Load item {n},1,1.00\n")
        upload = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "upload", str(sample), "--merchant", merchant],
                                env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
        printed = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "merchant", "token", merchant],
                                 env=env, capture_output=True, text=True, check=True).stdout
        token = re.search(r"\b(pf_[A-Za-z0-9_\-]+)", printed)
        if not token:
            raise SystemExit(f"no token in: {printed!r}")
        out[merchant] = (token.group(1), upload)
    return out


def publisher(env: dict[str, str], uploads: dict[str, str], rate: int, seconds: float, go, done) -> None:
    """Publish ``rate`` events/s for ``seconds`` through the real bus; each carries its send time in ``message``."""
    os.environ.update(env)
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent

    db = get_database(env["POFLOW_DATABASE_URL"])
    bus = ProgressBus(env.get("REDIS_URL"), db=db, namespace=env["POFLOW_REDIS_NAMESPACE"])
    merchants = list(uploads)
    go.wait()  # every client is connected: nothing published before a client listens counts as lost
    total = int(rate * seconds)
    sent = 0
    began = time.perf_counter()
    for i in range(total):
        target = began + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        merchant = merchants[i % len(merchants)]
        bus.publish(ProgressEvent(upload_id=uploads[merchant], merchant_id=merchant, run_id="sse-bench", status="progress",
                                  stage="shopify_sync", items_done=i, items_total=total, percent=min(99, i * 100 // total),
                                  message=f"{time.time():.6f}"))
        sent += 1
    done.put({"sent": sent, "seconds": time.perf_counter() - began})
    bus.close()


def count_event(stats: dict, payload: str | bytes, merchant: str, received_at: float) -> None:
    """Tally one received event: another merchant's, a repeat (same upload and seq), its latency."""
    event = json.loads(payload)
    if event.get("merchant_id") != merchant:
        stats["foreign"] = stats.get("foreign", 0) + 1
    key = f"{event.get('upload_id')}:{event.get('seq')}"
    seen: set[str] = stats.setdefault("seen", set())
    if key in seen:
        stats["duplicates"] = stats.get("duplicates", 0) + 1
    seen.add(key)
    try:
        stats.setdefault("latency", []).append(received_at - float(event["message"]))
    except (TypeError, ValueError, KeyError):
        pass


async def client(base: str, token: str, merchant: str, stats: dict, stop: asyncio.Event, storm: asyncio.Event) -> None:
    """One EventSource-like reader: reconnects with Last-Event-ID when its stream ends (or the storm drops it)."""
    last_id: str | None = None
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30.0, read=60.0)) as http:
        stormed = False
        while not stop.is_set():
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with http.stream("GET", "/api/events", headers=headers) as response:
                    if response.status_code != 200:
                        stats["errors"] = stats.get("errors", 0) + 1
                        await asyncio.sleep(0.5)
                        continue
                    stats["connected"] = True
                    event_id, data = None, None
                    async for line in response.aiter_lines():
                        if stop.is_set():
                            return
                        if storm.is_set() and not stormed:
                            stormed = True
                            stats["reconnects"] = stats.get("reconnects", 0) + 1
                            break  # drop the connection mid-stream, resume with Last-Event-ID
                        if line.startswith("id:"):
                            event_id = line[3:].strip()
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data:
                            count_event(stats, data, merchant, time.time())
                            last_id = event_id or last_id
                            event_id, data = None, None
            except (httpx.HTTPError, asyncio.CancelledError):
                if stop.is_set():
                    return
                await asyncio.sleep(0.2)


async def direct_client(namespace: str, merchant: str, stats: dict, stop: asyncio.Event) -> None:
    """The baseline: read the merchant's Redis stream directly (XREAD BLOCK), no HTTP, no API."""
    import redis.asyncio as aredis

    r = aredis.Redis.from_url(REDIS_URL)
    last = "$"
    stats["connected"] = True
    try:
        while not stop.is_set():
            answer = await r.xread({f"{namespace}:events:{merchant}": last}, block=500, count=500)
            now = time.time()
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id
                    count_event(stats, next(iter(fields.values())), merchant, now)
    finally:
        await r.aclose()


async def run_direct(namespace: str, merchants: list[str], per_merchant: int, publisher_alive, go):
    stop = asyncio.Event()
    stats = {(m, k): {} for m in merchants for k in range(per_merchant)}
    tasks = [asyncio.create_task(direct_client(namespace, m, stats[(m, k)], stop)) for (m, k) in stats]
    await asyncio.sleep(1.0)  # every reader has issued its first XREAD
    go.set()
    await drain(publisher_alive)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


#: Before the load starts, the server's CPU is measured this long with every client connected and idle.
IDLE_SECONDS = 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def drain(publisher_alive, grace: float = 3.0) -> None:
    """Until the publisher has sent everything, then ``grace`` seconds for the last events to arrive."""
    while publisher_alive():
        await asyncio.sleep(0.1)
    await asyncio.sleep(grace)


async def run_clients(base: str, tokens: dict[str, str], per_merchant: int, publisher_alive, go, storm_after: float,
                      server_pid: int, idle: dict):
    stop, storm = asyncio.Event(), asyncio.Event()
    stats = {(m, k): {} for m in tokens for k in range(per_merchant)}
    tasks = [asyncio.create_task(client(base, tokens[m], m, stats[(m, k)], stop, storm)) for (m, k) in stats]
    deadline = time.time() + 30
    while not all(s.get("connected") for s in stats.values()) and time.time() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    cpu_start, wall_start = cpu_seconds(server_pid), time.monotonic()  # every client connected, nothing published
    await asyncio.sleep(IDLE_SECONDS)
    idle["server_cpu_per_s"] = (cpu_seconds(server_pid) - cpu_start) / (time.monotonic() - wall_start)
    idle["load_start"] = (cpu_seconds(server_pid), time.monotonic())
    go.set()
    await asyncio.sleep(storm_after)
    storm.set()
    await drain(publisher_alive)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--merchants", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=["redis", "db"], default="redis",
                        help="the progress bus: the Redis stream (default) or the progress_events table")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the app database (and, with --backend db, the bus)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="poflow-sse-"))
    namespace = f"poflow-bench:{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POFLOW_", "SHOPIFY_", "OPENAI_", "DAGSTER_HOME", "REDIS_URL"))}
    schema = None
    database_url = f"sqlite:///{workdir / 'app.sqlite3'}"
    if args.database == "postgresql":
        import sqlalchemy as sa

        schema = f"poflow_bench_{secrets.token_hex(4)}"
        with sa.create_engine(PG_URL).begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        database_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    env.update(POFLOW_HOME=str(workdir / "home"), POFLOW_DATABASE_URL=database_url, POFLOW_REDIS_NAMESPACE=namespace)
    if args.backend == "redis":
        env["REDIS_URL"] = REDIS_URL
    merchants = setup(env, args.merchants, workdir)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "poflow_dagster.cli", "serve", "--port", str(port)], env=env,
                              stdout=(workdir / "serve.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"poflow serve did not start; see {workdir / 'serve.log'}")
        rss_before = rss_kib(server.pid)
        log(f"serve on {base} (pid {server.pid}, {rss_before / 1024:.0f} MiB); namespace {namespace}")
        uploads = {m: u for m, (_, u) in merchants.items()}
        per_merchant = max(1, args.clients // args.merchants)
        ctx = mp.get_context("spawn")
        phases = {}
        cpu, idle = {}, {}
        for phase in ("direct_redis", "sse_api") if args.backend == "redis" else ("sse_api",):
            done, go = ctx.Queue(), ctx.Event()
            pub = ctx.Process(target=publisher, args=(env, uploads, args.rate, args.seconds, go, done))
            pub.start()
            cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
            if phase == "direct_redis":
                stats = asyncio.run(run_direct(namespace, list(merchants), per_merchant, pub.is_alive, go))
            else:
                stats = asyncio.run(run_clients(base, {m: t for m, (t, _) in merchants.items()}, per_merchant,
                                                pub.is_alive, go, storm_after=args.seconds / 2,
                                                server_pid=server.pid, idle=idle))
            pub.join(timeout=120)
            if phase == "sse_api":  # from the moment the load started (after the idle measurement)
                cpu_start, wall_start = idle["load_start"]
            cpu[phase] = (cpu_seconds(server.pid) - cpu_start) / (time.monotonic() - wall_start)
            phases[phase] = (stats, done.get(timeout=5))
            log(f"{phase}: done")
        rss_after = rss_kib(server.pid)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
        if args.backend == "redis":
            import redis

            client_ = redis.Redis.from_url(REDIS_URL)
            for key in client_.scan_iter(f"{namespace}*"):
                client_.delete(key)
        if schema is not None:
            import sqlalchemy as sa

            with sa.create_engine(PG_URL).begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    results = {phase: summarize(stats, published, args.merchants) for phase, (stats, published) in phases.items()}
    results["backend"] = {"bus": args.backend, "database": args.database}
    results["sse_api"]["server_rss_mib"] = {"before": round(rss_before / 1024, 1), "after": round(rss_after / 1024, 1)}
    for phase, share in cpu.items():
        results[phase]["server_cpu_per_s"] = round(share, 2)
    results["sse_api"]["server_cpu_per_s_idle"] = round(idle["server_cpu_per_s"], 3)
    api = results["sse_api"]
    baseline = ""
    if "direct_redis" in results:
        direct = results["direct_redis"]
        results["ratio_p95_api_to_direct"] = round(api["latency_ms"]["p95"] / max(direct["latency_ms"]["p95"], 0.1), 2)
        baseline = f"; direct Redis {direct['latency_ms']['p95']} ms"
    print(json.dumps(results, indent=2))
    ok = api["lost"] == 0 and api["duplicates"] == 0 and api["foreign_events"] == 0 and api["latency_ms"]["p95"] < 200
    print(f"[{args.backend}/{args.database}] SSE p95 {api['latency_ms']['p95']} ms (goal < 200{baseline}), lost "
          f"{api['lost']}, duplicates {api['duplicates']}, reconnects {api['reconnects']}, server CPU "
          f"{api['server_cpu_per_s']} s/s under load, {api['server_cpu_per_s_idle']} s/s idle: "
          f"{'goal met' if ok else 'goal NOT met'}")


def summarize(stats: dict, published: dict, merchants: int) -> dict:
    per_merchant_sent = published["sent"] // merchants
    latencies = [x for s in stats.values() for x in s.get("latency", [])]
    return {
        "clients": len(stats), "published": published["sent"],
        "publish_rate_per_s": round(published["sent"] / published["seconds"], 1),
        "received": len(latencies),
        "lost": sum(max(0, per_merchant_sent - len(s.get("seen", ()))) for s in stats.values()),
        "duplicates": sum(s.get("duplicates", 0) for s in stats.values()),
        "foreign_events": sum(s.get("foreign", 0) for s in stats.values()),
        "reconnects": sum(s.get("reconnects", 0) for s in stats.values()),
        "connect_errors": sum(s.get("errors", 0) for s in stats.values()),
        "latency_ms": {q: round(percentile(latencies, v) * 1000, 1) for q, v in (("p50", .5), ("p95", .95), ("p99", .99))},
    }

if __name__ == "__main__":
    main()
