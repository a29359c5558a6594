"""CPU time, not wall time: whose threads and processes used the cores during a bench run.

Linux's per-thread accounting (``/proc/self/task/<tid>/stat``: user + system
time, in clock ticks) attributes the rig process's CPU to each thread; the
stand-in processes (frame server, controller emulator) are read from
``/proc/<pid>/stat``. Python threads are named by their ``native_id``; threads
Python did not start (ONNX Runtime's intra-op pool, helper threads of native
libraries) are reported together as ``native``. ``account`` turns the deltas
into the capacity figures; it is pure arithmetic, tested apart.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _stat_cpu_s(path: str) -> float | None:
    """utime + stime (seconds) from a /proc stat file; None when it is gone."""
    try:
        with open(path, encoding="ascii") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    return (int(fields[11]) + int(fields[12])) * TICK_S


def thread_cpu() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native thread id."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        v = _stat_cpu_s(f"/proc/self/task/{tid}/stat")
        if v is not None:
            out[int(tid)] = v
    return out


def process_cpu(pid: int) -> float | None:
    """CPU seconds of process ``pid`` (all its threads), None when it is gone."""
    return _stat_cpu_s(f"/proc/{pid}/stat")


def load_state() -> dict:
    """The machine's load against its cores: a run is flagged when the load exceeds the cores."""
    la = os.getloadavg()
    cores = os.cpu_count() or 1
    return {"load_avg": [round(v, 2) for v in la], "cores": cores, "overloaded": la[0] > cores}


@dataclass
class CpuSnapshot:
    wall: float
    process: float
    threads: dict[int, float]
    names: dict[int, str]
    stand_ins: dict[str, float]


@dataclass
class CpuMeter:
    """Snapshots of this process's threads and the stand-ins' processes; ``delta`` between two."""

    stand_in_pids: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> CpuSnapshot:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        return CpuSnapshot(time.monotonic(), time.process_time(), thread_cpu(), names,
                           {k: process_cpu(p) or 0.0 for k, p in self.stand_in_pids.items()})

    @staticmethod
    def delta(a: CpuSnapshot, b: CpuSnapshot) -> dict:
        """CPU seconds between two snapshots: the process, each named Python thread (threads of
        one name summed), the native threads together, and each stand-in process. A thread that
        ended between the two is in ``process_s`` only (take the second while the stages run)."""
        names = {**a.names, **b.names}
        per: dict[str, float] = {}
        for tid, cpu in b.threads.items():
            d = cpu - a.threads.get(tid, 0.0)
            name = names.get(tid, "native")
            per[name] = per.get(name, 0.0) + d
        return {"wall_s": b.wall - a.wall, "process_s": b.process - a.process,
                "threads_s": {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1])},
                "stand_ins_s": {k: round(b.stand_ins[k] - a.stand_ins.get(k, 0.0), 3) for k in b.stand_ins}}


def account(process_s: float, model_in_run_s: float, stand_ins_s: float, items: int,
            model_alone_s: float, model_alone_items: float) -> dict:
    """The capacity figures from CPU seconds.

    ``process_s``: the rig process's CPU during the run; ``model_in_run_s``: the part of it that
    was inference (the infer thread inside the backend's run, and the native threads the backend
    runs on); ``stand_ins_s``: the stand-in processes' CPU; ``items`` scored in the run;
    ``model_alone_s`` / ``model_alone_items``: the model alone, same batch and threads.
    """
    if items < 1 or model_alone_items <= 0:
        raise ValueError(f"need at least one item scored and one run of the model alone, got {items} and "
                         f"{model_alone_items}")
    rig_s = max(process_s - model_in_run_s, 0.0)
    total = process_s + stand_ins_s
    model_ms = 1000.0 * model_alone_s / model_alone_items
    rig_ms = 1000.0 * rig_s / items
    return {"rig_cpu_ms_per_item": round(rig_ms, 3),
            "model_cpu_ms_per_item": round(model_ms, 3),
            "model_cpu_ms_per_item_in_run": round(1000.0 * model_in_run_s / items, 3),
            "rig_to_model_cpu": round(rig_ms / model_ms, 3) if model_ms > 0 else None,
            "stand_in_cpu_share": round(stand_ins_s / total, 4) if total > 0 else 0.0}
