"""Is a byte string a usable product image? Sniffed, size-checked, decoded, hashed.

:func:`validate_image` never trusts a ``Content-Type``: the format comes from the magic bytes (PNG, JPEG, WebP,
GIF), Pillow may open only that format, and the pixel count is read from the header and refused BEFORE anything is
decoded. Pillow's own decompression-bomb guard (``DecompressionBombError``, and the warning when a caller has
turned it into an error) is caught too; the process-wide ``Image.MAX_IMAGE_PIXELS`` and warning filters are never
touched, so concurrent threads with different limits do not interfere. Then ``verify()`` checks the file's
structure and a fresh ``load()`` decodes it fully (a truncated image is a ``decode_error``). Animated images keep
their first frame (``frames`` records how many there are). Every refusal is an :class:`ImageRejected` with a
stable ``reason``.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

import imagehash
from PIL import Image, UnidentifiedImageError

__all__ = [
    "MAX_BYTES_ENV",
    "MAX_PIXELS_ENV",
    "ImageRejected",
    "ValidImage",
    "env_int",
    "sniff_format",
    "validate_image",
]

MAX_PIXELS_ENV = "POFLOW_IMAGE_MAX_PIXELS"
MAX_BYTES_ENV = "POFLOW_IMAGE_MAX_BYTES"
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MIN_SIDE = 100

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class ImageRejected(Exception):
    """Bytes that are not a usable image; ``reason`` is a stable code (``not_an_image``, ``too_small``, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class ValidImage:
    """What a checked image is: format, size, content hash and perceptual hash."""

    format: str  # PNG, JPEG, WEBP, GIF
    mime_type: str
    width: int
    height: int
    byte_length: int
    sha256: str
    phash: str  # imagehash.phash as hex (64 bits)
    mode: str  # Pillow mode of the decoded frame (RGB, CMYK, P, ...)
    frames: int  # 1 unless animated; the first frame is the one checked and hashed

    @property
    def pixels(self) -> int:
        return self.width * self.height


def env_int(name: str, default: int) -> int:
    """A positive integer from the environment (``default`` when unset); a bad value is a one-line error."""
    from poflow_dagster.domain.errors import PoflowError

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise PoflowError("bad_config", f"{name} must be a positive integer, not {raw!r}") from None
    if value <= 0:
        raise PoflowError("bad_config", f"{name} must be a positive integer, not {raw!r}")
    return value


def sniff_format(data: bytes) -> str | None:
    """The image format the magic bytes announce (PNG, JPEG, WEBP, GIF), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _open(data: bytes, fmt: str) -> Image.Image:
    """Open (header only) with the sniffed format's plugin; bombs and garbage become :class:`ImageRejected`."""
    try:
        return Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("decode_error", f"{fmt} header unreadable: {exc}") from None


def _check_size(im: Image.Image, max_pixels: int, min_side: int) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageRejected("decode_error", f"image declares size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("too_many_pixels", f"{width}x{height} is over the limit of {max_pixels} pixels")
    if width < min_side or height < min_side:
        raise ImageRejected("too_small", f"{width}x{height} is smaller than {min_side}x{min_side}")


def _frame_count(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise ImageRejected("decode_error", f"frames unreadable: {exc}") from None


def _decode(data: bytes, fmt: str) -> Image.Image:
    """verify() the structure, then decode the first frame fully from a fresh handle."""
    try:
        with _open(data, fmt) as probe:
            probe.verify()
        im = _open(data, fmt)
        im.seek(0)
        im.load()
        return im
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise ImageRejected("decode_error", f"{fmt} does not decode: {exc}") from None


def validate_image(
    data: bytes,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
) -> ValidImage:
    """Check ``data`` and describe it, or raise :class:`ImageRejected`.

    Limits default to ``POFLOW_IMAGE_MAX_PIXELS`` (40 MP) and ``POFLOW_IMAGE_MAX_BYTES`` (20 MiB); images smaller
    than ``min_side`` on either side are ``too_small``.
    """
    max_pixels = max_pixels or env_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)
    max_bytes = max_bytes or env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    if not data:
        raise ImageRejected("empty", "no bytes")
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes is over the limit of {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected("not_an_image", f"not PNG, JPEG, WebP or GIF (starts with {data[:8]!r})")
    with _open(data, fmt) as header:
        _check_size(header, max_pixels, min_side)
        frames = _frame_count(header)
    im = _decode(data, fmt)
    try:
        phash = str(imagehash.phash(im))
        return ValidImage(
            format=fmt,
            mime_type=_MIME[fmt],
            width=im.width,
            height=im.height,
            byte_length=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            phash=phash,
            mode=im.mode,
            frames=frames,
        )
    finally:
        im.close()
