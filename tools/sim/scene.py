"""One simulated item: what it is, how it lies, how it is lit, and its rendered views.

``ItemSpec`` is drawn from (seed, index) alone, so any item of any run can be
re-rendered exactly. ``render_views`` returns, per camera, the square ROI crop
that the runtime cuts around the item: roi_from_corners around the box the rig's
trigger measures on the trigger camera's depth (``trigger_corners``), with
depth as the runtime gets it: rendered by the camera's depth imager (its own
intrinsics, pose and resolution), the depth sensor's noise and dropouts applied
there, then aligned to the colour image by the rig's rule (calibration/align.py,
librealsense's rs.align) inside the crop — its blocky edges, occlusion gaps and
overwritten pixels included. A camera without a depth imager in the calibration
gets depth rendered from the colour camera itself.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ...calibration.align import align_depth_to_color
from ...calibration.model import Calibration, CameraModel
from ...rig.dataset import DAMAGE_TYPES
from ...rig.foundation.geometry import roi_from_corners
from ...rig.trigger import Trigger
from .products import APPLICABLE, DamageSizes, ItemSurface, Sku, apply_damage, build_surface
from .render import DepthNoise, Lighting, Placed, apply_sensor, render

# cells higher than this count for the item's box (as the runtime trigger sees it): low enough that
# a 2 mm item (a blister card, a flat mailer) is cropped whole, not around its tallest part. The
# crop box itself is the one the rig's trigger measures (trigger_corners); this box is where the
# trigger camera's depth is rendered, and the fallback when the trigger cannot see the item
TRIGGER_MM = 1.0
# the rig's trigger settings (rig/data/demo.yaml; the thin level is the trigger's default)
TRIGGER_MIN_HEIGHT_MM = 8.0
TRIGGER_MIN_AREA_PX = 400


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
    corners = trigger_corners(spec, calib, placed, noise)
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
        if cam.depth is not None:  # the colour render's depth is not what the rig sees: replaced
            drng = np.random.default_rng([spec.seed, spec.index, zlib.crc32(name.encode()), 8])
            depth = aligned_depth(cam, placed, spec, roi, drng, noise)
        out[name] = View(rgb, depth, (r.mask * 255).astype(np.uint8), roi)
    return out


def depth_window(cam: CameraModel, roi: tuple[int, int, int, int], top_m: float, margin_px: int = 3
                 ) -> tuple[int, int, int, int] | None:
    """The part of the depth imager's image that can land inside the colour ``roi``: the colour
    ROI's corners carried to the belt plane and to the item's top, projected into the depth imager,
    boxed, ``margin_px`` added, clipped. None when it misses the depth image."""
    dcam = cam.depth_imager()
    x0, y0, x1, y1 = roi
    K, T = cam.K, cam.T_ref_cam
    pix = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], float)
    rays = np.stack([(pix[:, 0] - K[0, 2]) / K[0, 0], (pix[:, 1] - K[1, 2]) / K[1, 1], np.ones(4)], 1) @ T[:3, :3].T
    pts = []
    for z in (0.0, top_m):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (z - T[2, 3]) / rays[:, 2]
        s = np.where(np.isfinite(s) & (s > 0), s, 5.0)  # a ray that never meets the plane: 5 m out
        pts.append(T[:3, 3] + rays * s[:, None])
    uv, zc = dcam.project(np.concatenate(pts))
    uv = uv[zc > 0]
    if uv.size == 0:
        return None
    w, h = dcam.size
    u0, v0 = np.floor(uv.min(0)).astype(int) - margin_px
    u1, v1 = np.ceil(uv.max(0)).astype(int) + margin_px + 1
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)
    return (u0, v0, u1, v1) if u0 < u1 and v0 < v1 else None


def aligned_depth(cam: CameraModel, placed: Placed, spec: ItemSpec, roi: tuple[int, int, int, int],
                  rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """Depth (float32 mm, 0 = no data) of the colour ``roi`` as the rig gets it: rendered by the
    depth imager, the sensor's noise and dropouts applied in its pixels (apply_sensor), stored in
    the camera's depth units, aligned to the colour camera inside ``roi`` (the rig's Prepare stage:
    rig/pipeline/prepare.py)."""
    dcam = cam.depth_imager()
    units = float(cam.depth.depth_units_mm)
    top_m = float(placed.surface.height.max()) / 1000.0
    win = depth_window(cam, roi, top_m)
    dw, dh = dcam.size
    frame = np.zeros((dh, dw), np.uint16)
    if win is not None:
        u0, v0, u1, v1 = win
        r = render(dcam.K, dcam.size, dcam.T_ref_cam, [placed], spec.light, roi=win,
                   with_color=spec.depth_noise is not None)  # the wide sensor's dropouts need albedo
        _, d = apply_sensor(r, rng, noise=noise, depth_noise=spec.depth_noise)
        frame[v0:v1, u0:u1] = np.clip(np.round(d / units), 0, 65535).astype(np.uint16)
    al = align_depth_to_color(frame, cam.depth.K, cam.K, cam.size, cam.depth.T_color_depth, units / 1000.0,
                              window=roi)
    return al.astype(np.float32) * np.float32(units)


def trigger_camera(calib: Calibration) -> CameraModel | None:
    """The camera the rig triggers on: of those with a depth imager, the one looking most nearly
    straight down (the demo's "top"); None when no camera has a depth imager."""
    cams = [calib.cameras[n] for n in sorted(calib.cameras) if calib.cameras[n].depth is not None]
    return min(cams, key=lambda c: float(c.T_ref_cam[2, 2])) if cams else None


_BELT_DEPTH: dict = {}


def _belt_depth(dcam: CameraModel, units_mm: float) -> np.ndarray:
    """The bare belt in a depth imager's units (uint16), once per camera and process."""
    key = (dcam.name, dcam.K.tobytes(), dcam.T_ref_cam.tobytes(), tuple(dcam.size), units_mm)
    if key not in _BELT_DEPTH:
        r = render(dcam.K, dcam.size, dcam.T_ref_cam, [], Lighting(), with_color=False)
        _BELT_DEPTH[key] = np.clip(np.round(r.depth_mm / units_mm), 0, 65535).astype(np.uint16)
    return _BELT_DEPTH[key]


def trigger_corners(spec: ItemSpec, calib: Calibration, placed: Placed, noise: bool = True) -> np.ndarray:
    """Belt-frame corners (m) of the item's box as the rig's trigger measures it (rig/trigger.py on
    the trigger camera's depth imager, its sensor noise included): the box the rig crops around
    (roi_from_corners). Falls back to the item's true box (item_box_corners) when no camera has a
    depth imager or the trigger does not find the item whole in view."""
    box = item_box_corners(placed)
    cam = trigger_camera(calib)
    if cam is None:
        return box
    dcam = cam.depth_imager()
    units = float(cam.depth.depth_units_mm)
    win = roi_from_corners(dcam, box, pad=0.25)
    if win is None:
        return box
    u0, v0, u1, v1 = win
    r = render(dcam.K, dcam.size, dcam.T_ref_cam, [placed], spec.light, roi=win,
               with_color=spec.depth_noise is not None)
    _, d = apply_sensor(r, np.random.default_rng([spec.seed, spec.index, 9]), noise=noise,
                        depth_noise=spec.depth_noise)
    frame = _belt_depth(dcam, units).copy()
    frame[v0:v1, u0:u1] = np.clip(np.round(d / units), 0, 65535).astype(np.uint16)
    trig = Trigger(dcam, units, 0.5, TRIGGER_MIN_HEIGHT_MM, TRIGGER_MIN_AREA_PX)
    x, y = placed.x_mm / 1000.0, placed.y_mm / 1000.0
    blobs = [b for b in trig.blobs(frame) if not b.touches_edge and abs(b.x - x) + abs(b.y - y) < 0.12]
    if not blobs:
        return box
    return min(blobs, key=lambda b: abs(b.x - x) + abs(b.y - y)).corners()
