"""The expected product from upstream: a scanner on a real pty, the WMS's JSON, the join by belt position,
and the decision table of rig/scan/decide.py (a scorer stand-in with known identities and scores)."""

from __future__ import annotations

import json
import os
import time
import tty
from types import SimpleNamespace

import pytest
from damage_rig.rig.config import ScanConfig
from damage_rig.rig.scan import ExpectedProducts, Scan, open_scan_source
from damage_rig.rig.scan.decide import decide_with_scan
from damage_rig.rig.scan.mqtt_source import expected_from_json
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.faults import wait_until


def test_a_scanner_on_a_pty_feeds_skus_noreads_and_garbage(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    exp = ExpectedProducts(distance_m=1.0, speed_mps=0.5, match_window_m=0.2, codes={"4006381333931": "sku007-box"})
    src = open_scan_source(os.ttyname(slave), exp)
    try:
        assert wait_until(lambda: src.connected, 5.0)
        os.write(master, b"sku001-tub\r\nNOREAD\r\n4006381333931\n\xff\xfe\x01\r\nsku002-tub\r")
        assert wait_until(lambda: exp.counters["scans"] == 5, 5.0)
        skus = [s.sku for s in exp._scans]
        assert skus == ["sku001-tub", None, "sku007-box", None, "sku002-tub"]  # NOREAD and binary: unreadable
        assert exp.counters["unreadable"] == 2
    finally:
        exp.close()
        os.close(master)
        os.close(slave)


def test_scans_join_items_by_belt_position():
    exp = ExpectedProducts(distance_m=1.0, speed_mps=0.5, match_window_m=0.2)  # 2 s from scanner to tunnel
    t0 = 1000.0
    exp.add(Scan("a", t0))
    exp.add(Scan("b", t0 + 1.0))  # 0.5 m behind
    exp.add(Scan("c", t0 + 2.0))
    # item b is captured 0.05 m past the tunnel centre: it was at the centre 0.1 s earlier
    assert exp.match(t0 + 1.0 + 2.0 + 0.1, x_m=0.05).sku == "b"
    assert exp.match(t0 + 2.0 + 0.3, x_m=0.0).sku == "a"  # 0.15 m off: within the 0.2 m window
    assert exp.match(t0 + 5.0 + 0.5, x_m=0.0) is None  # 0.25 m from c: no scan for this item
    assert exp.match(t0 + 4.0, x_m=0.0).sku == "c"
    assert exp.match(t0 + 4.0, x_m=0.0) is None  # a scan matches one item only
    assert exp.counters["matched"] == 3 and exp.counters["no_scan"] == 2


def test_unclaimed_scans_expire():
    exp = ExpectedProducts(distance_m=0.0, speed_mps=1.0, match_window_m=0.1)
    exp.add(Scan("old", 0.0))
    assert exp.match(100.0) is None and exp.counters["unmatched"] == 1 and exp.pending() == 0


def test_wms_json_on_mqtt():
    exp = ExpectedProducts(distance_m=1.0, speed_mps=0.5, match_window_m=0.2)
    s = expected_from_json(json.dumps({"sku": "sku003-box", "timestamp": time.time() - 1.0}).encode(), exp)
    assert s.sku == "sku003-box" and abs((time.monotonic() - s.at) - 1.0) < 0.05
    s = expected_from_json(b'{"sku": null}', exp)
    assert not s.readable
    s = expected_from_json(b'{"sku": "x", "belt_pos": 5000}', exp, pos_to_time=lambda pos: pos / 1000.0)
    assert s.at == 5.0
    for bad in (b"nope", b"[1]", b'{"sku": 3}', b'{"sku": "x", "timestamp": "noon"}', b'{"sku": "x", "belt_pos": 1}',
                b'{"sku": "x", "timestamp": NaN}', b'{"sku": "x", "timestamp": 1e999}', b'{"sku": "x", "timestamp": true}'):
        with pytest.raises(ValueError):
            expected_from_json(bad, exp)
    for bad in (b'{"sku": "x", "belt_pos": 1.5}', b'{"sku": "x", "belt_pos": 1e999}', b'{"sku": "x", "belt_pos": "7"}'):
        with pytest.raises(ValueError):
            expected_from_json(bad, exp, pos_to_time=lambda pos: pos / 1000.0)


class FakeScorer:
    """identify() says what the image shows; score_item() scores against the SKU it is given."""

    def __init__(self, image_sku, conf, damaged_against=()):
        self.gallery = SimpleNamespace(skus={"a": 0, "b": 0})
        self.image_sku, self.conf, self.damaged_against = image_sku, conf, set(damaged_against)
        self.scored_against = []

    def identify(self, views):
        return self.image_sku, self.conf, 0.3

    def score_item(self, views, threshold=None, item_id="item", sku=None, canons=None):
        against = sku or self.image_sku
        self.scored_against.append(against)
        from damage_rig.rig.detect.scoring import ItemScore

        dmg = against in self.damaged_against
        return ItemScore(0.9 if dmg else 0.1, dmg, "dent" if dmg else "", against, self.conf, 0.0)


@pytest.mark.parametrize("scan, image, conf, damaged, on_wrong, want", [
    (Scan("a", 0), "a", 0.99, (), "divert", ("pass", "score", "a")),
    (Scan("a", 0), "a", 0.99, ("a",), "divert", ("divert", "score", "a")),
    (Scan("a", 0), "b", 0.99, (), "divert", ("divert", "wrong_item", "b")),
    (Scan("a", 0), "b", 0.99, (), "pass", ("pass", "wrong_item", "b")),
    (Scan("a", 0), "b", 0.99, ("b",), "pass", ("divert", "wrong_item", "b")),  # damaged goes out regardless
    (Scan("a", 0), "b", 0.5, (), "divert", ("pass", "score", "a")),  # the image is unsure: the scan stands
    (Scan(None, 0), "a", 0.99, (), "divert", ("pass", "unreadable_scan", "a")),
    (None, "b", 0.99, ("b",), "divert", ("divert", "no_scan", "b")),
    (Scan("zzz", 0), "a", 0.99, (), "divert", ("pass", "unknown_sku", "a")),
])
def test_decision_table(scan, image, conf, damaged, on_wrong, want):
    scorer = FakeScorer(image, conf, damaged)
    cfg = ScanConfig(url="loop://", on_wrong_item=on_wrong)
    decision, reason, score = decide_with_scan(scorer, {"top": {}}, scan, None, cfg)
    assert (decision, reason, scorer.scored_against[-1]) == want
    assert score.expected_sku == (scan.sku or "" if scan is not None else "")


# ---- property-based: whatever arrives on the line or the topic, a scan or a ValueError, never a crash -----


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_scanner_line_is_a_sku_or_unreadable(line):
    exp = ExpectedProducts(distance_m=1.0, speed_mps=0.5, match_window_m=0.2)
    s = exp.add_line(line, at=0.0)
    text = line.strip()
    if s.readable:
        assert s.sku == text and text and text.isprintable() and not any(c.isspace() for c in text)
        assert text.upper() != "NOREAD"
    assert exp.counters["scans"] == 1 and exp.counters["unreadable"] == (0 if s.readable else 1)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids,
                                                                                       max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=60),
                 st.dictionaries(st.sampled_from(["sku", "timestamp", "belt_pos", "noread", "x"]), json_values,
                                 max_size=5).map(lambda d: json.dumps(d).encode())))
def test_any_wms_message_is_a_scan_or_a_value_error(payload):
    exp = ExpectedProducts(distance_m=1.0, speed_mps=0.5, match_window_m=0.2)
    try:
        s = expected_from_json(payload, exp, pos_to_time=lambda pos: pos / 1000.0)
    except ValueError:
        assert exp.counters["scans"] == 0
        return
    assert s.sku is None or (isinstance(s.sku, str) and s.sku)
    assert exp.counters["scans"] == 1
