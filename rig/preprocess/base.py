"""The preprocessing contract and the argument checks every backend shares."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..foundation.errors import DeviceError

MAX_SIDE = 4096  # the kernels' exact-integer coordinate maths holds below this


@runtime_checkable
class Preprocessor(Protocol):
    """Crop + bilinear resize (cv2.INTER_LINEAR semantics, clamped to the crop) + normalise.

    ``run`` writes ``out[start+i, 0:3] = ((resize(crop_i) / 255) - mean) / std`` for RGB
    uint8 frames; ``run_float`` writes ``out[start+i, channel] = resize(crop_i) * scale +
    offset`` for float32 planes. ROIs are ``(x0, y0, x1, y1)`` with x1/y1 exclusive.
    ``out`` is a C-contiguous float32 or float16 (N, C, size, size) array; nothing
    outside the written slots is touched. ``align`` registers a depth frame to the
    colour camera on the same device as the preprocessing (kernel or CPU reference;
    identical results, tests/kernels); with ``window`` (x0, y0, x1, y1) only that
    part of the colour grid, identical to the full frame's result there.
    """

    name: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def run(self, images: list[np.ndarray], rois: list[tuple[int, int, int, int]],
            out: np.ndarray, start: int = 0) -> None: ...

    def run_float(self, planes: list[np.ndarray], rois: list[tuple[int, int, int, int]],
                  out: np.ndarray, start: int, channel: int, scale: float = 1.0,
                  offset: float = 0.0) -> None: ...

    def align(self, depth: np.ndarray, depth_K, color_K, color_size, T_color_depth,
              depth_units_m: float, window=None) -> np.ndarray: ...


def check_normalisation(size: int, mean, std) -> tuple[int, tuple, tuple]:
    size = int(size)
    if not 1 <= size <= MAX_SIDE:
        raise DeviceError(f"preprocess size must be in 1..{MAX_SIDE}, got {size}")
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise DeviceError(f"mean and std need 3 values each (R, G, B), got {mean} and {std}")
    if any(s <= 0 for s in std):
        raise DeviceError(f"std values must be positive, got {std}")
    return size, mean, std


def scale_bias(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """((v/255) - m)/s rearranged as v * scale + bias, in float32 (what the kernel uses)."""
    m = np.asarray(mean, np.float64)
    s = np.asarray(std, np.float64)
    return (1.0 / (255.0 * s)).astype(np.float32), (-m / s).astype(np.float32)


def check_batch(images: list[np.ndarray], rois, out: np.ndarray, start: int, size: int, *,
                rgb: bool, channel: int | None = None) -> list[tuple[int, int, int, int]]:
    """Validate a call; return the ROIs as int tuples. Messages name the offending item."""
    if len(images) != len(rois):
        raise DeviceError(f"preprocess: {len(images)} images but {len(rois)} ROIs (one image per ROI)")
    if not isinstance(out, np.ndarray) or out.ndim != 4 or out.dtype not in (np.float32, np.float16):
        raise DeviceError("preprocess: out must be a float32 or float16 (N, C, size, size) array, got "
                          f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if not out.flags.c_contiguous:
        raise DeviceError("preprocess: out must be C-contiguous")
    n, c, h, w = out.shape
    if h != size or w != size:
        raise DeviceError(f"preprocess: out is {h}x{w} per channel, the preprocessor makes {size}x{size}")
    if rgb and c < 3:
        raise DeviceError(f"preprocess: out has {c} channels, RGB needs at least 3")
    if channel is not None and not 0 <= channel < c:
        raise DeviceError(f"preprocess: channel {channel} is outside out's {c} channels")
    if start < 0 or start + len(rois) > n:
        raise DeviceError(f"preprocess: slots {start}..{start + len(rois) - 1} do not fit a batch of {n}")
    clean = []
    for i, (img, roi) in enumerate(zip(images, rois)):
        if rgb:
            ok = (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
                  and img.shape[2] == 3 and img.strides[2] == 1 and img.strides[1] == 3)
            what = "HxWx3 uint8 with packed pixels"
        else:
            ok = (isinstance(img, np.ndarray) and img.dtype == np.float32 and img.ndim == 2
                  and img.strides[1] == 4 and img.strides[0] % 4 == 0)
            what = "HxW float32 with contiguous rows"
        if not ok:
            raise DeviceError(f"preprocess: image {i} must be {what}, got "
                              f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
        if img.strides[0] <= 0:
            raise DeviceError(f"preprocess: image {i} has a negative row stride; pass a copy")
        try:
            x0, y0, x1, y1 = (int(v) for v in roi)
        except (TypeError, ValueError):
            raise DeviceError(f"preprocess: ROI {i} must be (x0, y0, x1, y1), got {roi!r}") from None
        ih, iw = img.shape[:2]
        if not (0 <= x0 < x1 <= iw and 0 <= y0 < y1 <= ih):
            raise DeviceError(f"preprocess: ROI {i} {(x0, y0, x1, y1)} is not a non-empty box inside "
                              f"its {iw}x{ih} image")
        if x1 - x0 > MAX_SIDE or y1 - y0 > MAX_SIDE:
            raise DeviceError(f"preprocess: ROI {i} is larger than {MAX_SIDE} px")
        clean.append((x0, y0, x1, y1))
    return clean
