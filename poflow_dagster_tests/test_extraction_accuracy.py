"""The accuracy benchmark's fixture set, as a regression test: every field and line still right.

(Only the scoring of benchmarks/extraction.py runs here; its timing part stays a benchmark.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from poflow_dagster.extraction import extract_file

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "extraction.py"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("extraction_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_fixture_extracts_every_field_and_line(tmp_path: Path):
    bench = _benchmark_module()
    cases = bench.fixtures(tmp_path)
    assert {fmt for fmt, _, _ in cases} == {"csv", "tsv", "xlsx", "pdf", "x12", "ubl"}
    for fmt, path, truth in cases:
        fields_right, fields, lines_right, lines = bench.score(extract_file(path), truth)
        assert (fields_right, lines_right) == (fields, lines), (fmt, path.name)
