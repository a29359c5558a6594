"""Chrome trace export: the pipeline's spans as traceEvents JSON for chrome://tracing and Perfetto.

Format (the "Trace Event Format"): complete events ``{"ph": "X", "name",
"ts", "dur", "pid", "tid"}`` with times in microseconds, plus ``"M"`` metadata
events naming the process and each thread. Viewers draw one track per tid and
expect the events of a track to nest (a child lies inside its parent) or not
overlap at all.

Work stages (sync, trigger, preprocess, infer, identify, ...) are recorded by
the thread that did the work, so they sit on that thread's track. Three stages
are waits, not work, and overlap from item to item: ``capture`` (exposure to
pick-up), ``batch_wait`` (queued view to batch start) and ``ack`` (divert sent
to acknowledged). Those, and each item's end-to-end interval, go on tracks of
their own, spread over as many lanes as it takes for no two to overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

WAIT_STAGES = ("capture", "batch_wait", "ack")
PID = 1


def _lanes(intervals: list[tuple[int, int, dict]], nest: bool) -> list[list[tuple[int, int, dict]]]:
    """Spread intervals over the fewest lanes (greedily) so that none partly overlaps another in its lane.

    With ``nest`` an interval may lie inside the last open one of a lane (a
    thread's nested work); without, intervals of a lane must be disjoint.
    """
    lanes: list[list[tuple[int, int, dict]]] = []
    stacks: list[list[int]] = []  # per lane: end times of the intervals still open
    for iv in sorted(intervals, key=lambda x: (x[0], -x[1])):
        for lane, stack in zip(lanes, stacks):
            while stack and stack[-1] <= iv[0]:
                stack.pop()
            if not stack or (nest and iv[1] <= stack[-1]):
                lane.append(iv)
                stack.append(iv[1])
                break
        else:
            lanes.append([iv])
            stacks.append([iv[1]])
    return lanes


def _us(t: float, t0: float) -> int:
    """Monotonic seconds -> integer microseconds since t0 (integers keep nesting exact)."""
    return round((t - t0) * 1e6)


def chrome_trace(spans, items=(), t0: float | None = None, process_name: str = "damage-rig") -> dict:
    """Build the trace dict from StageClock spans and optional item intervals.

    ``spans``: objects with ``stage, start, end, thread, item`` (monotonic
    seconds), as kept by :class:`damage_rig.rig.stages.StageClock`.
    ``items``: ``(item_no, start, end, decision)`` tuples, one per item
    (capture to decision), drawn on the "items" tracks.
    """
    spans = list(spans)
    items = list(items)
    if t0 is None:
        starts = [s.start for s in spans] + [it[1] for it in items]
        t0 = min(starts) if starts else 0.0
    tracks: dict[str, list[tuple[int, int, dict]]] = {}
    for s in spans:
        track = f"wait: {s.stage}" if s.stage in WAIT_STAGES else s.thread
        a, b = _us(s.start, t0), _us(s.end, t0)
        args = {} if s.item is None else {"item": s.item}
        tracks.setdefault(track, []).append((a, max(a, b), {"name": s.stage, "args": args}))
    for no, start, end, decision in items:
        a, b = _us(start, t0), _us(end, t0)
        tracks.setdefault("items", []).append((a, max(a, b), {"name": f"item {no}",
                                                             "args": {"item": no, "decision": decision}}))
    events = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": process_name}}]
    tid = 0
    # thread tracks first (in the order threads did their first work), then waits, then items
    order = sorted(tracks, key=lambda k: (k == "items", k.startswith("wait: "), min(iv[0] for iv in tracks[k])))
    for track in order:
        intervals = tracks[track]
        groups = _lanes(intervals, nest=not (track.startswith("wait: ") or track == "items"))
        for lane_no, lane in enumerate(groups):
            tid += 1
            name = track if len(groups) == 1 else f"{track} #{lane_no + 1}"
            events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": name}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid,
                           "args": {"sort_index": tid}})
            for a, b, ev in sorted(lane, key=lambda x: (x[0], -x[1])):
                events.append({"ph": "X", "name": ev["name"], "cat": "stage", "pid": PID, "tid": tid,
                               "ts": a, "dur": b - a, "args": ev["args"]})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(path: str | Path, trace: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace))
    return path


def nesting_problems(trace: dict) -> list[str]:
    """Every place where two complete events of one track partly overlap (empty when the trace is valid)."""
    per_track: dict[tuple, list[dict]] = {}
    for ev in trace["traceEvents"]:
        if ev.get("ph") == "X":
            per_track.setdefault((ev["pid"], ev["tid"]), []).append(ev)
    problems = []
    for key, evs in per_track.items():
        stack: list[tuple[int, int, str]] = []
        for ev in sorted(evs, key=lambda e: (e["ts"], -e["dur"])):
            a, b = ev["ts"], ev["ts"] + ev["dur"]
            while stack and stack[-1][1] <= a:
                stack.pop()
            if stack and b > stack[-1][1]:
                problems.append(f"track {key}: {ev['name']} [{a}, {b}] overlaps {stack[-1][2]} "
                                f"[{stack[-1][0]}, {stack[-1][1]}] without nesting")
            stack.append((a, b, ev["name"]))
    return problems
