"""The rig on a reference store: simulated belt, real model, scanner upstream, PostgreSQL of its own.

* The scan names each product seconds before the item reaches the cameras; with an empty cache
  and no warm start, every decision finds the product's references already there (prefetch).
* The store stopped mid-run: decisions go on (scored without the reference channels, reason
  ``no_references``), misses and fetch errors are counted, every item is decided and recorded,
  and when the store is back the pending fetches land and the product counts arrive.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from damage_rig.rig.detect.card import read_card
from damage_rig.rig.detect.gallery import load_gallery
from damage_rig.rig.detect.store import ReferenceStore, model_key
from damage_rig.rig.pipeline.items import SCORED_REASONS
from damage_rig.rig.service.assemble import open_rig
from damage_rig.rig.service.loop import serve

from tests.helpers.postgres import Postgres, postgres_skip_reason

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _push_shipped(url: str, model_dir) -> str:
    card = read_card(model_dir)
    key = model_key(card)
    s = ReferenceStore(url, create=True)
    try:
        s.register_model(key, card)
        s.push(key, load_gallery(model_dir).skus, replace_all=True, note="test")
    finally:
        s.close()
    return key


def _gallery_cfg(url: str, **more) -> dict:
    return {"store": url, "cache_mb": 64, "warm_products": 0, "site": "test-hall", **more}


def test_the_scan_prefetches_the_product_before_the_item_reaches_the_cameras(tmp_path, make_config,
                                                                              pg_url, model_dir):
    _push_shipped(pg_url, model_dir)
    n = 6
    cfg = make_config(gallery=_gallery_cfg(pg_url), scan={"url": "sim", "distance_m": 1.0},
                      **{"sim.items": n, "sim.seed": 4})
    h = open_rig(cfg, keep_items=True)
    cat = h.rig.scorer.gallery
    landed: list[float] = []
    cat.cache.fetch_observers.append(lambda s, src: landed.append(time.monotonic()))
    try:
        assert cat.stats()["entries"] == 0  # no warm start: only the scans can bring references
        serve(h, max_s=90)
        items = sorted(h.rig.items.values(), key=lambda it: it.no)
        st = cat.stats()
    finally:
        h.close()
    assert items and all(it.decision in ("pass", "divert") for it in items)
    # on a loaded machine an item can be late or miss a camera (the fail-safe decides it): those
    # say nothing about the references; every item decided on its score does
    scored = [it for it in items if it.reason in SCORED_REASONS]
    scanned = [it for it in scored if it.scan is not None]
    assert scanned, [(it.reason, it.scan) for it in items]
    # an item already past the scanner when the belt started has no scan: nothing to prefetch for it
    assert {it.reason for it in scanned} == {"score"}, [(it.reason, it.scan) for it in items]
    assert st["prefetches"] >= len({it.scan.sku for it in scanned}) and st["pending"] == 0
    assert st["misses"] <= len(items) - len(scanned)  # only the unscanned can have missed
    assert st["fetches"] == len(landed) >= len({it.scan.sku for it in scanned})
    # the first product's fetch landed before its item was captured, by most of the belt travel (2 s)
    first_capture = min(it.capture.host_time for it in scanned)
    assert landed[0] < first_capture - 0.5, (landed[0], first_capture)


@pytest.mark.skipif(postgres_skip_reason() is not None, reason=str(postgres_skip_reason()))
def test_the_store_stopped_mid_run_decisions_go_on_and_it_recovers(tmp_path, make_config, model_dir):
    pg = Postgres().init().start()  # a server of its own: this test stops it
    try:
        url = pg.new_database("rig")
        key = _push_shipped(url, model_dir)
        n = 8
        cfg = make_config(gallery=_gallery_cfg(url), scan={"url": "sim", "distance_m": 1.0},
                          **{"sim.items": n, "sim.seed": 5})
        h = open_rig(cfg, keep_items=True)
        cat = h.rig.scorer.gallery
        cat.cache.retry_s = cat.cache.max_retry_s = 0.2
        pg.stop("immediate")  # the store goes away after the rig started (index built, cache empty)
        assert pg.wait_down()
        restarted, done, t_back = threading.Event(), threading.Event(), []

        def back_later():
            while h.rig.counters.get("decisions", 0) < 3 and not done.is_set():
                time.sleep(0.05)
            t_back.append(time.monotonic())
            pg.start()
            restarted.set()

        t = threading.Thread(target=back_later, daemon=True)
        t.start()
        try:
            serve(h, max_s=120)
            done.set()
            items = sorted(h.rig.items.values(), key=lambda it: it.no)
            assert restarted.wait(60)
            assert cat.cache.wait_idle(20)
            assert cat.flush_seen()
            st = cat.stats()
        finally:
            done.set()
            h.close()
        # decisions went on: every item the trigger captured was decided (on a loaded machine a
        # late one or one a camera missed is decided by the fail-safe, as without a store)
        assert items and all(it.decision in ("pass", "divert") for it in items)
        before = [it for it in items if it.decided_at < t_back[0] and it.reason in SCORED_REASONS]
        assert before and {it.reason for it in before} == {"no_references"}, [it.reason for it in items]
        assert st["misses"] >= len(before) and st["fetch_errors"] >= 1 and st["store_up"]
        # recovery: every product asked for while the store was away was fetched when it came back
        asked = {it.score.sku_pred for it in items if it.score is not None}
        assert st["entries"] >= len(asked) and st["pending"] == 0 and st["absent"] == 0
        assert all(cat.cache.peek(sku) is not None for sku in asked)
        # nothing lost: every item in the event log, every look-up counted in the store
        db = sqlite3.connect(tmp_path / "state" / "events.db")
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == len(items)
        s = ReferenceStore(url)
        try:
            seen = s.conn.execute("SELECT sum(n) FROM product_seen WHERE site = 'test-hall'").fetchone()[0]
            assert s.require_model(key) == 1
        finally:
            s.close()
        assert seen == st["hits"] + st["misses"] >= len([it for it in items if it.reason in SCORED_REASONS])
    finally:
        pg.cleanup()
