"""Ray casting of 2.5-D items on the belt for a pinhole camera.

Units are millimetres inside this module; camera poses come from the
calibration file in metres. A ray is marched through each item's bounding box
in ``STEP_MM`` steps until it drops below the item's height field, then the hit
is refined by the secant between the last two samples. Rays that hit no item
hit the belt plane z = 0. The returned depth is the camera-frame z (what a
RealSense reports), the colour is linear radiance in 0..1 before sensor effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .products import ItemSurface

STEP_MM = 1.5
SKIP_MM = 8  # empty-space skipping: strides stay within this distance (x, y) of the last sample


@dataclass
class Placed:
    surface: ItemSurface
    x_mm: float  # item centre in the belt frame
    y_mm: float
    yaw: float  # radians
    index: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    def gradients(self):
        if "g" not in self._cache:
            h = cv2.GaussianBlur(self.surface.height, (0, 0), 1.0)
            gx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3) / 8.0
            gy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) / 8.0
            self._cache["g"] = (gx, gy, float(self.surface.height.max()))
        return self._cache["g"]

    def skip_map(self) -> np.ndarray:
        """Max height within +-SKIP_MM (x and y) of every cell: a ray above it may stride."""
        if "d" not in self._cache:
            k = 2 * SKIP_MM + 1
            self._cache["d"] = cv2.dilate(self.surface.height, np.ones((k, k), np.uint8))
        return self._cache["d"]


@dataclass
class Lighting:
    direction: np.ndarray = field(default_factory=lambda: np.array([0.3, -0.2, 1.0]))
    ambient: float = 0.45
    diffuse: float = 0.65
    specular: float = 0.35
    tint: np.ndarray = field(default_factory=lambda: np.ones(3))
    belt_color: np.ndarray = field(default_factory=lambda: np.array([0.16, 0.17, 0.18]))
    belt_texture: float = 0.04
    # "wave" (the standard belt), or for the randomised simulator "slats" (a modular belt's
    # cross joints), "weave" (fabric) and "speckle" (a mottled rubber belt)
    belt_pattern: str = "wave"
    belt_period_mm: float = 20.0  # slats / weave / speckle period


@dataclass
class RenderOut:
    rgb: np.ndarray  # float32 HxWx3 (0..1 radiance)
    depth_mm: np.ndarray  # float32 camera z
    mask: np.ndarray  # bool: damaged pixel
    item: np.ndarray  # int16: index of the item hit, -1 = belt
    albedo: np.ndarray | None = None  # float32 HxW: mean albedo (what a stereo imager's IR sees)
    highlight: np.ndarray | None = None  # float32 HxW: specular term (0 = matte)


def belt_pattern(light: Lighting, x_mm: np.ndarray, y_mm: np.ndarray, bx: np.ndarray, by: np.ndarray
                 ) -> np.ndarray:
    """The belt's texture in -1..1 at belt-frame points (x already moved with the belt)."""
    if light.belt_pattern == "wave":
        return np.sin(bx * 1.7 + np.sin(by * 0.9)) * np.cos(by * 1.3 - 0.3 * bx)
    p = max(light.belt_period_mm, 1.0)
    if light.belt_pattern == "slats":  # dark joints across the belt every period
        return 1 - 2 * (np.abs(((x_mm / p) % 1.0) - 0.5) < 0.06)
    if light.belt_pattern == "weave":
        return np.sign(np.sin(2 * np.pi * x_mm / p)) * np.sign(np.sin(2 * np.pi * y_mm / p))
    if light.belt_pattern == "speckle":  # a hash of the belt cell: fixed to the belt, not to pixels
        cx, cy = np.floor(x_mm / p * 4), np.floor(y_mm / p * 4)
        return 2 * ((np.sin(cx * 12.9898 + cy * 78.233) * 43758.5453) % 1.0) - 1
    raise ValueError(f"unknown belt pattern {light.belt_pattern!r}")


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray, interp=cv2.INTER_LINEAR) -> np.ndarray:
    """Sample an image at float pixel coords (N,) with border = 0."""
    n = x.shape[0]
    cols = 1024  # remap maps must stay below 32767 in each dimension
    rows = -(-n // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(img, mx.reshape(rows, cols), my.reshape(rows, cols), interp,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape((rows * cols,) + img.shape[2:])[:n]


def render(K: np.ndarray, size: tuple[int, int], T_ref_cam: np.ndarray, items: list[Placed],
           light: Lighting, roi: tuple[int, int, int, int] | None = None, belt_offset_mm: float = 0.0,
           with_color: bool = True) -> RenderOut:
    w, h = size
    x0, y0, x1, y1 = roi if roi is not None else (0, 0, w, h)
    us, vs = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    dc = np.stack([(us - K[0, 2]) / K[0, 0], (vs - K[1, 2]) / K[1, 1], np.ones_like(us)], -1).reshape(-1, 3)
    R, o = T_ref_cam[:3, :3], T_ref_cam[:3, 3] * 1000.0
    norm = np.linalg.norm(dc, axis=1)
    d = (dc @ R.T) / norm[:, None]  # unit ray directions in the belt frame
    zcam = 1.0 / norm  # camera z per unit of ray length
    n = d.shape[0]
    # the belt plane
    with np.errstate(divide="ignore"):
        t_best = np.where(d[:, 2] < -1e-6, -o[2] / d[:, 2], np.inf)
    hit_item = np.full(n, -1, np.int16)
    hit_local = np.zeros((n, 2))
    for it in items:
        _march(it, o, d, t_best, hit_item, hit_local)
    pts = o + d * t_best[:, None]
    depth = (t_best * zcam).astype(np.float32)
    depth[~np.isfinite(depth)] = 0
    mask = np.zeros(n, bool)
    rgb = np.zeros((n, 3), np.float32)
    normal = np.tile(np.array([0.0, 0.0, 1.0]), (n, 1))
    albedo = np.empty((n, 3), np.float32)
    gloss = np.zeros(n, np.float32)
    # belt appearance: a fixed low-frequency texture that moves with the belt
    bx = (pts[:, 0] - belt_offset_mm) * 0.05
    by = pts[:, 1] * 0.05
    tex = 1 + light.belt_texture * belt_pattern(light, pts[:, 0] - belt_offset_mm, pts[:, 1], bx, by)
    albedo[:] = light.belt_color[None, :] * tex[:, None]
    for it in items:
        sel = hit_item == it.index
        if not np.any(sel):
            continue
        s = it.surface
        hx, hy = s.half_extent
        gx_img, gy_img, _ = it.gradients()
        cx, cy = hit_local[sel, 0] + hx - 0.5, hit_local[sel, 1] + hy - 0.5
        a = _sample(s.alpha, cx, cy)
        rows = np.nonzero(sel)[0]
        hit_item[rows[a <= 0.01]] = -1  # bare belt inside the item's margin
        al = _sample(s.albedo, cx, cy)
        albedo[sel] = al * a[:, None] + albedo[sel] * (1 - a[:, None])
        gloss[sel] = _sample(s.gloss, cx, cy)
        mask[sel] = _sample(s.damage, cx, cy, cv2.INTER_NEAREST) > 0
        gxs, gys = _sample(gx_img, cx, cy), _sample(gy_img, cx, cy)
        c, si = np.cos(it.yaw), np.sin(it.yaw)
        nl = np.stack([-gxs, -gys, np.ones_like(gxs)], 1)
        nr = np.stack([c * nl[:, 0] - si * nl[:, 1], si * nl[:, 0] + c * nl[:, 1], nl[:, 2]], 1)
        normal[sel] = nr / np.linalg.norm(nr, axis=1, keepdims=True)
    if with_color:
        L = light.direction / np.linalg.norm(light.direction)
        ndl = np.clip(normal @ L, 0, None)
        view = -d
        hvec = (L[None, :] + view)
        hvec /= np.linalg.norm(hvec, axis=1, keepdims=True)
        spec = np.clip(np.sum(normal * hvec, 1), 0, None) ** 40 * gloss
        rgb = albedo * (light.ambient + light.diffuse * ndl)[:, None] + (light.specular * spec)[:, None]
        rgb = (rgb * light.tint[None, :]).astype(np.float32)
    shape = (y1 - y0, x1 - x0)
    extra = {}
    if with_color:
        extra = {"albedo": albedo.mean(1).reshape(shape), "highlight": (light.specular * spec).reshape(shape)}
    return RenderOut(rgb.reshape(shape + (3,)), depth.reshape(shape), mask.reshape(shape),
                     hit_item.reshape(shape), **extra)


def _march(it: Placed, o, d, t_best, hit_item, hit_local) -> None:
    s = it.surface
    hx, hy = s.half_extent
    hmax = it.gradients()[2]
    c, si = np.cos(it.yaw), np.sin(it.yaw)
    # into item-local coordinates
    ol = np.array([c * (o[0] - it.x_mm) + si * (o[1] - it.y_mm), -si * (o[0] - it.x_mm) + c * (o[1] - it.y_mm), o[2]])
    dl = np.stack([c * d[:, 0] + si * d[:, 1], -si * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
    lo = np.array([-hx, -hy, 0.0])
    hi = np.array([hx, hy, hmax + 0.5])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1 = (lo - ol) * inv
        t2 = (hi - ol) * inv
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    cand = np.nonzero((tmax > tmin) & (tmax > 0) & (tmin < t_best))[0]
    if cand.size == 0:
        return
    t = np.maximum(tmin[cand], 0)
    tend = np.minimum(tmax[cand], t_best[cand])
    H = s.height
    D = it.skip_map()
    gh, gw = H.shape
    prev_t = t.copy()
    prev_f = np.full(cand.size, np.inf)
    idx = cand
    dsub = dl[cand]
    while idx.size:
        p = ol + dsub * t[:, None]
        col = np.clip((p[:, 0] + hx).astype(np.int64), 0, gw - 1)
        row = np.clip((p[:, 1] + hy).astype(np.int64), 0, gh - 1)
        f = p[:, 2] - H[row, col]
        hit = f <= 0
        if np.any(hit):
            # secant refinement between the previous sample (above) and this one (below)
            ph, fh, th = prev_f[hit], f[hit], t[hit]
            tp = prev_t[hit]
            with np.errstate(invalid="ignore"):  # ph = inf on a ray's first sample (branch not taken)
                frac = np.where(np.isfinite(ph) & (ph - fh > 1e-9), ph / np.maximum(ph - fh, 1e-9), 1.0)
            tt = tp + (th - tp) * np.clip(frac, 0, 1)
            rays = idx[hit]
            better = tt < t_best[rays]
            rays, tt = rays[better], tt[better]
            t_best[rays] = tt
            hit_item[rays] = it.index
            q = ol + dl[rays] * tt[:, None]
            hit_local[rays] = q[:, :2]
        cont = ~hit & (t < tend)
        prev_t, prev_f = t[cont], f[cont]
        # stride over empty space: while the ray stays above every surface within SKIP_MM of
        # this sample (the skip map), it cannot hit anything; else take the fine step
        dc = dsub[cont]
        gap = p[cont, 2] - D[row[cont], col[cont]]
        with np.errstate(divide="ignore"):
            safe = np.minimum(SKIP_MM / np.maximum(np.hypot(dc[:, 0], dc[:, 1]), 1e-9),
                              gap / np.maximum(-dc[:, 2], 1e-9))
        step = np.where(gap > 0, np.maximum(safe, STEP_MM), STEP_MM)
        t = np.minimum(t[cont] + step, tend[cont])
        tend, idx, dsub = tend[cont], idx[cont], dc


@dataclass(frozen=True)
class DepthNoise:
    """The randomised simulator's depth sensor (domain.py); None in apply_sensor = the standard one."""

    sigma_mm: float = 1.0  # Gaussian depth noise, mm (0.5-3 in the randomised simulator)
    edge_drop: float = 0.6  # chance that a pixel near a depth edge has no depth
    speckle: float = 0.002  # chance of a lone missing pixel anywhere
    dark_level: float = 0.1  # surfaces darker than this (mean albedo) lose depth ...
    dark_drop: float = 0.5  # ... with up to this chance (the stereo imager sees no texture)
    glint_level: float = 0.25  # specular highlights brighter than this lose depth ...
    glint_drop: float = 0.7  # ... with this chance (saturated IR)


def apply_sensor(out: RenderOut, rng: np.random.Generator, noise: bool = True, gain: float = 1.0,
                 blur_sigma: float = 0.0, noise_sigma: float = 2.0, depth_noise: DepthNoise | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Radiance -> uint8 RGB (gain, gamma, blur, noise); depth -> mm float with noise and edge holes."""
    rgb = np.clip(out.rgb * gain, 0, 1) ** (1 / 1.1)
    img = rgb * 255.0
    depth = out.depth_mm.copy()
    if noise:
        if blur_sigma > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
        img = img + rng.normal(0, noise_sigma, img.shape)
    if noise and depth_noise is not None:
        depth = _wide_depth(out, depth, rng, depth_noise)
    elif noise:
        z_m = depth / 1000.0
        depth = depth + rng.normal(0, 1, depth.shape) * (0.4 + 1.2 * z_m ** 2)
        # zero-holes near depth edges (stereo matching fails there) and a few speckles
        dz = np.abs(cv2.Laplacian(out.depth_mm, cv2.CV_32F, ksize=3))
        edge = cv2.dilate((dz > 12).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        drop = (edge & (rng.random(depth.shape) < 0.6)) | (rng.random(depth.shape) < 0.002)
        depth[drop] = 0
    depth[out.depth_mm <= 0] = 0
    return np.clip(np.round(img), 0, 255).astype(np.uint8), depth.astype(np.float32)


def _wide_depth(out: RenderOut, depth: np.ndarray, rng: np.random.Generator, dn: DepthNoise) -> np.ndarray:
    """Depth with the randomised sensor: Gaussian noise and texture-dependent dropouts."""
    depth = depth + rng.normal(0, dn.sigma_mm, depth.shape)
    dz = np.abs(cv2.Laplacian(out.depth_mm, cv2.CV_32F, ksize=3))
    edge = cv2.dilate((dz > 12).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    drop = (edge & (rng.random(depth.shape) < dn.edge_drop)) | (rng.random(depth.shape) < dn.speckle)
    # dark and glinting surfaces: coherent patches (a smoothed random field), not lone pixels
    field = cv2.GaussianBlur(rng.random(depth.shape).astype(np.float32), (0, 0), 1.5)
    field = (field - field.mean()) / max(float(field.std()), 1e-6)
    patch = 0.5 * (1 + np.tanh(field))  # 0..1, spatially coherent
    if out.albedo is not None:
        dark = np.clip((dn.dark_level - out.albedo) / max(dn.dark_level, 1e-6) * 2, 0, 1)
        drop |= patch < dn.dark_drop * dark
    if out.highlight is not None:
        drop |= (out.highlight > dn.glint_level) & (patch < dn.glint_drop)
    depth[drop] = 0
    return depth
