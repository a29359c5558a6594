"""Products and their damage, as 2.5-D surfaces on the belt.

An item is a height field over an item-local grid (1 mm cells, x along the
item's length, y across), with per-cell albedo, gloss, coverage (alpha: 0 =
bare belt) and a damage mask. The grid extends ``MARGIN_MM`` beyond the
footprint so that spills and escaped contents beside the item live in the same
grid. Everything is drawn from seeded generators: a SKU's shape and artwork
depend only on (catalogue seed, SKU index, artwork revision); an item's pose,
damage and lighting only on its own seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ...rig.dataset import DAMAGE_TYPES

MARGIN_MM = 70
KINDS = ("carton", "mailer", "blister", "tub", "bottle")
# kinds only the domain-randomised catalogue (domain.py) draws: "flat" is a 2-3 mm card or
# flat mailer. Kept out of KINDS so the default catalogue stays what it was.
EXTRA_KINDS = ("flat",)
# which damage each kind can show
APPLICABLE = {
    "carton": ("crush", "tear", "hole", "deconstruction", "spill"),
    "mailer": ("tear", "hole", "deconstruction", "spill", "crush"),
    "blister": ("broken_set", "tear", "hole", "spill", "crush"),
    "tub": ("crush", "hole", "spill", "deconstruction"),
    "bottle": ("crush", "spill", "hole"),
    "flat": ("tear", "hole", "crush", "spill", "deconstruction"),
}


@dataclass(frozen=True)
class DamageSizes:
    """Ranges (uniform draws) of the damage geometry; the defaults are the standard simulator's,
    domain.WIDE_DAMAGE reaches down to the resolution limit (2 mm holes, 3 mm dents)."""

    crush_radius: tuple[float, float] = (0.25, 0.45)  # x the item's smaller side
    crush_depth: tuple[float, float] = (0.3, 0.5)  # x max(item height, 25 mm)
    tear_width: tuple[int, int] = (5, 10)  # polyline thickness, mm (integers, upper bound excluded)
    tear_step: tuple[float, float] = (8.0, 16.0)  # length of each of the tear's 8 segments, mm
    hole_radius: tuple[float, float] = (9.0, 22.0)
    hole_depth: tuple[float, float] = (25.0, 60.0)
    contents_radius: tuple[float, float] = (10.0, 22.0)  # deconstruction: each escaped piece
    spill_radius: tuple[float, float] = (25.0, 45.0)


@dataclass
class Sku:
    name: str
    kind: str
    length: float  # mm, along the item's x
    width: float  # mm
    height: float  # mm (blister: card thickness + dome height)
    base: np.ndarray  # RGB 0..1
    accent: np.ndarray
    ink: np.ndarray
    gloss: float
    units: int = 0  # blister: number of units
    unit_grid: tuple[int, int] = (0, 0)
    printed_damage: str | None = None  # 'crack' | 'splash' | 'tear' artwork, item intact
    revision: int = 0
    art_seed: int = 0


@dataclass
class ItemSurface:
    """Item-local surface; index [row=y, col=x] with cell size 1 mm, origin at the grid centre."""

    height: np.ndarray  # float32 mm
    albedo: np.ndarray  # float32 HxWx3, 0..1
    gloss: np.ndarray  # float32 0..1
    alpha: np.ndarray  # float32 0..1 (0 = belt shows through)
    damage: np.ndarray  # uint8 0/1
    units_present: int = 0
    damage_types: list[str] = field(default_factory=list)
    # the drawn size of each applied damage kind, mm: {kind: {name: value}} (record_size)
    damage_size_mm: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def half_extent(self) -> tuple[float, float]:
        h, w = self.height.shape
        return w / 2.0, h / 2.0


def _color(rng, dark=False) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(60, 255), rng.uniform(40, 120) if dark
                      else rng.uniform(110, 250)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def make_catalogue(n_skus: int, seed: int = 0, printed_share: float = 0.25,
                   revisions: dict[str, int] | None = None) -> list[Sku]:
    """``n_skus`` products. About ``printed_share`` of them carry damage-like artwork."""
    out = []
    revisions = revisions or {}
    for i in range(n_skus):
        rng = np.random.default_rng([seed, i, 7])
        kind = KINDS[i % len(KINDS)] if i < len(KINDS) else KINDS[int(rng.integers(len(KINDS)))]
        name = f"sku{i:03d}-{kind}"
        if kind == "carton":
            dims = (rng.uniform(140, 320), rng.uniform(100, 220), rng.uniform(50, 180))
        elif kind == "mailer":
            dims = (rng.uniform(220, 340), rng.uniform(160, 250), rng.uniform(25, 60))
        elif kind == "blister":
            dims = (rng.uniform(150, 240), rng.uniform(110, 170), rng.uniform(18, 34))
        elif kind == "tub":
            d = rng.uniform(90, 160)
            dims = (d, d, rng.uniform(60, 140))
        else:
            d = rng.uniform(55, 90)
            dims = (rng.uniform(180, 280), d, d)
        length, width = max(dims[0], dims[1]), min(dims[0], dims[1])
        units, grid = 0, (0, 0)
        if kind == "blister":
            grid = (int(rng.integers(2, 4)), int(rng.integers(1, 3)))
            units = grid[0] * grid[1]
        printed = None
        if rng.random() < printed_share and kind in ("carton", "mailer", "blister", "tub"):
            printed = ("crack", "splash", "tear")[int(rng.integers(3))]
        out.append(Sku(name, kind, float(length), float(width), float(dims[2]),
                       _color(rng), _color(rng), _color(rng, dark=True),
                       gloss=float(rng.uniform(0.5, 0.9) if kind in ("mailer", "blister", "bottle")
                                   else rng.uniform(0.05, 0.3)),
                       units=units, unit_grid=grid, printed_damage=printed,
                       revision=revisions.get(name, 0), art_seed=int(rng.integers(1 << 30))))
    return out


# ---------------------------------------------------------------- artwork

def _artwork(sku: Sku, shape: tuple[int, int]) -> np.ndarray:
    """The printed face, size (h, w) in mm cells. Depends on the SKU and its revision only."""
    h, w = shape
    rng = np.random.default_rng([sku.art_seed, sku.revision])
    base, accent, ink = sku.base, sku.accent, sku.ink
    if sku.revision:  # new packaging: new colours and layout
        base, accent = _color(rng), _color(rng)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    # a colour band and a logo
    band = int(rng.uniform(0.15, 0.35) * h)
    y0 = int(rng.uniform(0, h - band))
    img[y0:y0 + band] = accent
    cx, cy, r = int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h), int(rng.uniform(0.08, 0.2) * h) + 2
    if rng.random() < 0.5:
        cv2.circle(img, (cx, cy), r, tuple(map(float, ink)), -1, cv2.LINE_AA)
        cv2.circle(img, (cx, cy), max(1, r // 2), tuple(map(float, base)), -1, cv2.LINE_AA)
    else:
        pts = np.array([[cx + r * np.cos(a), cy + r * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 6)[:-1]
                        + rng.uniform(0, 1)], np.int32)
        cv2.fillPoly(img, [pts], tuple(map(float, ink)), cv2.LINE_AA)
    # text-like lines
    for _ in range(int(rng.integers(2, 6))):
        ty, tx = int(rng.uniform(0.05, 0.95) * h), int(rng.uniform(0.05, 0.5) * w)
        tl = int(rng.uniform(0.2, 0.45) * w)
        cv2.line(img, (tx, ty), (tx + tl, ty), tuple(map(float, ink * 0.8)), max(1, int(rng.integers(2, 5))))
    # a barcode
    bx, by = int(rng.uniform(0.55, 0.8) * w), int(rng.uniform(0.6, 0.85) * h)
    for k in range(24):
        if rng.random() < 0.55:
            img[by:by + max(4, h // 10), bx + 2 * k: bx + 2 * k + 1] = 0.05
    if sku.printed_damage:
        _draw_printed_damage(img, sku.printed_damage, rng)
    return img


def _draw_printed_damage(img: np.ndarray, kind: str, rng) -> None:
    """Damage-like *pictures* (cracked screen, splash, torn-paper graphic): flat print, no geometry."""
    h, w = img.shape[:2]
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    if kind == "crack":
        for _ in range(9):
            a = rng.uniform(0, 2 * np.pi)
            pts = [(cx, cy)]
            for _s in range(4):
                a += rng.uniform(-0.5, 0.5)
                step = rng.uniform(0.05, 0.12) * w
                pts.append((pts[-1][0] + step * np.cos(a), pts[-1][1] + step * np.sin(a)))
            cv2.polylines(img, [np.array(pts, np.int32)], False, (0.1, 0.1, 0.12), 1, cv2.LINE_AA)
    elif kind == "splash":
        col = tuple(float(c) for c in rng.uniform(0.2, 0.9, 3))
        for _ in range(14):
            r = rng.uniform(0.02, 0.08) * w
            cv2.circle(img, (int(cx + rng.normal(0, 0.1 * w)), int(cy + rng.normal(0, 0.1 * h))), int(r), col, -1,
                       cv2.LINE_AA)
    else:  # a torn-paper graphic
        xs = np.linspace(0.2 * w, 0.8 * w, 12)
        ys = cy + rng.normal(0, 0.03 * h, 12)
        pts = np.array(list(zip(xs, ys)) + list(zip(xs[::-1], ys[::-1] + 0.05 * h)), np.int32)
        cv2.fillPoly(img, [pts], (0.85, 0.78, 0.62), cv2.LINE_AA)
        cv2.polylines(img, [pts], True, (0.3, 0.25, 0.2), 1, cv2.LINE_AA)


# ---------------------------------------------------------------- geometry

def _grid(sku: Sku):
    L, W = int(np.ceil(sku.length)), int(np.ceil(sku.width))
    gw, gh = L + 2 * MARGIN_MM, W + 2 * MARGIN_MM
    xs = np.arange(gw, dtype=np.float32) - gw / 2 + 0.5
    ys = np.arange(gh, dtype=np.float32) - gh / 2 + 0.5
    return np.meshgrid(xs, ys)


def build_surface(sku: Sku, rng: np.random.Generator) -> ItemSurface:
    """The intact item (with small per-item variation: wrinkles, print offset)."""
    X, Y = _grid(sku)
    gh, gw = X.shape
    L, W, Hh = sku.length, sku.width, sku.height
    inside = (np.abs(X) <= L / 2) & (np.abs(Y) <= W / 2)
    height = np.zeros((gh, gw), np.float32)
    gloss = np.zeros((gh, gw), np.float32)
    albedo = np.zeros((gh, gw, 3), np.float32)
    alpha = np.zeros((gh, gw), np.float32)
    y0, x0 = int(MARGIN_MM), int(MARGIN_MM)
    face_h, face_w = int(np.ceil(W)), int(np.ceil(L))
    art = _artwork(sku, (face_h, face_w))
    units_present = 0
    if sku.kind == "carton":
        e = 3.0  # rounded edge radius
        dx = np.clip(L / 2 - np.abs(X), 0, None)
        dy = np.clip(W / 2 - np.abs(Y), 0, None)
        edge = np.minimum(np.minimum(dx, dy), e) / e
        height = np.where(inside, Hh * (0.92 + 0.08 * np.sqrt(edge)), 0).astype(np.float32)
    elif sku.kind == "mailer":
        u, v = 2 * X / L, 2 * Y / W
        prof = np.clip(1 - u ** 6, 0, 1) ** 0.5 * np.clip(1 - v ** 4, 0, 1) ** 0.6
        wr = cv2.GaussianBlur(rng.normal(0, 1, (gh, gw)).astype(np.float32), (0, 0), 9) * 25
        height = np.where(inside, Hh * prof * (1 + 0.15 * wr) + 1.5, 0).astype(np.float32)
    elif sku.kind == "blister":
        height = np.where(inside, 2.5, 0).astype(np.float32)
        units_present = sku.units
    elif sku.kind == "flat":  # a card or a flat mailer: uniform thickness, a slight warp
        warp = cv2.GaussianBlur(rng.normal(0, 1, (gh, gw)).astype(np.float32), (0, 0), 15) * 15
        height = np.where(inside, np.clip(Hh * (1 + 0.1 * warp), 0.9 * Hh, 1.1 * Hh), 0).astype(np.float32)
    elif sku.kind == "tub":
        r = np.hypot(X, Y)
        inside = r <= L / 2
        rim = np.clip((L / 2 - r) / 4.0, 0, 1)
        height = np.where(inside, Hh * (0.95 + 0.05 * rim), 0).astype(np.float32)
    else:  # bottle lying along x: a capsule
        rad = W / 2
        body = np.clip(rad ** 2 - Y ** 2, 0, None) ** 0.5
        taper = np.clip((L / 2 - np.abs(X)) / (0.25 * L), 0, 1)
        neck = np.where(X > 0, 0.45 + 0.55 * taper, 1.0)
        height = np.where(np.abs(X) <= L / 2, body * np.where(X > 0, neck, np.clip(taper * 4, 0, 1) ** 0.3), 0)
        height = height.astype(np.float32)
        inside = height > 0.5
    alpha[inside] = 1.0
    albedo[y0:y0 + face_h, x0:x0 + face_w] = art[: gh - y0, : gw - x0]
    albedo[~inside] = 0
    gloss[inside] = sku.gloss
    if sku.kind == "blister":
        _add_units(sku, X, Y, height, albedo, gloss, range(sku.units))
    if sku.kind == "bottle":  # a cap at the +x end
        cap = (X > L / 2 - 18) & inside
        albedo[cap] = sku.accent
    return ItemSurface(height, albedo, gloss, alpha, np.zeros((gh, gw), np.uint8), units_present)


def unit_centres(sku: Sku) -> list[tuple[float, float, float, float]]:
    """Blister unit centres and radii (cx, cy, rx, ry) in item mm."""
    nx, ny = sku.unit_grid
    cells = []
    for j in range(ny):
        for i in range(nx):
            cx = -sku.length / 2 + sku.length * (i + 0.5) / nx
            cy = -sku.width / 2 + sku.width * (j + 0.5) / ny
            cells.append((cx, cy, 0.36 * sku.length / nx, 0.36 * sku.width / ny))
    return cells


def _add_units(sku, X, Y, height, albedo, gloss, which) -> None:
    cells = unit_centres(sku)
    dome_h = sku.height - 2.5
    for k in which:
        cx, cy, rx, ry = cells[k]
        q = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2
        dome = q < 1
        height[dome] = np.maximum(height[dome], 2.5 + dome_h * np.sqrt(1 - q[dome]))
        # the unit inside: its own colour seen through clear plastic
        core = q < 0.55
        albedo[core] = 0.55 * sku.accent + 0.35
        gloss[dome] = 0.95


# ---------------------------------------------------------------- damage

def _blob(rng, shape, cx, cy, radius, roughness=0.35) -> np.ndarray:
    """An irregular filled blob mask around (cx, cy) in grid cells."""
    n = 24
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rr = radius * (1 + roughness * cv2.GaussianBlur(rng.normal(0, 1, (1, n)).astype(np.float32), (0, 0), 1.5)[0])
    pts = np.stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)], 1).astype(np.int32)
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def _point_on_face(sku, rng, edge_bias=False):
    if edge_bias:
        side = rng.integers(4)
        u = rng.uniform(-0.45, 0.45)
        pos = [(u * sku.length, -0.42 * sku.width), (u * sku.length, 0.42 * sku.width),
               (-0.42 * sku.length, u * sku.width), (0.42 * sku.length, u * sku.width)][side]
        return pos
    return rng.uniform(-0.3, 0.3) * sku.length, rng.uniform(-0.3, 0.3) * sku.width


def record_size(surf: ItemSurface, kind: str, **sizes: float) -> None:
    """Note a damage's drawn size in ``surf.damage_size_mm`` (mm, rounded to 0.01, integers kept;
    ``units_missing`` is a count). A kind applied twice keeps the smaller of each size (the harder
    case to see), except ``units_missing``, which adds up."""
    have = surf.damage_size_mm.setdefault(kind, {})
    for name, value in sizes.items():
        v = value if isinstance(value, int) else round(float(value), 2)
        if name not in have:
            have[name] = v
        elif name == "units_missing":
            have[name] += v
        else:
            have[name] = min(have[name], v)


def apply_damage(sku: Sku, surf: ItemSurface, kinds: list[str], rng: np.random.Generator,
                 sizes: DamageSizes | None = None) -> None:
    """Apply each damage kind in place; ``surf.damage`` marks the damaged cells and
    ``surf.damage_size_mm`` the drawn sizes (record_size): crush radius and depth, tear width and
    length (of its centre line), hole diameter, deconstruction's largest escaped piece
    (``contents_radius``), spill radius, broken_set ``units_missing``. Nominal sizes, as drawn: a
    hole's blob edge is irregular and the parts off the item are cut away. Recording them draws
    nothing from ``rng``: the rendered item is the same as before they were recorded."""
    sz = sizes or DamageSizes()
    gh, gw = surf.height.shape
    cx0, cy0 = gw / 2, gh / 2
    X, Y = _grid(sku)
    for kind in kinds:
        if kind not in DAMAGE_TYPES:
            raise ValueError(f"unknown damage kind {kind!r}")
        if kind == "crush":
            px, py = _point_on_face(sku, rng, edge_bias=True)
            rad = rng.uniform(*sz.crush_radius) * min(sku.length, sku.width)
            depth = rng.uniform(*sz.crush_depth) * max(sku.height, 25)
            d2 = ((X - px) ** 2 + (Y - py) ** 2) / rad ** 2
            dent = depth * np.exp(-d2 * 1.6) * (surf.alpha > 0)
            # creases: ridged noise inside the dent
            crease = np.abs(cv2.GaussianBlur(rng.normal(0, 1, (gh, gw)).astype(np.float32), (0, 0), 5))
            surf.height[:] = np.maximum(surf.height - dent * (0.85 + 0.5 * crease), 0.3 * (surf.alpha > 0))
            shade = 1 - 0.45 * np.clip(crease * 6 - 1.0, 0, 1) * (dent > 2)
            surf.albedo *= shade[..., None]
            surf.damage |= (dent > 1.0).astype(np.uint8)  # every visible change of the surface
            record_size(surf, "crush", radius=rad, depth=depth)
        elif kind in ("tear", "hole"):
            px, py = _point_on_face(sku, rng, edge_bias=(kind == "tear"))
            if kind == "tear":
                m = np.zeros((gh, gw), np.uint8)
                ang = rng.uniform(0, np.pi)
                pts = [(px, py)]
                length = 0.0
                for _ in range(8):
                    ang += rng.uniform(-0.6, 0.6)
                    step = rng.uniform(*sz.tear_step)
                    length += step
                    pts.append((pts[-1][0] + step * np.cos(ang), pts[-1][1] + step * np.sin(ang)))
                arr = (np.array(pts) + [cx0, cy0]).astype(np.int32)
                width = int(rng.integers(*sz.tear_width))
                cv2.polylines(m, [arr], False, 1, width)
                region = (m > 0) & (surf.alpha > 0)
                inner = np.array([0.82, 0.74, 0.58]) if sku.kind == "carton" else np.array([0.93, 0.93, 0.9])
                surf.albedo[region] = inner * rng.uniform(0.8, 1.05)
                edge = cv2.dilate(m, np.ones((5, 5), np.uint8)) > 0
                surf.albedo[edge & ~region & (surf.alpha > 0)] *= 0.55
                surf.height[region] = np.maximum(surf.height[region] - rng.uniform(3, 8), 0.5)
                surf.gloss[region] = 0.05
                surf.damage |= (cv2.dilate(m, np.ones((3, 3), np.uint8)) > 0) & (surf.alpha > 0)
                record_size(surf, "tear", width=width, length=length)
            else:
                rad = rng.uniform(*sz.hole_radius)
                region = _blob(rng, (gh, gw), px + cx0, py + cy0, rad) & (surf.alpha > 0)
                surf.height[region] = np.maximum(surf.height[region] - rng.uniform(*sz.hole_depth), 0.5)
                surf.albedo[region] = rng.uniform(0.03, 0.12)
                ring = cv2.dilate(region.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~region
                surf.albedo[ring & (surf.alpha > 0)] *= 0.6
                surf.damage |= (region | ring) & (surf.alpha > 0)
                record_size(surf, "hole", diameter=2 * rad)
        elif kind == "deconstruction":
            # a section of the top is opened and contents break out over one side
            side = 1 if rng.random() < 0.5 else -1
            opening = (side * Y > 0.05 * sku.width) & (np.abs(X) < 0.35 * sku.length) & (surf.alpha > 0)
            surf.height[opening] *= rng.uniform(0.3, 0.6)
            surf.albedo[opening] *= 0.35
            contents = np.zeros((gh, gw), bool)
            largest = 0.0
            for _ in range(int(rng.integers(3, 6))):
                ox = rng.uniform(-0.35, 0.35) * sku.length
                oy = side * (sku.width / 2 + rng.uniform(-5, MARGIN_MM - 20))
                r = rng.uniform(*sz.contents_radius)
                largest = max(largest, r)
                blob = _blob(rng, (gh, gw), ox + cx0, oy + cy0, r, 0.2)
                hh = rng.uniform(12, 35)
                d = cv2.distanceTransform(blob.astype(np.uint8), cv2.DIST_L2, 3)
                surf.height[blob] = np.maximum(surf.height[blob], np.minimum(d[blob] * 2.5, hh))
                surf.albedo[blob] = rng.uniform(0.2, 0.95, 3)
                surf.gloss[blob] = 0.4
                surf.alpha[blob] = 1
                contents |= blob
            surf.damage |= opening | contents
            record_size(surf, "deconstruction", contents_radius=largest)
        elif kind == "spill":
            ang = rng.uniform(0, 2 * np.pi)
            dist = 0.5 * max(sku.length, sku.width) * abs(np.cos(ang)) + 20
            px, py = dist * np.cos(ang) * 0.6, dist * np.sin(ang)
            px = np.clip(px, -gw / 2 + 30, gw / 2 - 30)
            py = np.clip(py, -gh / 2 + 30, gh / 2 - 30)
            spill_r = rng.uniform(*sz.spill_radius)
            region = _blob(rng, (gh, gw), px + cx0, py + cy0, spill_r, 0.45)
            liquid = rng.random() < 0.6
            col = rng.uniform(0.1, 0.7, 3) if liquid else np.array([0.92, 0.9, 0.85])
            on_belt = region & (surf.alpha == 0)
            surf.height[on_belt] = rng.uniform(0.6, 2.0)
            surf.albedo[on_belt] = col
            surf.gloss[on_belt] = 0.95 if liquid else 0.0
            surf.alpha[on_belt] = 1
            # a stain where it touches the item
            on_item = region & (surf.alpha > 0) & ~on_belt
            surf.albedo[on_item] = 0.5 * surf.albedo[on_item] + 0.5 * col
            surf.damage |= region
            record_size(surf, "spill", radius=spill_r)
        elif kind == "broken_set":
            if sku.kind != "blister" or surf.units_present < 2:
                raise ValueError(f"broken_set needs a blister SKU with >= 2 units, not {sku.name}")
            cells = unit_centres(sku)
            k = int(rng.integers(len(cells)))
            cx, cy, rx, ry = cells[k]
            q = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2
            slot = q < 1.05
            # the unit and its dome are gone: bare card with a torn plastic rim
            surf.height[slot] = 2.5
            card = _artwork(sku, (int(np.ceil(sku.width)), int(np.ceil(sku.length))))
            yy, xx = np.nonzero(slot)
            surf.albedo[yy, xx] = card[np.clip(yy - MARGIN_MM, 0, card.shape[0] - 1),
                                       np.clip(xx - MARGIN_MM, 0, card.shape[1] - 1)] * 0.92
            rim = (q > 0.9) & (q < 1.15)
            surf.albedo[rim] = 0.85
            surf.gloss[slot] = sku.gloss
            surf.units_present -= 1
            surf.damage |= slot
            record_size(surf, "broken_set", units_missing=1)
        surf.damage_types.append(kind)
