"""A tiny synthetic dataset with known damage, for tests and smoke runs of the model code.

Not the belt simulator (tools/sim): flat textured products on a grey belt,
two views, depth as a box height map, damage drawn where the mask says. Its
point is known ground truth in seconds: every damaged pixel is in the mask,
every printed-damage item carries a hole-like print that its references carry
too, and broken sets are 2x2 sets with one unit missing.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from damage_rig.rig.dataset import DatasetWriter, Item, read_dataset

BELT_MM = 600.0
VIEWS = ("top", "side")


def _sku_style(k: int) -> dict:
    rng = np.random.default_rng(1000 + k)
    return {"color": rng.integers(60, 230, 3), "stripe": rng.integers(40, 220, 3),
            "period": int(rng.integers(6, 16)), "set": k % 3 == 2, "printed": k % 4 == 1,
            "height": float(rng.uniform(40, 120))}


def render(style: dict, size: int, rng: np.random.Generator, damage: list[str] | None = None,
           view: str = "top"):
    """(rgb, depth_mm, mask) of one product, optionally damaged."""
    damage = damage or []
    rgb = np.full((size, size, 3), 110, np.uint8)
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-8, 9, (size, size, 1)), 0, 255).astype(np.uint8)
    height = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.uint8)
    c = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    half = size * (0.30 if view == "top" else 0.26)
    ang = rng.uniform(0, 180)
    units = [(0.0, 0.0, 1.0)]
    if style["set"]:
        units = [(dx, dy, 0.45) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]
        if "broken_set" in damage:
            units.pop(int(rng.integers(len(units))))
    rot = cv2.getRotationMatrix2D((0, 0), ang, 1.0)[:, :2]
    prod = np.zeros((size, size), np.uint8)
    for dx, dy, s in units:
        ctr = c + rot @ np.array([dx, dy]) * half
        box = cv2.boxPoints(((float(ctr[0]), float(ctr[1])), (2 * half * s, 2 * half * s * 0.8), ang))
        cv2.fillPoly(prod, [box.astype(np.int32)], 255)
    yy, xx = np.mgrid[:size, :size]
    u = (xx - c[0]) * np.cos(np.radians(ang)) + (yy - c[1]) * np.sin(np.radians(ang))
    stripes = (np.floor(u / style["period"]) % 2).astype(bool)
    inside = prod > 0
    rgb[inside] = np.where(stripes[inside, None], style["stripe"], style["color"]).astype(np.uint8)
    height[inside] = style["height"]
    if style["printed"]:  # a hole-like dark print that belongs to the product
        p = (c + rot @ np.array([0.3, -0.2]) * half).astype(int)
        cv2.ellipse(rgb, (int(p[0]), int(p[1])), (int(half * 0.18), int(half * 0.12)), ang, 0, 360,
                    (25, 20, 20), -1)
    for kind in damage:
        where = c + rot @ rng.uniform(-0.45, 0.45, 2) * half
        w = (int(where[0]), int(where[1]))
        m = np.zeros_like(mask)
        r = int(half * rng.uniform(0.15, 0.25))
        if kind == "hole":
            cv2.circle(m, w, r, 255, -1)
            rgb[m > 0] = (15, 15, 15)
            height[m > 0] = 0.0
        elif kind == "tear":
            pts = np.array([w] + [(w[0] + int(rng.integers(-r, r)), w[1] + int(rng.integers(-r, r)))
                                  for _ in range(4)], np.int32)
            cv2.polylines(m, [pts], False, 255, max(2, r // 4))
            rgb[m > 0] = (235, 230, 215)
        elif kind == "crush":
            cv2.circle(m, w, int(r * 1.5), 255, -1)
            height[m > 0] *= 0.4
            rgb[m > 0] = (rgb[m > 0] * 0.6).astype(np.uint8)
        elif kind == "spill":
            cv2.ellipse(m, w, (int(r * 1.4), r), float(rng.uniform(0, 180)), 0, 360, 255, -1)
            rgb[m > 0] = (rgb[m > 0] * 0.3 + np.array([30, 120, 200]) * 0.7).astype(np.uint8)
        elif kind == "deconstruction":
            cv2.rectangle(m, (w[0] - r, w[1] - r), (w[0] + r, w[1] + r), 255, -1)
            rgb[m > 0] = (150, 120, 80)
            height[m > 0] *= 1.3
        mask |= m & prod if kind != "hole" else m
    depth = np.where(height > 0, BELT_MM - height, BELT_MM).astype(np.float32)
    depth += rng.normal(0, 0.8, depth.shape).astype(np.float32)
    return rgb, depth, mask


def make_dataset(out: str | Path, *, n_skus: int = 4, n_train: int = 120, n_val: int = 60,
                 n_test: int = 60, damaged_share: float = 0.35, size: int = 112, n_refs: int = 4,
                 seed: int = 0, views=VIEWS, depth: bool = True):
    """Write the synthetic dataset to OUT and return it read back."""
    rng = np.random.default_rng(seed)
    styles = [_sku_style(k) for k in range(n_skus)]
    kinds = ["crush", "tear", "hole", "deconstruction", "spill"]
    with DatasetWriter(out, "synthetic", list(views), 1.0, notes="models.synth test data") as w:
        for k, st in enumerate(styles):
            sku = f"SKU{k:02d}"
            for r in range(n_refs):
                rgb, _, _ = render(st, size, rng, view=views[r % len(views)])
                w.add_reference(sku, f"ref{r}", rgb)
        counter = 0
        for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
            for _ in range(count):
                k = int(rng.integers(n_skus))
                st = styles[k]
                damaged = rng.random() < damaged_share
                damage = []
                if damaged:
                    damage = ["broken_set"] if st["set"] and rng.random() < 0.5 else [str(rng.choice(kinds))]
                iid = f"it{counter:05d}"
                counter += 1
                vps = {}
                for v in views:
                    rgb, dep, mask = render(st, size, rng, damage, v)
                    vps[v] = w.write_view(iid, v, rgb, dep if depth else None, mask if damaged else None)
                w.add_item(Item(iid, f"SKU{k:02d}", split, "damaged" if damaged else "ok", damage,
                                bool(st["printed"]), vps))
    return read_dataset(out)
