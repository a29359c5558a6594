"""The one service loop: `rig run`, `rig demo`, `rig bench` and the fault cases all run a rig through it.

``serve(handle)`` starts the capture sources and the rig, then watches it until
``stop`` is set, ``max_s`` has passed, a stage crashed, or the sources are
finished and every item is decided (and, with ``wait_for_gates``, every
diverted item has reached its gate); then it stops the rig gracefully. The
hooks let the service report (status file, sd_notify) without a loop of its own.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

from ..foundation.threads import freeze_heap
from .assemble import RigHandle

GATE_MARGIN_S = 0.3  # after the last diverted item reaches its gate


def _nothing() -> None:
    return None


def serve(handle: RigHandle, *, stop: threading.Event | None = None, max_s: float | None = None,
          wait_for_gates: bool = True, poll_s: float = 0.05, on_started: Callable[[], None] = _nothing,
          on_tick: Callable[[], None] = _nothing, on_stopping: Callable[[], None] = _nothing) -> None:
    """Run the rig until it is done or told to stop (see the module docstring)."""
    rig = handle.rig
    stop = stop or threading.Event()
    # start-up's objects (model, gallery, config, modules) never become garbage: out of the
    # collector's sight, a full collection walks only what the running rig allocates. Taken
    # before the belt starts, so the one full collection it costs delays no frame.
    handle.threads["gc_frozen_objects"] = freeze_heap()
    if handle.sources is not None:
        handle.sources.begin()
    rig.start()
    on_started()
    t0 = time.monotonic()
    while not stop.wait(poll_s):
        on_tick()
        if max_s is not None and time.monotonic() - t0 > max_s:
            break
        if rig.sources_finished() and rig.idle() and (
                not wait_for_gates or time.monotonic() > rig.last_gate_time() + GATE_MARGIN_S):
            break  # everything decided (and every diverted item has reached its gate)
        if rig.crashed:
            break
    on_stopping()
    rig.stop()
    gc.unfreeze()  # a process that runs several rigs (bench, tests) gets the stopped one's garbage back
