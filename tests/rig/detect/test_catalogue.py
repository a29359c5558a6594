"""The reference store (PostgreSQL), the rig's product cache and the ANN index.

Tests marked ``postgres`` start a server of their own (tests/helpers/postgres.py) and skip
with the reason where PostgreSQL or psycopg is absent.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from damage_rig.rig.detect.cache import ProductCache
from damage_rig.rig.detect.store import (
    ModelMismatch,
    ReferenceStore,
    entry_from_bytes,
    entry_nbytes,
    entry_to_bytes,
)
from damage_rig.rig.foundation.errors import DeviceError, ModelError

from tests.helpers.catalogue import same_entry, synthetic_entry, unit

CARD_A = {"version": "a", "onnx": {"file": "m.onnx"}, "files": {"m.onnx": "aa" * 32}}
CARD_B = {"version": "b", "onnx": {"file": "m.onnx"}, "files": {"m.onnx": "bb" * 32}}
KEY_A, KEY_B = "a+" + "aa" * 8, "b+" + "bb" * 8


def _store(url, *cards):
    s = ReferenceStore(url, create=True)
    for c, k in zip(cards, (KEY_A, KEY_B)):
        s.register_model(k, c)
    return s


# ---- bytes and model keys (no server) ---------------------------------------------------------------
def test_entry_bytes_round_trip_and_refuse_another_models_key():
    rng = np.random.default_rng(1)
    e = synthetic_entry(rng, geo_views=("top", "side"))
    data = entry_to_bytes(e, KEY_A)
    assert same_entry(entry_from_bytes(data, KEY_A), e)
    with pytest.raises(ModelMismatch, match="never used across models"):
        entry_from_bytes(data, KEY_B)
    with pytest.raises(ModelError, match="not a stored gallery entry"):
        entry_from_bytes(b"garbage", KEY_A)


def test_a_bad_store_url_is_a_clear_error():
    with pytest.raises(ModelError, match="postgresql://"):
        ReferenceStore("mysql://x/y")


# ---- the cache (no server: the fetch is a function) ----------------------------------------------------
def test_cache_eviction_holds_the_bound_and_keeps_the_recent(tmp_path):
    rng = np.random.default_rng(2)
    entries = {f"p{i}": synthetic_entry(rng, bank=512) for i in range(40)}
    one = entry_nbytes(entries["p0"])
    cache = ProductCache(entries.get, KEY_A, cache_mb=6.5 * one / 2**20, disk_dir=tmp_path, disk_mb=100)
    peak = 0
    try:
        for i in range(40):
            cache.prefetch(f"p{i}")
            cache.wait_idle(5)
            peak = max(peak, cache.stats()["bytes"])
            assert cache.get("p0") is not None  # used at every item: never the least recent
        st = cache.stats()
        assert peak <= cache.bound and st["bytes"] <= cache.bound
        assert st["entries"] == 6 and st["evictions"] == 34
        assert cache.peek("p39") is not None and cache.peek("p0") is not None and cache.peek("p1") is None
        # the evicted come back from the disk level, not the store
        fetched = st["fetches"]
        assert cache.get("p1") is None
        assert cache.wait_idle(5) and cache.peek("p1") is not None
        assert cache.stats()["disk_hits"] == 1 and cache.stats()["fetches"] == fetched
        assert same_entry(cache.peek("p1"), entries["p1"])
    finally:
        cache.close()


def test_a_miss_never_waits_for_the_fetch():
    rng = np.random.default_rng(3)
    e = synthetic_entry(rng)
    release = threading.Event()

    def slow_fetch(sku):
        release.wait(10)
        return e

    cache = ProductCache(slow_fetch, KEY_A, cache_mb=64)
    try:
        t0 = time.monotonic()
        assert cache.get("x") is None
        assert time.monotonic() - t0 < 0.05
        assert cache.stats()["misses"] == 1
        release.set()
        assert cache.wait_idle(5) and cache.get("x") is e
        assert cache.stats()["hits"] == 1
    finally:
        cache.close()


# ---- the ANN index -------------------------------------------------------------------------------------
def test_ann_recall_against_exact_search_and_incremental_enrollment():
    from damage_rig.rig.detect import ann

    rng = np.random.default_rng(4)
    n, dim = 6000, 64
    families = unit(rng.standard_normal((300, dim)))
    centres = unit(families[rng.integers(0, 300, n)] + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim) * 3)
    protos = unit(centres[:, None, :] + 0.2 * rng.standard_normal((n, 4, dim)) / np.sqrt(dim) * 3)
    products = [(i + 1, f"p{i}", protos[i]) for i in range(n)]
    old_from = ann.IVF_FROM
    ann.IVF_FROM = 10_000  # the IVF path at a test's size
    try:
        index = ann.AnnIndex(dim, nprobe=32).build(products)
    finally:
        ann.IVF_FROM = old_from
    assert index.kind.startswith("IVF")
    who = rng.integers(0, n, 400)
    queries = unit(protos[who, rng.integers(0, 4, 400)] + 0.3 * rng.standard_normal((400, dim)) / np.sqrt(dim) * 3)
    owner = np.repeat(np.arange(1, n + 1), 4)
    exact = ann.exact_top1(protos.reshape(-1, dim), owner, queries)
    _, pids = index.search(queries, k=1)
    recall = float(np.mean(pids[:, 0] == exact))
    assert recall >= 0.99, recall
    # a product enrolled later is found without a rebuild; a replaced one answers with its new looks
    new = unit(rng.standard_normal((4, dim)))
    index.add([(n + 1, "new", new)])
    assert index.identify([new[0], new[1]], 0.05)[0] == "new"
    index.add([(1, "p0", new[2:3] * -1)])
    assert index.identify([-new[2]], 0.05)[0] == "p0"
    index.remove("new")
    assert "new" not in index and index.identify([new[0]], 0.05)[0] != "new"


# ---- the store (a real PostgreSQL) ---------------------------------------------------------------------
@pytest.mark.postgres
def test_store_round_trip_versions_and_rollback(pg_url):
    rng = np.random.default_rng(5)
    s = _store(pg_url, CARD_A)
    try:
        first = {f"sku{i}": synthetic_entry(rng, geo_views=("top",)) for i in range(5)}
        v1 = s.push(KEY_A, first, note="first")
        assert s.require_model(KEY_A) == v1
        for sku, e in first.items():
            assert same_entry(s.fetch(KEY_A, v1, sku), e)
        assert s.fetch(KEY_A, v1, "nope") is None
        changed = synthetic_entry(rng)
        v2 = s.push(KEY_A, {"sku2": changed, "sku9": synthetic_entry(rng)}, note="enroll")
        assert v2 == v1 + 1 and s.require_model(KEY_A) == v2
        assert same_entry(s.fetch(KEY_A, v2, "sku2"), changed)
        assert same_entry(s.fetch(KEY_A, v2, "sku0"), first["sku0"])  # the rest carried over
        assert [(v.version, v.n_products) for v in s.versions(KEY_A)] == [(v1, 5), (v2, 6)]
        prods = {sku: p for _, sku, p in s.catalogue(KEY_A, v2)}
        assert set(prods) == {*first, "sku9"} and prods["sku2"].size % 128 == 0
        s.rollback(KEY_A, v1)
        assert s.require_model(KEY_A) == v1
        assert same_entry(s.fetch(KEY_A, v1, "sku2"), first["sku2"])
        with pytest.raises(ModelError, match="no gallery version 7"):
            s.rollback(KEY_A, 7)
        s.put_images("sku0", [("ref0.png", b"\x89PNGcolour", b"\x89PNGdepth"), ("ref1.png", b"c1", None)])
        assert s.images("sku0") == [("ref0.png", b"\x89PNGcolour", b"\x89PNGdepth"), ("ref1.png", b"c1", None)]
        s.add_seen("hall-1", {"sku1": 5, "sku0": 2})
        s.add_seen("hall-1", {"sku0": 4})
        assert s.frequent("hall-1", 10) == ["sku0", "sku1"] and s.frequent("other", 10) == []
    finally:
        s.close()


@pytest.mark.postgres
def test_references_of_one_model_are_refused_to_another(pg_url, tmp_path):
    from damage_rig.rig.detect.catalogue import CatalogueGallery

    rng = np.random.default_rng(6)
    s = _store(pg_url, CARD_A, CARD_B)
    try:
        v = s.push(KEY_A, {"sku0": synthetic_entry(rng)})
        with pytest.raises(ModelMismatch, match="holds no gallery for model"):
            s.require_model(KEY_B)
        assert s.fetch(KEY_B, v, "sku0") is None  # model B's version v does not exist: nothing of A's
        with pytest.raises(ModelMismatch):
            CatalogueGallery(pg_url, KEY_B, state_dir=tmp_path, warm_products=0)
        # an entry row whose bytes say another model is refused on the way out, too
        s.conn.execute("UPDATE entries SET data = %s", (entry_to_bytes(synthetic_entry(rng), KEY_B),))
        with pytest.raises(ModelMismatch):
            s.fetch(KEY_A, v, "sku0")
    finally:
        s.close()


@pytest.mark.postgres
def test_catalogue_gallery_identifies_fetches_and_warm_starts(pg_url, tmp_path):
    from damage_rig.rig.detect.catalogue import CatalogueGallery

    rng = np.random.default_rng(7)
    entries = {f"sku{i}": synthetic_entry(rng) for i in range(30)}
    s = _store(pg_url, CARD_A)
    s.push(KEY_A, entries)
    s.add_seen("hall-2", {"sku3": 9, "sku7": 5})
    s.close()
    cat = CatalogueGallery(pg_url, KEY_A, cache_mb=64, state_dir=tmp_path, site="hall-2", warm_products=2)
    try:
        assert cat.cache.wait_idle(10)
        assert cat.cache.peek("sku3") is not None and cat.cache.peek("sku7") is not None  # warm start
        assert cat.cache.peek("sku1") is None
        probe = entries["sku12"].embeddings[:3].astype(np.float32)
        assert cat.index.identify(list(probe), 0.05)[0] == "sku12"
        assert "sku12" in cat.skus and "zzz" not in cat.skus
        assert cat.entry("sku12") is None and cat.cache.wait_idle(10)
        assert same_entry(cat.entry("sku12"), entries["sku12"])
        assert cat.stats()["misses"] == 1 and cat.stats()["hits"] == 1
        assert (tmp_path / "gallery-cache").is_dir()
        # a running rig follows the store: an enrollment elsewhere, then a rollback
        assert not cat.refresh()
        s = _store(pg_url, CARD_A)
        changed = synthetic_entry(rng)
        s.push(KEY_A, {"sku12": changed, "sku99": synthetic_entry(rng)})
        assert cat.refresh() and cat.version == "store:2" and "sku99" in cat.skus
        assert cat.entry("sku12") is None and cat.cache.wait_idle(10)
        assert same_entry(cat.entry("sku12"), changed)
        s.rollback(KEY_A, 1)
        s.close()
        assert cat.refresh() and "sku99" not in cat.skus and cat.make_index().identify(list(probe), 0.05)[0] == "sku12"
        assert cat.entry("sku12") is None and cat.cache.wait_idle(10)
        assert same_entry(cat.entry("sku12"), entries["sku12"])
    finally:
        cat.close()
    # a site that lists its products indexes those only (rig gallery site)
    from damage_rig.rig.cli import main

    listing = tmp_path / "hall-2.txt"
    listing.write_text("sku3\nsku12\nsku7\n")
    assert main(["gallery", "site", "--db", pg_url, "--site", "hall-2", str(listing)]) == 0
    site_cat = CatalogueGallery(pg_url, KEY_A, state_dir=tmp_path / "site", site="hall-2", warm_products=0)
    try:
        assert sorted(site_cat.skus) == ["sku12", "sku3", "sku7"] and "sku1" not in site_cat.skus
        assert site_cat.identify(list(probe), 0.05)[0] == "sku12"
    finally:
        site_cat.close()
    # a restart while the store is away starts from the index snapshot and the disk level
    bad = pg_url.rsplit("/", 1)[0].replace("127.0.0.1:", "127.0.0.1:1") + "/nodb"
    with pytest.raises(DeviceError, match="no index snapshot"):
        CatalogueGallery(bad, KEY_A, state_dir=tmp_path / "elsewhere", warm_products=0, connect_timeout_s=1)
    cat = CatalogueGallery(bad, KEY_A, state_dir=tmp_path, warm_products=0, connect_timeout_s=1)
    try:
        assert cat.version == "store:1" and len(cat.index) == 30
        assert cat.index.identify(list(probe), 0.05)[0] == "sku12"
        assert cat.entry("sku12") is None and cat.cache.wait_idle(10)
        assert same_entry(cat.entry("sku12"), entries["sku12"]) and cat.stats()["disk_hits"] == 1
    finally:
        cat.close()


# ---- config, CLI, metrics -------------------------------------------------------------------------------
def test_gallery_config_is_validated(tmp_path):
    from damage_rig.rig.config import DEMO_CONFIG, parse_config
    from damage_rig.rig.foundation.errors import ConfigError

    base = DEMO_CONFIG.read_text()
    cfg = parse_config(base + '\ngallery: {store: "postgresql://rig@db:5432/cat", cache_mb: 256}\n')
    assert cfg.gallery.cache_mb == 256 and cfg.gallery.on_miss == "score"
    assert parse_config(base).gallery is None  # without the section: the model folder's gallery
    for bad, where in (('{store: "mysql://x/y"}', "gallery.store"), ('{store: "postgresql://x/y", cache_mb: 1}',
                       "gallery.cache_mb"), ('{store: "postgresql://x/y", on_miss: "wait"}', "gallery.on_miss"),
                       ('{store: "postgresql://x/y", cach_mb: 5}', "gallery.cach_mb")):
        with pytest.raises(ConfigError, match=where):
            parse_config(base + f"\ngallery: {bad}\n", "rig.yaml")


@pytest.mark.postgres
def test_gallery_push_list_rollback_and_enroll_to_the_store(pg_url, model_dir, tmp_path, capsys):
    import shutil

    from damage_rig.rig.cli import main
    from damage_rig.rig.detect.card import read_card
    from damage_rig.rig.detect.gallery import load_gallery
    from damage_rig.rig.detect.store import model_key

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    key = model_key(read_card(model))
    assert main(["gallery", "push", "--model", str(model), "--db", pg_url]) == 0
    assert "store version 1 is current" in capsys.readouterr().out
    # enroll a product into the store: its picture and a new version that carries the others over
    import cv2

    img = tmp_path / "new_ref.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    assert main(["enroll", "--model", str(model), "--sku", "new-sku", str(img), "--db", pg_url]) == 0
    assert "store version 2 is current" in capsys.readouterr().out
    s = ReferenceStore(pg_url)
    try:
        assert s.require_model(key) == 2
        n_local = len(load_gallery(model).skus)
        assert [v.n_products for v in s.versions(key)] == [n_local - 1, n_local]
        assert [n for n, _, _ in s.images("new-sku")] == [f"{tmp_path.name}/new_ref.png"]
        assert s.fetch(key, 2, "new-sku") is not None and s.fetch(key, 1, "new-sku") is None
    finally:
        s.close()
    assert main(["gallery", "rollback", "--model", str(model), "--db", pg_url, "1"]) == 0
    assert main(["gallery", "list", "--model", str(model), "--db", pg_url]) == 0
    out = capsys.readouterr().out
    assert "*     1" in out and "      2" in out
    # another model's card: the store says what it holds, the command fails cleanly
    card = (model / "model_card.yaml").read_text().replace(read_card(model)["version"], "other-version")
    (model / "model_card.yaml").write_text(card)
    assert main(["gallery", "list", "--model", str(model), "--db", pg_url]) == 1
    assert "holds no gallery for model" in capsys.readouterr().err


def test_cache_figures_are_prometheus_metrics():
    from damage_rig.rig.service.metrics import RigMetrics
    from prometheus_client import generate_latest

    rng = np.random.default_rng(8)
    e = synthetic_entry(rng)

    class Gallery:
        def __init__(self):
            self.cache = ProductCache(lambda sku: e, KEY_A, cache_mb=64)

        def stats(self):
            return {**self.cache.stats(), "products": 1, "index": "Flat"}

    m = RigMetrics(None, gallery=Gallery())
    try:
        assert m.cache.get("a") is None and m.cache.wait_idle(5) and m.cache.get("a") is e
        text = generate_latest(m.registry).decode()
    finally:
        m.cache.close()
    assert "damage_rig_gallery_cache_hits_total 1.0" in text
    assert "damage_rig_gallery_cache_misses_total 1.0" in text
    assert 'damage_rig_gallery_fetch_seconds_count{source="store"} 1.0' in text
    assert "damage_rig_gallery_store_up 1.0" in text


@pytest.mark.parametrize("on_miss, damaged, want", [("score", False, "pass"), ("score", True, "divert"),
                                                    ("divert", False, "divert")])
def test_a_miss_is_decided_by_configuration_and_says_so(on_miss, damaged, want):
    from types import SimpleNamespace

    from damage_rig.rig.pipeline.clock import StageClock
    from damage_rig.rig.pipeline.items import Ledger
    from damage_rig.rig.pipeline.score import ScoreStage

    class MissingScorer:
        def score_item(self, views, threshold=None, canons=None):
            return SimpleNamespace(damaged=damaged, refs_missing=True, timing_ms={})

    decided = []
    stage = ScoreStage(MissingScorer(), None, Ledger(), StageClock(), failsafe=lambda it, r: decided.append(r),
                       decide=lambda it, d, r, s: decided.append((d, r)))
    stage.on_refs_missing = on_miss
    stage(SimpleNamespace(views={}, canons={}, scan=None, item_id="x", no=1))
    assert decided == [(want, "no_references")]
