"""One simulated item: what it is, how it lies, how it is lit, and its rendered views.

``ItemSpec`` is drawn from (seed, index) alone, so any item of any run can be
re-rendered exactly. ``render_views`` returns, per camera, the square ROI crop
that the runtime would cut around the item (rig.geometry.roi_from_corners), with
depth aligned to the colour image (rendered from the colour camera itself).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ...calibration.model import Calibration, CameraModel
from ...rig.dataset import DAMAGE_TYPES
from ...rig.foundation.geometry import roi_from_corners
from .products import APPLICABLE, DamageSizes, ItemSurface, Sku, apply_damage, build_surface
from .render import DepthNoise, Lighting, Placed, apply_sensor, render

# cells higher than this count for the item's box (as the runtime trigger sees it): low enough that
# a 2 mm item (a blister card, a flat mailer) is cropped whole, not around its tallest part
TRIGGER_MM = 1.0


@dataclass
class ItemSpec:
    index: int
    seed: int
    sku: Sku
    damage: list[str]
    x_mm: float
    y_mm: float
    yaw: float
    light: Lighting
    gain: float
    blur: float
    noise_sigma: float
    # the randomised simulator (domain.py) only; None = the standard simulator
    sizes: DamageSizes | None = None
    depth_noise: DepthNoise | None = None
    framing: bool = False  # views framed as drawn by frame_roi, not only the runtime's square crop

    @property
    def damaged(self) -> bool:
        return bool(self.damage)


def draw_sku_and_damage(rng: np.random.Generator, catalogue: list[Sku], damage_rate: float,
                        sku_index: int | None = None, force_damage: list[str] | None = None
                        ) -> tuple[Sku, list[str]]:
    """The item's product and damage (the first draws of an item's generator)."""
    sku = catalogue[int(rng.integers(len(catalogue))) if sku_index is None else sku_index]
    damage: list[str] = []
    if force_damage is not None:
        damage = list(force_damage)
    elif rng.random() < damage_rate:
        options = [d for d in APPLICABLE[sku.kind] if d in DAMAGE_TYPES]
        weights = np.array([3.0 if d == "broken_set" else 1.0 for d in options])
        damage = [options[int(rng.choice(len(options), p=weights / weights.sum()))]]
        if rng.random() < 0.12:
            extra = [d for d in options if d not in damage and d != "broken_set"]
            if extra:
                damage.append(extra[int(rng.integers(len(extra)))])
    return sku, damage


def draw_spec(catalogue: list[Sku], seed: int, index: int, damage_rate: float,
              x_jitter_mm: float = 25.0, y_range_mm: float = 110.0, sku_index: int | None = None,
              force_damage: list[str] | None = None) -> ItemSpec:
    rng = np.random.default_rng([seed, index, 99])
    sku, damage = draw_sku_and_damage(rng, catalogue, damage_rate, sku_index, force_damage)
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.deg2rad(35), np.deg2rad(85))
    belt_grey = rng.uniform(0.08, 0.32)
    belt = np.clip(belt_grey + rng.normal(0, 0.03, 3), 0.03, 0.5)
    light = Lighting(
        direction=np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)]),
        ambient=float(rng.uniform(0.3, 0.6)), diffuse=float(rng.uniform(0.4, 0.8)),
        specular=float(rng.uniform(0.15, 0.5)), tint=np.clip(1 + rng.normal(0, 0.06, 3), 0.8, 1.2),
        belt_color=belt, belt_texture=float(rng.uniform(0.0, 0.08)))
    return ItemSpec(index, seed, sku, damage,
                    x_mm=float(rng.uniform(-x_jitter_mm, x_jitter_mm)),
                    y_mm=float(rng.uniform(-y_range_mm, y_range_mm)),
                    yaw=float(rng.uniform(-np.pi, np.pi)), light=light,
                    gain=float(rng.uniform(0.75, 1.3)), blur=float(rng.uniform(0.0, 1.2)),
                    noise_sigma=float(rng.uniform(1.0, 5.0)))


def build_item(spec: ItemSpec) -> ItemSurface:
    rng = np.random.default_rng([spec.seed, spec.index, 123])
    surf = build_surface(spec.sku, rng)
    if spec.damage:
        apply_damage(spec.sku, surf, spec.damage, rng, spec.sizes)
    return surf


def item_box_corners(placed: Placed, min_height_mm: float = TRIGGER_MM) -> np.ndarray:
    """Belt-frame corners (m) of the box around the item's cells higher than ``min_height_mm``."""
    s = placed.surface
    rows, cols = np.nonzero(s.height > min_height_mm)
    if rows.size == 0:
        rows, cols = np.nonzero(s.alpha > 0)
    hx, hy = s.half_extent
    xs = np.array([cols.min(), cols.max() + 1], float) - hx
    ys = np.array([rows.min(), rows.max() + 1], float) - hy
    top = float(s.height.max())
    c, sn = np.cos(placed.yaw), np.sin(placed.yaw)
    pts = []
    for x in xs:
        for y in ys:
            for z in (0.0, top):
                pts.append([placed.x_mm + c * x - sn * y, placed.y_mm + sn * x + c * y, z])
    return np.array(pts) / 1000.0


#: how the randomised simulator frames a view: the runtime's square crop, the whole camera image,
#: or a loose box (each side moved out by up to 60 % of the crop, so not square)
FRAMING_SHARES = {"crop": 0.7, "full": 0.15, "loose": 0.15}


def frame_roi(roi: tuple[int, int, int, int], size: tuple[int, int], rng: np.random.Generator
              ) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = roi
    w, h = size
    u = rng.random()
    if u < FRAMING_SHARES["crop"]:
        return roi
    if u < FRAMING_SHARES["crop"] + FRAMING_SHARES["full"]:
        return 0, 0, w, h
    side = max(x1 - x0, y1 - y0)
    grow = rng.uniform(0.0, 0.6, 4) * side
    return (max(0, int(x0 - grow[0])), max(0, int(y0 - grow[1])), min(w, int(x1 + grow[2])),
            min(h, int(y1 + grow[3])))


@dataclass
class View:
    rgb: np.ndarray  # uint8 RGB crop
    depth_mm: np.ndarray  # float32, camera z, 0 = no data, aligned to rgb
    mask: np.ndarray  # uint8 0/255
    roi: tuple[int, int, int, int]


def render_views(spec: ItemSpec, calib: Calibration, cameras: list[str] | None = None,
                 noise: bool = True, surface: ItemSurface | None = None) -> dict[str, View]:
    surf = surface if surface is not None else build_item(spec)
    placed = Placed(surf, spec.x_mm, spec.y_mm, spec.yaw, 0)
    corners = item_box_corners(placed)
    rng = np.random.default_rng([spec.seed, spec.index, 7])
    out = {}
    for name in cameras or sorted(calib.cameras):
        cam: CameraModel = calib.cameras[name]
        roi = roi_from_corners(cam, corners)
        if roi is None:
            continue
        if spec.framing:
            roi = frame_roi(roi, cam.size, np.random.default_rng([spec.seed, spec.index, zlib.crc32(name.encode())]))
        r = render(cam.K, cam.size, cam.T_ref_cam, [placed], spec.light, roi=roi)
        rgb, depth = apply_sensor(r, rng, noise=noise, gain=spec.gain, blur_sigma=spec.blur,
                                  noise_sigma=spec.noise_sigma, depth_noise=spec.depth_noise)
        out[name] = View(rgb, depth, (r.mask * 255).astype(np.uint8), roi)
    return out
