"""Anomaly against a product's pristine references.

Patch anomaly (PatchCore-style): each query patch feature's distance to its
nearest neighbour in the SKU's memory bank of reference patches. Items on a
belt are not aligned with their references, so the bank is a *bag* of patches
from every reference and pose: position does not matter, content does.
Global anomaly: 1 - the best cosine similarity of the query's pooled trunk
descriptor to the SKU's reference descriptors; it sees what no single patch
shows, such as a set with a unit missing.
"""

from __future__ import annotations

import numpy as np


def nn_distance(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(Q, P) queries vs (K, P) bank -> (Q,) Euclidean distance to the nearest bank row."""
    q = query.astype(np.float32, copy=False)
    b = bank.astype(np.float32, copy=False)
    d2 = (q * q).sum(1)[:, None] - 2.0 * (q @ b.T) + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def border_ring(h: int, w: int) -> np.ndarray:
    ring = np.zeros((h, w), bool)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
    return ring.ravel()


def patch_map(patch_features: np.ndarray, bank: np.ndarray, own_border: bool = True) -> np.ndarray:
    """(P, h, w) patch features of one view -> (h, w) nearest-neighbour distance map.

    With ``own_border`` the view's own border ring (the belt around the item
    in a square ROI) counts as normal too: belts differ from item to item and
    are not the product's concern.
    """
    p, h, w = patch_features.shape
    q = patch_features.reshape(p, h * w).T
    if own_border and h > 2 and w > 2:
        bank = np.concatenate([bank, q[border_ring(h, w)]])
    return nn_distance(q, bank).reshape(h, w)


def map_score(amap: np.ndarray, top: int = 3) -> float:
    """Mean of the `top` highest cells: a maximum that one noisy cell cannot set alone."""
    flat = np.sort(amap.ravel())[::-1]
    return float(flat[: max(1, min(top, flat.size))].mean())


def global_anomaly(desc: np.ndarray, ref_descs: np.ndarray) -> float:
    """1 - max cosine similarity of an L2-normalised descriptor to the references'."""
    return float(1.0 - np.max(ref_descs.astype(np.float32) @ desc.astype(np.float32)))


def coreset(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of a greedy k-center subset (at most k rows) that covers the features.

    Keeps rare patches that random subsampling would drop, which matters for
    anomaly scoring: a pristine but rare patch must stay in the bank.
    """
    n = len(features)
    if n <= k:
        return np.arange(n)
    x = features.astype(np.float32)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dist = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, ((x - x[i]) ** 2).sum(1))
    return np.asarray(chosen)
