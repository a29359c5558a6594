"""The simulated cameras in a process of their own, delivering frames through shared memory.

With ``sim.separate_process`` the ``sim`` capture source renders the belt in a
driver process (as a camera's firmware and driver produce frames outside the
host's Python), writes each frame into a ring of slots in shared memory
(``multiprocessing.shared_memory``, one ring per camera) and sends the slot's
number over a pipe; the rig's camera worker copies it into its own frame ring,
which is what a real camera costs the host. The rendering's CPU is the driver
process's, not the rig's, and it never holds the rig's GIL.

The driver keeps each camera's frame clock (frame n exposed at ``start + n /
fps + offset``) and skips frames when it falls behind, like a sensor. Injected
camera faults need the in-process simulator (capture.py).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from multiprocessing import shared_memory

import numpy as np

from ...calibration.model import load_calibration
from ...rig.capture.base import Grab
from ...rig.foundation.errors import DeviceError
from .belt import BeltSim
from .generate import SimSettings

SLOTS = 8  # frames per camera ring: a frame stays valid for SLOTS frame periods after its notice
PREFETCH_S = 1.5  # items are rendered this far ahead of the belt's clock


def _frame_bytes(color_size, depth_size) -> tuple[int, int]:
    (w, h), (dw, dh) = color_size, depth_size
    return w * h * 3, dw * dh * 2


def _ring_views(buf, color_size, depth_size):
    (w, h), (dw, dh) = color_size, depth_size
    cb, db = _frame_bytes(color_size, depth_size)
    return [(np.ndarray((h, w, 3), np.uint8, buffer=buf, offset=k * (cb + db)),
             np.ndarray((dh, dw), np.uint16, buffer=buf, offset=k * (cb + db) + cb)) for k in range(SLOTS)]


def _render_items(belt: BeltSim, cameras: list[str], t: float) -> None:
    for it in belt.items_at(t):
        for name in cameras:
            belt.sprite(it, name)
            belt.sprite(it, name + ":depth")


def _drive(calib_path: str, cams: list[tuple], speed: float, pitch: float, seed: int, damage_rate: float,
           n_items: int | None, control, outs: list) -> None:
    """The driver process: render every camera's frames on its clock into its ring; notify per frame."""
    calib = load_calibration(calib_path)
    names = [c[0] for c in cams]
    belt = BeltSim(calib, names, SimSettings(seed=seed, damage_rate=damage_rate), speed, pitch, n_items=n_items)
    shms = [shared_memory.SharedMemory(name=c[3]) for c in cams]
    rings = [_ring_views(s.buf, c[4], c[5]) for s, c in zip(shms, cams)]
    for name in names:  # the belt and the items of the first seconds, before the clock starts
        belt.frame(name, 0.0)
    for t in np.arange(0.0, PREFETCH_S + 0.05, 0.1):
        _render_items(belt, names, t)
    end = None if n_items is None else belt.item(n_items - 1).t_center + 0.8 / speed
    control.send("ready")
    start = control.recv()  # the rig's monotonic start time (the clock is system-wide)
    stop = threading.Event()

    def prefetch() -> None:  # items' renderings ahead of their frames, so no frame waits for one
        while not stop.wait(0.1):
            _render_items(belt, names, time.monotonic() - start + PREFETCH_S)

    threading.Thread(target=prefetch, name="sim-prefetch", daemon=True).start()
    frame_no = [0] * len(cams)
    try:
        while not control.poll():
            # the camera whose next frame is due first
            k = min(range(len(cams)), key=lambda i: frame_no[i] / cams[i][1] + cams[i][2])
            fps, offset = cams[k][1], cams[k][2]
            t_frame = frame_no[k] / fps + offset
            if end is not None and t_frame > end:
                break
            now = time.monotonic() - start
            if now < t_frame:
                time.sleep(t_frame - now)
            elif (behind := int((now - t_frame) * fps)) > 0:  # the sensor does not wait for us
                frame_no[k] += behind
                continue
            color, depth = belt.frame(cams[k][0], t_frame)
            slot = frame_no[k] % SLOTS
            np.copyto(rings[k][slot][0], color)
            np.copyto(rings[k][slot][1], depth)
            outs[k].send((slot, frame_no[k], t_frame))
            frame_no[k] += 1
    finally:
        stop.set()
        for o in outs:
            o.send(None)  # no more frames
        del rings
        for s in shms:
            s.close()


class RemoteBelt:
    """The driver process and its rings, seen from the rig: :meth:`camera` gives each camera's backend."""

    def __init__(self, calib, calib_path, cameras: list[tuple[str, int, float]], speed_mps: float,
                 pitch_m: float, seed: int = 1, damage_rate: float = 0.2, n_items: int | None = None):
        self.truth_sim = BeltSim(calib, [c[0] for c in cameras], SimSettings(seed=seed, damage_rate=damage_rate),
                                 speed_mps, pitch_m, n_items=n_items)  # truth only: never renders
        self.n_items = n_items
        self.start = time.monotonic()
        self.shms, spec, self._conns = [], [], {}
        ctx = mp.get_context("spawn")
        child_ends = []
        for name, fps, offset in cameras:
            cam = calib.cameras[name]
            color_size = tuple(cam.size)
            depth_size = tuple(cam.depth.size) if cam.depth else color_size
            shm = shared_memory.SharedMemory(create=True, size=SLOTS * sum(_frame_bytes(color_size, depth_size)))
            self.shms.append(shm)
            mine, theirs = ctx.Pipe(duplex=False)
            self._conns[name] = (mine, _ring_views(shm.buf, color_size, depth_size), color_size, depth_size)
            child_ends.append(theirs)
            spec.append((name, fps, offset / 1000.0, shm.name, color_size, depth_size))
        self._control, control_child = ctx.Pipe()
        self.proc = ctx.Process(target=_drive, name="sim-driver", daemon=True,
                                args=(str(calib_path), spec, speed_mps, pitch_m, seed, damage_rate, n_items,
                                      control_child, child_ends))
        self.proc.start()
        for c in (control_child, *child_ends):
            c.close()
        if not self._control.poll(120) or self._control.recv() != "ready":
            self.close()
            raise DeviceError("the simulated cameras' driver process did not start within 120 s")
        self.started = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def end_time(self) -> float | None:
        if self.n_items is None:
            return None
        return self.truth_sim.item(self.n_items - 1).t_center + 0.8 / self.truth_sim.speed

    def begin(self) -> None:
        self.start = time.monotonic()
        self._control.send(self.start)
        self.started = True

    def truth_near(self, t: float, x_m: float, y_m: float) -> dict | None:
        return self.truth_sim.truth_near(t, x_m, y_m)

    def camera(self, name: str) -> RemoteCamera:
        return RemoteCamera(self, name)

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self._control.send("stop")
                self.proc.join(5)
        except (OSError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.terminate()
        for name in list(self._conns):
            conn, _, _, _ = self._conns.pop(name)
            conn.close()
        for shm in self.shms:
            try:
                shm.close()
            except BufferError:  # a camera worker still holds a view: the memory goes with the process
                pass
            shm.unlink()
        self.shms = []


class RemoteCamera:
    """One camera of the driver process, as a capture backend."""

    name = "sim"

    def __init__(self, belt: RemoteBelt, camera: str):
        self.belt = belt
        self.camera = camera
        conn, ring, self.color_size, self.depth_size = belt._conns[camera]
        self._conn, self._ring = conn, ring
        self._done = False

    def open(self) -> None:
        pass

    @property
    def finished(self) -> bool:
        return self._done

    def grab(self, timeout_s: float) -> Grab | None:
        if self._done:
            return None
        try:
            if not self._conn.poll(timeout_s):
                return None
            msg = self._conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is None:
            self._done = True
            return None
        slot, n, t_frame = msg
        color, depth = self._ring[slot]  # the worker copies it into its own ring right away
        return Grab(color, depth, t_frame * 1000.0, n, self.belt.start + t_frame)

    def close(self) -> None:
        pass
