"""Fault injection for the rig as a service (issue 8): the case library, its stand-ins, the table.

    python -m damage_rig.tools.fault_table [--model DIR] [--items N] [--only CASE ...] [--json OUT]

(a thin script that runs ``python -m tests.helpers.faults`` in the checkout).

Each case runs the real runtime on the demo config (sim cameras, ONNX Runtime,
the controller emulator on a pty) with one fault injected through a real
stand-in: sim cameras that stop, hang or send bad frames
(the config's ``sim.camera_faults``), a controller emulator that goes silent, a
pty relay whose "cable" is cut and restored, an inference backend wrapper that
is slower than the deadline, the event log's SQLite file capped at its current
size, `rig run` SIGKILLed and restarted, and broken files at startup.

Columns, per case:
- what the rig did (from its counters, the event log and the emulator's gate log);
- decisions lost: triggered items that were neither decided nor failed safe
  (an undecided item, or a divert that was not acknowledged while the
  controller was not in its own divert-all fail-safe when the item reached
  the gate, or an acknowledged divert the gate never fired) — must be 0;
- acknowledged events lost after restart: acknowledgements the rig had
  received (or the gate had acted on) missing from the event log when it is
  reopened — must be 0;
- time to recover: from the end of the fault to the rig working again (what
  "working" means is said per case).

The `faults` tests (tests/rig/service/test_fault_cases.py) call the same case
functions with fewer items.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from damage_rig.rig.config import DEMO_CONFIG, SHIPPED_MODEL_DIR, load_config
from damage_rig.rig.divert.spawn import spawn_emulator
from damage_rig.rig.events import EventLog, ItemRecord
from damage_rig.rig.service.assemble import load_scorer, open_rig
from damage_rig.rig.service.loop import serve

from tests.helpers.listener import NotifyListener

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Row:
    case: str
    did: str
    decisions_lost: int
    acked_lost: int
    recover_s: float | None
    recover_what: str = ""
    details: dict = field(default_factory=dict)

    def cells(self) -> list[str]:
        rec = "-" if self.recover_s is None else f"{self.recover_s:.2f} s"
        if self.recover_what:
            rec += f" ({self.recover_what})"
        return [self.case, self.did, str(self.decisions_lost), str(self.acked_lost), rec]


# ----------------------------------------------------------------------------------------- setup

def shipped_model_dir() -> Path:
    return Path(SHIPPED_MODEL_DIR)


def demo_config(workdir: Path, model_dir: Path | None = None, **overrides) -> Path:
    """A copy of the demo config in ``workdir`` (own calibration copy, state dir, model), with overrides.

    ``overrides`` are dotted keys, e.g. ``{"divert.url": "/tmp/x"}``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    calib = workdir / "calib.yaml"
    shutil.copy(DEMO_CONFIG.parent / cfg["calibration"], calib)
    cfg["calibration"] = str(calib)
    cfg["storage"]["state_dir"] = str(workdir / "state")
    cfg["model"]["dir"] = str(model_dir) if model_dir is not None else "shipped"
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    path = workdir / "rig.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class SlowBackend:
    """Wraps an inference backend; while ``delay_s`` > 0 every batch takes that much longer."""

    def __init__(self, inner, delay_s: float = 0.0):
        self.inner = inner
        self.delay_s = delay_s

    def run(self, batch):
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return self.inner.run(batch)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class PtyRelay:
    """A serial "cable" between the host and the controller emulator that can be cut and restored.

    The host opens ``link_path`` (a symlink to our own pty); bytes are copied to
    and from the emulator's pty. ``cut()`` closes our pty and removes the
    symlink (the host's reads fail, like a USB adapter being unplugged, while
    the controller stays up); ``restore()`` makes a new pty behind the same path.
    """

    def __init__(self, emulator_port: str, link_path: Path):
        self.link_path = Path(link_path)
        self.emu_fd = os.open(emulator_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.emu_fd)
        self.master = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.restore()
        self._thread = threading.Thread(target=self._run, name="pty-relay", daemon=True)
        self._thread.start()

    def restore(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        os.close(slave)
        tmp = self.link_path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name)
        tmp.replace(self.link_path)
        with self._lock:
            self.master = master

    def cut(self) -> None:
        with self._lock:
            master, self.master = self.master, None
        self.link_path.unlink(missing_ok=True)
        if master is not None:
            os.close(master)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self.master
            fds = [self.emu_fd] + ([master] if master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.02)
            except (OSError, ValueError):
                continue  # the master was closed under us by cut()
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue  # EIO: nobody has the slave open right now
                dst = master if fd == self.emu_fd else self.emu_fd
                if dst is None or not data:
                    continue  # cable cut: the controller's bytes go nowhere
                try:
                    os.write(dst, data)
                except OSError:
                    pass  # the other side vanished; the host's link notices on its own

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.cut()
        os.close(self.emu_fd)


# ---------------------------------------------------------------------------- in-process runs

@dataclass
class Outcome:
    items: list
    summary: dict
    counters: dict
    gate_log: list
    belt_start: float
    marks: dict
    db_rows: dict
    camera_stats: dict


def failsafe_windows(gate_log: list) -> list[tuple[float, float]]:
    """(start, end) monotonic windows in which the controller was in its divert-all fail-safe."""
    wins, start = [], None
    for ev in gate_log:
        if ev.get("event") == "failsafe" and ev.get("mode") == "divert_all" and start is None:
            start = ev["t_mono"]
        elif ev.get("event") in ("failsafe_cleared", "stop") and start is not None:
            wins.append((start, ev["t_mono"]))
            start = None
    if start is not None:
        wins.append((start, float("inf")))
    return wins


def decisions_lost(out: Outcome) -> tuple[int, list[str]]:
    """Items neither decided nor failed safe (see the module docstring); with a reason each."""
    wins = failsafe_windows(out.gate_log)
    fired = {ev["item_id"] for ev in out.gate_log if ev.get("event") == "fired"}
    lost = []
    for it in out.items:
        if not it.decided:
            lost.append(f"{it.item_id}: never decided")
            continue
        if it.decision != "divert":
            continue
        acked = it.result is not None and it.result.acked
        if acked:
            if it.no not in fired and not any(a <= it.deadline <= b for a, b in wins):
                lost.append(f"{it.item_id}: acked but the gate never fired")
        elif not any(a <= it.deadline <= b for a, b in wins):
            lost.append(f"{it.item_id}: divert not acked ({getattr(it.result, 'outcome', 'no result')}) and "
                        "the controller was not failing safe when it reached the gate")
    return len(lost), lost


def acked_lost(out: Outcome) -> tuple[int, list[str]]:
    """Acknowledged diverts whose row is not acked in the reopened event log."""
    lost = [it.item_id for it in out.items
            if it.result is not None and it.result.acked and not out.db_rows.get(it.item_id, {}).get("acked")]
    return len(lost), lost


def read_db(state: Path) -> dict:
    """{id: row} from the event log, opened afresh (as after a restart)."""
    db = state / "events.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT id, decision, reason, acked, belt_pos FROM items")}
    finally:
        conn.close()


def run_in_process(config: Path, state: Path, *, items: int, camera_faults=None, emulator_faults=None,
                   slow_after: tuple[float, float, float] | None = None, action=None, max_s: float = 90.0,
                   emulator_port: str | None = None) -> Outcome:
    """Run the rig on ``items`` sim items with faults; ``action(handle, marks)`` runs in a thread beside it.

    ``slow_after`` = (at_s, for_s, delay_s): inference is delay_s slower per batch in that belt-time window.
    """
    cfg = load_config(config).with_state_dir(state).with_sim(
        items=items, camera_faults=camera_faults or {}, emulator_faults=emulator_faults)
    scorer = None
    slow = None
    if slow_after is not None:
        scorer = load_scorer(cfg)
        scorer.backend = slow = SlowBackend(scorer.backend)
    handle = open_rig(cfg, scorer=scorer, keep_items=True)
    sim_belt = handle.sources.groups["sim"].state
    marks: dict = {}
    stop = threading.Event()
    threads = []
    try:
        if slow_after is not None:
            at, dur, delay = slow_after

            def slow_window():
                belt = sim_belt
                while not stop.is_set() and time.monotonic() < belt.start + at:
                    time.sleep(0.01)
                slow.delay_s = delay
                marks["fault_start"] = time.monotonic()
                while not stop.is_set() and time.monotonic() < belt.start + at + dur:
                    time.sleep(0.01)
                slow.delay_s = 0.0
                marks["fault_end"] = time.monotonic()

            threads.append(threading.Thread(target=slow_window, daemon=True))
        if action is not None:
            threads.append(threading.Thread(target=action, args=(handle, marks, stop), daemon=True))
        sim_belt.start = time.monotonic() + 60  # the belt starts when serve() begins it
        for t in threads:
            t.start()
        serve(handle, max_s=max_s)
        stop.set()
        for t in threads:
            t.join(10)
        rig = handle.rig
        its = rig.items_snapshot()
        gate = handle.emulator.gate_log() if handle.emulator is not None else []
        summary, counters, cams = rig.summary(), dict(rig.counters), rig.camera_stats()
        belt_start = sim_belt.start
    finally:
        stop.set()
        handle.close()
    if handle.emulator is not None:
        gate = handle.emulator.gate_log()  # with the final 'stop' event
    elif emulator_port is not None:
        gate = []
    return Outcome(its, summary, counters, gate, belt_start, marks, read_db(state), cams)


def wait_until(pred, timeout: float, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def finish_row(case: str, did: str, out: Outcome, recover_s, recover_what: str, **details) -> Row:
    n_lost, why = decisions_lost(out)
    n_ack, ack_ids = acked_lost(out)
    s = out.summary
    details.update(items=s["items"], decisions=s["decisions"], diverted=s["diverted"],
                   acked=s["divert_acked"], late=s["late"], failsafe=s["failsafe"], faults=s["faults"],
                   undecided=s["undecided"], lost=why, acked_lost_ids=ack_ids)
    return Row(case, did, n_lost, n_ack, recover_s, recover_what, details)


# ------------------------------------------------------------------------------------- cases

def _until_frames_again(fault_end_s: float):
    """An in-process action: mark the fault's end (belt time) and the first frame set after it."""
    def watch(handle, marks, stop):
        belt = handle.sources.groups["sim"].state
        wait_until(lambda: time.monotonic() >= belt.start + fault_end_s or stop.is_set(), 60)
        marks["fault_end"] = time.monotonic()
        n0 = handle.rig.sync.sets
        if wait_until(lambda: handle.rig.sync.sets > n0, 20):
            marks["recovered"] = time.monotonic()
    return watch


def case_camera_stop(work: Path, model_dir, items: int = 8) -> Row:
    """The side camera's stream stops for 3 s (grab and open fail), then resumes."""
    at, dur = 2.5, 3.0
    cfg = demo_config(work, model_dir, **{"capture.reconnect_s": 0.5})

    watch = _until_frames_again(at + dur)

    out = run_in_process(cfg, work / "state", items=items, action=watch,
                         camera_faults={"side": [{"kind": "stop", "at_s": at, "for_s": dur}]})
    side = out.camera_stats["side"]
    rec = out.marks.get("recovered", float("nan")) - out.marks["fault_end"]
    missing = sum(1 for it in out.items if it.reason == "camera_missing")
    did = (f"side camera errors {side['errors']}, reconnect attempts {side['reconnects']}; the top camera went on "
           f"alone: {missing} item(s) seen without the side view failed safe (camera_missing); "
           f"{items - out.summary['items']} of {items} items passed unseen; {out.summary['items']} seen, all decided")
    return finish_row("camera stream stops 3 s and resumes", did, out, rec, "first synced frame set")


def _frame_fault(kind: str, label: str, work: Path, model_dir, items: int) -> Row:
    at, dur = 2.5, 2.0
    cfg = demo_config(work, model_dir)

    watch = _until_frames_again(at + dur)

    out = run_in_process(cfg, work / "state", items=items, action=watch,
                         camera_faults={"top": [{"kind": kind, "at_s": at, "for_s": dur}]})
    top = out.camera_stats["top"]
    rec = out.marks.get("recovered", float("nan")) - out.marks["fault_end"]
    did = (f"top camera: {top['errors']} frames rejected at capture (counted as drops), "
           f"{out.summary['stage_errors']} stage errors; {out.summary['items']} of {items} items seen, all decided")
    if kind == "zeros":
        did = (f"zero frames accepted as frames: zero depth = no reading, so no trigger fired on them; "
               f"{out.summary['items']} of {items} items seen, all decided")
    return finish_row(label, did, out, rec, "first synced frame set after the bad frames")


def case_zero_frames(work, model_dir, items=8):
    return _frame_fault("zeros", "frames of zeros (top, 2 s)", work, model_dir, items)


def case_nan_depth(work, model_dir, items=8):
    return _frame_fault("nan_depth", "NaN depth (float32 depth frames, top, 2 s)", work, model_dir, items)


def case_wrong_size(work, model_dir, items=8):
    return _frame_fault("wrong_size", "frames of the wrong size (top, 2 s)", work, model_dir, items)


def case_controller_silent(work: Path, model_dir, items: int = 8) -> Row:
    """The controller stops reading and answering for 3 s (its own fail-safe engages: it hears no host)."""
    at, dur = 4.0, 3.0
    cfg = demo_config(work, model_dir)

    def watch(handle, marks, stop):
        link = handle.link
        wait_until(lambda: not link.healthy or stop.is_set(), 30)
        marks["fault_seen"] = time.monotonic()
        wait_until(lambda: link.healthy or stop.is_set(), 30)
        marks["recovered"] = time.monotonic()

    # the emulator's silence window is timed from its own start, a little before the belt's
    out = run_in_process(cfg, work / "state", items=items, action=watch,
                         emulator_faults={"silence_after_s": at, "silence_for_s": dur})
    silence_end = next((e["t_mono"] for e in out.gate_log if e.get("event") == "start"), 0) + at + dur
    rec = out.marks.get("recovered", float("nan")) - silence_end
    wins = failsafe_windows(out.gate_log)
    did = (f"link reported down; {out.summary['faults'] + out.summary['late']} diverts unacknowledged "
           f"(late/fault); controller fail-safe divert_all windows: {len(wins)}")
    return finish_row("controller silent 3 s", did, out, rec, "link healthy again")


def case_link_cut(work: Path, model_dir, items: int = 8) -> Row:
    """The serial cable is cut for 3 s (the port vanishes, the controller stays up), then restored."""
    at, dur = 4.0, 3.0
    link_path = work / "ttyRIG"
    emu = spawn_emulator(speed_mps=0.5, counts_per_m=1000.0, failsafe="divert_all", gates=(1,),
                         log_path=work / "gate.jsonl")
    relay = PtyRelay(emu.port, link_path)
    try:
        cfg = demo_config(work, model_dir, **{"divert.url": str(link_path)})

        def cut(handle, marks, stop):
            belt = handle.sources.groups["sim"].state
            wait_until(lambda: time.monotonic() >= belt.start + at or stop.is_set(), 60)
            relay.cut()
            marks["fault_start"] = time.monotonic()
            wait_until(lambda: stop.is_set(), dur)
            relay.restore()
            marks["fault_end"] = time.monotonic()
            if wait_until(lambda: handle.link.healthy or stop.is_set(), 30):
                marks["recovered"] = time.monotonic()

        out = run_in_process(cfg, work / "state", items=items, action=cut, emulator_port=emu.port)
    finally:
        relay.close()
        emu.stop()
    out.gate_log = emu.gate_log()
    rec = out.marks.get("recovered", float("nan")) - out.marks["fault_end"]
    wins = failsafe_windows(out.gate_log)
    did = (f"port lost and reopened (link port errors counted); {out.summary['faults']} diverts failed as "
           f"faults; controller engaged divert_all {len(wins)}x while it heard no host")
    return finish_row("serial link cut 3 s and restored", did, out, rec, "port reopened, link healthy")


def case_slow_inference(work: Path, model_dir, items: int = 8) -> Row:
    """Every batch takes 3.5 s longer (beyond the ~3 s to the gate) for 3 s of belt time."""
    at, dur, delay = 2.5, 3.0, 3.5
    cfg = demo_config(work, model_dir)
    out = run_in_process(cfg, work / "state", items=items, slow_after=(at, dur, delay))
    end = out.marks["fault_end"]
    after = sorted(it.decided_at for it in out.items
                   if it.reason == "score" and it.capture.host_time >= end)
    rec = (after[0] - end) if after else None
    did = (f"{out.summary['late']} items failed safe at their deadline (late, diverted), "
           f"{out.counters['ignored_late_scores']} late scores ignored; scoring resumed")
    return finish_row("inference 3.5 s slower than the deadline", did, out, rec,
                      "first item captured after it decided from its score")


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``path`` (a real filesystem that can fill up); None, or why not."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    return None if res.returncode == 0 else (res.stderr.strip() or f"mount exited {res.returncode}")


def case_state_full(work: Path, model_dir, items: int = 8) -> Row:
    """The state directory's filesystem really fills up (a small tmpfs, filled with a file) for 3 s,
    then the file is removed. Needs permission to mount a tmpfs (root); otherwise the row says so."""
    at, dur = 3.0, 3.0
    cfg = demo_config(work, model_dir)
    state = work / "state"
    why = _mount_tmpfs(state, "64m")
    if why is not None:
        row = Row("state directory full 3 s", f"not run: a full filesystem needs a tmpfs mount ({why})",
                  0, 0, None)
        row.details["skipped"] = why
        return row

    def fill(handle, marks, stop):
        belt = handle.sources.groups["sim"].state
        wait_until(lambda: time.monotonic() >= belt.start + at or stop.is_set(), 60)
        filler = state / "filler.bin"
        chunk = b"\0" * (1 << 20)
        with open(filler, "wb") as fh:  # write until the filesystem says ENOSPC
            try:
                while True:
                    fh.write(chunk)
                    fh.flush()
            except OSError as exc:
                marks["enospc"] = exc.errno == errno.ENOSPC
        marks["fault_start"] = time.monotonic()
        wait_until(lambda: stop.is_set(), dur)
        filler.unlink()
        marks["fault_end"] = time.monotonic()
        n0 = len(read_db(state))
        if wait_until(lambda: len(read_db(state)) > n0 or stop.is_set(), 30, 0.05):
            marks["recovered"] = time.monotonic()

    try:
        out = run_in_process(cfg, state, items=items, action=fill)
        unrecorded = [it.item_id for it in out.items if it.item_id not in out.db_rows]
        rec = out.marks.get("recovered", float("nan")) - out.marks["fault_end"]
        did = (f"filesystem full (ENOSPC: {out.marks.get('enospc')}): decisions and diverts went on; "
               f"{len(unrecorded)} item row(s) could not be written while full (logged, stage_errors "
               f"{out.summary['stage_errors']}); rows committed before stayed; writing resumed when space came back")
        row = finish_row("state directory full 3 s", did, out, rec, "next event row written",
                         unrecorded=unrecorded)
        # an acknowledgement for a row that was never written cannot be "lost after restart"; count only
        # acks of rows that were committed
        row.acked_lost = sum(1 for i in row.details["acked_lost_ids"] if i not in unrecorded)
        return row
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=10, check=False)


# ------------------------------------------------------------------------ subprocess cases

def rig_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "damage_rig.rig.cli", *args]


def children_of(pid: int) -> list[int]:
    """Direct child processes (the controller emulator that `rig run` spawned)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def start_rig(config: Path, lis: NotifyListener, watchdog_s: float = 10.0, extra=()) -> subprocess.Popen:
    env = dict(os.environ, NOTIFY_SOCKET=lis.env_value, WATCHDOG_USEC=str(int(watchdog_s * 1e6)))
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(rig_cmd("run", "--config", str(config), *extra), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_proc(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30.0) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[0] or ""


def gate_segments(path: Path) -> list[list[dict]]:
    """The emulator's gate log split per emulator run (each begins with a 'start' event)."""
    segs: list[list[dict]] = []
    if not path.exists():
        return segs
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("event") == "start" or not segs:
            segs.append([])
        segs[-1].append(ev)
    return segs


def case_sigkill(work: Path, model_dir, run_s: float = 7.0) -> Row:
    """`rig run` is SIGKILLed mid-run (the controller stays up, as it would: a long-lived controller
    emulator of its own, since one spawned by `rig run` now dies with it), then started again."""
    cfg, ctl = external_config(work, model_dir)
    state = work / "state"

    c = load_config(cfg)
    travel_s = (c.belt.gate_distance_m - 0.25) / (c.belt.speed_mps or 0.5)  # tunnel edge to gate, at least
    lis = NotifyListener(work / "notify.sock")
    orphans: list[int] = []
    try:
        proc = start_rig(cfg, lis)
        if lis.wait("READY", timeout=60) is None:
            raise RuntimeError("rig run never became READY: " + stop_proc(proc))
        time.sleep(run_s)
        orphans = children_of(proc.pid)
        before = read_db(state)  # what the rig had recorded just before the kill
        t_kill = time.monotonic()
        proc.kill()
        proc.wait(10)
        time.sleep(2.0)  # let the controller notice the silence
        after_kill = read_db(state)
        seg = gate_segments(ctl.log_path)[-1]
        fs = [e["t_mono"] for e in seg if e.get("event") == "failsafe"]
        engaged_s = (fs[0] - t_kill) if fs else None
        fired_before = [e for e in seg if e.get("event") == "fired" and e["t_mono"] < t_kill]
        for pid in orphans:  # the first run's controller emulator, orphaned by the kill
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # restart, as systemd's Restart=on-failure would
        t_restart = time.monotonic()
        proc2 = start_rig(cfg, lis)
        t_ready = lis.wait("READY", since=t_restart, timeout=60)
        time.sleep(2.0)
        out2 = stop_proc(proc2)
        rc2 = proc2.returncode
        reopened = read_db(state)
    finally:
        lis.close()
        ctl.close()
    acked_pos = {r["belt_pos"] for r in after_kill.values() if r["acked"]}
    lost_ack = [i for i, r in before.items() if r["acked"] and not reopened.get(i, {}).get("acked")]
    lost_ack += [f"fired@{e['fire_at']}" for e in fired_before if e["fire_at"] not in acked_pos]
    # items in flight at the kill reach the gate >= travel_s later; the controller's divert-all covers
    # them if it engaged before that
    lost = 0 if engaged_s is not None and engaged_s < travel_s else 1
    rec = None if t_ready is None else t_ready - t_restart
    did = (f"{len(before)} rows ({sum(r['acked'] for r in before.values())} acked) before the kill; the controller "
           f"engaged divert_all {engaged_s:.2f} s after it (items in flight need >= {travel_s:.1f} s to the gate); "
           f"restart READY, then clean exit {rc2}; {len(reopened)} rows after")
    if rc2 != 0 or "Traceback" in out2:
        did += f"; second run output: {out2[-500:]}"
    return Row("SIGKILL mid-run, then restart", did, lost, len(lost_ack), rec, "restart to READY",
               {"lost_acks": lost_ack, "fired_before_kill": len(fired_before)})


def _populate(state: Path) -> dict:
    with EventLog(state, save_crops=False) as ev:
        for i in range(3):
            ev.record(ItemRecord(id=f"prev-{i}", captured_at=1.7e9 + i, belt_pos=1000 * i, sku_pred="sku",
                                 sku_conf=0.9, score=0.8 if i == 1 else 0.1, type="", decision="divert" if i == 1
                                 else "pass", reason="score", latency_ms=50.0, model_version="v"))
        ev.mark_acked("prev-1", 1.7e9 + 2)
    return read_db(state)


def broken_variants(work: Path, model_dir: Path) -> dict[str, tuple[Path, str]]:
    """name -> (config path, the file the error must name)."""
    out = {}

    def fresh(name, **over):
        d = work / name
        return d, demo_config(d, model_dir, **over)

    d, cfg = fresh("bad_config")
    cfg.write_text(cfg.read_text().replace("sync_tolerance_ms:", "sync_tolerance:"))
    out["config: misspelt key"] = (cfg, str(cfg))
    d, cfg = fresh("corrupt_calibration")
    (d / "calib.yaml").write_text("cameras: [this is: not, a calibration\n")
    out["calibration: corrupt file"] = (cfg, str(d / "calib.yaml"))
    d, cfg = fresh("mismatched_calibration")
    cal = yaml.safe_load((d / "calib.yaml").read_text())
    cal["cameras"].pop("side")
    (d / "calib.yaml").write_text(yaml.safe_dump(cal))
    out["calibration: camera missing"] = (cfg, str(d / "calib.yaml"))
    for name, damage in (("corrupt_model", "corrupt"), ("mismatched_model", "mismatch")):
        m = work / name / "model"
        shutil.copytree(model_dir, m)
        card = yaml.safe_load((m / "model_card.yaml").read_text())
        onnx = m / card["onnx"]["file"]
        if damage == "corrupt":
            onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 3])
            out["model: truncated ONNX"] = (demo_config(work / name, m), str(onnx))
        else:
            card["input"]["size"] = int(card["input"]["size"]) + 32  # the card no longer fits the network
            (m / "model_card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
            out["model: card does not match the ONNX"] = (demo_config(work / name, m), str(m))
    d, cfg = fresh("engine", **{"inference.backend": "tensorrt", "inference.allow_fallback": False,
                               "inference.engine_dir": str(work / "engine" / "engines")})
    (work / "engine" / "engines").mkdir(parents=True, exist_ok=True)
    (work / "engine" / "engines" / "garbage.engine").write_bytes(b"\0not an engine")
    out["engine: TensorRT engine unusable, no fallback"] = (cfg, "tensorrt")
    return out


def case_broken_startup(work: Path, model_dir) -> list[Row]:
    """Each broken file: `rig run` exits non-zero at once with an error naming it; the event log is intact."""
    model_dir = Path(model_dir) if model_dir is not None else shipped_model_dir()
    rows = []
    for name, (cfg, must_name) in broken_variants(work, model_dir).items():
        state = cfg.parent / "state"
        before = _populate(state)
        t0 = time.monotonic()
        proc = subprocess.Popen(rig_cmd("run", "--config", str(cfg), "--max-seconds", "3"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out_text, err_text = proc.communicate(timeout=120)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err_text)
        took = time.monotonic() - t0
        if res.returncode == 0:
            res.stderr += "\nSTARTED AND RAN despite the broken file"
        after = read_db(state)
        msg = (res.stderr.strip().splitlines() or [""])[-1] if res.stderr.strip() else res.stdout.strip()
        named = must_name.lower() in (res.stderr + res.stdout).lower()
        clean = "Traceback" not in res.stderr
        did = (f"exit {res.returncode} in {took:.1f} s, {'names' if named else 'DOES NOT NAME'} {must_name}"
               f"{'' if clean else ', WITH A TRACEBACK'}: {msg[:160]}")
        lost_rows = [i for i in before if i not in after]
        lost_acks = [i for i, r in before.items() if r["acked"] and not after.get(i, {}).get("acked")]
        ok = res.returncode != 0 and named and clean
        rows.append(Row(f"startup: {name}", did, len(lost_rows), len(lost_acks), None,
                        "" if ok else "FAILED", {"ok": ok, "rc": res.returncode, "stderr": res.stderr[-2000:]}))
    return rows


def case_watchdog_freeze(work: Path, model_dir, watchdog_s: float = 2.0, restart_s: float = 0.5,
                         freeze_at_s: float = 3.0) -> Row:
    """A frozen stage (the top camera's read hangs) with the real progress watchdog, and a systemd stand-in.

    The stand-in does what systemd does with WatchdogSec: no WATCHDOG=1 for
    WatchdogSec -> kill (SIGABRT, then SIGKILL), wait RestartSec, start again.
    """
    cfg = demo_config(work, model_dir)
    lis = NotifyListener(work / "notify.sock")
    orphans = []
    try:
        faults = json.dumps({"top": [{"kind": "hang", "at_s": freeze_at_s}]})
        t_start = time.monotonic()
        proc = start_rig(cfg, lis, watchdog_s, extra=("--camera-faults", faults))
        t_ready = lis.wait("READY", timeout=60)
        if t_ready is None:
            raise RuntimeError("rig run never became READY: " + stop_proc(proc))
        t_freeze = t_ready + freeze_at_s  # the belt clock starts right before READY
        # systemd stand-in: watch the pings
        killed_at = None
        while proc.poll() is None:
            last = max(lis.times("WATCHDOG") or [t_ready])
            if time.monotonic() - last > watchdog_s:
                killed_at = time.monotonic()
                orphans = children_of(proc.pid)
                proc.send_signal(signal.SIGABRT)
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
            if time.monotonic() - t_ready > 60:
                break
            time.sleep(0.02)
        out1 = stop_proc(proc)
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stuck = [m["STATUS"] for t, m in lis.messages if "STATUS" in m and m["STATUS"].startswith("stuck")]
        pings_before = lis.times("WATCHDOG")
        last_ping = max([t for t in pings_before if t < (killed_at or 1e18)], default=t_ready)
        if killed_at is None:
            return Row("frozen stage -> watchdog restart", f"NOT KILLED: pings never stopped; {out1[-300:]}",
                       0, 0, None, "FAILED")
        time.sleep(restart_s)
        t_restart = time.monotonic()
        proc2 = start_rig(cfg, lis, watchdog_s)
        t_ready2 = lis.wait("READY", since=t_restart, timeout=60)
        stop_proc(proc2)
    finally:
        lis.close()
    total = (t_ready2 - t_freeze) if t_ready2 else None
    did = (f"WatchdogSec={watchdog_s:g} s, RestartSec={restart_s:g} s: top camera read hung at ~{freeze_at_s:g} s; "
           f"STATUS '{stuck[0] if stuck else 'none'}'; last WATCHDOG {last_ping - t_freeze:+.2f} s after the "
           f"freeze; killed {killed_at - t_freeze:.2f} s after it ({killed_at - last_ping:.2f} s after the last "
           f"ping); restarted READY {t_ready2 - t_restart if t_ready2 else float('nan'):.2f} s after start")
    return Row("frozen stage -> watchdog restart", did, 0, 0, total, "freeze to READY of the new process",
               {"t_start": t_start, "freeze_to_kill_s": killed_at - t_freeze,
                "last_ping_to_kill_s": killed_at - last_ping,
                "restart_ready_s": (t_ready2 - t_restart) if t_ready2 else None, "stuck_status": stuck})


# ------------------------------------------------------ `rig run` cases of issue 13 (storage, ids, input)

JUMP_S = 65_536  # the old item id's time field wrapped every 65,536 s (18.2 h)


class ExternalController:
    """A long-lived controller emulator in its own process, as a real controller outlives the rig:
    `rig run` talks to it by port (``divert.url``), so killing or restarting the rig leaves it up."""

    def __init__(self, state: Path, cfg_path: Path):
        c = load_config(cfg_path)
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state.parent / "controller-gate.jsonl"  # beside the state: it survives a full state disk
        self.em = spawn_emulator(speed_mps=c.belt.speed_mps or 0.5, counts_per_m=float(c.belt.encoder_counts_per_m
                                 or 1000.0), gates=(c.divert.gate_id,), log_path=self.log_path)
        self.port = self.em.port

    def gate_log(self) -> list[dict]:
        return [e for seg in gate_segments(self.log_path) for e in seg]

    def close(self) -> None:
        self.em.stop()


def external_config(work: Path, model_dir, **overrides) -> tuple[Path, ExternalController]:
    cfg = demo_config(work, model_dir)
    ctl = ExternalController(work / "state", cfg)
    return demo_config(work, model_dir, **{"divert.url": ctl.port, **overrides}), ctl


#: the storage and id cases want diverts to judge: more damaged items than the demo's 20 %
MANY_DAMAGED = {"sim.damage_rate": 0.6}


def read_rows(state: Path) -> dict:
    """{id: row} with captured_at, from the event log opened afresh; {} when there is none or it is unreadable."""
    db = state / "events.db"
    if not db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return {r["id"]: dict(r) for r in conn.execute(
                "SELECT id, captured_at, decision, reason, acked, belt_pos FROM items")}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def judge_files(runs: list[dict], gate_log: list[dict], travel_s: float) -> tuple[int, int, dict]:
    """Decisions lost and acknowledged events lost, from what `rig run` leaves behind: each run's final
    status.json counters, the reopened event log and the controller's gate log.

    ``runs``: [{"status": final status dict, "rows": {id: row}, "wall_offset": s}] (wall_offset: the run's
    clock minus the real one, for a run under a shifted clock). A decision is lost when an item was never
    decided, or a divert was acknowledged and the gate never fired at its position, or it was not
    acknowledged and the controller was not in divert-all when the item reached the gate. An
    acknowledged event is lost when the rig counted more acknowledgements than the event log holds.
    """
    fired = {e["fire_at"] for e in gate_log if e.get("event") == "fired"}
    wins, start = [], None
    for e in gate_log:
        if e.get("event") == "failsafe" and e.get("mode") == "divert_all" and start is None:
            start = e["t_wall"]
        elif e.get("event") in ("failsafe_cleared", "stop") and start is not None:
            wins.append((start, e["t_wall"]))
            start = None
    if start is not None:
        wins.append((start, float("inf")))
    lost, acked_lost, counts = [], 0, []
    for run in runs:
        c = (run["status"] or {}).get("counters") or {}
        rows = run["rows"]
        if c.get("items", 0) != c.get("decisions", 0):
            lost.append(f"{c.get('items', 0) - c.get('decisions', 0)} item(s) never decided")
        for rid, r in rows.items():
            if r["decision"] != "divert":
                continue
            at_gate = r["captured_at"] - run.get("wall_offset", 0.0) + travel_s
            covered = any(a <= at_gate <= b for a, b in wins)
            if r["acked"] and r["belt_pos"] not in fired and not covered:
                lost.append(f"{rid}: acked but the gate never fired")
            elif not r["acked"] and not covered:
                lost.append(f"{rid}: divert not acked ({r['reason']}) and the controller was not failing safe")
        db_acked = sum(1 for r in rows.values() if r["decision"] == "divert" and r["acked"])
        acked_lost += max(0, c.get("divert_acked", 0) - db_acked)
        counts.append({"items": c.get("items"), "decisions": c.get("decisions"), "diverted": c.get("diverted"),
                       "acked": c.get("divert_acked"), "rows": len(rows), "rows_acked": db_acked})
    return len(lost), acked_lost, {"lost": lost, "runs": counts, "fired": len(fired)}


def _final_status(state: Path) -> dict | None:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return None


def _travel_s(cfg: Path) -> float:
    c = load_config(cfg)
    return c.belt.gate_distance_m / (c.belt.speed_mps or 0.5)


def _run_to_end(proc: subprocess.Popen, timeout: float = 180.0) -> str:
    try:
        return proc.communicate(timeout=timeout)[0] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return (proc.communicate()[0] or "") + "\n(killed: did not finish)"


def case_db_locked(work: Path, model_dir, items: int = 25, lock_s: float = 12.0) -> Row:
    """Another process holds BEGIN EXCLUSIVE on events.db for 12 s during `rig run --sim-items 25`."""
    cfg, ctl = external_config(work, model_dir, **MANY_DAMAGED)
    state = work / "state"
    lis = NotifyListener(work / "notify.sock")
    try:
        proc = start_rig(cfg, lis, extra=("--sim-items", str(items)))
        if not wait_until(lambda: len(read_rows(state)) >= 3 or proc.poll() is not None, 120, 0.1):
            raise RuntimeError("no rows before the lock: " + stop_proc(proc))
        locker = sqlite3.connect(str(state / "events.db"), timeout=10, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        d0 = (_final_status(state) or {}).get("counters", {}).get("decisions", 0)
        time.sleep(lock_s)
        d1 = (_final_status(state) or {}).get("counters", {}).get("decisions", 0)
        n_locked = len(read_rows(state))
        locker.execute("ROLLBACK")
        locker.close()
        t_release = time.monotonic()
        wait_until(lambda: len(read_rows(state)) > n_locked or proc.poll() is not None, 30, 0.05)
        recover = time.monotonic() - t_release
        out = _run_to_end(proc)
        time.sleep(_travel_s(cfg) + 0.5)  # `rig run` exits once all is decided: let the last item reach the gate
        gate = ctl.gate_log()
    finally:
        lis.close()
        ctl.close()
    st = _final_status(state)
    rows = read_rows(state)
    lost, acked_lost, det = judge_files([{"status": st, "rows": rows}], gate, _travel_s(cfg))
    c, ev = (st or {}).get("counters", {}), (st or {}).get("event_log") or {}
    did = (f"{d1 - d0} decisions while locked {lock_s:.0f} s; {c.get('diverted')} diverts sent of "
           f"{c.get('diverted')} decided, {c.get('divert_acked')} acked, gate fired {det['fired']}; rows "
           f"{len(rows)}/{c.get('items')} after release ({ev.get('retries')} retries, {ev.get('records_dropped')} "
           f"dropped); max decision latency {(st or {}).get('latency_ms', {}).get('max')} ms; exit {proc.returncode}")
    if proc.returncode != 0 or "Traceback" in out:
        did += f"; output: {out[-400:]}"
    det.update(decided_while_locked=d1 - d0, event_log=ev, rc=proc.returncode, traceback="Traceback" in out,
               latency_max_ms=(st or {}).get("latency_ms", {}).get("max"))
    return Row("events.db locked 12 s (rig run)", did, lost, acked_lost, recover, "next row written after release",
               det)


def _fill(path: Path) -> bool:
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError as exc:
            return exc.errno == errno.ENOSPC
    return False


def _disk_full(work: Path, model_dir, items: int, at_start: bool, full_s: float = 5.0) -> Row:
    label = "state disk full at start (rig run)" if at_start else "state disk full 5 s while running (rig run)"
    cfg, ctl = external_config(work, model_dir, **MANY_DAMAGED)
    state = work / "state"
    why = _mount_tmpfs(state, "16m")
    if why is not None:
        ctl.close()
        row = Row(label, f"not run: a full filesystem needs a tmpfs mount ({why})", 0, 0, None)
        row.details["skipped"] = why
        return row
    lis = NotifyListener(work / "notify.sock")
    filler = state / "filler.bin"
    try:
        enospc = _fill(filler) if at_start else None
        t0 = time.monotonic()
        proc = start_rig(cfg, lis, extra=("--sim-items", str(items)))
        t_ready = lis.wait("READY", since=t0, timeout=120)
        if t_ready is None:
            raise RuntimeError("no READY: " + stop_proc(proc))
        if not at_start:
            time.sleep(3.0)
            enospc = _fill(filler)
        t_full = time.monotonic()
        wait_until(lambda: any("DEGRADED" in m.get("STATUS", "") for t, m in lis.with_key("STATUS")
                               if t >= t_full - 1) or proc.poll() is not None, 30, 0.1)
        said = [m["STATUS"] for t, m in lis.with_key("STATUS") if "DEGRADED" in m["STATUS"]]
        time.sleep(full_s)
        said = [m["STATUS"] for t, m in lis.with_key("STATUS") if "DEGRADED" in m["STATUS"]]
        n_full = len(read_rows(state))
        filler.unlink()
        t_back = time.monotonic()
        wait_until(lambda: len(read_rows(state)) > n_full or proc.poll() is not None, 30, 0.05)
        recover = time.monotonic() - t_back
        out = _run_to_end(proc)
        time.sleep(_travel_s(cfg) + 0.5)  # `rig run` exits once all is decided: let the last item reach the gate
        gate = ctl.gate_log()
        st = _final_status(state)
        rows = read_rows(state)
    finally:
        lis.close()
        ctl.close()
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=10, check=False)
    lost, acked_lost, det = judge_files([{"status": st, "rows": rows}], gate, _travel_s(cfg))
    c, ev = (st or {}).get("counters", {}), (st or {}).get("event_log") or {}
    shown = next((m for m in said if "event log" in m), said[0] if said else None)
    did = (f"ENOSPC: {enospc}; READY {t_ready - t0:.1f} s after start; STATUS said "
           f"{(shown.split('DEGRADED: ', 1)[-1][:90] + '...') if shown else 'nothing'}; {c.get('decisions')} of "
           f"{c.get('items')} items decided, {c.get('diverted')} diverted, {c.get('divert_acked')} acked; rows "
           f"{len(rows)} after space returned ({ev.get('retries', 0) + ev.get('open_failures', 0)} retries, "
           f"{ev.get('records_dropped')} dropped); exit {proc.returncode}")
    if proc.returncode != 0 or "Traceback" in out:
        did += f"; output: {out[-400:]}"
    det.update(enospc=enospc, degraded_status=said, event_log=ev, rc=proc.returncode,
               traceback="Traceback" in out)
    return Row(label, did, lost, acked_lost, recover, "next row written after space returned", det)


def case_disk_full_start(work: Path, model_dir, items: int = 12) -> Row:
    return _disk_full(work, model_dir, items, at_start=True)


def case_disk_full_running(work: Path, model_dir, items: int = 16) -> Row:
    return _disk_full(work, model_dir, items, at_start=False)


def case_time_jump(work: Path, model_dir, items: int = 10) -> Row:
    """Two `rig run`s against one long-lived controller, the second drawing its item ids from a clock
    65,536 s (18.2 h) ahead (`rig run --id-clock-offset`). With the old ids the second run's ids
    repeated the first's: the controller ACKed them and never fired."""
    cfg, ctl = external_config(work, model_dir, **MANY_DAMAGED)
    state = work / "state"
    lis = NotifyListener(work / "notify.sock")
    runs = []
    try:
        wall0 = time.time()
        for i in range(2):
            # the second run starts exactly 65,536 s after the first by its clock: the old ids' base
            # ((seconds & 0xFFFF) << 16) came out the same, and its item numbers restart at 0
            offset = 0.0 if i == 0 else JUMP_S - (time.time() - wall0)
            before = set(read_rows(state))
            t0 = time.monotonic()
            proc = start_rig(cfg, lis, extra=("--sim-items", str(items), "--id-clock-offset", str(offset)))
            ready = lis.wait("READY", since=t0, timeout=120)
            out = _run_to_end(proc)
            time.sleep(_travel_s(cfg) + 0.5)  # the last diverted item reaches the gate
            rows = {k: v for k, v in read_rows(state).items() if k not in before}
            runs.append({"status": _final_status(state), "rows": rows, "rc": proc.returncode,
                         "ready_s": None if ready is None else ready - t0, "out": out[-400:]})
        gate = ctl.gate_log()
    finally:
        lis.close()
        ctl.close()
    lost, acked_lost, det = judge_files(runs, gate, _travel_s(cfg))
    r1, r2 = det["runs"]
    ids = [e["item_id"] for e in gate if e.get("event") == "fired"]
    did = (f"run 1: {r1['diverted']} diverted, {r1['acked']} acked; run 2 (ids from a clock +{JUMP_S} s): "
           f"{r2['diverted']} diverted, {r2['acked']} acked; gate fired {det['fired']} of {r1['acked'] + r2['acked']} "
           f"acked, {len(set(ids))} distinct ids; exits {runs[0]['rc']}, {runs[1]['rc']}")
    if any(r["rc"] != 0 for r in runs):
        did += "; output: " + " / ".join(r["out"] for r in runs)
    return Row("restart 18.2 h later, long-lived controller (rig run)", did, lost, acked_lost,
               runs[1]["ready_s"], "second run READY", det)


def case_forged_review(work: Path, model_dir) -> Row:
    """`rig review` as a process, sent what a hostile web page and a DNS-rebinding page can send."""
    state = work / "state"
    with EventLog(state, save_crops=False) as ev:
        ev.record(ItemRecord(id="it1", captured_at=time.time(), belt_pos=1, sku_pred="s", sku_conf=0.9, score=0.9,
                             type="", decision="divert", reason="score", latency_ms=1.0, model_version="t"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(rig_cmd("review", "--state", str(state), "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answers = {}
    try:
        def ask(name, method, path, body=b"", headers=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            h = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
            h.update(headers or {})
            h = {k: v for k, v in h.items() if v is not None}
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in h.items():
                conn.putheader(k, v)
            conn.endheaders(body or None)
            res = conn.getresponse()
            data = res.read()
            conn.close()
            answers[name] = res.status
            return data

        wait_until(lambda: proc.poll() is not None or _port_open(port), 30, 0.1)
        page = ask("page", "GET", "/")
        token = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()
        label = b'{"verdict": "damaged", "reviewer": "station"}'  # every label names its reviewer
        ask("text/plain from evil.example", "POST", "/api/items/it1/label", label,
            {"Content-Type": "text/plain", "Origin": "http://evil.example", "Content-Length": str(len(label))})
        ask("no CSRF token", "POST", "/api/items/it1/label", label, {"Content-Length": str(len(label))})
        ask("foreign Host (rebinding)", "GET", "/api/items", headers={"Host": f"rebind.example:{port}"})
        ask("negative Content-Length", "POST", "/api/items/it1/label", label,
            {"X-CSRF-Token": token, "Content-Length": "-1"})
        ask("wrong-typed field", "POST", "/api/items/it1/label", b'{"verdict": ["damaged"]}',
            {"X-CSRF-Token": token, "Content-Length": "24"})
        ask("enroll from evil.example", "POST", "/api/gallery/enroll", b'{"sku": "s"}',
            {"Origin": "http://evil.example", "Content-Length": "12"})
        with EventLog(state, save_crops=False) as ev:
            unchanged = ev.get("it1")["label"] is None
        ask("the page, with its token", "POST", "/api/items/it1/label", label,
            {"X-CSRF-Token": token, "Origin": f"http://127.0.0.1:{port}", "Content-Length": str(len(label))})
    finally:
        out = stop_proc(proc)
    forged = {k: v for k, v in answers.items() if k not in ("page", "the page, with its token")}
    refused = all(400 <= v < 500 for v in forged.values())
    did = ("; ".join(f"{k}: {v}" for k, v in answers.items()) + f"; label unchanged by forged requests: {unchanged}")
    if "Traceback" in out:
        did += f"; output: {out[-300:]}"
    ok = refused and unchanged and answers.get("the page, with its token") == 200
    return Row("forged review requests (rig review)", did, 0, 0, None, "" if ok else "FAILED", answers)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def case_tampered_model(work: Path, model_dir) -> Row:
    """One bit of model.onnx flipped: `rig run` refuses to start, naming the file; restored, it starts."""
    model = work / "model"
    shutil.copytree(model_dir, model)
    onnx = model / "model.onnx"
    good = onnx.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    onnx.write_bytes(bytes(bad))
    cfg = demo_config(work, model)
    r = subprocess.run(rig_cmd("run", "--config", str(cfg), "--sim-items", "1"), capture_output=True, text=True,
                       timeout=120, check=False)
    named = f"{onnx}: SHA-256" in r.stderr
    onnx.write_bytes(good)
    lis = NotifyListener(work / "notify.sock")
    try:
        t0 = time.monotonic()
        proc = start_rig(cfg, lis, extra=("--sim-items", "2"))
        t_ready = lis.wait("READY", since=t0, timeout=120)
        out = _run_to_end(proc)
    finally:
        lis.close()
    did = (f"tampered: exit {r.returncode}, the error names the file: {named} "
           f"({r.stderr.strip().splitlines()[-1][:120] if r.stderr.strip() else ''}); restored: READY, exit "
           f"{proc.returncode}")
    ok = r.returncode == 1 and named and "Traceback" not in r.stderr and proc.returncode == 0
    if "Traceback" in out:
        did += f"; output: {out[-300:]}"
    return Row("tampered model.onnx (rig run)", did, 0, 0, None if t_ready is None else t_ready - t0,
               "restored model to READY" if ok else "FAILED")


RIG_RUN = {
    "db_locked": case_db_locked,
    "disk_full_running": case_disk_full_running,
    "disk_full_start": case_disk_full_start,
    "time_jump": case_time_jump,
}


IN_PROCESS = {
    "camera_stop": case_camera_stop,
    "link_cut": case_link_cut,
    "controller_silent": case_controller_silent,
    "slow_inference": case_slow_inference,
    "state_full": case_state_full,
    "zero_frames": case_zero_frames,
    "nan_depth": case_nan_depth,
    "wrong_size": case_wrong_size,
}
ALL = [*IN_PROCESS, "sigkill", "broken_startup", "watchdog", *RIG_RUN, "forged_review", "tampered_model"]


def run_case(name: str, work: Path, model_dir, items: int = 8) -> list[Row]:
    work.mkdir(parents=True, exist_ok=True)
    if name in IN_PROCESS:
        return [IN_PROCESS[name](work, model_dir, items=items)]
    if name == "sigkill":
        return [case_sigkill(work, model_dir)]
    if name == "broken_startup":
        return case_broken_startup(work, model_dir)
    if name == "watchdog":
        return [case_watchdog_freeze(work, model_dir)]
    if name in RIG_RUN:
        return [RIG_RUN[name](work, model_dir)]
    if name == "forged_review":
        return [case_forged_review(work, model_dir)]
    if name == "tampered_model":
        return [case_tampered_model(work, model_dir)]
    raise ValueError(f"unknown case {name!r}; known: {ALL}")


def table(rows: list[Row]) -> str:
    head = ["case", "what the rig did", "decisions lost", "acked events lost after restart", "time to recover"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: models/shipped)")
    ap.add_argument("--items", type=int, default=10, help="sim items per in-process case")
    ap.add_argument("--only", nargs="*", default=None, choices=ALL, help="run only these cases")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--json", default=None, help="also write the rows with details to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the rig logs every injected fault loudly; the table says it
    model = Path(args.model) if args.model else shipped_model_dir()
    if not (model / "model_card.yaml").is_file():
        print(f"fault_table: no model at {model} (train one with `rig train` and pass --model)", file=sys.stderr)
        return 1
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rig-faults-"))
    rows = []
    try:
        for name in args.only or ALL:
            t0 = time.monotonic()
            got = run_case(name, work / name, model, items=args.items)
            rows += got
            for r in got:
                print(f"[{time.monotonic() - t0:5.1f} s] {' | '.join(r.cells())}", file=sys.stderr, flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    bad = [r for r in rows if r.decisions_lost or r.acked_lost or r.recover_what == "FAILED"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
