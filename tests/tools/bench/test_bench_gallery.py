"""`rig bench gallery` end to end on a small catalogue: every figure the issue asks for, with its target."""

from __future__ import annotations

import json

import pytest
from damage_rig.rig.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KEYS = ("store_mb", "push_products_per_s", "push_mb_per_s", "cold_fetch_p50_ms", "cold_fetch_p99_ms",
        "identify_p99_ms", "ann_recall_at_1", "rss_mb")


def test_bench_gallery_reports_every_figure(pg_url, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "gallery", "--products", "1000", "--db", pg_url, "--json", str(out), "--items", "50",
                 "--recall-queries", "50", "--cold", "20", "--cache-mb", "64"]) == 0
    r = json.loads(out.read_text())
    assert all(isinstance(r[k], (int, float)) and r[k] > 0 for k in KEYS), r
    assert r["products"] == r["products_indexed"] == 1000 and r["cold_fetches"] == 20
    assert r["index"] == "Flat" and r["ann_recall_at_1"] == 1.0  # exact below the IVF size
    assert r["store_mb"] > 1000 * 200 / 1024  # ~260 KB an entry: the shipped gallery's real entries
    assert r["cache_mb_used"] <= 64 and set(r["targets"]) == {"identify_p99_ms", "ann_recall_at_1",
                                                              "cold_fetch_p99_ms", "rss_mb"}
    printed = capsys.readouterr().out
    assert "identify_p99_ms" in printed and "target rss_mb" in printed
