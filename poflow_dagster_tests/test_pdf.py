"""PDF reading, scanned detection, rendering and the deterministic text-PDF extractor.

Every expectation comes from the :class:`POSpec` the fixture PDF was printed from.
"""

from __future__ import annotations

import io
from datetime import date
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.extraction.pdf import (
    encode_page_image,
    extract_pdf_po,
    is_scanned,
    read_pdf,
    render_page_images,
)
from poflow_dagster.samples.pdf_documents import (
    POSpec,
    euro_po_spec,
    long_date_po_spec,
    make_encrypted_pdf,
    make_non_po_pdf,
    make_random_pdf,
    make_scanned_pdf,
    make_text_po_pdf,
    make_truncated_pdf,
    multipage_po_spec,
    simple_po_spec,
    terse_po_spec,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SPECS: dict[str, Callable[[], POSpec]] = {
    "one_page_ruled": simple_po_spec,
    "multi_page_unruled": multipage_po_spec,
    "long_date": long_date_po_spec,
    "euro_decimal_comma": euro_po_spec,
    "label_row_two_line_header_wrapped": terse_po_spec,
}


def _assert_matches(po, spec: POSpec) -> None:
    """Header fields, totals and every line equal the spec."""
    assert po is not None
    assert (po.po_number, po.supplier_name, po.order_date, po.currency) == (
        spec.po_number,
        spec.supplier_name,
        spec.order_date,
        spec.currency,
    )
    assert (po.subtotal, po.tax, po.shipping, po.total) == (spec.subtotal, spec.tax, spec.shipping, spec.total)
    got = [(l.line_no, l.sku, l.description, l.quantity, l.unit_cost, l.line_total) for l in po.lines]
    want = [
        (n, l.sku, l.description, l.quantity, l.unit_cost, l.line_total) for n, l in enumerate(spec.lines, start=1)
    ]
    assert got == want
    assert (po.source_format, po.extractor, po.stats) == ("pdf", "pdf_text", {"pages": spec.pages})
    assert po.issues == []


def _error(call: Callable[[], object]) -> PoflowError:
    with pytest.raises(PoflowError) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("name", SPECS)
def test_text_po_is_extracted_as_printed(tmp_path: Path, name: str) -> None:
    spec = SPECS[name]()
    doc = read_pdf(make_text_po_pdf(tmp_path / f"{name}.pdf", spec))
    assert len(doc.pages) == spec.pages
    assert not is_scanned(doc)
    _assert_matches(extract_pdf_po(doc), spec)


def test_multi_page_table_with_repeated_headers_gives_exactly_n_lines(tmp_path: Path) -> None:
    spec = multipage_po_spec(45)
    doc = read_pdf(make_text_po_pdf(tmp_path / "po.pdf", spec))
    assert len(doc.pages) == 3 and all("Page" in page.text for page in doc.pages)
    assert sum(page.text.count("Unit Price") for page in doc.pages) == 3  # header on every page
    po = extract_pdf_po(doc)
    assert po is not None and len(po.lines) == 45
    words = {line.description for line in po.lines} | {line.sku for line in po.lines}
    assert not words & {"Description", "SKU", "Subtotal", "Total", "Page 1 of 3", "Page 2 of 3"}


def test_totals_are_totals_not_items(tmp_path: Path) -> None:
    spec = simple_po_spec()  # has items named "Shipping box, large" and "Total care kit"
    po = extract_pdf_po(read_pdf(make_text_po_pdf(tmp_path / "po.pdf", spec)))
    assert po is not None
    assert [line.description for line in po.lines] == [line.description for line in spec.lines]
    assert (po.subtotal, po.tax, po.shipping, po.total) == (spec.subtotal, spec.tax, spec.shipping, spec.total)


def test_fixture_bytes_are_deterministic(tmp_path: Path) -> None:
    spec = euro_po_spec()
    first = make_text_po_pdf(tmp_path / "a.pdf", spec).read_bytes()
    assert make_text_po_pdf(tmp_path / "b.pdf", spec).read_bytes() == first


def test_scanned_pdf_is_detected_and_rendered(tmp_path: Path) -> None:
    path = make_scanned_pdf(tmp_path / "scan.pdf", pages=2)
    doc = read_pdf(path)
    assert is_scanned(doc)
    assert [page.has_text for page in doc.pages] == [False, False]
    assert extract_pdf_po(doc) is None
    images = render_page_images(path, [1, 2], dpi=100)
    assert len(images) == 2 and all(data.startswith(PNG_SIGNATURE) and mime == "image/png" for data, mime in images)
    with Image.open(io.BytesIO(images[0][0])) as image:
        assert image.size[0] == pytest.approx(827, abs=2)  # A4 width at 100 dpi
        assert image.mode == "L"  # black on white: sent as greyscale PNG


def test_render_respects_max_pixels(tmp_path: Path) -> None:
    path = make_text_po_pdf(tmp_path / "po.pdf", simple_po_spec())
    ((data, _),) = render_page_images(path, [1], dpi=300, max_pixels=500_000)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size[0] * image.size[1] <= 500_000
    with pytest.raises(ValueError):
        render_page_images(path, [2])


def _noisy_paper(mode: str) -> Image.Image:
    """A flatbed scan of grey paper (grain), with dark text: photo-like, in ``mode``."""
    from PIL import ImageDraw

    grain = Image.effect_noise((1240, 1754), 18)
    image = Image.blend(Image.new("L", grain.size, 235), grain, 0.25).convert("RGB")
    if mode == "colour":  # yellowish paper: blue a tenth lower
        red, green, blue = image.split()
        image = Image.merge("RGB", (red, green, blue.point(lambda v: v * 9 // 10)))
    draw = ImageDraw.Draw(image)
    for row in range(20):
        draw.text((100, 100 + row * 60), f"00{row}  Scanned item {row}   {row}   {row}.50", fill=(20, 20, 20))
    return image


def _png_size(image: Image.Image) -> int:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return len(buffer.getvalue())


@pytest.mark.parametrize("mode", ["grey", "colour"])
def test_a_photo_like_page_is_sent_as_jpeg_several_times_smaller_than_png(mode: str) -> None:
    page = _noisy_paper(mode)
    data, mime = encode_page_image(page)
    assert mime == "image/jpeg" and data.startswith(b"\xff\xd8\xff")
    assert len(data) * 3 < _png_size(page)  # measured: ~0.3 MB against ~1.7 MB
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.size == page.size  # full resolution
        assert decoded.mode == ("L" if mode == "grey" else "RGB")  # grey pixels go as greyscale; colour stays


def test_an_ink_on_paper_page_stays_png_lossless() -> None:
    from PIL import ImageDraw

    page = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(page)
    for row in range(20):
        draw.text((100, 100 + row * 60), f"SKU-{row:03d}  Item {row}", fill=(0, 0, 0))
    draw.rectangle((900, 60, 1100, 120), fill=(200, 30, 30))  # a red stamp: colour, still ink on paper
    data, mime = encode_page_image(page)
    assert mime == "image/png" and data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "RGB" and ImageChops.difference(decoded, page).getbbox() is None


def test_encrypted_pdf(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "locked.pdf", user_password="secret")
    assert _error(lambda: read_pdf(path)).code == "encrypted_pdf"
    assert _error(lambda: render_page_images(path, [1])).code == "encrypted_pdf"


def test_encrypted_pdf_with_empty_user_password_is_read(tmp_path: Path) -> None:
    spec = simple_po_spec()
    doc = read_pdf(make_encrypted_pdf(tmp_path / "perms-only.pdf", spec, user_password=""))
    _assert_matches(extract_pdf_po(doc), spec)


@pytest.mark.parametrize(
    "make",
    [
        make_truncated_pdf,
        lambda path: make_truncated_pdf(path, eof_marker=True),
        make_random_pdf,
        lambda path: make_random_pdf(path, eof_marker=True),
        lambda path: path.write_bytes(b"hello, this is not a PDF at all") and path,
    ],
    ids=["truncated", "truncated_with_eof_marker", "random_after_header", "random_with_eof_marker", "not_a_pdf"],
)
def test_damaged_pdf(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = tmp_path / "bad.pdf"
    make(path)
    assert _error(lambda: read_pdf(path)).code == "corrupt_pdf"
    assert _error(lambda: render_page_images(path, [1])).code == "corrupt_pdf"


def test_too_many_pages(tmp_path: Path) -> None:
    path = make_text_po_pdf(tmp_path / "po.pdf", multipage_po_spec(45))
    error = _error(lambda: read_pdf(path, max_pages=2))
    assert error.code == "too_many_pages" and "3" in error.message


def test_letter_without_a_table_keeps_its_header(tmp_path: Path) -> None:
    """A readable document is never refused: no item table -> the header fields it has and no lines."""
    doc = read_pdf(make_non_po_pdf(tmp_path / "letter.pdf"))
    assert not is_scanned(doc)
    po = extract_pdf_po(doc)
    assert po is not None and po.lines == []
    assert (po.po_number, po.order_date) == ("1001", date(2026, 3, 3))
