"""Reframing: cut a dataset view that is much larger than its item down to the trigger's crop.

On the rig every view is a crop around the item the trigger found (its belt-frame box
projected into the camera, padded by ``ROI_PAD`` on each side). A dataset may hold
whole camera images instead (a 320x240 frame in which the item covers a few percent):
resized whole to the network's input, the item gets a few dozen pixels and the damage
a handful. :func:`item_window` finds the item in such a view and returns the square,
padded crop the trigger would have cut, so that training, evaluation and enrollment
see views framed as the rig frames them.

Finding the item:
- with depth: height above the belt plane (fitted on the image's border ring, as the
  network's depth input does); a pixel is item where it stands ``4 sigma`` above the
  belt (sigma: the ring's robust spread) and at least 3 mm, or where the mean over
  k x k pixels (k: a 16th of the image, at least 7) of heights capped at 3 mm stands
  1.5 mm, or 6 sigma / k on a noisier sensor (thin cards and mailers from 2 mm);
- without usable depth: colour distance from the belt (the ring's median, in Lab)
  above the ring's own 99th percentile distance (belt texture stays under it);
- a 3x3 opening drops lone pixels; every connected part of at least 0.2 % of the image
  joins the box (escaped contents and spills lie beside the item).

A view is reframed only when the padded square covers less than ``REFRAME_BELOW`` of
the image: a view that already is a crop stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..foundation.errors import ModelError
from ..foundation.geometry import ROI_MIN_PX, ROI_PAD
from .reference import belt_plane

REFRAME_BELOW = 0.5       # reframe only if the padded square covers less than this share of the image
MIN_PART_SHARE = 0.002    # a connected part smaller than this share of the image is noise
MIN_HEIGHT_MM = 3.0
THIN_MEAN_MM = 1.5
MIN_DEPTH_SHARE = 0.2     # below this share of valid depth pixels the colour rule finds the item


@dataclass(frozen=True)
class Window:
    """A crop of a view: rows y0:y1, columns x0:x1 of an image of ``shape`` (H, W)."""

    y0: int
    y1: int
    x0: int
    x1: int
    shape: tuple[int, int]

    def cut(self, img: np.ndarray | None) -> np.ndarray | None:
        """The window of ``img`` (an image the view's size; other sizes are scaled to it), as a
        contiguous array; None stays None."""
        if img is None:
            return None
        h, w = img.shape[:2]
        if (h, w) == tuple(self.shape):
            return np.ascontiguousarray(img[self.y0:self.y1, self.x0:self.x1])
        sy, sx = h / self.shape[0], w / self.shape[1]
        y0, y1 = int(round(self.y0 * sy)), max(int(round(self.y1 * sy)), int(round(self.y0 * sy)) + 1)
        x0, x1 = int(round(self.x0 * sx)), max(int(round(self.x1 * sx)), int(round(self.x0 * sx)) + 1)
        return np.ascontiguousarray(img[y0:y1, x0:x1])

    def paste(self, crop_map: np.ndarray, fill: float | None = None) -> np.ndarray:
        """A map of the window placed back into the view's full size; outside it ``fill``
        (default: the map's minimum — nothing there was looked at)."""
        h, w = self.shape
        fill = float(np.min(crop_map)) if fill is None else fill
        out = np.full((h, w), fill, np.float32)
        ch, cw = self.y1 - self.y0, self.x1 - self.x0
        if crop_map.shape[:2] != (ch, cw):
            crop_map = cv2.resize(np.asarray(crop_map, np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR)
        out[self.y0:self.y1, self.x0:self.x1] = crop_map
        return out


def _ring(shape: tuple[int, int]) -> np.ndarray:
    """The image's border ring (a 16th of its shorter side wide): belt around the item."""
    ring = np.zeros(shape, bool)
    w = max(2, min(shape) // 16)
    ring[:w], ring[-w:], ring[:, :w], ring[:, -w:] = True, True, True, True
    return ring


def _height_mask(depth_mm: np.ndarray) -> np.ndarray | None:
    d = depth_mm.astype(np.float32)
    valid = d > 0
    if valid.mean() < MIN_DEPTH_SHARE:
        return None
    belt = belt_plane(d, valid)
    h = np.where(valid, belt - d, 0.0).astype(np.float32)
    rv = h[_ring(d.shape) & valid]
    if rv.size < 20:
        return None
    sigma = 1.4826 * float(np.median(np.abs(rv - np.median(rv))))
    k = max(7, (min(d.shape) // 16) | 1)  # thin items: a mean over k x k pixels (noise / k)
    # each height capped first (as the trigger does): a tall item's edge does not raise the belt's mean
    num = cv2.blur(np.clip(h, None, 2.0 * THIN_MEAN_MM) * valid, (k, k))
    den = cv2.blur(valid.astype(np.float32), (k, k))
    local_mean = num / np.maximum(den, 1e-3)
    tall = valid & (h > max(MIN_HEIGHT_MM, 4.0 * sigma))
    thin = (den > 0.3) & (local_mean > max(THIN_MEAN_MM, 6.0 * sigma / k))
    return tall | thin


def _colour_mask(rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (5, 5), 0), cv2.COLOR_RGB2Lab).astype(np.float32)
    ring = _ring(rgb.shape[:2])
    belt = np.median(lab[ring], axis=0)
    dist = np.linalg.norm(lab - belt, axis=2)
    return dist > max(12.0, 1.2 * float(np.percentile(dist[ring], 99)))


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) around every part of the mask that is not noise, or None."""
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= MIN_PART_SHARE * mask.size]
    if not keep:
        return None
    x0 = min(stats[i, cv2.CC_STAT_LEFT] for i in keep)
    y0 = min(stats[i, cv2.CC_STAT_TOP] for i in keep)
    x1 = max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in keep)
    y1 = max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in keep)
    return int(y0), int(y1), int(x0), int(x1)


def check_framing(framing) -> dict | None:
    """A model card's ``input.reframe`` ({pad, below} or absent) checked; ModelError names the fault."""
    if framing is None:
        return None
    if not isinstance(framing, dict) or set(framing) != {"pad", "below"}:
        raise ModelError(f"model card: input.reframe must be a mapping with pad and below, got {framing!r}")
    try:
        pad, below = float(framing["pad"]), float(framing["below"])
    except (TypeError, ValueError):
        raise ModelError(f"model card: input.reframe pad and below must be numbers, got {framing!r}") from None
    if not (0.0 <= pad <= 2.0 and 0.0 < below <= 1.0):
        raise ModelError(f"model card: input.reframe needs 0 <= pad <= 2 and 0 < below <= 1, got {framing!r}")
    return {"pad": pad, "below": below}


def framing_default() -> dict:
    """What ``rig train`` records in a new model's card."""
    return {"pad": float(ROI_PAD), "below": REFRAME_BELOW}


def window_for(rgb: np.ndarray, depth_mm: np.ndarray | None, framing: dict | None) -> Window | None:
    """The item's window under a card's ``framing`` ({pad, below}; None: no reframing)."""
    return None if not framing else item_window(rgb, depth_mm, float(framing["pad"]), float(framing["below"]))


def frame(rgb: np.ndarray, depth_mm: np.ndarray | None, framing: dict | None):
    """(rgb, depth) cut to the item's window under ``framing`` (None or no window: unchanged)."""
    w = window_for(rgb, depth_mm, framing)
    return (rgb, depth_mm) if w is None else (w.cut(rgb), w.cut(depth_mm))


def item_window(rgb: np.ndarray, depth_mm: np.ndarray | None, pad: float = ROI_PAD,
                reframe_below: float = REFRAME_BELOW) -> Window | None:
    """The trigger-style crop of a view much larger than its item, or None to keep the view whole.

    ``depth_mm`` (0 = no data) may be None or another size than ``rgb`` (scaled to it)."""
    h, w = rgb.shape[:2]
    mask = None
    if depth_mm is not None and depth_mm.ndim == 2 and min(depth_mm.shape) >= 16:
        mask = _height_mask(depth_mm)
        if mask is not None and mask.shape != (h, w):
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    colour = _colour_mask(rgb)
    box = _box(colour if mask is None else (mask | colour))
    if box is None:
        return None
    y0, y1, x0, x1 = box
    side = max(max(y1 - y0, x1 - x0) * (1.0 + 2.0 * pad), ROI_MIN_PX)  # the trigger's smallest crop
    if side * side >= reframe_below * h * w:
        return None
    side_y, side_x = int(round(min(side, h))), int(round(min(side, w)))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    top = int(round(min(max(cy - side_y / 2.0, 0), h - side_y)))
    left = int(round(min(max(cx - side_x / 2.0, 0), w - side_x)))
    return Window(top, top + side_y, left, left + side_x, (h, w))
