"""`sim` capture: the belt simulator, live, at the camera's frame rate.

Registered as the capture source ``sim`` through the ``damage_rig.capture``
entry point (pyproject.toml): the runtime looks it up by name and never imports
the simulator. Its settings are the config's ``sim`` section.

All cameras of a rig share one :class:`SimBelt` (one belt, one clock). Frames
are produced on the host's monotonic clock: frame n of every camera is exposed
at ``start + n / fps`` (plus a small per-camera offset, so the synchroniser has
real work). A camera that falls behind skips frames like a real sensor would.
Items' renderings are prepared ahead of time by a prefetch thread.

Fault injection (``sim.camera_faults`` in the config, used by the fault cases
of the `faults` tests and the fault table, tests/helpers/faults.py) makes a sim camera misbehave the way real sensors do, in windows of
belt time: the stream stops (grab and open raise DeviceError, as a RealSense
does when frames stop arriving), the read hangs (a stuck USB transfer), or
frames arrive all zeros, with NaN float depth (a broken driver/filter chain)
or at the wrong size.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ...calibration.model import Calibration
from ...rig.capture import CAPTURE
from ...rig.capture.base import Grab
from ...rig.capture.sources import SourceGroup
from ...rig.foundation.errors import ConfigError, DeviceError
from .belt import BeltSim
from .generate import SimSettings
from .scanner import SimScanner

FAULT_KINDS = ("stop", "hang", "zeros", "nan_depth", "wrong_size")


@dataclass(frozen=True)
class CameraFault:
    """One injected fault: ``kind`` from ``at_s`` (belt time) for ``for_s`` seconds (None: until closed)."""

    kind: str
    at_s: float
    for_s: float | None = None

    @classmethod
    def parse(cls, d: dict) -> CameraFault:
        unknown = set(d) - {"kind", "at_s", "for_s"}
        if unknown or d.get("kind") not in FAULT_KINDS or "at_s" not in d:
            raise ConfigError(f"camera fault {d!r}: expected keys kind ({'|'.join(FAULT_KINDS)}), at_s, "
                              "optional for_s")
        return cls(d["kind"], float(d["at_s"]), None if d.get("for_s") is None else float(d["for_s"]))

    def active(self, t: float) -> bool:
        return self.at_s <= t and (self.for_s is None or t < self.at_s + self.for_s)


class SimBelt:
    """One simulated belt shared by the sim cameras of a rig."""

    def __init__(self, calib: Calibration, cameras: list[str], speed_mps: float, pitch_m: float,
                 seed: int = 1, damage_rate: float = 0.2, n_items: int | None = None, noise: bool = True,
                 start: float | None = None, lead_in_s: float = 1.0):
        self.settings = SimSettings(seed=seed, damage_rate=damage_rate, noise=noise)
        self.sim = BeltSim(calib, cameras, self.settings, speed_mps, pitch_m, noise=noise, lead_in_s=lead_in_s,
                           n_items=n_items)
        self.n_items = n_items
        self.start = time.monotonic() if start is None else start
        self._stop = threading.Event()
        self.started = threading.Event()  # set by begin(): the belt clock runs
        # render the belt and the first items now, so the cameras do not stutter when it starts
        for cam in self.sim.cameras:
            self.sim.frame(cam, 0.0)
        for it in self.sim.items_at(lead_in_s):
            for cam in self.sim.cameras:
                self.sim.sprite(it, cam)
                self.sim.sprite(it, cam + ":depth")
        self._prefetch = threading.Thread(target=self._prefetch_run, name="sim-prefetch", daemon=True)
        self._prefetch.start()

    def begin(self) -> None:
        """Start the belt's clock now (called as the rig starts)."""
        self.start = time.monotonic()
        self.started.set()

    @property
    def end_time(self) -> float | None:
        """Belt time (s) after which no item is in view."""
        if self.n_items is None:
            return None
        last = self.sim.item(self.n_items - 1)
        return last.t_center + 0.8 / self.sim.speed

    def _prefetch_run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic() - self.start + 1.0
            for it in self.sim.items_at(t):
                for cam in self.sim.cameras:
                    for name in (cam, cam + ":depth"):
                        self.sim.sprite(it, name)  # cached on the item; cameras reuse it
            self._stop.wait(0.1)

    def frame(self, camera: str, t: float):
        return self.sim.frame(camera, t)

    def truth_near(self, t: float, x_m: float, y_m: float) -> dict | None:
        """Ground truth of the item nearest (x, y) at time t (for demo summaries only)."""
        return self.sim.truth_near(t, x_m, y_m)

    def scanner(self, distance_m: float, log_path=None, **rates):
        """The upstream barcode scanner of this belt, on a pty (tools/sim/scanner.py); ``.port`` to open."""
        return SimScanner(self, distance_m, log_path=log_path, **rates)

    def close(self) -> None:
        self._stop.set()
        self.started.set()  # a scanner waiting for the belt gives up


class SimCamera:
    name = "sim"

    def __init__(self, belt: SimBelt, camera: str, fps: int, offset_ms: float = 0.0, faults=()):
        cam = belt.sim.calib.cameras[camera]
        self.faults = [f if isinstance(f, CameraFault) else CameraFault.parse(f) for f in faults]
        self.belt = belt
        self.camera = camera
        self.fps = fps
        self.offset = offset_ms / 1000.0
        self.color_size = tuple(cam.size)
        self.depth_size = tuple(cam.depth.size) if cam.depth else tuple(cam.size)
        self._n = 0

    def _fault(self, t: float) -> str | None:
        return next((f.kind for f in self.faults if f.active(t)), None)

    def open(self) -> None:
        now = time.monotonic() - self.belt.start
        if self._fault(now) == "stop":
            raise DeviceError(f"camera {self.camera}: device not found (injected stream stop)")
        self._n = max(self._n, int(now * self.fps))

    @property
    def finished(self) -> bool:
        end = self.belt.end_time
        return end is not None and self._n / self.fps > end

    def grab(self, timeout_s: float) -> Grab | None:
        if self.finished:
            return None
        t_frame = self._n / self.fps + self.offset
        now = time.monotonic() - self.belt.start
        if now < t_frame:
            if t_frame - now > timeout_s:
                time.sleep(timeout_s)
                return None
            time.sleep(t_frame - now)
        else:
            behind = int((now - t_frame) * self.fps)
            if behind > 0:  # the sensor does not wait for us
                self._n += behind
                t_frame = self._n / self.fps + self.offset
        fault = self._fault(t_frame)
        if fault == "stop":
            time.sleep(timeout_s)
            raise DeviceError(f"camera {self.camera}: no frame within {timeout_s:.1f} s (injected stream stop)")
        if fault == "hang":  # blocks like a stuck USB read, until the fault window or the belt ends
            while self._fault(time.monotonic() - self.belt.start) == "hang" and not self.belt._stop.wait(0.05):
                pass
            return None
        color, depth = self.belt.frame(self.camera, t_frame)
        if fault == "zeros":
            color, depth = np.zeros_like(color), np.zeros_like(depth)
        elif fault == "nan_depth":
            depth = np.full(depth.shape, np.nan, np.float32)
        elif fault == "wrong_size":
            color, depth = color[::2, ::2].copy(), depth[::2, ::2].copy()
        g = Grab(color, depth, t_frame * 1000.0, self._n, self.belt.start + t_frame)
        self._n += 1
        return g

    def close(self) -> None:
        pass


@CAPTURE.register("sim")
def open_sim_cameras(cfg, calib: Calibration, cams) -> SourceGroup:
    """``source: sim`` cameras: one simulated belt (the config's ``sim`` section) seen by each of them
    (with ``sim.scene: charuco``, the ChArUco board held in front of them instead: board_scene.py);
    with ``sim.separate_process`` rendered in a driver process of its own (remote.py)."""
    sim = cfg.sim
    if sim.scene == "charuco":
        from .board_scene import open_board_scene

        return open_board_scene(cfg, calib, cams)
    if sim.separate_process:
        return _open_remote(cfg, calib, cams)
    belt = SimBelt(calib, [c.name for _, c in cams], cfg.belt.speed_mps or 0.5, cfg.belt.item_pitch_m,
                   seed=sim.seed, damage_rate=sim.damage_rate, n_items=sim.items)
    faults = {name: [f.model_dump() for f in fs] for name, fs in sim.camera_faults.items()}
    cameras = {c.name: SimCamera(belt, c.name, c.fps, offset_ms=0.7 * i, faults=faults.get(c.name, ()))
               for i, c in cams}

    def truth(cap, belt=belt):
        return belt.truth_near(cap.host_time - belt.start, cap.blob.x, cap.blob.y)

    return SourceGroup(cameras, begin=belt.begin, close=belt.close, truth=truth,
                       end_time=lambda: belt.end_time, state=belt)


def _open_remote(cfg, calib: Calibration, cams) -> SourceGroup:
    from .remote import RemoteBelt

    sim = cfg.sim
    if sim.camera_faults:
        raise ConfigError("sim.camera_faults need the in-process simulator: drop sim.separate_process")
    belt = RemoteBelt(calib, cfg.calibration_path, [(c.name, c.fps, 0.7 * i) for i, c in cams],
                      cfg.belt.speed_mps or 0.5, cfg.belt.item_pitch_m, seed=sim.seed,
                      damage_rate=sim.damage_rate, n_items=sim.items)
    cameras = {c.name: belt.camera(c.name) for _, c in cams}

    def truth(cap, belt=belt):
        return belt.truth_near(cap.host_time - belt.start, cap.blob.x, cap.blob.y)

    return SourceGroup(cameras, begin=belt.begin, close=belt.close, truth=truth,
                       end_time=lambda: belt.end_time, state=belt)
