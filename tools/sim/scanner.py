"""The simulator's upstream barcode scanner: each item's SKU on a real pty as it passes the scanner.

The scanner stands ``distance_m`` upstream of the tunnel centre; item k passes
it at belt time ``t_center - distance_m / speed`` and the scanner writes one
line, the way a fixed-mount scanner does: the SKU, or (at configured rates)
another product's SKU (``wrong``), ``NOREAD`` (``unreadable``) or nothing at all
(``missing``). Items that passed the scanner before the belt started are never
scanned (``missing``, ``before_start``). Every line is logged to ``log_path``
(JSON lines: index, sku, kind, sent) so tests and the demo can check each
item's reason against what the scanner did.
"""

from __future__ import annotations

import json
import os
import threading
import time
import tty
from pathlib import Path

import numpy as np

KINDS = ("ok", "wrong", "missing", "unreadable")


class SimScanner:
    def __init__(self, belt, distance_m: float, *, wrong_rate: float = 0.0, missing_rate: float = 0.0,
                 unreadable_rate: float = 0.0, seed: int = 7, log_path: str | Path | None = None):
        self.belt, self.distance_m = belt, float(distance_m)
        self.rates = (wrong_rate, missing_rate, unreadable_rate)
        self.seed = seed
        self.log_path = Path(log_path) if log_path else None
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.sent: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-scanner", daemon=True)
        self._thread.start()

    def kind(self, k: int) -> str:
        wrong, missing, unreadable = self.rates
        u = float(np.random.default_rng([self.seed, k, 11]).uniform())
        if u < wrong:
            return "wrong"
        if u < wrong + missing:
            return "missing"
        if u < wrong + missing + unreadable:
            return "unreadable"
        return "ok"

    def _line(self, k: int, sku: str, kind: str) -> str | None:
        if kind == "missing":
            return None
        if kind == "unreadable":
            return "NOREAD"
        if kind == "wrong":
            others = [s.name for s in self.belt.sim.catalogue if s.name != sku]
            return others[int(np.random.default_rng([self.seed, k, 12]).integers(len(others)))]
        return sku

    def _run(self) -> None:
        sim = self.belt.sim
        self.belt.started.wait()
        log = self.log_path.open("a") if self.log_path else None
        k = 0
        try:
            while not self._stop.is_set() and (self.belt.n_items is None or k < self.belt.n_items):
                it = sim.item(k)
                t_scan = it.t_center - self.distance_m / sim.speed  # belt time
                kind = self.kind(k)
                if t_scan < 0:
                    kind = "missing"  # it passed the scanner before the belt started
                wait = self.belt.start + t_scan - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                line = self._line(k, it.spec.sku.name, kind)
                if line is not None:
                    os.write(self._master, line.encode() + b"\r\n")
                rec = {"index": k, "sku": it.spec.sku.name, "kind": kind, "sent": line,
                       "before_start": t_scan < 0}
                self.sent.append(rec)
                if log is not None:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                k += 1
        finally:
            if log is not None:
                log.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
