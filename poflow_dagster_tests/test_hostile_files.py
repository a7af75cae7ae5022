"""Hostile files end quickly with one stable code, within memory: xlsx/pdf bombs, the sandbox, inbox links.

The files are generated here (``benchmarks/hostile_files.py`` reuses the generators). Peak memory is the
sandbox child's VmHWM (``SandboxStats.peak_rss_mb``); wall-clock times are not asserted (the limits bound them).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import openpyxl
import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.extraction import extract_file, extract_file_bounded, spreadsheet
from poflow_dagster.extraction.sandbox import SandboxLimits, SandboxStats, run_bounded
from poflow_dagster.intake import ingest_inbox, store_file

MB = 1024 * 1024
PEAK_RSS_LIMIT_MB = 500

# --- generators (also used by benchmarks/hostile_files.py) ----------------------------------------


def _small_workbook() -> bytes:
    workbook = openpyxl.Workbook()
    for row in (["PO Number: H-1"], ["SKU", "Description", "Qty", "Unit Price"], ["A1", "Widget", 2, 3.5]):
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _repeat(block: bytes, total: int) -> Iterator[bytes]:
    chunk = block * max(1, MB // len(block))
    for _ in range(0, total, len(chunk)):
        yield chunk


def _rewrite_xlsx(path: Path, part: str, pieces: Iterable[bytes], extra: dict[str, Iterable[bytes]] | None = None) -> Path:
    """A valid small workbook whose ``part`` is replaced by streamed ``pieces`` (plus ``extra`` parts)."""
    streams = {part: pieces, **(extra or {})}
    with zipfile.ZipFile(io.BytesIO(_small_workbook())) as source, zipfile.ZipFile(
        path, "w", zipfile.ZIP_DEFLATED, compresslevel=9
    ) as out:
        for info in source.infolist():
            if info.filename not in streams:
                out.writestr(info.filename, source.read(info.filename))
        for name, parts in streams.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with out.open(info, "w", force_zip64=True) as handle:
                for piece in parts:
                    handle.write(piece)
    return path


def _cells(row: int, *values: str) -> bytes:
    return b"<row>" + b"".join(b'<c t="inlineStr"><is><t>%s</t></is></c>' % v.encode() for v in values) + b"</row>"


def _sheet_with(middle: Iterable[bytes]) -> Iterator[bytes]:
    """Sheet XML with a small PO table and ``middle`` between its rows."""
    yield (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
           b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
    yield _cells(1, "SKU", "Description", "Qty", "Unit Price")
    yield from middle
    yield _cells(2, "A1", "Widget", "2", "3.50") + b"</sheetData></worksheet>"


def xlsx_giant_comment(path: Path, size: int = 190 * MB) -> Path:
    """The reported file: ~200 KB whose sheet XML holds one ``size``-byte comment."""
    return _rewrite_xlsx(path, "xl/worksheets/sheet1.xml", _sheet_with([b"<!--", *_repeat(b"A", size), b"-->"]))


def xlsx_varied_comment(path: Path, size: int = 3 * MB) -> Path:
    """A comment that does not compress much (so only the XML token scan can catch it)."""
    noise = zlib.compress(os.urandom(64 * 1024)).hex().encode().replace(b"-", b"_")
    return _rewrite_xlsx(path, "xl/worksheets/sheet1.xml", _sheet_with([b"<!--", *_repeat(noise, size), b"-->"]))


def xlsx_giant_attribute(path: Path, size: int = 3 * MB) -> Path:
    """A start tag with a huge attribute full of ``>`` (tags may not contain ``<``, but may contain ``>``)."""
    noise = os.urandom(32 * 1024).hex().encode() + b">"
    return _rewrite_xlsx(path, "xl/worksheets/sheet1.xml", _sheet_with([b'<row r="1" x="', *_repeat(noise, size), b'"/>']))


def xlsx_zip_bomb(path: Path, size: int = 1024 * MB) -> Path:
    """An extra part (``xl/media``) declaring ``size`` bytes of zeros (~1 MB compressed per GB)."""
    return _rewrite_xlsx(path, "xl/media/image1.bin", _repeat(b"\0", size))


def xlsx_comments_part(path: Path, size: int = 150 * MB) -> Path:
    """Excel cell comments (a part openpyxl's read-only mode never opens) of ``size`` bytes."""
    block = b"".join(b'<comment ref="A1"><text><t>%s</t></text></comment>' % os.urandom(24).hex().encode()
                     for _ in range(1000))  # ~100 KB that compresses like real text
    body = [b'<comments xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><commentList>',
            *_repeat(block, size), b"</commentList></comments>"]
    return _rewrite_xlsx(path, "xl/comments1.xml", body)


def xlsx_deep_nesting(path: Path, depth: int = 1_000_000) -> Path:
    """Sheet XML nested ``depth`` elements deep: short, varied tags pass every size check, only the memory
    or time limit stops the parser's ever-deeper tree."""
    names = [b"r%02x" % byte for byte in os.urandom(depth)]
    opening = b"".join(b"<%s>" % name for name in names)
    closing = b"".join(b"</%s>" % name for name in reversed(names))
    return _rewrite_xlsx(path, "xl/worksheets/sheet1.xml", _sheet_with([opening, closing]))


def xlsx_huge_sheet(path: Path, rows: int = 2_000_000) -> Path:
    """A sheet of ``rows`` rows (beyond ``MAX_ROWS`` and the part budget)."""
    row = b'<row><c t="inlineStr"><is><t>item</t></is></c><c><v>1</v></c></row>'
    return _rewrite_xlsx(path, "xl/worksheets/sheet1.xml", _sheet_with(_repeat(row, rows * len(row))))


def xlsx_with_dtd(path: Path) -> Path:
    """Billion laughs in sheet XML."""
    dtd = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
           b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
           b'<row><c t="inlineStr"><is><t>&lol2;</t></is></c></row></sheetData></worksheet>')
    return _rewrite_xlsx(path, "xl/worksheets/sheet1.xml", [dtd])


def pdf_with_contents(streams: list[bytes]) -> bytes:
    """A one-page PDF whose content streams are the given FlateDecode-compressed bytes."""
    refs = " ".join(f"{4 + i} 0 R" for i in range(len(streams)))
    bodies = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
              f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents [{refs}] >>".encode()]
    bodies += [b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream" for data in streams]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(bodies) + 1, xref)
    return bytes(out)


def _deflate(pieces: Iterable[bytes]) -> bytes:
    compressor = zlib.compressobj(9)
    return b"".join(compressor.compress(piece) for piece in pieces) + compressor.flush()


def pdf_inflate_bomb(path: Path, size: int = 400 * MB) -> Path:
    """The reported file: ~400 KB whose content stream inflates to ``size`` bytes."""
    path.write_bytes(pdf_with_contents([_deflate(_repeat(b" ", size))]))
    return path


def pdf_damaged_inflate_bomb(path: Path, size: int = 400 * MB) -> Path:
    """The bomb with its checksum cut off: pdfminer's fallback inflates it byte by byte (quadratic before)."""
    path.write_bytes(pdf_with_contents([_deflate(_repeat(b" ", size))[:-2]]))
    return path


def pdf_many_streams(path: Path, streams: int = 8, size: int = 24 * MB) -> Path:
    """Several streams each under the per-stream cap, together over the document budget."""
    data = _deflate(_repeat(b" ", size))
    path.write_bytes(pdf_with_contents([data] * streams))
    return path


def pdf_busy_page(path: Path, size: int = 6 * MB) -> Path:
    """A page with megabytes of real drawing operators (each glyph would become a Python object)."""
    path.write_bytes(pdf_with_contents([_deflate(_repeat(b"BT /F1 1 Tf 1 1 Td (x) Tj ET\n", size))]))
    return path


def normal_csv(path: Path) -> Path:
    path.write_text("SKU,Description,Qty,Unit Price\nA1,Widget,2,3.50\nB2,Gadget,1,10.00\n")
    return path


#: name -> (generator, expected code)
HOSTILE = {
    "xlsx_190mb_comment": (xlsx_giant_comment, "file_too_complex"),
    "xlsx_varied_comment": (xlsx_varied_comment, "file_too_complex"),
    "xlsx_giant_attribute": (xlsx_giant_attribute, "file_too_complex"),
    "xlsx_zip_bomb": (xlsx_zip_bomb, "file_too_large"),
    "xlsx_huge_sheet": (xlsx_huge_sheet, "file_too_complex"),
    "xlsx_dtd": (xlsx_with_dtd, "unsafe_xml"),
    "pdf_inflate_bomb": (pdf_inflate_bomb, "file_too_complex"),
    "pdf_damaged_inflate_bomb": (pdf_damaged_inflate_bomb, "file_too_complex"),
    "pdf_many_streams": (pdf_many_streams, "file_too_complex"),
    "pdf_busy_page": (pdf_busy_page, "file_too_complex"),
}


# --- hostile documents through the bounded extraction -------------------------------------------


def bounded_code(path: Path, **limits: float) -> tuple[str, SandboxStats]:
    stats = SandboxStats()
    with pytest.raises(PoflowError) as info:
        extract_file_bounded(path, filename=path.name, stats=stats,
                             limits=SandboxLimits(**limits) if limits else None)
    assert "\n" not in info.value.message
    return info.value.code, stats


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_document_ends_with_its_code_within_memory(tmp_path: Path, name: str) -> None:
    generate, expected = HOSTILE[name]
    path = generate(tmp_path / f"{name}.{name.split('_')[0]}")
    assert path.stat().st_size < 8 * MB
    code, stats = bounded_code(path)
    assert code == expected
    assert stats.peak_rss_mb < PEAK_RSS_LIMIT_MB


def test_comment_parts_are_never_parsed_but_still_bounded(tmp_path: Path) -> None:
    """Big legitimate-looking cell comments are inflated once by the scan, never parsed by openpyxl."""
    path = xlsx_comments_part(tmp_path / "comments.xlsx", size=20 * MB)
    stats = SandboxStats()
    po = extract_file_bounded(path, stats=stats)
    assert po.lines[0].sku == "A1" and stats.peak_rss_mb < PEAK_RSS_LIMIT_MB


def test_deeply_nested_sheet_hits_the_memory_limit(tmp_path: Path) -> None:
    path = xlsx_deep_nesting(tmp_path / "deep.xlsx")
    code, stats = bounded_code(path, memory_mb=256, timeout_s=30)
    assert code in ("resource_limit", "unreadable_spreadsheet")
    assert stats.peak_rss_mb < PEAK_RSS_LIMIT_MB


def test_xml_token_limit_is_what_catches_a_low_ratio_comment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = xlsx_varied_comment(tmp_path / "c.xlsx", size=300 * 1024)
    assert extract_file(path).lines  # under the 1 MB token limit: read normally
    monkeypatch.setattr(spreadsheet, "MAX_XML_TOKEN_BYTES", 100 * 1024)
    with pytest.raises(PoflowError) as info:
        extract_file(path)
    assert info.value.code == "file_too_complex" and "longer than 100 KB" in info.value.message


# --- the sandbox itself ---------------------------------------------------------------------------


def _allocate(megabytes: int) -> int:
    blocks = [bytearray(MB) for _ in range(megabytes)]
    return len(blocks)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _fail(code: str) -> None:
    raise PoflowError(code, "as asked")


def test_sandbox_returns_results_and_passes_codes_through() -> None:
    assert run_bounded(_allocate, (10,), limits=SandboxLimits(memory_mb=256)) == 10
    with pytest.raises(PoflowError) as info:
        run_bounded(_fail, ("corrupt_pdf",))
    assert info.value.code == "corrupt_pdf" and info.value.message == "as asked"


def test_sandbox_memory_limit_is_resource_limit() -> None:
    stats = SandboxStats()
    with pytest.raises(PoflowError) as info:
        run_bounded(_allocate, (2048,), limits=SandboxLimits(memory_mb=200), stats=stats, what="big.xlsx")
    assert info.value.code == "resource_limit" and "200 MB" in info.value.message
    assert stats.peak_rss_mb < PEAK_RSS_LIMIT_MB


def test_sandbox_time_limit_is_resource_limit() -> None:
    with pytest.raises(PoflowError) as info:
        run_bounded(_spin, (30,), limits=SandboxLimits(timeout_s=1))
    assert info.value.code == "resource_limit"


def test_sandbox_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", "0")
    assert run_bounded(os.getpid, ()) == os.getpid()
    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", "1")
    assert run_bounded(os.getpid, ()) != os.getpid()


def test_bounded_and_in_process_extraction_agree(tmp_path: Path) -> None:
    path = normal_csv(tmp_path / "po.csv")
    assert extract_file_bounded(path) == extract_file(path)


def test_poflow_extract_is_bounded_and_says_one_line(tmp_path: Path) -> None:
    path = pdf_inflate_bomb(tmp_path / "bomb.pdf")
    done = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "extract", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: file_too_complex: ") and done.stderr.count("\n") == 1


# --- the inbox ------------------------------------------------------------------------------------


def _aged(*paths: Path) -> None:
    past = time.time() - 60
    for path in paths:
        os.utime(path, (past, past), follow_symlinks=False)


def test_inbox_symlink_to_a_file_outside_is_not_read(db, tmp_path: Path) -> None:
    home = tmp_path / "home"
    box = home / "inbox" / "shop-1"
    box.mkdir(parents=True)
    secret = tmp_path / "secret.csv"
    normal_csv(secret)
    (box / "passwd.csv").symlink_to(secret)
    (box / "fifo.csv").parent.mkdir(exist_ok=True)
    os.mkfifo(box / "fifo.csv")
    real = normal_csv(box / "real.csv")
    _aged(box / "passwd.csv", box / "fifo.csv", real)
    result = ingest_inbox(db, home, min_age_seconds=0)
    assert [Path(u.stored_path).name for u in result.uploads] == ["real.csv"]
    reasons = {path.name: reason for path, reason in result.rejected}
    assert set(reasons) == {"passwd.csv", "fifo.csv"}
    assert all(reason.startswith("not_a_regular_file") for reason in reasons.values())
    assert (box / ".rejected" / "passwd.csv").is_symlink() and secret.read_text().startswith("SKU")
    assert not list((home / "uploads").glob(f"*/{secret.name}"))


def test_inbox_symlinked_merchant_folder_is_ignored(db, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "inbox").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _aged(normal_csv(outside / "po.csv"))
    (home / "inbox" / "shop-2").symlink_to(outside, target_is_directory=True)
    result = ingest_inbox(db, home, min_age_seconds=0)
    assert result.uploads == [] and result.rejected == []
    assert (outside / "po.csv").exists() and not (outside / ".processed").exists()


def test_store_file_refuses_a_symlink_swapped_in(tmp_path: Path) -> None:
    target = normal_csv(tmp_path / "target.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with pytest.raises(PoflowError) as info:
        store_file(tmp_path / "home", link, follow_symlinks=False)
    assert info.value.code == "not_a_regular_file"
    assert Path(store_file(tmp_path / "home", link).stored_path).read_bytes() == target.read_bytes()


# --- the run budget -------------------------------------------------------------------------------


def test_po_runs_carry_a_generous_max_runtime() -> None:
    """Run monitoring fails a PO run after ``dagster/max_runtime`` seconds (the per-file bound is tighter)."""
    from poflow_dagster.pipeline.jobs import PO_RUN_MAX_RUNTIME_SECONDS, po_job

    assert po_job.tags["dagster/max_runtime"] == str(PO_RUN_MAX_RUNTIME_SECONDS)
    assert PO_RUN_MAX_RUNTIME_SECONDS >= 10 * SandboxLimits().timeout_s
