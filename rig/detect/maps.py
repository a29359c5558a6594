"""Where the damage is: one fused evidence map per view, the size of the view's crop.

Each signal the scorer measured becomes a map in "times what a pristine view
shows" units, and the fused map is their per-pixel maximum, so a reader sees
the strongest evidence wherever it comes from:

* the supervised head's per-patch damage map (sigmoid, x 4: 0.25 = 1);
* the patch anomaly map (nearest-neighbour distance / the product's pristine
  level), upsampled from the patch grid;
* the registered height and colour residuals (registration.py), mapped back
  from the canonical grid onto the crop, each / its pristine level.

Values: 0 = no evidence, about 1 = as a pristine view, higher = more damaged.
``to_png16`` writes them as 16-bit PNG (``MAP_PNG_SCALE`` counts per unit) for
`rig eval --maps`, ``overlay`` paints them on the image where they exceed a
pristine view's level (reports, `rig predict`), and ``pixel_auroc`` measures
them against masks.
"""

from __future__ import annotations

import cv2
import numpy as np

from .registration import to_crop

MAP_PNG_SCALE = 4096.0   # 16-bit PNG counts per unit of evidence (saturates at 16)
DISC_GAIN = 4.0          # sigmoid of the head's patch logit x 4: a sure patch reads 4


def _up(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(np.asarray(m, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def evidence_map(view, shape: tuple[int, int], patch_scale: float = 1.0) -> np.ndarray:
    """(H, W) float32 fused evidence of one scored view (a ViewScore) on its crop of ``shape``."""
    parts = []
    dm = getattr(view, "damage_map", None)
    if dm is not None:
        parts.append(DISC_GAIN / (1.0 + np.exp(-np.clip(_up(np.squeeze(dm), shape), -30, 30))))
    if getattr(view, "heatmap", None) is not None:
        parts.append(_up(view.heatmap, shape))  # already / the product's pristine level
    res = getattr(view, "residual", None)
    if res is not None:
        h_ref, c_ref = getattr(view, "residual_refs", (1.0, 1.0))
        if np.isfinite(getattr(view, "height_residual", np.nan)):
            parts.append(to_crop(np.abs(res.height_map) / max(h_ref, 1e-3), res.warp, shape))
        parts.append(to_crop(res.color_map / max(c_ref, 1e-3), res.warp, shape))
    if not parts:
        return np.zeros(shape, np.float32)
    return np.maximum.reduce(parts).astype(np.float32)


OVERLAY_TOP = 4.0  # evidence at which the overlay is fully opaque red (4x a pristine view's)


def overlay(rgb: np.ndarray, m: np.ndarray, floor: float = 1.0, top: float = OVERLAY_TOP,
            max_alpha: float = 0.65) -> np.ndarray:
    """The image (HxWx3 uint8 RGB) with the evidence map ``m`` painted only where it exceeds
    ``floor`` (a pristine view's level): transparent there and below, yellow to red and more
    opaque up to ``top``. A pristine view comes back unchanged, not tinted blue all over."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"overlay: image must be HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
    if m.shape[:2] != rgb.shape[:2]:
        m = _up(m, rgb.shape[:2])
    strength = np.clip((np.nan_to_num(np.asarray(m, np.float32)) - floor) / max(top - floor, 1e-6), 0.0, 1.0)
    colour = np.empty(rgb.shape, np.float32)  # yellow (255, 220, 0) at the floor -> red (230, 0, 0) at the top
    colour[..., 0] = 255.0 - 25.0 * strength
    colour[..., 1] = 220.0 * (1.0 - strength)
    colour[..., 2] = 0.0
    alpha = np.where(strength > 0, 0.25 + (max_alpha - 0.25) * strength, 0.0)[..., None]
    return np.clip(rgb * (1.0 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def to_png16(m: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(m) * MAP_PNG_SCALE, 0, 65535).astype(np.uint16)


class PixelAuroc:
    """Pixel-level AUROC accumulated over many maps by histogram (bounded memory)."""

    def __init__(self, bins: int = 4096, top: float = 16.0):
        self.edges = np.linspace(0.0, top, bins + 1)
        self.pos = np.zeros(bins + 2, np.int64)
        self.neg = np.zeros(bins + 2, np.int64)

    def add(self, m: np.ndarray, mask: np.ndarray | None) -> None:
        truth = np.zeros(m.shape, bool) if mask is None else (mask > 0)
        idx = np.digitize(np.nan_to_num(m).ravel(), self.edges)
        self.pos += np.bincount(idx[truth.ravel()], minlength=self.pos.size)
        self.neg += np.bincount(idx[~truth.ravel()], minlength=self.neg.size)

    def value(self) -> float:
        p, n = self.pos.sum(), self.neg.sum()
        if p == 0 or n == 0:
            return float("nan")
        # P(score_pos > score_neg) + 0.5 P(tie), bin by bin
        neg_below = np.cumsum(self.neg) - self.neg
        return float((self.pos * (neg_below + 0.5 * self.neg)).sum() / (p * n))
