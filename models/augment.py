"""Synthetic damage pasted into pristine training views, so rare damage types have examples.

Real damaged items are rare (under 1 in 1,000 on a belt) and some types rarer
still; the supervised head cannot learn a hole it has seen a dozen times. So
`rig train` takes ok train views and adds damage to them where the item is:

* ``hole``: a dark, irregular blob; depth drops 15-60 mm inside (or is lost);
* ``tear``: a thin, lighter polyline with a dark rim; depth drops 2-8 mm;
* ``spill``: a translucent coloured stain that changes colour, not shape;
* ``crush``: a smooth dent 4-30 mm deep with darkened creases;
* ``broken_set`` is not synthesised (it needs the product's layout).

Each returns the new colour and depth and the mask of changed pixels (the
per-patch target). The geometry is drawn in the crop's own pixels, sized
relative to the item, so it works for any camera and image size.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..rig.preprocess.reference import relative_height

SYNTH_TYPES = ("hole", "tear", "spill", "crush")


def item_mask(depth_mm: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of the item: over 2 mm above the belt plane; the central half when depth is absent."""
    h, w = shape
    if depth_mm is not None:
        rel = relative_height(depth_mm, 112, 100.0)[0]  # units of 100 mm
        m = cv2.resize((rel > 0.02).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        m = cv2.erode(m, np.ones((5, 5), np.uint8))
        if m.sum() > 0.02 * h * w:
            return m.astype(bool)
    m = np.zeros((h, w), bool)
    m[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
    return m


def _blob(rng, shape, cx, cy, r) -> np.ndarray:
    """An irregular filled blob of radius ~r around (cx, cy)."""
    ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    rad = r * rng.uniform(0.6, 1.3, len(ang))
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def synth_damage(rgb: np.ndarray, depth_mm: np.ndarray | None, rng: np.random.Generator,
                 kind: str | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """(rgb, depth) of a pristine view -> (damaged rgb, damaged depth, mask, kind)."""
    kind = kind or SYNTH_TYPES[int(rng.integers(len(SYNTH_TYPES)))]
    h, w = rgb.shape[:2]
    where = item_mask(depth_mm, (h, w))
    ys, xs = np.nonzero(where)
    i = int(rng.integers(len(xs)))
    cx, cy = float(xs[i]), float(ys[i])
    size = float(np.sqrt(where.sum()))  # the item's size in pixels
    img = rgb.astype(np.float32)
    dep = None if depth_mm is None else depth_mm.astype(np.float32).copy()
    has = dep > 0 if dep is not None else None
    if kind == "hole":
        m = _blob(rng, (h, w), cx, cy, size * rng.uniform(0.03, 0.09)) & where
        ring = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~m & where
        img[m] = img[m] * 0.1 + rng.uniform(5, 30)
        img[ring] *= 0.6
        if dep is not None:
            drop = rng.uniform(15, 60)
            dep[m & has] += drop
            if rng.random() < 0.3:
                dep[m] = 0.0
        mask = m | ring
    elif kind == "tear":
        line = np.zeros((h, w), np.uint8)
        pts = [(cx, cy)]
        ang = rng.uniform(0, np.pi)
        for _ in range(6):
            ang += rng.uniform(-0.6, 0.6)
            step = size * rng.uniform(0.04, 0.08)
            pts.append((pts[-1][0] + step * np.cos(ang), pts[-1][1] + step * np.sin(ang)))
        thick = max(2, int(round(size * rng.uniform(0.012, 0.03))))
        cv2.polylines(line, [np.array(pts, np.int32)], False, 1, thick)
        m = line.astype(bool) & where
        rim = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~m & where
        inner = np.array([230, 225, 205], np.float32) * rng.uniform(0.75, 1.05)
        img[m] = inner
        img[rim] *= 0.55
        if dep is not None:
            dep[m & has] += rng.uniform(2, 8)
        mask = m | rim
    elif kind == "spill":
        m = _blob(rng, (h, w), cx, cy, size * rng.uniform(0.06, 0.2)) & where
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(1.0, size * 0.01))[..., None]
        colour = rng.uniform(20, 200, 3).astype(np.float32)
        alpha = rng.uniform(0.35, 0.75)
        img = img * (1 - alpha * soft) + colour * alpha * soft
        mask = soft[..., 0] > 0.2
    elif kind == "crush":
        r = size * rng.uniform(0.12, 0.3)
        yy, xx = np.mgrid[:h, :w]
        bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)).astype(np.float32) * where
        if dep is not None:
            dep += np.where(has, bump * rng.uniform(4, 30), 0.0)
        crease = np.abs(cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3))
        img *= (1 - 0.4 * np.clip(crease * 5 - 1, 0, 1) * (bump > 0.3))[..., None]
        mask = bump > 0.25
    else:
        raise ValueError(f"unknown synthetic damage {kind!r} (known: {SYNTH_TYPES})")
    return np.clip(img, 0, 255).astype(np.uint8), dep, mask, kind
