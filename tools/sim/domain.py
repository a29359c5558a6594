"""Domain randomisation for `rig sim --randomize`: wider cameras, sensors, light, belts, products, damage.

What is drawn per dataset and what per item:

* per dataset (a physical installation): the camera setups (``draw_rigs``: 1-3
  cameras each, view names, image size 320x240 .. 1280x720, field of view,
  height, obliqueness 30-60 degrees from vertical), from the rig seed; the
  product catalogue (``make_wide_catalogue``), from the catalogue seed; and
  whether the references carry depth (``reference_depth_policy``). A model
  judged on another installation must not have seen its cameras or products,
  which is what a generalisation split holds out.
* per item (what changes from one parcel to the next on a real belt): which of
  the dataset's camera setups sees it (``--rigs``), light (direction, intensity,
  colour temperature and the camera's white balance error), belt colour and
  texture, exposure, blur, image noise, the depth sensor (noise 0.5-3 mm,
  dropouts on edges, dark and glinting surfaces), a missing depth frame per
  view, pose, the framing of each view (scene.frame_roi: mostly the runtime's
  square crop, sometimes the whole image or a loose non-square box), and damage
  sizes down to the resolution limit (``WIDE_DAMAGE``).

Everything comes from seeded generators keyed by (seed, index), so a dataset
is reproduced byte for byte by the same command.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from ...calibration.model import Calibration
from .products import EXTRA_KINDS, KINDS, DamageSizes, Sku, _color
from .render import DepthNoise, Lighting
from .rigs import _camera
from .scene import ItemSpec, draw_sku_and_damage

#: image sizes a randomised camera draws from (width, height)
RESOLUTIONS = ((320, 240), (424, 240), (480, 270), (640, 360), (640, 480), (848, 480), (960, 540),
               (1280, 720))
OBLIQUE_DEG = (30.0, 60.0)  # an oblique camera's angle from vertical
TOP_TILT_DEG = (0.0, 12.0)  # an overhead camera's mounting tilt
HFOV_DEG = (50.0, 78.0)
#: view names are words without '_' or '-' (reference files are NAME_VIEW.png, split on those)
VIEW_WORDS = ("top", "overhead", "above", "down", "left", "right", "front", "rear", "entry", "exit",
              "upstream", "downstream", "port", "starboard", "near", "far", "tilt", "angled", "oblique",
              "high", "low", "cam", "view", "north", "south", "east", "west")
BELT_PATTERNS = ("wave", "slats", "weave", "speckle")
REFERENCE_DEPTH = ("all", "none", "some")
MISSING_DEPTH = 0.04  # chance that a view's depth frame is missing (half: no file, half: all zero)
#: every damage kind down to the resolution limit: 2 mm holes, 3 mm dents, 6 mm spills
WIDE_DAMAGE = DamageSizes(crush_radius=(0.12, 0.45), crush_depth=(0.12, 0.5), tear_width=(2, 10),
                          tear_step=(3.0, 16.0), hole_radius=(2.0, 22.0), hole_depth=(3.0, 60.0),
                          contents_radius=(5.0, 22.0), spill_radius=(6.0, 45.0))
# (length, width, height) ranges in mm per kind, drawn log-uniformly (small items as likely as large)
_SIZES = {
    "carton": ((40, 400), (30, 300), (15, 200)),
    "mailer": ((120, 380), (90, 280), (8, 60)),
    "blister": ((70, 240), (50, 170), (8, 34)),
    "tub": ((50, 200), None, (25, 160)),
    "bottle": ((90, 300), (30, 100), None),
    "flat": ((90, 330), (60, 250), (2.0, 3.0)),
}
# the whole item must fit in every camera's view: this half-size (m) around the tunnel centre
_VIEW_HALF_M = 0.27


def _logu(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# ---------------------------------------------------------------- cameras

@dataclass(frozen=True)
class RigDraw:
    """One drawn camera setup and why it looks as it does (for the dataset notes)."""

    calibration: Calibration
    summary: str


def _view_names(rng, n: int) -> list[str]:
    words = list(rng.choice(len(VIEW_WORDS), n, replace=False))
    names = [VIEW_WORDS[i] for i in words]
    if rng.random() < 0.4:  # numbered names: cam1, cam2 ...
        stem = names[0]
        start = int(rng.integers(0, 3))
        names = [f"{stem}{start + k}" for k in range(n)]
    return names


def draw_rig(rig_seed: int, index: int) -> RigDraw:
    """Camera setup ``index`` of rig seed ``rig_seed``: 1-3 cameras over the belt."""
    rng = np.random.default_rng([rig_seed, index, 53])
    n = int(rng.integers(1, 4))
    names = _view_names(rng, n)
    same_size = rng.random() < 0.7  # most rigs use one camera model
    size0 = RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
    cams, parts = {}, []
    overhead_first = rng.random() < 0.75
    for k, name in enumerate(names):
        w, h = size0 if same_size else RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
        hfov = float(rng.uniform(*HFOV_DEG))
        vfov = 2 * np.degrees(np.arctan(np.tan(np.radians(hfov) / 2) * h / w))
        # far enough that the tunnel's +-_VIEW_HALF_M fits the shorter image side, up to 0.45 m more
        d_min = max(0.5, _VIEW_HALF_M / np.tan(np.radians(vfov) / 2))
        dist = float(rng.uniform(d_min, d_min + 0.45))
        if k == 0 and overhead_first:
            tilt = float(rng.uniform(*TOP_TILT_DEG))
        else:
            tilt = float(rng.uniform(*OBLIQUE_DEG))
            dist = max(dist, 0.4 / np.cos(np.radians(tilt)))  # the lens stays above a tall carton
        az = float(rng.uniform(0, 2 * np.pi))
        target = np.array([0.0, 0.0, float(rng.uniform(0.0, 0.05))])
        t = np.radians(tilt)
        eye = target + dist * np.array([np.sin(t) * np.cos(az), np.sin(t) * np.sin(az), np.cos(t)])
        cams[name] = _camera(name, tuple(eye), tuple(target), w, h, hfov)
        parts.append(f"{name} {w}x{h} {tilt:.0f} deg from vertical at {dist:.2f} m, hfov {hfov:.0f}")
    return RigDraw(Calibration(cameras=cams, belt={"reference": "belt", "source": "rig sim --randomize"}),
                   "; ".join(parts))


def draw_rigs(rig_seed: int, n: int) -> list[RigDraw]:
    return [draw_rig(rig_seed, i) for i in range(n)]


def reference_depth_policy(seed: int, catalogue_seed: int) -> str:
    """Whether a randomised dataset's references carry depth: all, none, or some products' only."""
    rng = np.random.default_rng([seed, catalogue_seed, 31])
    return REFERENCE_DEPTH[int(rng.integers(len(REFERENCE_DEPTH)))]


def reference_has_depth(policy: str, sku_name: str) -> bool:
    if policy not in REFERENCE_DEPTH:
        raise ValueError(f"reference depth policy must be one of {REFERENCE_DEPTH}, got {policy!r}")
    if policy == "some":
        return zlib.crc32(sku_name.encode()) % 2 == 0
    return policy == "all"


# ---------------------------------------------------------------- products

def make_wide_catalogue(n_skus: int, seed: int = 0, printed_share: float = 0.25,
                        revisions: dict[str, int] | None = None) -> list[Sku]:
    """``n_skus`` products of every kind (flat 2-3 mm cards and mailers too), 30-400 mm,
    some dark; names carry the catalogue seed so two catalogues never share a name."""
    kinds = KINDS + EXTRA_KINDS
    revisions = revisions or {}
    out = []
    for i in range(n_skus):
        rng = np.random.default_rng([seed, i, 17])
        kind = kinds[i % len(kinds)] if i < len(kinds) else kinds[int(rng.integers(len(kinds)))]
        name = f"c{seed}-sku{i:03d}-{kind}"
        lr, wr, hr = _SIZES[kind]
        length = _logu(rng, *lr)
        if kind == "tub":
            width = length
        else:
            width = min(_logu(rng, *wr), length)
        height = width if kind == "bottle" else _logu(rng, *hr)
        units, grid = 0, (0, 0)
        if kind == "blister":
            grid = (int(rng.integers(1, 5)), int(rng.integers(1, 3)))
            if grid[0] * grid[1] < 2:
                grid = (2, grid[1])
            units = grid[0] * grid[1]
        printed = None
        if rng.random() < printed_share and kind != "bottle":
            printed = ("crack", "splash", "tear")[int(rng.integers(3))]
        base = _color(rng, dark=rng.random() < 0.2)  # dark packaging: the depth imager loses it
        out.append(Sku(name, kind, float(length), float(width), float(height), base, _color(rng),
                       _color(rng, dark=True), gloss=float(rng.uniform(0.02, 0.95)), units=units,
                       unit_grid=grid, printed_damage=printed, revision=revisions.get(name, 0),
                       art_seed=int(rng.integers(1 << 30))))
    return out


# ---------------------------------------------------------------- light and items

def _planck_rgb(kelvin: float) -> np.ndarray:
    """Relative radiance of a black body at 610 / 550 / 465 nm, green = 1."""
    lam = np.array([610e-9, 550e-9, 465e-9])
    c2 = 1.4388e-2  # h c / k, m K
    b = 1.0 / (lam ** 5 * (np.exp(c2 / (lam * kelvin)) - 1))
    return b / b[1]


def white_balance_tint(kelvin: float, wb_kelvin: float) -> np.ndarray:
    """Colour cast of light at ``kelvin`` through a camera white-balanced for ``wb_kelvin``."""
    return _planck_rgb(kelvin) / _planck_rgb(wb_kelvin)


def _belt(rng) -> tuple[np.ndarray, str, float, float]:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 130), rng.uniform(8, 150)]]], np.uint8)
    color = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0
    pattern = BELT_PATTERNS[int(rng.integers(len(BELT_PATTERNS)))]
    return np.clip(color, 0.02, 0.6), pattern, float(rng.uniform(0.0, 0.25)), float(rng.uniform(5, 40))


def draw_wide_spec(catalogue: list[Sku], seed: int, index: int, damage_rate: float,
                   sku_index: int | None = None, force_damage: list[str] | None = None) -> ItemSpec:
    """An item of the randomised simulator, from (seed, index) alone."""
    rng = np.random.default_rng([seed, index, 77])
    sku, damage = draw_sku_and_damage(rng, catalogue, damage_rate, sku_index, force_damage)
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.deg2rad(20), np.deg2rad(90))
    kelvin = float(rng.uniform(2700, 7500))
    wb = float(np.clip(kelvin * np.exp(rng.normal(0, 0.12)), 2500, 9000))
    belt, pattern, texture, period = _belt(rng)
    light = Lighting(
        direction=np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)]),
        ambient=float(rng.uniform(0.1, 0.7)), diffuse=float(rng.uniform(0.3, 1.1)),
        specular=float(rng.uniform(0.0, 0.8)), tint=white_balance_tint(kelvin, wb),
        belt_color=belt, belt_texture=texture, belt_pattern=pattern, belt_period_mm=period)
    depth = DepthNoise(sigma_mm=float(rng.uniform(0.5, 3.0)), edge_drop=float(rng.uniform(0.3, 0.9)),
                       speckle=float(rng.uniform(0.0, 0.01)), dark_level=float(rng.uniform(0.03, 0.12)),
                       dark_drop=float(rng.uniform(0.2, 0.9)), glint_level=float(rng.uniform(0.15, 0.5)),
                       glint_drop=float(rng.uniform(0.3, 0.95)))
    return ItemSpec(index, seed, sku, damage, x_mm=float(rng.uniform(-25, 25)),
                    y_mm=float(rng.uniform(-80, 80)), yaw=float(rng.uniform(-np.pi, np.pi)), light=light,
                    gain=float(rng.uniform(0.5, 1.6)), blur=float(rng.uniform(0.0, 1.6)),
                    noise_sigma=float(rng.uniform(0.5, 6.0)), sizes=WIDE_DAMAGE, depth_noise=depth,
                    framing=True)


def item_rig(seed: int, index: int, n_rigs: int) -> int:
    """Which of the dataset's camera setups sees item ``index``."""
    return int(np.random.default_rng([seed, index, 41]).integers(n_rigs))


def missing_depth(seed: int, index: int, view: str) -> str | None:
    """None (the view has its depth frame), 'absent' (no depth file) or 'zero' (all-zero frame)."""
    rng = np.random.default_rng([seed, index, zlib.crc32(view.encode()), 43])
    if rng.random() >= MISSING_DEPTH:
        return None
    return "absent" if rng.random() < 0.5 else "zero"
