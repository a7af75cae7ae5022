"""Product images (issue 11, part 5): 200 drafts x 3 images through ``collect_images``, sequential vs default fetching.

    .venv/bin/python benchmarks/images.py [--drafts 200] [--quick] [--database-url URL] [--json PATH]

A CSV purchase order of ``--drafts`` lines, each with three picture columns (``Image 1..3``), is read by the real
extractor (``extract_file``), then registered, saved, drafted and parse-cached through the store functions
(``register_upload``, ``save_purchase_order``, ``create_drafts_for_po``, ``store_parse``), so ``collect_images``
takes its candidates from the document source exactly as in production. Attach is a no-op recorder (checks the
stored file is there, returns ``attached`` with a fake media gid): Shopify uploads are measured elsewhere.

The images come from a separate process (``--serve``, its own process group): four "hosts" (127.0.0.2-5, permitted
by ``POFLOW_IMAGE_ALLOWED_HOSTS=127.0.0.0/8``), each answering after 50-150 ms (fixed per URL) and sending at most
``--bandwidth`` bytes/s per connection, HTTP/1.1 keep-alive, with an ``ETag``. Real, distinct pictures (random
shapes + sensor-like noise) as JPEG (500/800/1200 px), WebP and PNG. By construction, per 10 drafts:

- 2 name one picture at two sizes (1200 and 500 px, the small one resized from the large): near-duplicates;
- 2 name the same bytes under two URLs on two hosts (``/img/...`` and ``/mirror/...``): exact duplicates;
- 1 has a shared size-chart image as its third picture (the same URL in every such draft: one request per run);
- 5 have three different pictures.

Phases, each timed around ``collect_images`` only:

(a) sequential: ``concurrency=1, per_host=1`` on a fresh database and image root (the baseline);
(b) default settings (``FetchSettings.from_env()``: 10 in flight, 4 per host) on another fresh database and root,
    so nothing is served from (a)'s cache;
(c) a second PO of the same merchant (new PO number, same lines and URLs) on (b)'s database: requests made
    (0 expected: every URL is younger than ``POFLOW_IMAGE_REVALIDATE_HOURS``) and attach calls (0: all attached);
(d) the PO's distinct URLs through ``fetch_images`` alone with (b)'s settings (no database): the fetcher's own
    floor, which tells the fetching apart from ``collect_images``' per-image writes (counted: ``commits``).

Goal: wall (b) / wall (a) <= 0.15. SQLite (a temp file per phase) by default; ``--database-url`` runs on PostgreSQL
instead (a fresh schema per phase, dropped after). ``--quick``: 40 drafts. ``--sqlite-synchronous NORMAL`` (a
diagnosis, not the app's setting) shows how much of (b) is the fsync of each commit.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
MERCHANT = "bench-images"
SIZES = {"s": 500, "m": 800, "l": 1200}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the catalogue: which URLs each draft names, which file each URL serves ---------------------------------------


@dataclass(frozen=True)
class Picture:
    """One file the server holds: a picture (``seed``) at ``side`` px in ``fmt`` (same seed = same picture)."""

    name: str
    seed: int
    side: int
    fmt: str


@dataclass
class Catalogue:
    """Per draft SKU, its three (host index, path); the pictures behind the paths; the duplicates built in."""

    lines: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    pictures: dict[str, Picture] = field(default_factory=dict)
    near: int = 0
    exact: int = 0

    def add(self, picture: Picture) -> str:
        self.pictures[picture.name] = picture
        return picture.name


def catalogue(drafts: int) -> Catalogue:
    """The same layout in both processes (nothing random about it but the pictures' seeds)."""
    cat = Catalogue()
    chart = cat.add(Picture("size-chart.png", 999_999, 500, "PNG"))
    for n in range(drafts):
        sku, kind = f"IMG-{n:05d}", n % 10

        def view(v: int, size: str = "m", fmt: str = "JPEG", sku: str = sku, n: int = n) -> str:
            ext = {"JPEG": "jpg", "WEBP": "webp", "PNG": "png"}[fmt]
            side = SIZES[size] if fmt != "PNG" else SIZES["s"]
            return cat.add(Picture(f"{sku}-v{v}-{side}.{ext}", n * 10 + v, side, fmt))

        host = n % len(HOSTS)
        other = (host + 1) % len(HOSTS)
        if kind in (0, 1):  # one picture at two sizes: a near-duplicate
            cat.near += 1
            urls = [(host, f"/img/{view(0, 'l')}"), (other, f"/img/{view(0, 's')}"), (host, f"/img/{view(1)}")]
        elif kind in (2, 3):  # the same bytes at two URLs: an exact duplicate
            cat.exact += 1
            first = view(0, "l")
            urls = [(host, f"/img/{first}"), (other, f"/mirror/{first}"), (host, f"/img/{view(1, 'm', 'WEBP')}")]
        elif kind == 4:  # a size chart shared by many products
            urls = [(host, f"/img/{view(0, 'l')}"), (other, f"/img/{view(1)}"), (0, f"/brand/{chart}")]
        else:
            third = view(2, "s", "PNG") if kind == 9 else view(2, "s")
            urls = [(host, f"/img/{view(0, 'l')}"), (other, f"/img/{view(1)}"), (host, f"/img/{third}")]
        cat.lines[sku] = urls
    return cat


# --- the image server (child process) -----------------------------------------------------------------------------


def render(picture: Picture, noise: Any) -> bytes:
    """Random shapes on a colour, scaled to the picture's side, with noise (realistic JPEG sizes); encoded.
    A ``-500`` sibling of a ``-1200`` picture of the same seed is the same picture: phash distance 0."""
    import numpy as np
    from PIL import Image, ImageDraw

    r = random.Random(picture.seed)
    base = Image.new("RGB", (256, 256), tuple(r.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(base)
    for _ in range(12):
        x0, y0 = r.randrange(200), r.randrange(200)
        box = [x0, y0, x0 + r.randrange(20, 120), y0 + r.randrange(20, 120)]
        fill = tuple(r.randrange(256) for _ in range(3))
        (draw.ellipse if r.random() < 0.5 else draw.rectangle)(box, fill=fill)
    side = picture.side
    pixels = np.asarray(base.resize((side, side), Image.Resampling.BILINEAR), dtype=np.int16)
    offset = picture.seed % 89
    pixels = pixels + noise[offset:offset + side, offset:offset + side]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, picture.fmt, **({"quality": 85} if picture.fmt != "PNG" else {}))
    return out.getvalue()


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.status: Counter[int] = Counter()
        self.body_bytes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_host: Counter[str] = Counter()
        self.max_by_host: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self.requests, "status": {str(k): v for k, v in self.status.items()},
                "body_bytes": self.body_bytes, "max_in_flight": self.max_in_flight,
                "max_in_flight_by_host": dict(self.max_by_host)}


def serve(drafts: int, bandwidth: int) -> None:
    """``--serve``: render the pictures, start one server per host, print the ports, serve until stdin closes."""
    import numpy as np

    cat = catalogue(drafts)
    noise = np.random.default_rng(0).normal(0, 6, (SIZES["l"] + 100, SIZES["l"] + 100, 3)).astype(np.int16)
    files = {name: render(picture, noise) for name, picture in cat.pictures.items()}
    etags = {name: '"' + hashlib.sha256(data).hexdigest()[:20] + '"' for name, data in files.items()}
    stats = _Stats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/__stats"):
                with stats.lock:
                    body = json.dumps(stats.snapshot()).encode()
                    if "reset" in self.path:
                        stats.reset()
                return self._answer(200, body, "application/json")
            host = self.server.server_address[0]
            with stats.lock:
                stats.requests += 1
                stats.in_flight += 1
                stats.by_host[host] += 1
                stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
                stats.max_by_host[host] = max(stats.max_by_host[host], stats.by_host[host])
            try:
                time.sleep((50 + zlib.crc32(self.path.encode()) % 101) / 1000)  # 50-150 ms, fixed per URL
                name = self.path.rsplit("/", 1)[-1]
                if name not in files:
                    return self._answer(404, b"no such image", "text/plain")
                if self.headers.get("If-None-Match") == etags[name]:
                    return self._answer(304, b"", None, {"ETag": etags[name]})
                ctype = "image/" + {"jpg": "jpeg", "webp": "webp", "png": "png"}[name.rsplit(".", 1)[1]]
                self._answer(200, files[name], ctype, {"ETag": etags[name]})
            finally:
                with stats.lock:
                    stats.in_flight -= 1
                    stats.by_host[host] -= 1

        def _answer(self, code: int, body: bytes, ctype: str | None, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            started, sent, chunk = time.monotonic(), 0, 16384
            while sent < len(body):  # at most ``bandwidth`` bytes/s on this connection
                self.wfile.write(body[sent:sent + chunk])
                sent += chunk
                ahead = sent / bandwidth - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if code == 200 and ctype and ctype.startswith("image/"):
                with stats.lock:
                    stats.status[code] += 1
                    stats.body_bytes += len(body)
            elif code != 200 or ctype != "application/json":
                with stats.lock:
                    stats.status[code] += 1

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    servers = [Server((host, 0), Handler) for host in HOSTS]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"ports": [s.server_address[1] for s in servers], "files": len(files),
                      "file_bytes": sum(map(len, files.values()))}), flush=True)
    sys.stdin.read()  # the parent closes stdin (or dies): stop


@contextmanager
def image_server(drafts: int, bandwidth: int) -> Iterator[dict[str, Any]]:
    """The ``--serve`` child in its own process group; yields its ports; stopped by its pgid."""
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--drafts", str(drafts), "--bandwidth",
                              str(bandwidth)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        if not line:
            raise SystemExit(f"image server exited with {child.wait()}")
        yield json.loads(line)
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=5)


def server_stats(ports: list[int], reset: bool = False) -> dict[str, Any]:
    with urlopen(f"http://{HOSTS[0]}:{ports[0]}/__stats{'?reset=1' if reset else ''}", timeout=10) as answer:
        return json.loads(answer.read())


# --- the PO, the databases, the phases ----------------------------------------------------------------------------


def write_po(path: Path, cat: Catalogue, ports: list[int], number: str) -> None:
    """A CSV PO: SKU, description, quantity, cost, three picture columns."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["PO Number", number])
        out.writerow([])
        out.writerow(["SKU", "Description", "Quantity", "Unit Cost", "Image 1", "Image 2", "Image 3"])
        for n, (sku, urls) in enumerate(cat.lines.items()):
            links = [f"http://{HOSTS[h]}:{ports[h]}{p}" for h, p in urls]
            out.writerow([sku, f"Bench product {n} in blue", n % 5 + 1, f"{n % 40 + 5}.50", *links])


@contextmanager
def fresh_database(database_url: str | None, home: Path, synchronous: str | None = None) -> Iterator[Any]:
    """A migrated database: a SQLite file under ``home`` (``PRAGMA synchronous`` as given, else the app's), or a
    new schema of ``database_url`` (dropped after)."""
    import sqlalchemy as sa

    from poflow_dagster.store.db import Database

    if not database_url:
        db = Database(f"sqlite:///{home}/poflow.sqlite3")
        if synchronous:
            sa.event.listen(db.engine, "connect",
                            lambda connection, _record: connection.execute(f"PRAGMA synchronous={synchronous}"))
        db.migrate()
        try:
            yield db
        finally:
            db.dispose()
        return
    schema = f"poflow_bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(database_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in database_url else "?"
    db = Database(f"{database_url}{joiner}options=-csearch_path%3D{schema}")
    try:
        db.migrate()
        yield db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def register_po(db: Any, path: Path) -> str:
    """The production path from a file to drafts: extract, register, save, draft, cache the parse."""
    from poflow_dagster.extraction import extract_file
    from poflow_dagster.store.drafts import create_drafts_for_po
    from poflow_dagster.store.parse_cache import store_parse
    from poflow_dagster.store.purchase_orders import save_purchase_order
    from poflow_dagster.store.uploads import StoredFile, register_upload

    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    parsed = extract_file(path)
    upload = register_upload(db, MERCHANT, StoredFile(sha256=sha, size_bytes=len(data), mime_type="text/csv",
                                                      stored_path=str(path), original_filename=path.name))
    save_purchase_order(db, upload.id, parsed)
    create_drafts_for_po(db, upload.id, parsed)
    store_parse(db, upload.id, sha, parsed)
    return upload.id


class RecordingAttach:
    """A no-op attach: checks the stored file is there, records the call, answers ``attached``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, draft: Any, image: Any) -> dict[str, str]:
        if not image.path.is_file():
            return {"outcome": "failed", "reason": "stored file missing"}
        with self._lock:
            self.calls.append((draft.sku, image.sha256))
            return {"outcome": "attached", "media_gid": f"gid://shopify/MediaImage/{len(self.calls)}"}


def duplicates(db: Any) -> dict[str, int]:
    """The ``duplicate`` rows split into exact (same sha256 as the kept image) and near (another picture size)."""
    import sqlalchemy as sa

    from poflow_dagster.store.schema import DraftImage

    with db.session() as session:
        rows = session.execute(sa.select(DraftImage.sha256, DraftImage.duplicate_of)
                               .where(DraftImage.state == "duplicate")).all()
    exact = sum(1 for sha, of in rows if sha == of)
    return {"exact": exact, "near": len(rows) - exact}


def stored(db: Any, root: Path) -> dict[str, int]:
    import sqlalchemy as sa

    from poflow_dagster.store.schema import ImageRow

    with db.session() as session:
        images = session.scalar(sa.select(sa.func.count(ImageRow.id)))
    files = [p for p in root.rglob("*") if p.is_file() and "feeds" not in p.parts]
    return {"images": images or 0, "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_collect(db: Any, upload_id: str, fetch: Any, root: Path, ports: list[int]) -> dict[str, Any]:
    """One ``collect_images`` run, timed, with what the server saw during it and the transactions it committed."""
    from sqlalchemy import event

    from poflow_dagster.images.collect import ImageSettings, collect_images

    attach = RecordingAttach()
    commits = Counter()

    def count_commit(_connection: Any) -> None:
        commits["n"] += 1

    server_stats(ports, reset=True)
    event.listen(db.engine, "commit", count_commit)
    started = time.perf_counter()
    try:
        run = collect_images(db, upload_id, settings=ImageSettings(fetch=fetch, root=root), attach=attach)
    finally:
        wall = time.perf_counter() - started
        event.remove(db.engine, "commit", count_commit)
    return {"wall_s": round(wall, 3), "run": run.to_dict(), "attach_calls": len(attach.calls),
            "commits": commits["n"], "server": server_stats(ports), "peak_rss_mb": round(peak_rss_mb(), 1)}


def fetch_only(po: Path, fetch: Any, ports: list[int]) -> dict[str, Any]:
    """(d) The PO's distinct URLs through ``fetch_images`` alone (same settings as (b), no database, no cache):
    what the fetcher itself reaches, to tell fetching from the per-image bookkeeping in ``collect_images``."""
    from poflow_dagster.extraction import extract_file
    from poflow_dagster.images.fetch import ImageRequest, fetch_images

    urls = list(dict.fromkeys(url for line in extract_file(po).lines for url in line.image_urls))
    server_stats(ports, reset=True)
    started = time.perf_counter()
    results = fetch_images([ImageRequest(url) for url in urls], settings=fetch)
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 3), "ok": sum(1 for r in results if r.ok), "urls": len(urls),
            "server": server_stats(ports)}


def phase(name: str, args: argparse.Namespace, workdir: Path, po: Path, fetch: Any, ports: list[int],
          second_po: Path | None = None) -> dict[str, Any]:
    """A fresh home + database; the PO collected once (and, given ``second_po``, that one after it)."""
    from poflow_dagster.store.merchants import configure_merchant

    home = workdir / name
    home.mkdir()
    os.environ["POFLOW_HOME"] = str(home)
    with fresh_database(args.database_url, home, args.sqlite_synchronous) as db:
        with db.session() as session:
            configure_merchant(session, MERCHANT, markup_percent=Decimal(40))
        root = home / "images"
        upload = register_po(db, po)
        log(f"{name}: {fetch.concurrency} in flight, {fetch.per_host} per host ...")
        result = timed_collect(db, upload, fetch, root, ports)
        result.update(duplicates=duplicates(db), stored=stored(db, root))
        log(f"{name}: {result['wall_s']:.1f} s, {result['server']['requests']} requests")
        if second_po is not None:
            second = register_po(db, second_po)
            result["second_po"] = timed_collect(db, second, fetch, root, ports)
            result["second_po"]["stored"] = stored(db, root)
            log(f"second PO: {result['second_po']['wall_s']:.2f} s, "
                f"{result['second_po']['server']['requests']} requests")
    return result


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from poflow_dagster.images.fetch import FetchSettings

    os.environ["POFLOW_IMAGE_ALLOWED_HOSTS"] = "127.0.0.0/8"
    cat = catalogue(args.drafts)
    log(f"rendering {len(cat.pictures)} pictures for {args.drafts} drafts in the server process ...")
    with image_server(args.drafts, args.bandwidth) as info:
        ports = info["ports"]
        log(f"image server: {info['files']} files, {info['file_bytes'] / 1e6:.1f} MB, hosts "
            + ", ".join(f"{h}:{p}" for h, p in zip(HOSTS, ports)))
        first, second = workdir / "po-1.csv", workdir / "po-2.csv"
        write_po(first, cat, ports, "BENCH-IMG-1")
        write_po(second, cat, ports, "BENCH-IMG-2")
        rss_before = peak_rss_mb()
        default = FetchSettings.from_env()
        sequential = FetchSettings.from_env(concurrency=1, per_host=1)
        a = phase("a-sequential", args, workdir, first, sequential, ports)
        b = phase("b-default", args, workdir, first, default, ports, second_po=second)
        d = fetch_only(first, default, ports)
        log(f"fetch only: {d['wall_s']:.1f} s, {d['server']['requests']} requests")
    return {
        "drafts": args.drafts, "candidates": sum(len(u) for u in cat.lines.values()),
        "distinct_urls": len({(h, p) for urls in cat.lines.values() for h, p in urls}),
        "built_in": {"near_duplicates": cat.near, "exact_duplicates": cat.exact},
        "server_files": info["files"], "server_file_bytes": info["file_bytes"],
        "hosts": len(HOSTS), "latency_ms": "50-150", "bandwidth_bytes_s": args.bandwidth,
        "database": "postgresql" if args.database_url else (
            f"sqlite, synchronous={args.sqlite_synchronous}" if args.sqlite_synchronous else "sqlite"),
        "settings": {"default": {"concurrency": default.concurrency, "per_host": default.per_host}},
        "rss_before_mb": round(rss_before, 1), "a": a, "b": b, "c": b.pop("second_po"), "d": d,
        "ratio_b_a": round(b["wall_s"] / a["wall_s"], 3), "ratio_d_a": round(d["wall_s"] / a["wall_s"], 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def print_report(r: dict[str, Any]) -> None:
    mb = 1e6
    print(f"\n{r['drafts']} drafts x 3 candidates ({r['candidates']} found, {r['distinct_urls']} distinct URLs), "
          f"{r['hosts']} hosts, {r['latency_ms']} ms per request, {r['bandwidth_bytes_s'] / 2**20:.0f} MiB/s per "
          f"connection; {r['database']}; load average {r['load_average']}")
    print(f"{'phase':<34}{'wall':>9}{'requests':>10}{'200':>6}{'304':>6}{'MB fetched':>12}{'in flight max':>15}"
          f"{'fetch_s':>9}{'attach calls':>14}{'commits':>9}")
    rows = [("(a) sequential 1 / 1 per host", r["a"]),
            (f"(b) default {r['settings']['default']['concurrency']} / {r['settings']['default']['per_host']} per host",
             r["b"]), ("(c) second PO, same URLs (b's DB)", r["c"]),
            ("(d) fetch_images alone, as (b)", r["d"])]
    for label, p in rows:
        s, run_ = p["server"], p.get("run", {})
        fetch_s = f"{run_['fetch_s']:.2f}" if run_ else "-"
        print(f"{label:<34}{p['wall_s']:>8.2f}s{s['requests']:>10}{s['status'].get('200', 0):>6}"
              f"{s['status'].get('304', 0):>6}{s['body_bytes'] / mb:>12.1f}{s['max_in_flight']:>15}"
              f"{fetch_s:>9}{p.get('attach_calls', '-'):>14}{p.get('commits', '-'):>9}")
    ratio = r["ratio_b_a"]
    print(f"ratio b/a = {ratio:.3f} (goal <= 0.15: {'MET' if ratio <= 0.15 else 'NOT MET'}); "
          f"(a)/(b) speed-up {1 / ratio:.1f}x; fetching alone d/a = {r['ratio_d_a']:.3f} "
          f"({r['d']['ok']} of {r['d']['urls']} URLs ok)")
    for label, p in (("a", r["a"]), ("b", r["b"])):
        run_, dup, st = p["run"], p["duplicates"], p["stored"]
        print(f"({label}) found {run_['found']}, fetched {run_['fetched']}, kept/attached {run_['attached']}, "
              f"duplicates removed {run_['deduplicated']} (exact {dup['exact']}, near {dup['near']}; built in: "
              f"exact {r['built_in']['exact_duplicates']}, near {r['built_in']['near_duplicates']}), "
              f"rejected {run_['rejected_total']}; stored {st['images']} images / {st['files']} files, "
              f"{st['bytes'] / mb:.1f} MB of {p['server']['body_bytes'] / mb:.1f} MB fetched")
    c = r["c"]
    print(f"(c) requests {c['server']['requests']}, reused without a request {c['run']['reused']}, already attached "
          f"{c['run']['already_attached']}, new duplicates {c['run']['deduplicated']} (already recorded "
          f"{c['run'].get('already_duplicate', 0)}), attach calls {c['attach_calls']}, stored files after "
          f"{c['stored']['files']} (unchanged: {c['stored']['files'] == r['b']['stored']['files']})")
    print(f"peak RSS: {r['rss_before_mb']:.0f} MB before the phases, {r['a']['peak_rss_mb']:.0f} MB after (a), "
          f"{r['b']['peak_rss_mb']:.0f} MB after (b), {c['peak_rss_mb']:.0f} MB after (c)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafts", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="40 drafts")
    parser.add_argument("--bandwidth", type=int, default=2 * 2**20, help="bytes/s per connection (2 MiB/s)")
    parser.add_argument("--database-url", help="PostgreSQL URL (a fresh schema per phase); default: SQLite files")
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL", "OFF"),
                        help="diagnosis: this PRAGMA synchronous on the SQLite files (default: the app's, FULL)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.drafts = 40
    if args.serve:
        serve(args.drafts, args.bandwidth)
        return
    workdir = Path(tempfile.mkdtemp(prefix="poflow-images-bench-"))
    try:
        result = run(args, workdir)
        print_report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
