"""A Shopify stand-in that misbehaves: the bundled emulator (small cost bucket) behind a proxy answering
HTTP 502 for a share of requests, chosen at random with a fixed seed.

    .venv/bin/python benchmarks/fault_proxy.py --state shop.sqlite3 --bucket-size 200 --restore-rate 20 \\
        --fail-rate 0.2 --seed 6

Prints one line, ``fault proxy listening on http://127.0.0.1:PORT (emulator http://127.0.0.1:PORT)``, then
serves until SIGTERM/SIGINT. An injected 502 either never reaches the emulator ("before") or is answered
after the emulator has executed the request ("after": the write happened, the answer was lost), in the
share ``--after-share``. ``GET /__stats`` returns the counters as JSON (proxy and emulator).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poflow_dagster.shopify.connection import EMULATOR_TOKEN  # noqa: E402
from poflow_dagster.shopify.emulator import start_emulator  # noqa: E402

BAD_GATEWAY = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], upstream: tuple[str, int], *, fail_rate: float,
                 after_share: float, seed: int, emulator=None) -> None:
        super().__init__(address, _Handler)
        self.upstream = upstream
        self.fail_rate = fail_rate
        self.after_share = after_share
        self.emulator = emulator
        self._rng = random.Random(seed)
        self.lock = threading.Lock()
        self.local = threading.local()
        self.counts = {"requests": 0, "forwarded": 0, "injected_502_before": 0, "injected_502_after": 0,
                       "upstream_errors": 0}

    def decide(self) -> str:
        """``forward``, ``before`` (502 without forwarding) or ``after`` (forward, then answer 502)."""
        with self.lock:
            self.counts["requests"] += 1
            if self._rng.random() >= self.fail_rate:
                return "forward"
            return "after" if self._rng.random() < self.after_share else "before"

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def stats(self) -> dict:
        with self.lock:
            result = dict(self.counts)
        if self.emulator is not None:
            stats = self.emulator.stats
            result["emulator"] = {
                "requests": stats.requests, "graphql_responses": stats.graphql_responses,
                "throttled": stats.throttled, "auth_failures": stats.auth_failures,
                "products": self.emulator.count_products(),
            }
        return result


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path == "/__stats":
            self._send(200, json.dumps(self.server.stats()).encode(), {"Content-Type": "application/json"})
        else:
            self._send(405, b'{"errors": "Method Not Allowed"}', {"Content-Type": "application/json"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        decision = self.server.decide()
        if decision == "before":
            self.server.count("injected_502_before")
            self._send(502, BAD_GATEWAY, {"Content-Type": "text/html"})
            return
        try:
            status, headers, answer = self._forward(body)
        except (OSError, http.client.HTTPException):
            self.server.count("upstream_errors")
            self._send(502, BAD_GATEWAY, {"Content-Type": "text/html"})
            return
        if decision == "after":
            self.server.count("injected_502_after")
            self._send(502, BAD_GATEWAY, {"Content-Type": "text/html"})
            return
        self.server.count("forwarded")
        self._send(status, answer, headers)

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send the request to the emulator over this thread's keep-alive connection (one reconnect)."""
        for attempt in (1, 2):
            connection = getattr(self.server.local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(*self.server.upstream, timeout=60)
                self.server.local.connection = connection
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "x-shopify-access-token", "accept")}
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                kept = {k: v for k, v in response.getheaders()
                        if k.lower() in ("content-type", "x-shopify-api-version", "retry-after")}
                return response.status, kept, answer
            except (OSError, http.client.HTTPException):
                connection.close()
                self.server.local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, required=True, help="emulator SQLite state file")
    parser.add_argument("--token", default=EMULATOR_TOKEN)
    parser.add_argument("--bucket-size", type=float, default=200)
    parser.add_argument("--restore-rate", type=float, default=20)
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--after-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()

    emulator = start_emulator(state_path=args.state, access_token=args.token,
                              bucket_size=args.bucket_size, restore_rate=args.restore_rate)
    proxy = FaultProxy((args.host, args.port), (emulator.host, emulator.port), fail_rate=args.fail_rate,
                       after_share=args.after_share, seed=args.seed, emulator=emulator)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=proxy.shutdown, daemon=True).start())
    host, port = proxy.server_address[:2]
    print(f"fault proxy listening on http://{host}:{port} (emulator {emulator.url})", flush=True)
    try:
        proxy.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server_close()
        emulator.stop()


if __name__ == "__main__":
    main()
