"""Packaging-drift detection on simulated per-SKU score streams with known change points."""

from __future__ import annotations

import time

import numpy as np
from damage_rig.rig.events import EventLog, connect
from damage_rig.rig.review.drift import DriftParams, cusum_up, drift_flags, flag_from_stream
from damage_rig.rig.review.store import ReviewStore

from tests.helpers.events import make_record

THRESHOLD = 0.5  # the simulated rig diverts above this


def stream(n, change_at=None, shift=0.3, seed=0, damage_after_change=False, base=0.15, sd=0.05):
    """(t, score, decision, label) rows: reviewers label every divert per the simulated truth."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        s = base + sd * rng.standard_normal()
        changed = change_at is not None and i >= change_at
        if changed:
            s += shift
        s = float(np.clip(s, 0, 1))
        dec = "divert" if s > THRESHOLD else "pass"
        label = None
        if dec == "divert":
            label = "damaged" if (changed and damage_after_change) else "not_damaged"
        rows.append((1000.0 + i, s, dec, label))
    return rows


def test_cusum_finds_the_step_soon_after_it():
    rows = stream(400, change_at=200)
    res = cusum_up([r[1] for r in rows])
    assert res.baseline == np.float64(res.baseline) and abs(res.baseline - 0.15) < 0.03
    assert 200 <= res.alarm_at <= 210 and 195 <= res.shift_start <= 205


def test_stationary_streams_never_alarm():
    # 20 SKUs x 2000 items at the baseline level: no false alarm
    for seed in range(20):
        rows = stream(2000, seed=seed)
        assert cusum_up([r[1] for r in rows]).alarm_at is None
        assert flag_from_stream("s", rows) is None


def test_packaging_change_is_flagged_with_its_time_and_evidence():
    rows = stream(300, change_at=150, shift=0.3)
    flag = flag_from_stream("sku-x", rows)
    assert flag is not None and flag.sku == "sku-x"
    assert 1145.0 <= flag.since <= 1155.0
    assert abs(flag.baseline - 0.15) < 0.03 and abs(flag.recent - 0.45) < 0.05
    assert flag.confirmed >= 3 and flag.damaged == 0


def test_a_real_damage_wave_is_not_packaging_drift():
    rows = stream(300, change_at=150, shift=0.3, damage_after_change=True)
    assert cusum_up([r[1] for r in rows]).alarm_at is not None  # the scores did rise
    assert flag_from_stream("sku-x", rows) is None  # reviewers confirmed the damage


def test_small_shift_without_reviewer_confirmation_is_not_flagged():
    # scores creep up but stay under the threshold: nothing diverted, nobody confirmed anything
    rows = stream(400, change_at=100, shift=0.12)
    assert cusum_up([r[1] for r in rows]).alarm_at is not None
    assert flag_from_stream("sku-x", rows, DriftParams(min_confirmed=3)) is None


def test_drift_flags_from_the_event_log_and_reset_by_enrollment(tmp_path):
    t0 = time.time() - 10_000
    rows_a = stream(200, change_at=100, seed=1)
    rows_b = stream(200, seed=2)
    with EventLog(tmp_path, save_crops=False) as log:
        for k, ((_, sa, da, _), (_, sb, db, _)) in enumerate(zip(rows_a, rows_b, strict=True)):
            log.record(make_record(2 * k, da, score=sa, sku="sku-a", t0=t0, with_images=False))
            log.record(make_record(2 * k + 1, db, score=sb, sku="sku-b", t0=t0, with_images=False))
    store = ReviewStore(tmp_path)
    for k, (_, _, dec, label) in enumerate(rows_a):
        if dec == "divert":
            store.label(f"it{2 * k:06d}", label)
    flags = store.drift()
    assert [f["sku"] for f in flags] == ["sku-a"]
    store.record_gallery_event("sku-a", "enroll", "v0002", [])  # new references: a fresh baseline
    assert store.drift() == []
    store.close()
    assert connect(tmp_path).execute("SELECT COUNT(*) FROM gallery_events").fetchone()[0] == 1
    assert drift_flags(connect(tmp_path, readonly=True)) == []
