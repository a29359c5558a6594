"""How much of each camera's image the board's corners have covered so far, while capturing.

:class:`CoverageTracker` detects the ChArUco board in each still as it is
taken and accumulates the corners per camera; the figures are the same as
the calibration report's (:func:`calibration.quality.coverage`: the share of
the 8x6 grid cells with at least one corner), so the technician stops
capturing when `rig calibrate` would be satisfied. :meth:`picture` draws, per
camera, the latest still with green cells (covered), red cells (still empty),
every corner so far and this still's corners.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .board import BoardSpec, make_board, make_detector
from .detect import MIN_CORNERS, detect_view
from .quality import GRID, coverage

PANEL_W = 480


@dataclass
class _Seen:
    corners: np.ndarray


class CoverageTracker:
    def __init__(self, spec: BoardSpec):
        self.spec = spec
        self.board = make_board(spec)
        self.detector = make_detector(self.board)
        self.views: dict[str, list[_Seen]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.last: dict[str, np.ndarray] = {}

    def add(self, camera: str, image: np.ndarray) -> int:
        """Detect the board in one still (RGB or grey); returns the corners found (counted when >= MIN_CORNERS)."""
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        self.sizes[camera] = (grey.shape[1], grey.shape[0])
        self.views.setdefault(camera, [])
        corners, ids, _, _ = detect_view(self.detector, self.board, grey)
        self.last[camera] = corners
        if len(ids) >= MIN_CORNERS:
            self.views[camera].append(_Seen(corners))
        return len(ids)

    def summary(self, camera: str) -> dict:
        c = coverage(self.views.get(camera, []), self.sizes[camera])
        return {"fraction": c["fraction"], "cells": c["cells"], "views": len(self.views.get(camera, []))}

    def picture(self, images: dict[str, np.ndarray]) -> np.ndarray:
        """BGR image: one panel per camera side by side."""
        panels = [self._panel(name, img) for name, img in images.items()]
        h = max(p.shape[0] for p in panels)
        panels = [cv2.copyMakeBorder(p, 0, h - p.shape[0], 0, 6, cv2.BORDER_CONSTANT, value=(40, 40, 40))
                  for p in panels]
        return np.hstack(panels)

    def _panel(self, camera: str, image: np.ndarray) -> np.ndarray:
        w, h = self.sizes.get(camera, (image.shape[1], image.shape[0]))
        s = PANEL_W / w
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        base = cv2.cvtColor(cv2.resize(grey, (PANEL_W, round(h * s)), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_GRAY2BGR)
        base = (base * 0.6).astype(np.uint8)
        summ = self.summary(camera) if camera in self.sizes else {"fraction": 0.0, "cells": [], "views": 0}
        cells = np.array(summ["cells"]) if summ["cells"] else np.zeros(GRID[::-1], int)
        tint = base.copy()
        gx, gy = GRID
        for j in range(gy):
            for i in range(gx):
                p0 = (round(i * PANEL_W / gx), round(j * base.shape[0] / gy))
                p1 = (round((i + 1) * PANEL_W / gx) - 1, round((j + 1) * base.shape[0] / gy) - 1)
                cv2.rectangle(tint, p0, p1, (60, 170, 60) if cells[j, i] else (50, 50, 200), -1)
                cv2.rectangle(base, p0, p1, (200, 200, 200), 1)
        base = cv2.addWeighted(base, 0.7, tint, 0.3, 0)
        for v in self.views.get(camera, []):
            for x, y in v.corners * s:
                cv2.circle(base, (round(x), round(y)), 2, (0, 220, 255), -1)
        for x, y in self.last.get(camera, np.zeros((0, 2))) * s:
            cv2.circle(base, (round(x), round(y)), 4, (255, 160, 0), 1)
        text = f"{camera}: {summ['fraction']:.0%} covered, {summ['views']} stills with the board"
        cv2.rectangle(base, (0, 0), (PANEL_W, 26), (30, 30, 30), -1)
        cv2.putText(base, text, (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        return base
