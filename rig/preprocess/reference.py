"""CPU reference preprocessing of one view crop: the definition the GPU kernel must match.

RGB: resize the crop to S x S (OpenCV bilinear, ``INTER_LINEAR``), scale to
[0, 1], subtract the ImageNet mean and divide by the std, HWC -> CHW.
Depth: one extra channel of *relative height* — how far each pixel stands out
from the belt, in units of ``height_scale_mm``. The belt is the plane
z = a*u + b*v + c fitted (least squares, one outlier-rejection pass) to the
valid depth on the crop's border ring, which is belt around the item. For a
pinhole camera, 1/z of a plane is linear in the pixel coordinates, so the fit
is on 1/z: a tilted side camera's belt is flat in those terms. Where the border holds too little
depth, the plane is flat at the crop's far percentile. Depth is resized with
nearest neighbour so that "no data" (0) never blends with real readings;
pixels without depth read 0 (= belt level). Height rather than raw camera
distance, because it does not change with the camera's mounting and shows a
crushed top as a dip.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..foundation.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FAR_PERCENTILE = 95.0  # the crop's far plane: robust to a few far outliers


def _check_rgb(rgb: np.ndarray, where: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ModelError(f"{where}: RGB crop must be an (H, W, 3) uint8 array, got {got}")
    if min(rgb.shape[:2]) < 8:
        raise ModelError(f"{where}: RGB crop {rgb.shape[:2]} is too small (need at least 8x8 px)")


def normalize_rgb(rgb: np.ndarray, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  where: str = "view") -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32, ImageNet-normalised."""
    _check_rgb(rgb, where)
    # resized as float32, exactly like the rig's preprocessors (rig/preprocess): uint8 resizing
    # rounds every pixel and would put eval ~0.01 away from the running rig
    img = cv2.resize(rgb.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    img *= np.float32(1.0 / 255.0)
    img -= np.asarray(mean, np.float32)
    img /= np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def relative_height(depth_mm: np.ndarray | None, size: int, scale_mm: float,
                    where: str = "view") -> np.ndarray:
    """(H, W) depth in mm (0 = no data) or None -> (1, size, size) float32 relative height."""
    out = np.zeros((1, size, size), np.float32)
    if depth_mm is None:
        return out
    if not isinstance(depth_mm, np.ndarray) or depth_mm.ndim != 2:
        got = f"{depth_mm.dtype} {depth_mm.shape}" if isinstance(depth_mm, np.ndarray) else type(depth_mm)
        raise ModelError(f"{where}: depth must be an (H, W) array in mm, got {got}")
    d = cv2.resize(depth_mm.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
    valid = d > 0
    if not valid.any():
        return out
    h = np.where(valid, (belt_plane(d, valid) - d) / np.float32(scale_mm), 0.0)
    out[0] = np.clip(h, -1.0, 4.0)
    return out


DETAIL_SCALE_MM = 20.0   # the detail channel's unit
DETAIL_SIGMA = 1.0 / 28  # the smooth surface's Gaussian, as a fraction of the input size


def height_detail_valid(depth_mm: np.ndarray | None, size: int, scale_mm: float,
                        where: str = "view") -> np.ndarray:
    """(H, W) depth in mm (0 = no data) or None -> (3, size, size) float32 depth channels.

    0. relative height above the belt / ``scale_mm`` (as :func:`relative_height`);
    1. *detail*: height minus a smooth surface fitted to the valid heights (a
       normalised Gaussian convolution, sigma = size/28), / ``DETAIL_SCALE_MM``,
       clipped to [-2, 2]: a dent, a hole or a missing unit stands out of a
       product 18 or 320 mm tall alike;
    2. *validity*: 1 where the sensor measured depth, 0 where it did not — so
       missing depth (item edges, dark or shiny surfaces) never reads as belt.
    Channels 0 and 1 are 0 where there is no depth.
    """
    out = np.zeros((3, size, size), np.float32)
    if depth_mm is None:
        return out
    out[0:1] = relative_height(depth_mm, size, scale_mm, where)
    d = cv2.resize(depth_mm.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
    valid = (d > 0).astype(np.float32)
    if not valid.any():
        return out
    h = out[0] * np.float32(scale_mm)  # mm, 0 where invalid
    sigma = max(1.0, DETAIL_SIGMA * size)
    num = cv2.GaussianBlur(h * valid, (0, 0), sigma)
    den = cv2.GaussianBlur(valid, (0, 0), sigma)
    smooth = num / np.maximum(den, 1e-3)
    out[1] = np.where(valid > 0, np.clip((h - smooth) / DETAIL_SCALE_MM, -2.0, 2.0), 0.0)
    out[2] = valid
    return out


def belt_plane(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) depth of the belt plane under the crop, fitted on the crop's border ring."""
    rows, cols = d.shape
    ring = np.zeros_like(valid)
    w = max(2, min(rows, cols) // 16)
    ring[:w], ring[-w:], ring[:, :w], ring[:, -w:] = True, True, True, True
    sel = ring & valid
    if sel.sum() < 20:
        return np.full(d.shape, np.percentile(d[valid], FAR_PERCENTILE), np.float32)
    vv, uu = np.nonzero(sel)
    z = 1.0 / d[sel].astype(np.float64)
    a = np.stack([uu, vv, np.ones_like(uu)], axis=1).astype(np.float64)
    coef = np.linalg.lstsq(a, z, rcond=None)[0]
    resid = np.abs(a @ coef - z)
    # drop the item where it touches the border (1e-6 of 1/z is ~0.4 mm at 600 mm)
    keep = resid <= max(3.0 * np.median(resid), 5e-6)
    if keep.sum() >= 10:
        coef = np.linalg.lstsq(a[keep], z[keep], rcond=None)[0]
    v, u = np.mgrid[:rows, :cols]
    inv = coef[0] * u + coef[1] * v + coef[2]
    return (1.0 / np.maximum(inv, 1e-6)).astype(np.float32)
