"""The `sim` capture source's ``charuco`` scene: a technician holding the ChArUco board in front of the cameras.

``sim.scene: charuco`` in the config makes every sim camera see the board
instead of the belt: the board takes one pose after another (the poses of
:func:`damage_rig.tools.sim.charuco.make_moments`: flat on the belt, held where
several cameras see it, and filling each camera's corners), each held for
``sim.board_hold_s`` seconds. All cameras share the clock, so frames with the
same number show the same moment: what `rig capture --stills` needs to be
exercised without hardware. As with hardware-synchronised sensors, no camera
runs more than ``LEAD`` frames ahead of the others, and one whose rendering
falls behind delivers every frame late rather than skipping any, so the
cameras' frame numbers keep overlapping on a loaded machine. Colour is the rendered grey board (as RGB); depth
is empty (0 = no data).
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from ...calibration.board import DEFAULT_BOARD
from ...calibration.model import Calibration, invert_T
from ...rig.capture.base import Grab
from ...rig.capture.sources import SourceGroup
from .charuco import (
    MARGIN_MM,
    TEXTURE_PX_PER_MM,
    RenderSettings,
    _background,
    _CameraRays,
    board_texture,
    make_moments,
    render_view,
)

LEAD = 3  # frames a camera may run ahead of the slowest one


class BoardScene:
    """The board's poses over time and their renderings (cached per camera and pose)."""

    def __init__(self, calib: Calibration, cameras: list[str], hold_s: float, seed: int):
        self.calib = calib
        self.spec = DEFAULT_BOARD
        self.hold_s = hold_s
        rng = np.random.default_rng(seed)
        sub = Calibration(cameras={c: calib.cameras[c] for c in cameras}, belt=calib.belt)
        self.poses = list(make_moments(sub, self.spec, n_shared=6, n_per_camera=6, rng=rng).values())
        tex = board_texture(self.spec, TEXTURE_PX_PER_MM)
        pad = round(MARGIN_MM * TEXTURE_PX_PER_MM)
        self.texture = cv2.copyMakeBorder(tex, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255).astype(
            np.float32) / 255.0
        self.settings = RenderSettings(noise_sigma=1.0)
        self._rays: dict[str, _CameraRays] = {}
        self._bg = {c: _background(calib.cameras[c], np.random.default_rng(seed + i)) for i, c in enumerate(cameras)}
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()
        self._step = threading.Condition()
        self.done: dict[str, int] = {}  # last frame number each camera delivered
        self.start = time.monotonic()

    def begin(self) -> None:
        self.start = time.monotonic()

    def wait_turn(self, camera: str, n: int, timeout_s: float) -> bool:
        """Hold a camera that is ahead: frame n waits until every other camera has delivered n - LEAD
        (hardware-synchronised sensors expose together). False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._step:
            while any(c != camera and k < n - LEAD for c, k in self.done.items()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._step.wait(left)
        return True

    def delivered(self, camera: str, n: int) -> None:
        with self._step:
            self.done[camera] = n
            self._step.notify_all()

    def pose_index(self, t: float) -> int:
        return int(t / self.hold_s) % len(self.poses)

    def image(self, camera: str, k: int) -> np.ndarray:
        with self._lock:
            if (camera, k) not in self._cache:
                cam = self.calib.cameras[camera]
                rays = self._rays.setdefault(camera, _CameraRays(cam))
                T = invert_T(cam.T_ref_cam) @ self.poses[k]
                grey = render_view(rays, T, self.spec, self.texture, self._bg[camera], self.settings,
                                   np.random.default_rng(k))
                if grey is None:  # the board is out of this camera's view at this pose
                    grey = np.clip(self._bg[camera], 0, 255).astype(np.uint8)
                self._cache[(camera, k)] = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
            return self._cache[(camera, k)]


class BoardCamera:
    name = "sim"

    def __init__(self, scene: BoardScene, camera: str, fps: int):
        cam = scene.calib.cameras[camera]
        self.scene, self.camera, self.fps = scene, camera, fps
        self.color_size = tuple(cam.size)
        self.depth_size = tuple(cam.depth.size) if cam.depth else tuple(cam.size)
        self._last = -1

    def open(self) -> None:
        pass

    @property
    def finished(self) -> bool:
        return False

    def grab(self, timeout_s: float) -> Grab | None:
        now = time.monotonic() - self.scene.start
        # every frame number in turn, late rather than skipped, and none far ahead of the other
        # cameras: frame n shows the pose of time n / fps on every camera, as with hardware sync
        n = int(now * self.fps) if self._last < 0 else self._last + 1
        if not self.scene.wait_turn(self.camera, n, timeout_s):
            return None
        now = time.monotonic() - self.scene.start
        wait = n / self.fps - now
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        self._last = n
        t = n / self.fps
        color = self.scene.image(self.camera, self.scene.pose_index(t))
        self.scene.delivered(self.camera, n)
        depth = np.zeros((self.depth_size[1], self.depth_size[0]), np.uint16)
        return Grab(color, depth, t * 1000.0, n, self.scene.start + t)

    def close(self) -> None:
        pass


def open_board_scene(cfg, calib: Calibration, cams) -> SourceGroup:
    scene = BoardScene(calib, [c.name for _, c in cams], cfg.sim.board_hold_s, cfg.sim.seed)
    cameras = {c.name: BoardCamera(scene, c.name, c.fps) for _, c in cams}
    return SourceGroup(cameras, begin=scene.begin, state=scene)
