"""The status file: the running service's health, for `rig status` and the metrics endpoint.

The runtime calls :func:`write_status` every second or so with a dict like::

    {"state": "running",                      # starting | running | stopping | stopped
     "pid": 1234, "started_at": 1.7e9,
     "cameras": {"top": {"fps": 29.9, "drops": 0, "connected": true}, ...},
     "inference": {"backend": "onnxruntime", "why": "tensorrt not installed"},
     "model_version": "shipped-2026-11-20",
     "controller": {"link": "up", "port": "/dev/ttyUSB0", "last_heartbeat_s": 0.1,
                    "faults": 0, "retransmits": 3},
     "counters": {"items": 812, "late": 0, ...},
     "stuck": []}                             # stages the watchdog found stuck

``updated_at`` (epoch seconds) is added here. The write is atomic (a temp file
in the same folder, fsync, rename), so a reader never sees half a file even if
the service is killed mid-write. Recent decisions and review/drift figures are
not duplicated here: `rig status` reads them from the event log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..foundation.errors import DeviceError

log = logging.getLogger(__name__)

STATUS_NAME = "status.json"
#: a status older than this means the service is not running (or hung); it is written every second
STALE_AFTER_S = 3.0


def write_status(state_dir: str | Path, status: dict) -> Path:
    state_dir = Path(state_dir)
    data = dict(status, updated_at=time.time())
    path = state_dir / STATUS_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".status.", suffix=".tmp", dir=state_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DeviceError(f"cannot write the status file {path}: {exc}") from None
    return path


def free_bytes(path: str | Path) -> int | None:
    """Free space where ``path`` lives (None when it cannot be read)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


class StatusWriter:
    """write_status for a service: a failure (full or read-only disk) is logged once, counted and
    reported by ``error``; it never raises, and the next write that works clears it."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.error: str | None = None
        self.failures = 0

    def write(self, status: dict) -> bool:
        try:
            write_status(self.state_dir, dict(status, status_file_failures=self.failures))
        except DeviceError as exc:
            self.failures += 1
            if self.error is None:
                log.error("%s; the rig goes on deciding (status in the journal and sd_notify only)", exc)
            self.error = str(exc)
            return False
        if self.error is not None:
            log.warning("status file writable again after %d failed write(s)", self.failures)
            self.error = None
        return True


def read_status(state_dir: str | Path) -> dict | None:
    """The last status written, with ``age_s`` added; None when the service never wrote one."""
    path = Path(state_dir) / STATUS_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise DeviceError(f"cannot read the status file {path}: {exc}") from None
    data["age_s"] = max(0.0, time.time() - float(data.get("updated_at", 0.0)))
    return data


def status_dict(handle, state: str, started_at: float, watchdog=None) -> dict:
    rig = handle.rig
    link = handle.link
    counters = dict(rig.counters)
    counters["dropped_frames"] = rig.dropped_frames()
    cams = {name: {"fps": s["fps"], "drops": s["dropped"], "frames": s["frames"], "errors": s["errors"],
                   "reconnects": s["reconnects"], "connected": s["last_frame_age_s"] is not None
                   and s["last_frame_age_s"] < 2.0}
            for name, s in rig.camera_stats().items()}
    lc = getattr(link, "counters", {}) or {}
    hb = getattr(link, "heartbeat_age_s", None)
    extra = {"decisions": handle.stats.snapshot() if handle.stats is not None else None,
             "state_dir_free_bytes": free_bytes(handle.cfg.state_dir)}
    if handle.mqtt is not None:
        extra["mqtt"] = handle.mqtt.stats()
    if handle.expected is not None:
        extra["scan"] = dict(handle.expected.counters, pending=handle.expected.pending())
    return {**extra, "state": state, "pid": os.getpid(), "started_at": started_at,
            "config": str(handle.cfg.source_path),
            "cameras": cams,
            "inference": {"backend": rig.scorer.backend.name, "describe": rig.scorer.backend.describe(),
                          "preprocess": rig.pre.name},
            "model_version": str(getattr(rig.scorer, "version", "")),
            "controller": {"link": "up" if link.healthy else "down", "last_error": link.last_error,
                           "port": getattr(link, "url", None),
                           "last_heartbeat_s": None if hb is None else round(hb, 3),
                           "retransmits": lc.get("retransmits", 0), "faults": lc.get("faults", 0),
                           "crc_errors": lc.get("crc_errors", 0)},
            "counters": counters, "latency_ms": rig.summary()["latency_ms"],
            "event_log": handle.events.stats() if hasattr(handle.events, "stats") else None,
            "stuck": watchdog.stuck() if watchdog is not None else []}


def degraded(st: dict, status_error: str | None = None) -> list[str]:
    """What is not working but does not stop the rig deciding (empty when all is well)."""
    out = []
    ev = st.get("event_log") or {}
    if ev.get("error"):
        out.append(f"event log not writable for {ev['error_for_s']:.0f} s ({ev['error']}); "
                   f"{ev['backlog']} record(s) waiting")
    if ev.get("records_dropped"):
        out.append(f"{ev['records_dropped']} record(s) dropped (backlog full)")
    if status_error:
        out.append(f"status file not written ({status_error})")
    return out


def one_line(st: dict, status_error: str | None = None) -> str:
    c = st["counters"]
    line = (f"{st['state']}: {c['items']} items, {c['diverted']} diverted, {c['late']} late, "
            f"{c['dropped_frames']} dropped frames, link {st['controller']['link']}")
    bad = degraded(st, status_error)
    return line + ("; DEGRADED: " + "; ".join(bad) if bad else "")
