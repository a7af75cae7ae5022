"""validate_image: sniffed formats, pixel limits before decoding, decode errors, hashes (no server needed)."""

from __future__ import annotations

import hashlib
import io
import threading
import warnings

import imagehash
import pytest
from PIL import Image

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.images import ImageRejected, sniff_format, validate_image
from poflow_dagster_tests.image_server import (
    _chunk,
    _gray_png,
    animated_gif_bytes,
    bomb_64mp_png,
    bomb_png,
    jpeg_bytes,
    picture,
    png_bytes,
    webp_bytes,
)


def _reason(data: bytes, **limits: int) -> str:
    with pytest.raises(ImageRejected) as caught:
        validate_image(data, **limits)
    return caught.value.reason


@pytest.mark.parametrize(
    ("make", "fmt", "mime"),
    [(png_bytes, "PNG", "image/png"), (jpeg_bytes, "JPEG", "image/jpeg"), (webp_bytes, "WEBP", "image/webp"),
     (animated_gif_bytes, "GIF", "image/gif")],
)
def test_each_format_is_sniffed_decoded_and_described(make, fmt, mime):
    data = make()
    image = validate_image(data)
    assert (image.format, image.mime_type, image.width, image.height) == (fmt, mime, 400, 300)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.byte_length == len(data)
    assert len(image.phash) == 16 and int(image.phash, 16) >= 0


def test_the_format_comes_from_the_bytes_not_from_a_name_or_header():
    assert sniff_format(png_bytes()) == "PNG"
    assert sniff_format(jpeg_bytes()) == "JPEG"
    assert sniff_format(webp_bytes()) == "WEBP"
    assert sniff_format(animated_gif_bytes()) == "GIF"
    assert sniff_format(b"<!doctype html><html></html>") is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None  # RIFF, but not WebP
    assert _reason(b"<!doctype html><html><body>Not found</body></html>") == "not_an_image"
    assert _reason(b"%PDF-1.7\n") == "not_an_image"
    assert _reason(b"") == "empty"


def test_a_bmp_or_tiff_is_not_accepted_even_though_pillow_could_open_it():
    out = io.BytesIO()
    picture().save(out, "BMP")
    assert _reason(out.getvalue()) == "not_an_image"


def test_a_png_signature_on_jpeg_data_is_a_decode_error_not_a_guess():
    forged = b"\x89PNG\r\n\x1a\n" + jpeg_bytes()[8:]
    assert _reason(forged) == "decode_error"


def test_same_picture_at_two_sizes_has_near_identical_phash_and_different_sha256():
    small, large = validate_image(jpeg_bytes(200, 150)), validate_image(jpeg_bytes(800, 600))
    assert small.sha256 != large.sha256
    assert imagehash.hex_to_hash(small.phash) - imagehash.hex_to_hash(large.phash) <= 4
    other = validate_image(png_bytes_of(picture().transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    assert imagehash.hex_to_hash(other.phash) - imagehash.hex_to_hash(large.phash) > 10


def png_bytes_of(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def test_animated_gif_keeps_its_first_frame_and_records_the_frame_count():
    image = validate_image(animated_gif_bytes())
    assert image.frames == 3
    first = Image.open(io.BytesIO(animated_gif_bytes()))
    assert image.phash == str(imagehash.phash(first))


def test_cmyk_jpeg_is_accepted():
    image = validate_image(jpeg_bytes(400, 300, "CMYK"))
    assert (image.format, image.mode, image.width) == ("JPEG", "CMYK", 400)


def test_declared_30000_square_bomb_is_refused():
    assert len(bomb_png()) < 10_000
    assert _reason(bomb_png()) == "too_many_pixels"


def test_a_real_64mp_image_is_over_the_default_40mp_limit_but_fine_under_a_higher_one():
    assert _reason(bomb_64mp_png()) == "too_many_pixels"
    assert validate_image(bomb_64mp_png(), max_pixels=70_000_000).width == 8000


def test_the_pixel_limit_is_checked_from_the_header_before_decoding():
    # 8000x8000 declared over an IDAT that is not zlib at all: decoding fails, but the header check refuses first.
    header = _gray_png(8000, 8000, 1)[:33]  # signature + IHDR
    garbage = header + _chunk(b"IDAT", b"not zlib data " * 20) + _chunk(b"IEND", b"")
    assert _reason(garbage) == "too_many_pixels"
    assert _reason(garbage, max_pixels=70_000_000) == "decode_error"


def test_limits_come_from_env(monkeypatch):
    monkeypatch.setenv("POFLOW_IMAGE_MAX_PIXELS", str(400 * 300 - 1))
    assert _reason(png_bytes()) == "too_many_pixels"
    monkeypatch.setenv("POFLOW_IMAGE_MAX_PIXELS", str(400 * 300))
    assert validate_image(png_bytes()).pixels == 400 * 300
    monkeypatch.setenv("POFLOW_IMAGE_MAX_BYTES", "1000")
    assert _reason(png_bytes()) == "too_large"
    monkeypatch.setenv("POFLOW_IMAGE_MAX_BYTES", "lots")
    with pytest.raises(PoflowError) as caught:
        validate_image(png_bytes())
    assert caught.value.code == "bad_config"


def test_small_and_broken_images_are_refused():
    assert _reason(png_bytes(50, 50)) == "too_small"
    assert validate_image(png_bytes(50, 50), min_side=50).width == 50
    assert _reason(png_bytes(400, 99)) == "too_small"
    assert _reason(png_bytes()[: len(png_bytes()) // 2]) == "decode_error"
    assert _reason(jpeg_bytes()[:200]) == "decode_error"


def test_limits_are_per_call_and_never_touch_global_pillow_state():
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    failures: list[str] = []

    def check(limit: int, expect_ok: bool) -> None:
        for _ in range(10):
            try:
                validate_image(png_bytes(), max_pixels=limit)
                ok = True
            except ImageRejected:
                ok = False
            if ok != expect_ok:
                failures.append(f"limit {limit}: ok={ok}")

    threads = [threading.Thread(target=check, args=(limit, ok)) for limit, ok in [(1000, False), (10**7, True)] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before
