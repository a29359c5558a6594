"""Percentiles on known data, and the Chrome trace: valid JSON, one track per thread, events nest per track."""

from __future__ import annotations

import json

import numpy as np
import pytest
from damage_rig.rig.pipeline.clock import Span, StageClock, percentiles
from damage_rig.tools.bench.trace import chrome_trace, nesting_problems, write_trace


def test_percentiles_of_1_to_100_match_the_linear_definition():
    # linear interpolation between closest ranks: position q*(n-1) in the sorted values
    p = percentiles(range(1, 101))
    assert p == {"p50_ms": 50.5, "p95_ms": 95.05, "p99_ms": 99.01, "max_ms": 100.0, "n": 100}


def test_percentiles_ignore_order_and_handle_one_and_no_values():
    rng = np.random.default_rng(0)
    vals = rng.permutation(np.arange(0.0, 11.0))  # 0..10 shuffled: p50 = 5, p95 = 9.5, p99 = 9.9
    assert percentiles(vals) == {"p50_ms": 5.0, "p95_ms": 9.5, "p99_ms": 9.9, "max_ms": 10.0, "n": 11}
    assert percentiles([7.25]) == {"p50_ms": 7.25, "p95_ms": 7.25, "p99_ms": 7.25, "max_ms": 7.25, "n": 1}
    assert percentiles([])["n"] == 0 and percentiles([])["max_ms"] == 0.0


def test_stage_clock_summary_is_percentiles_of_what_was_added():
    clock = StageClock(keep_spans=True)
    for k in range(1, 101):
        clock.add("infer", 10.0, 10.0 + k / 1000.0, item=k)  # k ms
    s = clock.summary()["infer"]
    assert s["p50_ms"] == pytest.approx(50.5) and s["p99_ms"] == pytest.approx(99.01)
    assert len(clock.spans) == 100 and clock.spans[0].thread  # spans carry the thread's name


def _spans():
    """Two items through a made-up pipeline: nested work per thread, overlapping waits."""
    s = []
    for k, t in enumerate((0.000, 0.010)):  # item k captured at t; the second arrives while the first is in work
        s += [Span("capture", t, t + 0.004, "trigger", k),
              Span("sync", t + 0.004 + 0.0001 * k, t + 0.005, "trigger", None),
              Span("trigger", t + 0.005, t + 0.006, "trigger", None),
              Span("preprocess", t + 0.006, t + 0.009, "prepare", k),
              Span("batch_wait", t + 0.009, t + 0.025, "infer", k)]  # waits overlap across items
    s += [Span("infer", 0.025, 0.040, "infer", None),
          Span("identify", 0.040, 0.041, "infer", 0), Span("anomaly", 0.041, 0.045, "infer", 0),
          Span("fuse", 0.045, 0.0452, "infer", 0), Span("divert_send", 0.0453, 0.0456, "infer", 0),
          Span("ack", 0.0456, 0.052, "link", 0), Span("ack", 0.047, 0.050, "link", 1)]
    return s


def test_trace_is_valid_json_with_one_track_per_thread_and_lanes_for_waits(tmp_path):
    items = [(0, 0.0, 0.0456, "divert (score)"), (1, 0.010, 0.047, "divert (score)")]
    path = write_trace(tmp_path / "t.json", chrome_trace(_spans(), items))
    tr = json.loads(path.read_text())  # what chrome://tracing and Perfetto load
    evs = tr["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    # work on the thread that did it; waits and items on tracks of their own, a lane per overlap
    # (the two captures do not overlap: one lane; the batch waits, acks and items do: two)
    assert {"trigger", "prepare", "infer"} <= set(names.values())
    assert {"wait: capture", "wait: batch_wait #1", "wait: batch_wait #2",
            "wait: ack #1", "wait: ack #2", "items #1", "items #2"} <= set(names.values())
    xs = [e for e in evs if e["ph"] == "X"]
    assert len(xs) == len(_spans()) + len(items)
    for e in xs:
        assert e["pid"] == 1 and e["tid"] in names and isinstance(e["ts"], int) and e["dur"] >= 0
    infer_tid = next(t for t, n in names.items() if n == "infer")
    on_infer = sorted((e["ts"], e["name"]) for e in xs if e["tid"] == infer_tid)
    assert [n for _, n in on_infer] == ["infer", "identify", "anomaly", "fuse", "divert_send"]
    assert on_infer[0][0] == 25_000  # microseconds from the first span
    assert nesting_problems(tr) == []


def test_nesting_check_accepts_children_and_rejects_partial_overlap():
    ok = {"traceEvents": [{"ph": "X", "name": "parent", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
                          {"ph": "X", "name": "child", "pid": 1, "tid": 1, "ts": 10, "dur": 20},
                          {"ph": "X", "name": "next", "pid": 1, "tid": 1, "ts": 100, "dur": 5},
                          {"ph": "X", "name": "other track", "pid": 1, "tid": 2, "ts": 50, "dur": 100}]}
    assert nesting_problems(ok) == []
    bad = {"traceEvents": ok["traceEvents"] + [{"ph": "X", "name": "straddle", "pid": 1, "tid": 1,
                                                 "ts": 90, "dur": 30}]}
    probs = nesting_problems(bad)
    assert len(probs) == 1 and "straddle" in probs[0] and "parent" in probs[0]


def test_partially_overlapping_work_on_one_thread_is_moved_to_a_second_lane():
    # should a thread ever record overlapping work (clock skew between recorders), the trace stays valid
    spans = [Span("a", 0.0, 0.010, "worker"), Span("b", 0.005, 0.015, "worker"), Span("c", 0.011, 0.012, "worker")]
    tr = chrome_trace(spans)
    names = sorted(e["args"]["name"] for e in tr["traceEvents"] if e["name"] == "thread_name")
    assert names == ["worker #1", "worker #2"]
    assert nesting_problems(tr) == []
