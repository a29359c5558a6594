"""Synthetic gallery entries with known identity, for the reference store, cache and ANN tests."""

from __future__ import annotations

import numpy as np
from damage_rig.rig.detect.gallery import SkuEntry
from damage_rig.rig.detect.registration import RefSet


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_entry(rng, *, centre: np.ndarray | None = None, dim: int = 128, refs: int = 16, bank: int = 256,
                    geo_views: tuple[str, ...] = (), spread: float = 0.15) -> SkuEntry:
    """A product whose embeddings lie around ``centre`` (random when None)."""
    c = unit(rng.standard_normal(dim)) if centre is None else unit(centre)
    emb = unit(c + spread * rng.standard_normal((refs, dim)) / np.sqrt(dim) * 4).astype(np.float16)
    desc = unit(rng.standard_normal((refs, 152))).astype(np.float16)
    bank_a = rng.standard_normal((bank, 64)).astype(np.float16)
    geo = {}
    for v in geo_views:
        h = (rng.standard_normal((4, 40, 40)) * 2 + 50).astype(np.float16)
        rgb = rng.integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
        fg = rng.random((4, 40, 40)) > 0.3
        geo[v] = RefSet(h, rgb, fg, 0.3, (1.5, 2.5))
    return SkuEntry(emb, desc, bank_a, rng.integers(0, refs, bank).astype(np.int16), 30.0, 0.04,
                    [f"ref{i}.png" for i in range(refs)], 0.5, 0.25, rng.standard_normal(refs).astype(np.float32),
                    geo)


def same_entry(a: SkuEntry, b: SkuEntry) -> bool:
    arrays = ("embeddings", "descs", "bank", "bank_src", "ref_discs")
    if not all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays):
        return False
    if (a.patch_scale, a.global_scale, a.ref_disc, a.ref_disc_base, a.sources) != \
            (b.patch_scale, b.global_scale, b.ref_disc, b.ref_disc_base, b.sources):
        return False
    if set(a.geo) != set(b.geo):
        return False
    return all(np.array_equal(a.geo[v].height, b.geo[v].height) and np.array_equal(a.geo[v].rgb, b.geo[v].rgb)
               and np.array_equal(a.geo[v].fg, b.geo[v].fg) and a.geo[v].scale == b.geo[v].scale
               for v in a.geo)
