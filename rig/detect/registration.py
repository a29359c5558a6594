"""Compare a view with the product's registered references: height and colour residuals.

The rig sees every item in calibrated RGB-D, and a pristine item of a product
always has the same shape and artwork; only its pose on the belt differs. So a
view is *registered* to known-good views of the same product (same view name)
and the residual — where the surface is lower or higher than it should be,
where the colour differs — is the anomaly. A learned patch bank cannot tell a
dent from a shadow, nor an empty blister slot from card artwork; a registered
reference can.

One view, step by step (numpy + OpenCV, a few ms per view):

1. **Working scale.** Depth and colour are area-averaged to a fixed scale per
   view name (``scale``: working pixels per crop pixel, set once from the
   training crops so a typical item is ~``WORK_PX`` px across). The camera does
   not move, so the scale in mm per pixel is the same for every item of a view,
   whatever the crop size. Averaging only valid depth readings keeps "no data"
   out of the mean and cuts sensor noise.
2. **Height** above the belt plane (fitted on 1/z over the crop's border ring,
   as the network's depth channel; ``preprocess.belt_plane``), in mm, NaN where
   there is no depth. Never "belt level" where depth is missing.
3. **Canonical pose.** The footprint (height > ``FOOTPRINT_MM``, or colour
   contrast with the belt where depth is missing) gives a centroid and an
   orientation (``cv2.minAreaRect``, modulo 90 degrees); the view is rotated so
   that the footprint's sides are axis-aligned and its centre sits in the
   middle of a ``canvas`` x ``canvas`` grid. Four quarter turns remain, and
   each is tried against every reference.
4. **Register.** Coarse: each (reference, quarter turn) is scored by the mean
   height difference over both footprints; the best few are refined by
   ECC (``cv2.findTransformECC``, Euclidean) on a height-plus-edges image,
   sub-pixel in offset and angle, over the two footprints' bounding box and
   ``ECC_MARGIN`` around it (the rest is belt; ECC costs per pixel).
5. **Residuals.** Per pixel, the smallest |height difference| over the refined
   references (several references absorb normal variation: a slightly bent
   lid, a label a little off), smoothed over 3x3; the colour residual is the
   same on colour normalised per channel by the footprint's median (robust to
   lighting gain and tint) after a light blur (robust to a fraction of a pixel
   of misregistration). Missing units show as reference footprint where the
   view has none: the comparison covers the union of both footprints.
6. **Scores.** The mean of the ``TOP_K`` largest residuals: a dent of 3 mm over
   a few working pixels stands out of 1 mm noise averaged down.

Everything a view needs of its references is a :class:`RefSet`: canonical
height (float16 mm, NaN = no data), colour (uint8 x 3) and footprint (1 bit)
per reference, stored in one orientation (the view is turned instead).
Memory bound: ``CANVAS``^2 x 5.1 bytes per reference, at most ``MAX_REFS`` per
view name: 108 x 108 x 5.1 x 8 = 467 KiB per product and view name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..preprocess.reference import belt_plane

WORK_PX = 72            # typical item size in working pixels (sets a view's scale)
CANVAS = 108            # canonical grid (working px); an item is ~WORK_PX across
FOOTPRINT_MM = 1.5      # higher than this above the belt: the item
TOP_K = 6               # residual score: mean of the TOP_K largest cells
REFINE = 4              # candidates refined by ECC per view
ECC_ITERS = 50          # ECC iterations per refined candidate
ECC_MARGIN = 8          # ECC runs on both footprints' bounding box and this many px around (-1: whole canvas)
MAX_REFS = 8            # references kept per product and view name (memory bound)
MIN_VALID = 0.5         # a working pixel needs half its area with depth
MAX_HEIGHT_MM = 2000.0  # heights beyond +-this (a plane fitted on a few stray readings) are no data
DROP_MM = 6.0           # height residual given to depth lost where the reference has it
STEEP_MM = 8.0          # height step per working px above which a pixel is a wall
TOL_PX = 3              # misregistration tolerance: the reference's range over TOL_PX x TOL_PX
WIDE_PX = 7             # the wide height score averages the residual over WIDE_PX x WIDE_PX first
BELT_GAP_PX = 4         # belt residual: pixels this far from the item's footprint count as belt
BELT_SPILL_MM = 0.5     # belt residual: height above the belt that reads as one spread of the colour
SIZE_HEIGHT_MM = 3.0    # size signature: heights compared as log((h + this) / (h_ref + this))
SIZE_AREA_PX = 5.0      # ... and footprint areas as log((a + this) / (a_ref + this))
SIZE_HEIGHT_WEIGHT = 1.0  # size mismatch = this x the height term + SIZE_AREA_WEIGHT x the area term
SIZE_AREA_WEIGHT = 0.2


@dataclass
class Canon:
    """One view in canonical pose at working scale."""

    height: np.ndarray      # (C, C) float32 mm above the belt, NaN = no depth
    rgb: np.ndarray         # (C, C, 3) float32 colour normalised by the footprint median
    fg: np.ndarray          # (C, C) bool footprint
    warp: np.ndarray        # (2, 3) crop pixels -> canonical pixels
    has_depth: bool


@dataclass
class ViewResidual:
    height_score: float     # mm
    color_score: float      # normalised colour units
    height_map: np.ndarray  # (C, C) float32, signed: negative = lower than the reference
    color_map: np.ndarray   # (C, C) float32
    warp: np.ndarray        # (2, 3) crop pixels -> canonical pixels
    ref_index: int          # best reference
    pose: np.ndarray | None = None  # (3, 3) the view's canonical pixels -> the best reference's
    height_wide: float = float("nan")  # mm: the height residual averaged over WIDE_PX x WIDE_PX first


def scale_for(crop_sizes: list[int]) -> float:
    """Working pixels per crop pixel for a view whose crops have these sizes (max side)."""
    med = float(np.median(crop_sizes)) if len(crop_sizes) else 224.0
    return min(1.0, WORK_PX / max(med * 0.8, 1.0))


def _area(img: np.ndarray, s: float) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(4, int(round(w * s))), max(4, int(round(h * s))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def height_map(depth_mm: np.ndarray | None, shape: tuple[int, int], s: float) -> np.ndarray:
    """(h, w) height above the belt in mm at working scale ``s``, NaN where there is no depth."""
    rows, cols = max(4, round(shape[0] * s)), max(4, round(shape[1] * s))  # as _area resizes
    if depth_mm is None:
        return np.full((rows, cols), np.nan, np.float32)
    d = np.asarray(depth_mm, np.float32)
    valid = (d > 0).astype(np.float32)
    num, den = _area(d * valid, s), _area(valid, s)
    ok = den >= MIN_VALID
    dw = np.where(ok, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    if ok.sum() < 16:
        return np.full(dw.shape, np.nan, np.float32)
    plane = belt_plane(dw, ok) if dw.shape[0] == dw.shape[1] else _plane_rect(dw, ok)
    h = plane - dw
    # a plane fitted on a few scattered readings (most of the frame lost) can put the belt
    # metres away: no item is that tall, and float32 sums of such values overflow
    return np.where(ok & (np.abs(h) < MAX_HEIGHT_MM), h, np.nan).astype(np.float32)


def _plane_rect(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """belt_plane for a non-square crop: pad to a square and cut back."""
    n = max(d.shape)
    dp = np.zeros((n, n), np.float32)
    vp = np.zeros((n, n), bool)
    dp[:d.shape[0], :d.shape[1]] = d
    vp[:d.shape[0], :d.shape[1]] = valid
    return belt_plane(dp, vp)[:d.shape[0], :d.shape[1]]


def _footprint(h: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """The item's pixels: above the belt where depth exists, else unlike the border's colour."""
    has = np.isfinite(h)
    fg = has & (np.nan_to_num(h) > FOOTPRINT_MM)
    if has.mean() < 0.5:  # little depth: fall back on colour contrast with the border (belt)
        ring = np.zeros(h.shape, bool)
        ring[:2], ring[-2:], ring[:, :2], ring[:, -2:] = True, True, True, True
        belt = np.median(rgb[ring], axis=0)
        dist = np.abs(rgb - belt).sum(axis=2)
        fg = dist > max(0.25, 3.0 * np.median(np.abs(rgb[ring] - belt).sum(axis=1)))
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return fg.astype(bool)
    # keep components of at least 10 % of the largest: a set's separate units stay
    big = stats[1:, cv2.CC_STAT_AREA].max()
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 0.1 * big]
    return np.isin(lab, keep)


def canonical(rgb: np.ndarray, depth_mm: np.ndarray | None, s: float, canvas: int = CANVAS) -> Canon:
    """One view crop (uint8 RGB, depth in mm or None) -> :class:`Canon`."""
    h = height_map(depth_mm, rgb.shape[:2], s)
    col = _area(np.divide(rgb, np.float32(255.0), dtype=np.float32), s)  # = astype(float32) / 255
    if col.shape[:2] != h.shape:
        col = cv2.resize(col, (h.shape[1], h.shape[0]), interpolation=cv2.INTER_AREA)
    fg = _footprint(h, col)
    ys, xs = np.nonzero(fg)
    if len(xs) >= 5:
        pts = np.stack([xs, ys], 1).astype(np.float32)
        (cx, cy), _, ang = cv2.minAreaRect(pts)
        cx, cy = float(xs.mean()), float(ys.mean())
    else:
        cx, cy, ang = h.shape[1] / 2, h.shape[0] / 2, 0.0
    m = cv2.getRotationMatrix2D((cx, cy), float(ang), 1.0)
    # the centre of the canvas is (canvas - 1) / 2 in pixel-centre coordinates: quarter turns of
    # the canonical grid (np.rot90) then turn the item about its own centre
    m[:, 2] += ((canvas - 1) / 2 - cx, (canvas - 1) / 2 - cy)
    hv = np.isfinite(h).astype(np.float32)
    hn = cv2.warpAffine(np.nan_to_num(h) * hv, m, (canvas, canvas), flags=cv2.INTER_LINEAR)
    hd = cv2.warpAffine(hv, m, (canvas, canvas), flags=cv2.INTER_LINEAR)
    ch = np.where(hd > 0.5, hn / np.maximum(hd, 1e-6), np.nan).astype(np.float32)
    cf = cv2.warpAffine(fg.astype(np.float32), m, (canvas, canvas), flags=cv2.INTER_LINEAR) > 0.5
    cc = cv2.warpAffine(col, m, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    med = np.median(cc[cf], axis=0) if cf.sum() > 10 else np.median(cc.reshape(-1, 3), axis=0)
    cc = cc / np.maximum(med, 0.05)
    # crop pixels -> canonical pixels: the resize (pixel centres: x' = (x + 0.5) * sx - 0.5), then m
    sy, sx = h.shape[0] / rgb.shape[0], h.shape[1] / rgb.shape[1]
    full = m @ np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return Canon(ch, cc.astype(np.float32), cf, full.astype(np.float32), bool(np.isfinite(h).mean() > 0.3))


@dataclass
class RefSet:
    """Canonical references of one product seen from one view name."""

    height: np.ndarray      # (R, C, C) float16 mm, NaN = no depth
    rgb: np.ndarray         # (R, C, C, 3) uint8: colour normalised by the footprint median, x COLOR_Q
    fg: np.ndarray          # (R, C, C) bool
    scale: float            # working px per crop px of this view name
    # typical (height, colour, wide height) score of a pristine view against the others (leave one
    # out, 90th pct); galleries written before the wide height score hold two values
    score_ref: tuple[float, ...] = (float("nan"), float("nan"), float("nan"))

    @property
    def n(self) -> int:
        return int(self.height.shape[0])

    @functools.cached_property
    def height32(self) -> np.ndarray:
        """Height as float32 (NaN kept), converted once per product, not once per view scored."""
        return self.height.astype(np.float32)

    @functools.cached_property
    def rgb32(self) -> np.ndarray:
        """Normalised colour as float32 (1.0 = the footprint median), converted once."""
        return self.rgb.astype(np.float32) / COLOR_Q

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """(R, 2) :func:`size_signature` of every reference, computed once."""
        return np.array([size_signature(self.canon(i)) for i in range(self.n)], np.float64).reshape(-1, 2)

    @functools.cached_property
    def fg8(self) -> np.ndarray:
        """Footprint as uint8 0/1 (OpenCV masks), converted once."""
        return self.fg.astype(np.uint8)

    @functools.cached_property
    def valid8(self) -> np.ndarray:
        """Where the height is known, as uint8 0/1 (OpenCV masks), converted once."""
        return np.isfinite(self.height32).astype(np.uint8)

    def nbytes(self) -> int:
        """Bytes as stored (the footprint packed to bits)."""
        return self.height.nbytes + self.rgb.nbytes + (self.fg.size + 7) // 8

    def subset(self, keep) -> RefSet:
        return RefSet(self.height[keep], self.rgb[keep], self.fg[keep], self.scale, self.score_ref)

    def canon(self, i: int) -> Canon:
        """Reference i as a view (for leave-one-out calibration)."""
        h = self.height[i].astype(np.float32)
        return Canon(h, self.rgb[i].astype(np.float32) / COLOR_Q, self.fg[i].copy(),
                     np.eye(2, 3, dtype=np.float32), bool(np.isfinite(h).mean() > 0.3))


COLOR_Q = 64.0  # normalised colour is stored x 64 in uint8 (1.0 = the footprint's median)
KEEP_PX = 7           # stored reference pixels: within this many of the footprint
HEIGHT_STEP_MM = 0.5  # stored height resolution
COLOR_STEP = 4        # stored colour resolution (of 256)


def make_refset(canons: list[Canon], scale: float, max_refs: int = MAX_REFS) -> RefSet:
    """Stack canonical views into a reference set, compact it and calibrate it (leave one out)."""
    canons = [c for c in canons if c.fg.sum() > 10][:max_refs]
    if not canons:
        raise ValueError("no usable reference views")
    refs = compact(RefSet(np.stack([c.height for c in canons]).astype(np.float16),
                          np.stack([np.clip(c.rgb * COLOR_Q, 0, 255) for c in canons]).astype(np.uint8),
                          np.stack([c.fg for c in canons]), float(scale)))
    refs.score_ref = calibrate(refs)
    return refs


def compact(refs: RefSet) -> RefSet:
    """What a reference set stores, made small on disk (compressed) without changing a comparison.

    Beyond ``KEEP_PX`` of its footprint a reference shows belt, which no comparison reads (the
    compared region is the union of both footprints, dilated by one pixel): height 0 (the belt's
    own level) and colour 0 there. Height is kept to ``HEIGHT_STEP_MM`` (below the 0.6 mm floor of
    the residual), colour to ``COLOR_STEP`` of 256 (0.06 of the footprint median, below its
    floor): 24 products' references compress from 23 MB to 4 MB.
    """
    k = np.ones((2 * KEEP_PX + 1, 2 * KEEP_PX + 1), np.uint8)
    keep = np.stack([cv2.dilate(f.astype(np.uint8), k) > 0 for f in refs.fg])
    h = np.round(refs.height.astype(np.float32) / HEIGHT_STEP_MM) * HEIGHT_STEP_MM
    h = np.where(keep, h, 0.0).astype(np.float16)
    c = (refs.rgb // COLOR_STEP) * COLOR_STEP + COLOR_STEP // 2
    c = np.where(keep[..., None], c, 0).astype(np.uint8)
    return RefSet(h, c, refs.fg.copy(), refs.scale, refs.score_ref)


def calibrate(refs: RefSet) -> tuple[float, float, float]:
    """(height, colour, wide height) score a pristine view typically gets: each reference against
    the others."""
    if refs.n < 3:
        return (float("nan"), float("nan"), float("nan"))
    scores = []
    for i in range(refs.n):
        r = compare(refs.canon(i), refs.subset([j for j in range(refs.n) if j != i]))
        scores.append((r.height_score, r.color_score, r.height_wide))
    return tuple(float(v) for v in np.nanquantile(np.array(scores, np.float64), 0.9, axis=0))


def size_signature(c: Canon) -> tuple[float, float]:
    """(height, area) of a view's item: the 90th percentile of the height over its footprint (mm,
    NaN without depth) and the footprint's area in working pixels. Neither depends on the item's
    yaw, and a view name's working scale is fixed, so the same product gives the same pair from the
    same camera: a cue that tells a 150 mm carton from a 20 mm mailer of similar artwork."""
    area = float(c.fg.sum())
    h = c.height[c.fg] if c.has_depth else np.empty(0, np.float32)
    h = h[np.isfinite(h)]
    return (float(np.percentile(h, 90)) if h.size >= 5 else float("nan")), area


def size_mismatch(q: tuple[float, float], refs: np.ndarray) -> float:
    """How unlike the nearest reference (rows of :attr:`RefSet.sizes`) a view's size signature is:
    weighted absolute log ratios of height and area (height left out where either lacks depth).
    The nearest reference, not a mean: a product that rests on another face has its own."""
    if refs.size == 0:
        return 0.0
    area = SIZE_AREA_WEIGHT * np.abs(np.log((q[1] + SIZE_AREA_PX) / (refs[:, 1] + SIZE_AREA_PX)))
    height = SIZE_HEIGHT_WEIGHT * np.abs(np.log((q[0] + SIZE_HEIGHT_MM) / (refs[:, 0] + SIZE_HEIGHT_MM)))
    return float(np.min(area + np.where(np.isfinite(height), height, 0.0)))


def _edges(h: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Registration image: height (0 where unknown) plus the footprint's outline."""
    img = np.where(np.isnan(h), np.float32(0), h).astype(np.float32, copy=False)
    np.clip(img, 0, 300, out=img)  # +-inf to 300 / 0 as before: the clip settles them alike
    img /= 10.0
    img += fg.astype(np.float32) * 3.0
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def _coarse_costs(q: Canon, refs: RefSet) -> np.ndarray:
    """(R, 4) disagreement of footprint and height between each reference and the view turned
    back by k quarter turns.

    Per (reference, turn): the share of the union of both footprints that only one covers, plus
    the mean colour difference over that union (summed over the channels, / 3), plus (views with
    depth) the mean |height difference| where both have depth within the union, / 20. Artwork
    tells the turns of a flat, nearly symmetric product apart; shape tells them apart where the
    artwork is plain: both count. OpenCV's masked means over each pair (``_coarse_costs_simple``
    in the tests is the same in numpy, ~10x slower).
    """
    out = np.zeros((refs.n, 4))
    # every mask below lies within the footprints' joint bounding box (the view's in all four turns)
    anyf = refs.fg.any(axis=0) | q.fg | np.rot90(q.fg) | np.rot90(q.fg, 2) | np.rot90(q.fg, 3)
    box = _box(anyf, anyf, 0)
    if box is None:
        return out
    ys, xs = slice(box[0], box[1]), slice(box[2], box[3])
    fg8, valid8 = refs.fg8[:, ys, xs], refs.valid8[:, ys, xs]
    rh, rc = refs.height32[:, ys, xs], refs.rgb32[:, ys, xs]
    for k in range(4):
        qf = np.ascontiguousarray(np.rot90(q.fg, -k)[ys, xs]).astype(np.uint8)
        qc = np.ascontiguousarray(np.rot90(q.rgb, -k)[ys, xs])
        if q.has_depth:
            qh = np.ascontiguousarray(np.rot90(q.height, -k)[ys, xs])
            qv = np.isfinite(qh).astype(np.uint8)
        for r in range(refs.n):
            union = cv2.bitwise_or(qf, fg8[r])
            nu = cv2.countNonZero(union)
            both_fg = cv2.countNonZero(cv2.bitwise_and(qf, fg8[r]))
            m = cv2.mean(cv2.absdiff(qc, rc[r]), union)  # 0 where the union is empty
            v = (nu - both_fg) / max(nu, 1) + (m[0] + m[1] + m[2]) / 3.0
            if q.has_depth:
                # NaN heights lie outside the mask, which a masked mean never reads
                both = cv2.bitwise_and(cv2.bitwise_and(union, qv), valid8[r])
                v += cv2.mean(cv2.absdiff(qh, rh[r]), both)[0] / 20.0
            out[r, k] = v
    return out


def _refine(q_img: np.ndarray, r_img: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """ECC (Euclidean) warp mapping reference pixels onto the query; identity if it fails.

    ``box`` (y0, y1, x0, x1): run ECC on that window of both images only (the footprints and
    ``ECC_MARGIN`` around them; the rest of the canvas is belt, flat in both images). ECC's
    cost is per pixel per iteration; the warp is given back in full-canvas pixels.
    """
    warp = np.eye(2, 3, dtype=np.float32)
    off = np.zeros(2, np.float32)
    if box is not None:
        y0, y1, x0, x1 = box
        q_img, r_img = q_img[y0:y1, x0:x1], r_img[y0:y1, x0:x1]
        off[:] = (x0, y0)  # window pixel + off = canvas pixel; identity stays identity
    try:
        _, warp = cv2.findTransformECC(np.ascontiguousarray(q_img), np.ascontiguousarray(r_img), warp,
                                       cv2.MOTION_EUCLIDEAN,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERS, 1e-6),
                                       None, 1)
    except cv2.error:
        return np.eye(2, 3, dtype=np.float32)
    # canvas: p_r = A (p_q - off) + t + off
    warp[:, 2] += off - warp[:, :2] @ off
    # a large correction means ECC wandered off: keep the coarse pose
    if abs(warp[0, 2]) > 6 or abs(warp[1, 2]) > 6 or abs(warp[0, 1]) > 0.2:
        return np.eye(2, 3, dtype=np.float32)
    return warp


def _box(a: np.ndarray, b: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding both footprints plus ``margin``, within the canvas; None if empty."""
    both = a | b
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    if rows.size == 0:
        return None
    n, m = both.shape
    return (max(0, int(rows[0]) - margin), min(n, int(rows[-1]) + 1 + margin),
            max(0, int(cols[0]) - margin), min(m, int(cols[-1]) + 1 + margin))


def _warp(img: np.ndarray, warp: np.ndarray, nearest: bool = False) -> np.ndarray:
    c = img.shape[0]
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(img, warp, (c, c), flags=flags, borderValue=np.nan if img.dtype.kind == "f" else 0)


def top_mean(m: np.ndarray, k: int = TOP_K) -> float:
    v = m[np.isfinite(m)].ravel()
    if v.size == 0:
        return 0.0
    k = min(k, v.size)
    return float(np.partition(v, v.size - k)[v.size - k:].mean())


def compare(q: Canon, refs: RefSet, refine: int = REFINE) -> ViewResidual:
    """Register the view to its references and measure what differs.

    The view is turned by quarter turns onto each reference (the references
    are stored in one orientation); the residual maps are turned back, so they
    lie on the view's canonical grid.
    """
    cost = _coarse_costs(q, refs)
    order = np.argsort(cost, axis=None)[:max(1, refine)]
    hres, cres, unions, poses = [], [], [], []
    turned = {}  # quarter turn -> the view turned back, its registration image and blurred colour
    for flat in order:
        r, k = np.unravel_index(flat, cost.shape)
        if k not in turned:
            qh, qf, qc = np.rot90(q.height, -k), np.rot90(q.fg, -k), np.rot90(q.rgb, -k)
            if q.has_depth:
                q_img = _edges(qh, qf)
            else:
                q_img = cv2.GaussianBlur(np.ascontiguousarray(qc.mean(axis=2)), (0, 0), 1.0)
            turned[k] = (qh, qf, np.ascontiguousarray(q_img),
                         cv2.GaussianBlur(np.ascontiguousarray(qc), (0, 0), 1.0))
        qh, qf, q_img, qc_b = turned[k]
        rh = refs.height32[r]
        rc = refs.rgb32[r]
        if q.has_depth:
            r_img = _edges(rh, refs.fg[r])
        else:
            r_img = cv2.GaussianBlur(np.ascontiguousarray(rc.mean(axis=2)), (0, 0), 1.0)
        w = _refine(q_img, r_img, _box(qf, refs.fg[r], ECC_MARGIN) if ECC_MARGIN >= 0 else None)
        rh_w = _warp(rh, w)
        rf_w = _warp(refs.fg8[r], w, nearest=True).astype(bool)
        rc_w = _warp(cv2.GaussianBlur(rc, (0, 0), 1.0), w)
        hr = _outside(qh, rh_w)
        if DROP_MM > 0:
            # depth lost where the reference, all around, has it: a hole's dark, deep interior,
            # a torn flap; not sensor edge noise, which the references show too
            ref_all = cv2.erode(np.isfinite(rh_w).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            hr = np.where(~np.isfinite(qh) & ref_all & rf_w, -DROP_MM, hr)
        hres.append(np.rot90(hr, k))
        cd = np.abs(_outside(qc_b, rc_w))
        cres.append(np.rot90(cd[..., 0] + cd[..., 1] + cd[..., 2], k))  # = .sum(axis=2), faster
        unions.append(np.rot90(rf_w, k))
        # np.linalg.inv(_turn(n, (4 - k) % 4)), exactly
        poses.append(np.vstack([w, [0, 0, 1]]) @ _turn(q.fg.shape[0], k))
    union = np.logical_or.reduce(unions) | q.fg
    region = cv2.dilate(union.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if q.has_depth and STEEP_MM > 0:
        # steep faces (an item's sides seen at an angle) move with the item's position under
        # the camera: compare surfaces, not walls
        gy, gx = np.gradient(np.nan_to_num(q.height))
        steep = np.hypot(gx, gy) > STEEP_MM
        region &= ~cv2.dilate(steep.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    hst = np.stack(hres)
    absd = np.where(np.isfinite(hst), np.abs(hst), np.inf)
    pick = np.argmin(absd, axis=0)
    hmin = np.take_along_axis(hst, pick[None], 0)[0]
    hmin = np.where(region & np.isfinite(absd.min(axis=0)), hmin, np.nan)
    cst = np.stack(cres)
    cmin = np.where(region & np.isfinite(cst).any(axis=0),
                    np.min(np.where(np.isfinite(cst), cst, np.inf), axis=0), np.nan)
    hs = _smooth(hmin)
    cs = _smooth(cmin)
    # a shallow dent over a wide area (a crushed card edge, 2 mm over 5 cm) hides in the noise of
    # a few cells; averaged over WIDE_PX x WIDE_PX it stands out of noise averaged down as well
    hw = _smooth(hmin, WIDE_PX)
    # the pose reported is the candidate that fits best after refinement
    fit = [np.nanmean(np.abs(np.where(region, h, np.nan))) if q.has_depth else np.nanmean(c)
           for h, c in zip(hres, cres)]
    best = int(np.nanargmin(fit)) if np.isfinite(fit).any() else 0
    return ViewResidual(top_mean(np.abs(hs)), top_mean(cs), hs.astype(np.float32), cs.astype(np.float32),
                        q.warp, int(np.unravel_index(order[best], cost.shape)[0]), poses[best],
                        top_mean(np.abs(hw)))


def belt_residual(q: Canon) -> float:
    """How much lies on the belt beside the item: spills, escaped contents, stains (no reference
    needed: the belt around any pristine item is bare).

    The belt's colour is the median of the canvas border (log colour, so a darker belt or a dimmer
    light changes nothing); each pixel farther than ``BELT_GAP_PX`` from the footprint scores its
    colour distance from that median in units of the border's own spread, or its height above the
    belt in units of ``BELT_SPILL_MM``, whichever is larger; the score is the mean of the
    ``3 * TOP_K`` largest 5x5 averages. Shadows and belt texture are part of every pristine item's
    score too, so the fusion weighs this against the val split's ok items. NaN when the canvas
    holds too little belt. Without depth the footprint comes from colour contrast, so a puddle
    joins the item and shows in the colour residual instead. An item crowded by another item in
    its crop scores high too: the trigger's crop holds one item at the rig's pitch.
    """
    n = q.fg.shape[0]
    k = 2 * BELT_GAP_PX + 1
    near = cv2.dilate(q.fg.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    ring = np.zeros((n, n), bool)
    ring[:3], ring[-3:], ring[:, :3], ring[:, -3:] = True, True, True, True
    ring &= ~near
    if ring.sum() < 20:
        return float("nan")
    lc = np.log(np.maximum(q.rgb, 1e-3))
    dev = np.abs(lc - np.median(lc[ring], axis=0)).sum(axis=2)
    z = dev / (float(np.median(dev[ring])) + 1e-3)
    if q.has_depth:
        z = np.maximum(z, np.clip(np.nan_to_num(q.height, nan=0.0), 0.0, 5.0) / BELT_SPILL_MM)
    z = cv2.blur(np.where(near, 0.0, z).astype(np.float32), (5, 5))
    v = z[~near]
    k_top = 3 * TOP_K
    return float(np.partition(v, v.size - k_top)[v.size - k_top:].mean()) if v.size >= k_top else float("nan")


def _turn(n: int, m: int) -> np.ndarray:
    """(3, 3) pixel coordinates of ``np.rot90(a, m)`` (n x n) -> pixel coordinates of ``a``."""
    return _turn_cached(int(n), int(m) % 4).copy()


@functools.lru_cache(maxsize=64)
def _turn_cached(n: int, m: int) -> np.ndarray:
    one = np.array([[0, -1, n - 1], [1, 0, 0], [0, 0, 1]], np.float64)  # rot90 once: (x, y) <- (n-1-y, x)
    return np.linalg.matrix_power(one, m)


def _outside(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """How far q lies outside the range of r over each 3x3 neighbourhood (signed).

    A reference registered to within a pixel still differs from the view along
    steep edges (an item's sides, artwork borders); the local range absorbs
    that misregistration while a dent, a hole or a stain, wider than a pixel
    and outside anything nearby in the reference, remains.
    """
    k = np.ones((TOL_PX, TOL_PX), np.uint8)
    bad = ~np.isfinite(r)
    # BORDER_REPLICATE: the edge pixel is in the window already, so the range is the same as
    # with OpenCV's default border, except where the whole window is missing: the default
    # border value (+-FLT_MAX, finite) would then stand in as the range and make a residual
    # of ~3.4e38 at the canvas's edge; replicated, it stays infinite and becomes NaN below
    lo = cv2.erode(np.where(bad, np.float32(np.inf), r).astype(np.float32, copy=False), k,
                   borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(np.where(bad, np.float32(-np.inf), r).astype(np.float32, copy=False), k,
                    borderType=cv2.BORDER_REPLICATE)
    lo[~np.isfinite(lo)] = np.nan
    hi[~np.isfinite(hi)] = np.nan
    return q - np.minimum(np.maximum(q, lo), hi)  # np.clip(q, lo, hi), NaN alike, faster


def _smooth(m: np.ndarray, k: int = 3) -> np.ndarray:
    """k x k mean over the finite cells (NaN stays NaN; for k > 3 also where under half the
    window is finite)."""
    ok = np.isfinite(m).astype(np.float32)
    num = cv2.blur(np.nan_to_num(m).astype(np.float32), (k, k))
    den = cv2.blur(ok, (k, k))
    keep = ok > 0 if k <= 3 else den > 0.5
    return np.where(keep, num / np.maximum(den, 1e-6), np.nan)


def to_crop(cmap: np.ndarray, warp: np.ndarray, crop_shape: tuple[int, int]) -> np.ndarray:
    """A canonical map back onto the crop's pixels (0 outside the compared region)."""
    h, w = crop_shape
    out = cv2.warpAffine(np.nan_to_num(cmap).astype(np.float32), warp, (w, h),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0.0)
    return out
