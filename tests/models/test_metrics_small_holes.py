"""Issue 12's small-hole figure: recall on damaged items with a hole under SMALL_HOLE_MM."""

from __future__ import annotations

import math

import numpy as np
from damage_rig.models.metrics import SMALL_HOLE_MM, format_summary, summarize

# ten ok items: with fewer than 1,000 the 0.1 % threshold is the highest ok score, 0.95
OK = [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.95]
DAMAGED = [  # (score, damage_size_mm)
    (0.97, {"hole": {"diameter": 6.0}}),                         # small: caught at both
    (0.60, {"hole": {"diameter": 7.9}}),                         # small: caught at 0.5 only
    (0.30, {"hole": {"diameter": 5.0}, "tear": {"width": 6}}),   # small: missed at both
    (0.10, {"hole": {"diameter": 8.0}}),                         # 8.0 is not under 8
    (0.99, {"hole": {"diameter": 20.0}}),
    (0.20, {"crush": {"radius": 30.0, "depth": 10.0}}),
    (0.00, {}),                                                  # a hole of unknown size
]


def _summary(damaged=DAMAGED, threshold=0.5):
    scores = np.array(OK + [s for s, _ in damaged])
    labels = np.r_[np.zeros(len(OK), bool), np.ones(len(damaged), bool)]
    sizes = [{}] * len(OK) + [d for _, d in damaged]
    return summarize(scores, labels, threshold, damage_sizes=sizes)


def test_small_hole_recall_at_the_threshold_and_at_fpr_0_1_percent():
    assert SMALL_HOLE_MM == 8.0
    m = _summary()
    sh = m["recall_small_holes"]
    assert sh["n"] == 3 and sh["max_diameter_mm"] == 8.0
    assert sh["at_threshold"] == 2 / 3
    assert sh["at_fpr_0.001"] == 1 / 3
    assert ("holes under 8 mm: 3 items, recall 66.7 % at the threshold, 33.3 % at FPR 0.1 %"
            in format_summary(m).splitlines())


def test_no_hole_sizes_no_figure():
    m = _summary([(0.9, {}), (0.2, {"crush": {"radius": 3.0, "depth": 1.0}})])
    assert "recall_small_holes" not in m and "holes under" not in format_summary(m)
    scores, labels = np.array([0.1, 0.9]), np.array([False, True])
    assert "recall_small_holes" not in summarize(scores, labels, 0.5)


def test_only_large_holes_counts_zero():
    m = _summary([(0.9, {"hole": {"diameter": 30.0}})])
    sh = m["recall_small_holes"]
    assert sh["n"] == 0 and math.isnan(sh["at_threshold"]) and math.isnan(sh["at_fpr_0.001"])
    assert "holes under 8 mm: 0 items, recall n/a at the threshold, n/a at FPR 0.1 %" in format_summary(m)
