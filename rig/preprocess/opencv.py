"""The CPU reference path: cv2.resize on float32 crops, then numpy normalisation.

Resizing in float32 (not uint8) is deliberate: cv2.resize on uint8 rounds each
pixel to an integer (and uses 11-bit fixed-point weights), which would put the
reference ~0.01 away from the kernel's float result after normalisation.
"""

from __future__ import annotations

import numpy as np

from ...calibration.align import align_depth_to_color
from . import PREPROCESS
from .base import check_batch, check_normalisation, scale_bias


@PREPROCESS.register("opencv")
class OpenCVPreprocessor:
    name = "opencv"

    def __init__(self, size: int, mean, std):
        import cv2

        self._cv2 = cv2
        self.size, self.mean, self.std = check_normalisation(size, mean, std)
        self._scale, self._bias = scale_bias(self.mean, self.std)

    def run(self, images, rois, out, start: int = 0) -> None:
        cv2 = self._cv2
        boxes = check_batch(images, rois, out, start, self.size, rgb=True)
        for i, (img, (x0, y0, x1, y1)) in enumerate(zip(images, boxes)):
            crop = img[y0:y1, x0:x1].astype(np.float32)
            r = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            r *= self._scale
            r += self._bias
            out[start + i, :3] = r.transpose(2, 0, 1)

    def align(self, depth, depth_K, color_K, color_size, T_color_depth, depth_units_m, window=None):
        """Depth registered to the colour camera: the CPU reference (calibration/align.py)."""
        return align_depth_to_color(depth, depth_K, color_K, color_size, T_color_depth, depth_units_m,
                                    window=window)

    def run_float(self, planes, rois, out, start: int, channel: int, scale: float = 1.0,
                  offset: float = 0.0) -> None:
        cv2 = self._cv2
        boxes = check_batch(planes, rois, out, start, self.size, rgb=False, channel=channel)
        for i, (plane, (x0, y0, x1, y1)) in enumerate(zip(planes, boxes)):
            r = cv2.resize(plane[y0:y1, x0:x1], (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            r *= np.float32(scale)
            r += np.float32(offset)
            out[start + i, channel] = r
