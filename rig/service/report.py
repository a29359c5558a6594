"""What `rig status` prints, from the state directory (the service serves its metrics itself)."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from .. import events
from ..foundation.errors import RigError
from ..review.drift import drift_flags
from .health import summary
from .status import STALE_AFTER_S, read_status

log = logging.getLogger(__name__)


def gather(state_dir: str | Path, recent: int = 10) -> dict:
    """Status file + event-log figures + drift flags, as one dict (missing parts are None)."""
    state_dir = Path(state_dir)
    out = {"state_dir": str(state_dir), "status": read_status(state_dir), "counts": None,
           "recent": [], "drift": []}
    out["event_log_error"] = None
    if events.db_path(state_dir).is_file():
        try:
            _read_event_log(state_dir, recent, out)
        except (sqlite3.Error, RigError, ValueError) as exc:  # corrupt, locked or unreadable: say so
            out["event_log_error"] = f"{events.db_path(state_dir)}: {exc}"
    return out


def _read_event_log(state_dir: Path, recent: int, out: dict) -> None:
    conn = events.connect(state_dir, readonly=True)
    try:
        out["counts"] = events.counts(conn)
        rows = conn.execute("SELECT * FROM items ORDER BY captured_at DESC, rowid DESC LIMIT ?",
                            (int(recent),)).fetchall()
        out["recent"] = [events.row_to_dict(r) for r in rows]
        try:
            out["drift"] = [f.to_json() for f in drift_flags(conn)]
        except RigError as exc:
            log.warning("drift check skipped: %s", exc)
    finally:
        conn.close()


def format_text(info: dict) -> str:
    st = info["status"]
    h = summary(info)
    lines = [f"health: {h['state'].upper()}" + (f" ({'; '.join(h['problems'])})" if h["problems"] else ""),
             f"state directory: {info['state_dir']}"]
    if st is None:
        lines.append("service: no status file (the rig never ran with this state directory)")
    else:
        state = st.get("state", "?")
        if st["age_s"] > STALE_AFTER_S and state not in ("stopped",):
            state = f"NOT UPDATING (last {state!r} {st['age_s']:.0f} s ago: stopped or hung)"
        lines.append(f"service: {state}  pid {st.get('pid', '?')}  updated {st['age_s']:.1f} s ago")
        for name, cam in sorted((st.get("cameras") or {}).items()):
            conn = "" if cam.get("connected", True) else "  DISCONNECTED"
            lines.append(f"  camera {name:10s} {cam.get('fps', 0):6.1f} fps  drops {cam.get('drops', 0)}{conn}")
        inf = st.get("inference") or {}
        why = f" ({inf['why']})" if inf.get("why") else ""
        lines.append(f"  inference: {inf.get('backend', '?')}{why}   model {st.get('model_version', '?')}")
        ctl = st.get("controller") or {}
        hb = ctl.get("last_heartbeat_s")
        hb_text = "never" if hb is None else f"{hb:.1f} s ago"
        lines.append(f"  controller link: {ctl.get('link', '?')}  port {ctl.get('port') or '?'}  "
                     f"last heartbeat {hb_text}  faults {ctl.get('faults', 0)}")
        lat = h["latency_ms"]
        fs = ", ".join(f"{r} {n}" for r, n in sorted(h["failsafe_reasons"].items())) or "none"
        lines.append(f"  decisions {h['decisions']}  diverted {h['diverted']}  late {h['late']}  "
                     f"fail-safe {h['failsafe']} ({fs})  since start")
        if lat.get("n"):
            lines.append(f"  latency over the last {lat['window_s']:.0f} s: p50 {lat['p50']:.0f} ms  "
                         f"p99 {lat['p99']:.0f} ms  ({lat['n']} decisions)")
        else:
            lines.append(f"  latency: no decision in the last {lat['window_s']:.0f} s")
        if h["mqtt"] is not None:
            mq = h["mqtt"]
            lines.append(f"  mqtt: {'connected' if mq.get('connected') else 'NOT CONNECTED'}  "
                         f"outbox {mq.get('outbox_depth', 0)}  published {mq.get('published', 0)}  "
                         f"dropped {mq.get('queue_dropped', 0) + mq.get('outbox_dropped', 0)}")
        if h["scan"] is not None:
            sc = h["scan"]
            lines.append(f"  scans: {sc.get('scans', 0)} ({sc.get('unreadable', 0)} unreadable), "
                         f"matched {sc.get('matched', 0)}, items without a scan {sc.get('no_scan', 0)}, "
                         f"unmatched {sc.get('unmatched', 0)}")
        if h["state_dir_free_bytes"] is not None:
            lines.append(f"  state directory free: {h['state_dir_free_bytes'] / 1e9:.1f} GB")
        if st.get("stuck"):
            lines.append(f"  STUCK stages: {', '.join(st['stuck'])}")
        ev = st.get("event_log") or {}
        if ev.get("error") or ev.get("backlog") or ev.get("records_dropped"):
            lines.append(f"  EVENT LOG DEGRADED: {ev.get('backlog', 0)} record(s) waiting, "
                         f"{ev.get('records_dropped', 0)} dropped, {ev.get('retries', 0)} retries; "
                         f"{ev.get('error') or 'catching up'}")
        if st.get("status_file_failures"):
            lines.append(f"  status file: {st['status_file_failures']} write(s) failed (full or read-only disk)")
    c = info["counts"]
    if info.get("event_log_error"):
        lines.append(f"event log: UNREADABLE: {info['event_log_error']}")
    elif c is None:
        lines.append("event log: none yet")
    else:
        lines.append(f"event log: {c['items']} items, {c['divert']} diverted ({c['divert_acked']} acked), "
                     f"{c['pass']} passed; reasons {c['by_reason']}; {c['unreviewed']} diverts awaiting review")
    if info["recent"]:
        lines.append("recent decisions (newest first):")
        for r in info["recent"]:
            when = time.strftime("%H:%M:%S", time.localtime(r["captured_at"]))
            ack = "acked" if r["acked"] else ("-" if r["decision"] == "pass" else "NOT ACKED")
            lines.append(f"  {when} {r['id']:>14s} {r['decision']:6s} {r['reason']:8s} score {r['score']:.3f} "
                         f"sku {r['sku_pred']} {ack}")
    for f in info["drift"]:
        lines.append(f"PACKAGING DRIFT: sku {f['sku']}: anomaly scores up from {f['baseline']:.3f} to "
                     f"{f['recent']:.3f} over {f['n_recent']} items; {f['confirmed']} diverts reviewed "
                     "not damaged (enroll new references on the review page)")
    return "\n".join(lines)
