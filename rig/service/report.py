"""What `rig status` prints and what the metrics endpoint serves, from the state directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import events
from ..foundation.errors import RigError
from ..review.drift import drift_flags
from .status import STALE_AFTER_S, read_status

log = logging.getLogger(__name__)


def gather(state_dir: str | Path, recent: int = 10) -> dict:
    """Status file + event-log figures + drift flags, as one dict (missing parts are None)."""
    state_dir = Path(state_dir)
    out = {"state_dir": str(state_dir), "status": read_status(state_dir), "counts": None,
           "recent": [], "drift": []}
    if events.db_path(state_dir).is_file():
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
    return out


def format_text(info: dict) -> str:
    st = info["status"]
    lines = [f"state directory: {info['state_dir']}"]
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
        lines.append(f"  controller link: {ctl.get('link', '?')}  port {ctl.get('port', '?')}  "
                     f"last heartbeat {ctl.get('last_heartbeat_s', '?')} s ago  faults {ctl.get('faults', 0)}")
        if st.get("stuck"):
            lines.append(f"  STUCK stages: {', '.join(st['stuck'])}")
    c = info["counts"]
    if c is None:
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


def prometheus_text(info: dict) -> str:
    """The same figures in the Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def metric(name, kind, help_, samples):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {float(value):g}" if lab else f"{name} {float(value):g}")

    st = info["status"] or {}
    metric("rig_up", "gauge", "1 while the service updates its status file",
           [({}, 1 if st and st["age_s"] <= STALE_AFTER_S and st.get("state") == "running" else 0)])
    if st:
        metric("rig_status_age_seconds", "gauge", "seconds since the status file was written", [({}, st["age_s"])])
        cams = st.get("cameras") or {}
        metric("rig_camera_fps", "gauge", "frames per second per camera",
               [({"camera": n}, c.get("fps", 0)) for n, c in sorted(cams.items())])
        metric("rig_camera_drops_total", "counter", "frames dropped per camera",
               [({"camera": n}, c.get("drops", 0)) for n, c in sorted(cams.items())])
        ctl = st.get("controller") or {}
        metric("rig_controller_link_up", "gauge", "1 while the divert controller answers",
               [({}, 1 if ctl.get("link") == "up" else 0)])
        metric("rig_model_info", "gauge", "model version and inference backend in use",
               [({"version": st.get("model_version", "?"),
                  "backend": (st.get("inference") or {}).get("backend", "?")}, 1)])
    c = info["counts"]
    if c:
        metric("rig_items_total", "counter", "items decided, by decision",
               [({"decision": "divert"}, c["divert"]), ({"decision": "pass"}, c["pass"])])
        metric("rig_divert_acked_total", "counter", "diverts acknowledged by the controller",
               [({}, c["divert_acked"])])
        metric("rig_items_by_reason_total", "counter", "items by decision reason",
               [({"reason": k}, v) for k, v in sorted(c["by_reason"].items())])
        metric("rig_review_pending", "gauge", "diverted items not yet reviewed", [({}, c["unreviewed"])])
    metric("rig_packaging_drift", "gauge", "1 per SKU flagged for packaging drift",
           [({"sku": f["sku"]}, 1) for f in info["drift"]])
    return "\n".join(out) + "\n"


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
