"""The live belt: items pass through the camera tunnel at the belt's speed.

Item k is at the tunnel centre (belt x = 0) at time ``t_k = k * pitch / speed``
(plus a small jitter) and moves along +x at ``speed``. For each camera the item
is ray-cast once — colour from the colour imager, depth from the depth imager
(its own intrinsics and pose, as a RealSense delivers it, unaligned) — at the
tunnel centre; a frame at time t translates that rendering by the image motion
of the item's centre. Belt motion is a translation parallel to both imagers'
x axes in the demo geometry, so this is exact up to the parallax inside the item
(a few pixels at most); it keeps the live simulator cheap enough to run beside
the pipeline. Sensor noise is applied per frame.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...calibration.model import Calibration, CameraModel
from ...rig.capture.realsense_io import write_recording
from ...rig.foundation.geometry import roi_from_corners
from .generate import SimSettings, catalogue_for
from .render import Lighting, Placed, render
from .scene import ItemSpec, build_item, draw_spec, item_box_corners

VISIBLE_M = 0.6  # items further than this from the tunnel centre are not rendered


@dataclass
class Sprite:
    roi: tuple[int, int, int, int]
    rgb: np.ndarray  # float32 radiance
    depth: np.ndarray  # float32 mm
    item: np.ndarray  # bool: pixels that belong to the item
    anchor_uv: np.ndarray  # image position of the item's centre (at x = 0)


@dataclass
class BeltItem:
    index: int
    spec: ItemSpec
    t_center: float  # time (s, belt clock) when the item's centre passes x = 0
    sprites: dict[str, Sprite] = field(default_factory=dict)

    @property
    def item_id(self) -> str:
        return f"belt{self.spec.seed}-{self.index:06d}"

    def x_m(self, t: float, speed: float) -> float:
        return (t - self.t_center) * speed + self.spec.x_mm / 1000.0


class BeltSim:
    """Deterministic belt: ``frame(camera, t)`` -> (rgb uint8, depth uint16 in the depth units)."""

    def __init__(self, calib: Calibration, cameras: list[str], settings: SimSettings, speed_mps: float,
                 pitch_m: float, noise: bool = True, lead_in_s: float = 1.0, n_items: int | None = None):
        self.calib = calib
        self.cameras = list(cameras)
        self.settings = settings
        self.speed = float(speed_mps)
        self.pitch = float(pitch_m)
        self.noise = noise
        self.lead_in = lead_in_s
        self.n_items = n_items  # None: an endless belt
        self.catalogue = catalogue_for(settings)
        self.light = Lighting()
        self._items: dict[int, BeltItem] = {}
        self._items_lock = threading.Lock()  # cameras and the prefetcher share the belt
        self._bg: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._rng = np.random.default_rng([settings.seed, 4242])
        self._noise_bank: dict[str, list[np.ndarray]] = {}

    # -- items ---------------------------------------------------------------
    def item(self, k: int) -> BeltItem:
        with self._items_lock:
            return self._item(k)

    def _item(self, k: int) -> BeltItem:
        if k not in self._items:
            spec = draw_spec(self.catalogue, self.settings.seed, k, self.settings.damage_rate, x_jitter_mm=0.0)
            spec.light = self.light
            jitter = float(np.random.default_rng([self.settings.seed, k, 5]).uniform(-0.08, 0.08))
            t_c = self.lead_in + (k + jitter * 0.5) * self.pitch / self.speed
            self._items[k] = BeltItem(k, spec, t_c)
            # forget items far behind to bound memory
            for old in [i for i in self._items if i < k - 8]:
                del self._items[old]
        return self._items[k]

    def items_at(self, t: float) -> list[BeltItem]:
        """Items within VISIBLE_M of the tunnel centre at time t."""
        k_now = (t - self.lead_in) * self.speed / self.pitch
        lo = int(np.floor(k_now - VISIBLE_M / self.pitch)) - 1
        hi = int(np.ceil(k_now + VISIBLE_M / self.pitch)) + 1
        out = []
        if self.n_items is not None:
            hi = min(hi, self.n_items - 1)
        for k in range(max(lo, 0), hi + 1):
            it = self.item(k)
            if abs(it.x_m(t, self.speed)) < VISIBLE_M:
                out.append(it)
        return out

    def _camera(self, cam_name: str) -> CameraModel:
        """'NAME' is the colour imager, 'NAME:depth' its depth imager."""
        base, _, imager = cam_name.partition(":")
        cam = self.calib.cameras[base]
        return cam.depth_imager() if imager == "depth" else cam

    def sprite(self, it: BeltItem, cam_name: str) -> Sprite | None:
        if cam_name not in it.sprites:
            surf = build_item(it.spec)
            placed = Placed(surf, it.spec.x_mm, it.spec.y_mm, it.spec.yaw, 0)
            cam = self._camera(cam_name)
            corners = item_box_corners(placed)
            roi = roi_from_corners(cam, corners, pad=0.05)
            if roi is None:
                it.sprites[cam_name] = None
                return None
            r = render(cam.K, cam.size, cam.T_ref_cam, [placed], self.light, roi=roi,
                       with_color=not cam_name.endswith(":depth"))
            uv, _ = cam.project(np.array([[it.spec.x_mm / 1000, it.spec.y_mm / 1000, 0.0]]))
            # the item's pixels: every pixel the item changes, not only those whose hit lies on its
            # footprint. Where a ray meets a wall its refined hit can fall just outside the
            # footprint (alpha 0: "belt", with the wall's depth and shading); leaving those out
            # showed the belt through the lower walls of tall items in the live frames, where the
            # dataset's render of the same item (scene.render_views) has the wall
            x0, y0, x1, y1 = roi
            bg_rgb, bg_depth = self._background(cam_name)
            changed = (r.item >= 0) | (r.depth_mm != bg_depth[y0:y1, x0:x1])
            if bg_rgb is not None:
                changed |= np.any(r.rgb != bg_rgb[y0:y1, x0:x1], axis=-1)
            it.sprites[cam_name] = Sprite(roi, r.rgb, r.depth_mm, changed, uv[0])
        return it.sprites[cam_name]

    def _background(self, cam_name: str):
        if cam_name not in self._bg:
            cam = self._camera(cam_name)
            r = render(cam.K, cam.size, cam.T_ref_cam, [], self.light, with_color=not cam_name.endswith(":depth"))
            self._bg[cam_name] = (r.rgb, r.depth_mm)
        return self._bg[cam_name]

    def _compose(self, cam_name: str, t: float, want_rgb: bool):
        bg_rgb, bg_depth = self._background(cam_name)
        rgb = bg_rgb.copy() if want_rgb else None
        depth = bg_depth.copy()
        cam = self._camera(cam_name)
        h, w = depth.shape
        for it in self.items_at(t):
            sp = self.sprite(it, cam_name)
            if sp is None:
                continue
            x = it.x_m(t, self.speed)
            uv, _ = cam.project(np.array([[x, it.spec.y_mm / 1000, 0.0]]))
            du, dv = np.round(uv[0] - sp.anchor_uv).astype(int)
            x0, y0, x1, y1 = sp.roi
            X0, Y0, X1, Y1 = x0 + du, y0 + dv, x1 + du, y1 + dv
            cx0, cy0, cx1, cy1 = max(X0, 0), max(Y0, 0), min(X1, w), min(Y1, h)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            sl = (slice(cy0 - Y0, cy1 - Y0), slice(cx0 - X0, cx1 - X0))
            m = sp.item[sl]
            # nearer than what is there (the belt, or an item composed before), 1 mm of slack
            # for the item's belt-level pixels (its margin: the belt, shaded as the renderer does)
            closer = m & (sp.depth[sl] < depth[cy0:cy1, cx0:cx1] + 1.0)
            depth[cy0:cy1, cx0:cx1][closer] = sp.depth[sl][closer]
            if want_rgb:
                rgb[cy0:cy1, cx0:cx1][closer] = sp.rgb[sl][closer]
        return rgb, depth

    def _noise(self, key: str, shape, sigma: float) -> np.ndarray:
        bank = self._noise_bank.setdefault(key, [])
        if len(bank) < 4:
            bank.append(self._rng.normal(0, sigma, shape).astype(np.float32))
            return bank[-1]
        return bank[int(self._rng.integers(len(bank)))]

    def frame(self, camera: str, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Colour (RGB uint8, colour imager) and depth (uint16, depth imager, its units) at time t."""
        rgb, _ = self._compose(camera, t, True)
        _, depth = self._compose(camera + ":depth", t, False)
        img = np.clip(rgb, 0, 1) ** (1 / 1.1) * 255.0
        if self.noise:
            img = img + self._noise("rgb" + camera, img.shape, 2.0)
            z = depth / 1000.0
            depth = depth + self._noise("d" + camera, depth.shape, 1.0) * (0.4 + 1.2 * z * z)
        units = self.calib.cameras[camera].depth.depth_units_mm if self.calib.cameras[camera].depth else 1.0
        d16 = np.clip(np.round(depth / units), 0, 65535).astype(np.uint16)
        np.clip(img, 0, 255, out=img)
        img += 0.5  # rounded to the nearest level, as apply_sensor does (truncated, it read 0.5 darker)
        return img.astype(np.uint8), d16

    def truth_near(self, t: float, x_m: float, y_m: float, within_m: float = 0.15) -> dict | None:
        """Ground truth of the item nearest (x, y) on the belt at time t, None when none is that near."""
        best, best_d = None, within_m
        for it in self.items_at(t):
            d = abs(it.x_m(t, self.speed) - x_m) + abs(it.spec.y_mm / 1000 - y_m)
            if d < best_d:
                best, best_d = it, d
        return None if best is None else self.truth(best.index)

    def truth(self, k: int) -> dict:
        it = self.item(k)
        return {"item_id": it.item_id, "index": k, "sku": it.spec.sku.name, "damage": list(it.spec.damage),
                "damaged": it.spec.damaged, "printed_damage": it.spec.sku.printed_damage is not None,
                "t_center": it.t_center, "y_m": it.spec.y_mm / 1000.0}


def record_belt(out_dir: Path, calib: Calibration, settings: SimSettings, n_items: int, fps: int = 15,
                speed_mps: float = 0.5, pitch_m: float = 0.5) -> list[Path]:
    """Write one .db3 per camera: ``n_items`` items passing at ``speed_mps``; plus truth.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    belt = BeltSim(calib, sorted(calib.cameras), settings, speed_mps, pitch_m, noise=settings.noise, lead_in_s=0.6,
                   n_items=n_items)
    duration = belt.lead_in * 2 + n_items * pitch_m / speed_mps
    times = np.arange(0, duration, 1.0 / fps)
    paths = []
    for name in sorted(calib.cameras):
        path = out_dir / f"{name}.db3"
        write_recording(path, calib.cameras[name], (belt.frame(name, float(t)) for t in times), fps=fps,
                        serial=f"SIM-{name}")
        paths.append(path)
    truth = {"fps": fps, "speed_mps": speed_mps, "pitch_m": pitch_m, "frames": len(times),
             "items": [belt.truth(k) for k in range(n_items)]}
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
    return paths
