"""A progress-driven watchdog: WATCHDOG=1 goes out only while every stage keeps making progress.

A free-running timer would keep pinging systemd while the pipeline is stuck
(a hung camera read, a deadlocked queue), so the service would never be
restarted. Here each stage calls :meth:`ProgressWatchdog.beat` as it makes
progress (a frame captured, a batch inferred, a heartbeat exchanged; idle
loops beat on their poll timeout so an empty belt is not a hang). A thread
pings at WATCHDOG_USEC/2 only if every registered stage beat within
``stale_s``; once one goes quiet the pings stop, STATUS names the stuck stage,
and systemd kills and restarts the service WatchdogSec after the last ping.
"""

from __future__ import annotations

import logging
import threading
import time

from .notify import Notifier, watchdog_timeout_s

log = logging.getLogger(__name__)


class ProgressWatchdog:
    def __init__(self, notifier: Notifier, timeout_s: float | None = None, stale_s: float | None = None,
                 stages: tuple[str, ...] = ()):
        """``timeout_s`` defaults to systemd's WatchdogSec; with neither, the watchdog only tracks stages."""
        self.notifier = notifier
        self.timeout_s = watchdog_timeout_s() if timeout_s is None else timeout_s
        self.interval_s = self.timeout_s / 2 if self.timeout_s else None
        self.stale_s = stale_s if stale_s is not None else (self.interval_s or 5.0)
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self._reported_stuck: tuple[str, ...] = ()
        for s in stages:
            self.register(s)

    def register(self, stage: str) -> None:
        """A stage that must keep beating; registering counts as its first beat."""
        with self._lock:
            self._beats[stage] = time.monotonic()

    def beat(self, stage: str) -> None:
        """Called by a stage each time it makes progress (cheap: one dict store)."""
        self._beats[stage] = time.monotonic()

    def stuck(self, now: float | None = None) -> list[str]:
        """Stages that have not beaten within stale_s, most overdue first."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [(now - t, s) for s, t in self._beats.items() if now - t > self.stale_s]
        return [s for _, s in sorted(late, reverse=True)]

    def check(self) -> bool:
        """One tick: ping if every stage is alive; returns whether it pinged."""
        stuck = tuple(self.stuck())
        if stuck:
            if stuck != self._reported_stuck:
                log.error("pipeline stage(s) %s made no progress for %.1f s: withholding the watchdog ping",
                          ", ".join(stuck), self.stale_s)
                self.notifier.status(f"stuck: {', '.join(stuck)} (no progress for >{self.stale_s:.1f} s)")
            self._reported_stuck = stuck
            return False
        if self._reported_stuck:
            log.warning("pipeline progressing again")
            self._reported_stuck = ()
        self.notifier.watchdog()
        self.pings += 1
        return True

    def start(self) -> None:
        if self.interval_s is None:
            log.info("no systemd watchdog armed (WATCHDOG_USEC unset): not pinging")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
