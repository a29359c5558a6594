"""Packaging drift: an SKU's anomaly scores rise while reviewers say its diverted items are fine.

When a product's artwork changes, every item of it looks a little anomalous
against the old reference gallery: its scores creep up and more of it is
diverted, but reviewers mark those diverts "not damaged" (or "packaging
changed"). A wave of real damage also raises scores, but reviewers confirm it,
so it must not be flagged.

Per SKU we follow the stream of scores of its items since its last gallery
enrollment, leaving out the ones reviewers marked damaged (unreviewed passes
are overwhelmingly intact items). A one-sided CUSUM on the standardised scores
(baseline = median and MAD of the first ``baseline_n`` items) raises an alarm
when the level shifts up; the SKU is flagged only when reviewers confirmed at
least ``min_confirmed`` diverts of it as not damaged since the shift began and
fewer than half of its reviewed diverts there were damaged.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class DriftParams:
    baseline_n: int = 100       # items that define the SKU's normal score level
    k: float = 1.0              # CUSUM slack, in baseline sigmas (shifts under ~2 sigma are ignored)
    h: float = 8.0              # CUSUM alarm level, in baseline sigmas
    min_sigma: float = 0.02     # floor on the baseline spread (scores are probabilities)
    min_confirmed: int = 3      # reviewed-not-damaged diverts needed to call it packaging
    max_items: int = 5000       # per SKU, newest


@dataclass
class CusumResult:
    alarm_at: int | None        # index of the first item where the CUSUM crossed h
    shift_start: int | None     # index where the run that crossed h began
    baseline: float
    sigma: float
    statistic: float            # CUSUM value at the end of the stream


def cusum_up(scores, p: DriftParams | None = None) -> CusumResult:
    """One-sided upward CUSUM of the scores against the baseline set by their first ``baseline_n``."""
    p = p or DriftParams()
    x = np.asarray(scores, dtype=np.float64)
    if x.size <= p.baseline_n:
        base = float(np.median(x)) if x.size else 0.0
        return CusumResult(None, None, base, p.min_sigma, 0.0)
    ref = x[:p.baseline_n]
    base = float(np.median(ref))
    sigma = max(1.4826 * float(np.median(np.abs(ref - base))), p.min_sigma)
    s, start, alarm, alarm_start = 0.0, None, None, None
    for i in range(p.baseline_n, x.size):
        s_new = max(0.0, s + (x[i] - base) / sigma - p.k)
        if s == 0.0 and s_new > 0.0:
            start = i
        s = s_new
        if s == 0.0:
            start = None
        if alarm is None and s > p.h:
            alarm, alarm_start = i, start
    return CusumResult(alarm, alarm_start, base, sigma, s)


@dataclass
class DriftFlag:
    sku: str
    since: float                # capture time of the first item of the shift
    baseline: float             # the SKU's normal score
    recent: float               # mean score since the shift
    n_recent: int               # items since the shift
    confirmed: int              # diverts since the shift reviewed not damaged / packaging changed
    damaged: int                # diverts since the shift reviewed damaged

    def to_json(self) -> dict:
        return asdict(self)


def flag_from_stream(sku: str, rows: list[tuple[float, float, str, str | None]],
                     p: DriftParams | None = None) -> DriftFlag | None:
    """rows: (captured_at, score, decision, label) in capture order for one SKU. None when no drift."""
    p = p or DriftParams()
    stream = [r for r in rows if r[3] != "damaged"]
    res = cusum_up([r[1] for r in stream], p)
    if res.alarm_at is None:
        return None
    t_shift = stream[res.shift_start][0]
    after = [r for r in rows if r[0] >= t_shift]
    confirmed = sum(1 for r in after if r[2] == "divert" and r[3] in ("not_damaged", "packaging_changed"))
    damaged = sum(1 for r in after if r[2] == "divert" and r[3] == "damaged")
    if confirmed < p.min_confirmed or damaged * 2 >= confirmed + damaged:
        return None
    recent = [r[1] for r in stream[res.shift_start:]]
    return DriftFlag(sku, t_shift, res.baseline, float(np.mean(recent)), len(recent), confirmed, damaged)


def drift_flags(conn: sqlite3.Connection, p: DriftParams | None = None) -> list[DriftFlag]:
    """Every SKU of the event log currently showing packaging drift (since its last enrollment)."""
    p = p or DriftParams()
    enrolled = {r[0]: r[1] for r in conn.execute(
        "SELECT sku, MAX(at) FROM gallery_events WHERE action = 'enroll' GROUP BY sku")}
    flags = []
    for (sku,) in conn.execute("SELECT DISTINCT sku_pred FROM items").fetchall():
        rows = conn.execute(
            "SELECT captured_at, score, decision, label FROM items WHERE sku_pred = ? AND captured_at > ? "
            "ORDER BY captured_at DESC LIMIT ?", (sku, enrolled.get(sku, -1.0), p.max_items)).fetchall()
        flag = flag_from_stream(sku, [tuple(r) for r in reversed(rows)], p)
        if flag is not None:
            flags.append(flag)
    return flags
