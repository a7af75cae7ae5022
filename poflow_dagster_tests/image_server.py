"""A local HTTP image server for tests and benchmarks (real HTTP, real image bytes made with Pillow).

Paths (``GET``):

- ``/png``, ``/jpeg``, ``/webp``, ``/gif-animated`` (3 frames), ``/cmyk.jpg``: real images, 400x300;
  ``/png?i=N`` etc. are the same bytes under a distinct URL.
- ``/pic-small.jpg`` (200x150) and ``/pic-large.jpg`` (800x600): the same picture at two sizes.
- ``/tiny.png`` (50x50), ``/truncated.png`` (half a PNG), ``/not-image.png`` (HTML served as ``image/png``).
- ``/etag.png``: ``ETag: "v1"``, 304 when ``If-None-Match`` names it.
- ``/missing``: 404. ``/always-500``: 500. ``/flaky``: 500 on the first hit, then the PNG.
- ``/ratelimited``: 429 with ``Retry-After: 1`` on the first hit, then the PNG.
- ``/slow?ms=N``: sleeps N ms (default 500), then the PNG.
- ``/huge``: announces ``Content-Length: 10**12``. ``/stream-big?bytes=N``: N bytes with no Content-Length.
- ``/bomb.png``: a tiny PNG declaring 30000x30000 pixels. ``/bomb-64mp.png``: a real 8000x8000 PNG (~64 KB).
- ``/redirect-metadata``: 302 to ``http://169.254.169.254/latest/meta-data/``. ``/redirect-ok``: 302 to ``/png``.
- ``/loop-a`` <-> ``/loop-b``: a redirect loop. ``/chain/N``: N redirects, then the PNG.

Every request is counted per path (``hits``), with its arrival time (``hit_times``) and headers (``seen``); the
server records the most requests in flight at once, overall (``max_in_flight``) and per ``Host`` name
(``max_in_flight_by_host``). Given :func:`make_certificates` it serves HTTPS (a throw-away CA).
Use :func:`start_image_server` as a context manager, or the ``image_server`` fixture.
"""

from __future__ import annotations

import io
import os
import ssl
import struct
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image, ImageDraw

__all__ = [
    "ImageServer",
    "image_server",
    "TlsFiles",
    "jpeg_bytes",
    "make_certificates",
    "picture",
    "png_bytes",
    "start_image_server",
    "webp_bytes",
]

METADATA_URL = "http://169.254.169.254/latest/meta-data/"


def picture(width: int = 400, height: int = 300, mode: str = "RGB") -> Image.Image:
    """A deterministic picture (gradient, shapes) that looks the same at every size."""
    base = Image.new("RGB", (400, 300))
    draw = ImageDraw.Draw(base)
    for y in range(300):
        draw.line([(0, y), (399, y)], fill=(y * 255 // 300, 90, 255 - y * 255 // 300))
    draw.ellipse([40, 40, 200, 200], fill=(250, 220, 40))
    draw.rectangle([230, 60, 370, 260], fill=(20, 140, 60))
    draw.polygon([(60, 280), (180, 220), (300, 290)], fill=(200, 30, 30))
    return base.resize((width, height), Image.Resampling.LANCZOS).convert(mode)


def _encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


@lru_cache(maxsize=None)
def png_bytes(width: int = 400, height: int = 300) -> bytes:
    return _encode(picture(width, height), "PNG")


@lru_cache(maxsize=None)
def jpeg_bytes(width: int = 400, height: int = 300, mode: str = "RGB") -> bytes:
    return _encode(picture(width, height, mode), "JPEG", quality=90)


@lru_cache(maxsize=None)
def webp_bytes(width: int = 400, height: int = 300) -> bytes:
    return _encode(picture(width, height), "WEBP", quality=90)


@lru_cache(maxsize=None)
def animated_gif_bytes() -> bytes:
    frames = [picture().rotate(angle) for angle in (0, 10, 20)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _gray_png(width: int, height: int, rows: int) -> bytes:
    """A grayscale PNG declaring ``width`` x ``height`` whose IDAT holds ``rows`` rows of zeros."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    idat = b"".join(compressor.compress(row * min(100, rows - done)) for done in range(0, rows, 100))
    idat += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@lru_cache(maxsize=None)
def bomb_png() -> bytes:
    """30000x30000 declared, a few rows of data: Pillow's own guard refuses it on open."""
    return _gray_png(30000, 30000, 10)


@lru_cache(maxsize=None)
def bomb_64mp_png() -> bytes:
    """A complete 8000x8000 (64 MP) PNG of zeros, ~64 KB: under Pillow's guard, over our 40 MP limit."""
    return _gray_png(8000, 8000, 8000)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        hit = self.server.owner._enter(parts.path, host, dict(self.headers))
        try:
            self._route(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}, hit)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (too large, timeout): that is the point of some paths
        finally:
            self.server.owner._leave(host)

    def _send(self, code: int, body: bytes = b"", ctype: str = "image/png", headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})

    def _route(self, path: str, query: dict[str, str], hit: int) -> None:
        static = {
            "/png": (png_bytes, "image/png"),
            "/jpeg": (jpeg_bytes, "image/jpeg"),
            "/webp": (webp_bytes, "image/webp"),
            "/gif-animated": (animated_gif_bytes, "image/gif"),
            "/cmyk.jpg": (lambda: jpeg_bytes(400, 300, "CMYK"), "image/jpeg"),
            "/pic-small.jpg": (lambda: jpeg_bytes(200, 150), "image/jpeg"),
            "/pic-large.jpg": (lambda: jpeg_bytes(800, 600), "image/jpeg"),
            "/tiny.png": (lambda: png_bytes(50, 50), "image/png"),
            "/truncated.png": (lambda: png_bytes()[: len(png_bytes()) // 2], "image/png"),
            "/not-image.png": (lambda: b"<!doctype html><html><body>Not found</body></html>", "image/png"),
            "/bomb.png": (bomb_png, "image/png"),
            "/bomb-64mp.png": (bomb_64mp_png, "image/png"),
        }
        if path in static:
            make, ctype = static[path]
            return self._send(200, make(), ctype)
        if path == "/etag.png":
            if self.headers.get("If-None-Match") == '"v1"':
                return self._send(304, b"", "image/png", {"ETag": '"v1"'})
            return self._send(200, png_bytes(), "image/png", {"ETag": '"v1"'})
        if path == "/missing":
            return self._send(404, b"not here", "text/plain")
        if path == "/always-500":
            return self._send(500, b"boom", "text/plain")
        if path == "/flaky":
            return self._send(500, b"boom", "text/plain") if hit == 1 else self._send(200, png_bytes())
        if path == "/ratelimited":
            if hit == 1:
                return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            return self._send(200, png_bytes())
        if path == "/slow":
            time.sleep(int(query.get("ms", "500")) / 1000)
            return self._send(200, png_bytes())
        if path == "/huge":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            return self.wfile.write(png_bytes()[:1024])
        if path == "/stream-big":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()  # HTTP/1.0, no Content-Length: the body ends when the connection closes
            remaining = int(query.get("bytes", str(1 << 20)))
            while remaining > 0:
                piece = min(remaining, 16384)
                self.wfile.write(b"\x00" * piece)
                remaining -= piece
            return None
        if path == "/redirect-metadata":
            return self._redirect(METADATA_URL)
        if path == "/redirect-ok":
            return self._redirect("/png")
        if path in ("/loop-a", "/loop-b"):
            return self._redirect("/loop-b" if path == "/loop-a" else "/loop-a")
        if path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            return self._redirect(f"/chain/{left - 1}") if left > 0 else self._send(200, png_bytes())
        return self._send(404, b"no such path", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ImageServer


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate for ``names`` signed by it (PEM files in ``directory``)."""

    ca_file: str
    cert_file: str
    key_file: str

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only the test CA (hostname checking on)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: str, names: list[str]) -> TlsFiles:
    """Create a CA and a certificate for the DNS ``names`` (no IP addresses in it) under ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)

    def build(subject: str, issuer: x509.Name | None, key, signer, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("poflow test CA", None, ca_key, ca_key, True)
    cert = build(names[0], ca.subject, key, ca_key, False)
    paths = {n: os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem")}
    for name, blob in (("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
                       ("cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
                       ("key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))):
        with open(paths[name], "wb") as handle:
            handle.write(blob)
    return TlsFiles(paths["ca.pem"], paths["cert.pem"], paths["key.pem"])


class ImageServer:
    """The running server's address and what it has seen (HTTPS when given certificates)."""

    def __init__(self, host: str = "127.0.0.1", tls: TlsFiles | None = None) -> None:
        self._httpd = _Server((host, 0), _Handler)
        self.scheme = "https" if tls else "http"
        if tls:
            self._httpd.socket = tls.server_context().wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="image-server", daemon=True)
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.hit_times: dict[str, list[float]] = defaultdict(list)
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._in_flight_by_host: Counter[str] = Counter()
        self.max_in_flight_by_host: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def _enter(self, path: str, host: str, headers: dict[str, str]) -> int:
        with self._lock:
            self.hits[path] += 1
            self.hit_times[path].append(time.monotonic())
            self.seen.append((path, headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._in_flight_by_host[host] += 1
            self.max_in_flight_by_host[host] = max(self.max_in_flight_by_host[host], self._in_flight_by_host[host])
            return self.hits[path]

    def _leave(self, host: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self._in_flight_by_host[host] -= 1

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def start_image_server(tls: TlsFiles | None = None) -> Iterator[ImageServer]:
    """Run an :class:`ImageServer` on a random port for the duration of the block."""
    with ImageServer(tls=tls) as server:
        yield server


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """A fresh image server per test (hit counters start at zero)."""
    with start_image_server() as server:
        yield server
