"""The bench PNG, drawn with OpenCV (already a dependency): per-stage latency histogram + CDF, sweep curve.

Each stage gets a panel: a histogram of its durations (grey bars, linear ms
axis from 0 to the stage's max) with the CDF over it (blue line, 0-1 on the
same height), and its p50/p99 marked. The last row shows the sweep: p99
end-to-end latency per measured rate (line) and late decisions (red bars);
green dots were sustained, red ones were not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...rig.foundation.errors import RigError

PANEL_W, PANEL_H = 330, 210
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 44, 12, 28, 30
WHITE, BLACK, GREY, BLUE, RED, GREEN = (255, 255, 255), (0, 0, 0), (170, 170, 170), (200, 90, 20), (40, 40, 220), \
    (40, 160, 40)


def _text(img, s, x, y, scale=0.4, color=BLACK):
    import cv2

    cv2.putText(img, s, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _nice_max(v: float) -> float:
    """A round axis end >= v (1, 2, 5 x 10^k)."""
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def _stage_panel(img, x0, y0, name, values_ms):
    import cv2

    w, h = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    ox, oy = x0 + MARGIN_L, y0 + MARGIN_T + h  # plot origin (bottom left)
    a = np.sort(np.asarray(values_ms, float))
    cv2.rectangle(img, (ox, oy - h), (ox + w, oy), GREY, 1)
    if a.size == 0:
        _text(img, f"{name}: no samples", x0 + 8, y0 + 18)
        return
    top = _nice_max(float(a[-1]))
    bins = 30
    counts, edges = np.histogram(a, bins=bins, range=(0.0, top))
    cmax = max(int(counts.max()), 1)
    for k, c in enumerate(counts):
        if c:
            xa = ox + int(w * edges[k] / top)
            xb = ox + int(w * edges[k + 1] / top) - 1
            cv2.rectangle(img, (xa, oy - int(h * c / cmax)), (max(xa, xb), oy), GREY, -1)
    cdf_x = ox + (w * a / top).astype(int)
    cdf_y = oy - (h * np.arange(1, a.size + 1) / a.size).astype(int)
    pts = np.stack([np.concatenate([[ox], cdf_x]), np.concatenate([[oy], cdf_y])], axis=1).astype(np.int32)
    cv2.polylines(img, [pts], False, BLUE, 1, cv2.LINE_AA)
    p50, p99 = np.percentile(a, [50, 99])
    for p, col in ((p50, GREEN), (p99, RED)):
        xp = ox + int(w * p / top)
        cv2.line(img, (xp, oy - h), (xp, oy), col, 1)
    _text(img, f"{name}  n={a.size}", x0 + 8, y0 + 18, 0.45)
    _text(img, f"p50 {p50:.2f}  p99 {p99:.2f}  max {a[-1]:.2f} ms", x0 + 8, y0 + PANEL_H - 8, 0.36)
    _text(img, "0", ox - 4, oy + 13, 0.33)
    _text(img, f"{top:g}", ox + w - 18, oy + 13, 0.33)
    _text(img, "1.0", ox - 28, oy - h + 8, 0.33, BLUE)
    _text(img, str(cmax), ox - 28, oy - h + 20, 0.33, GREY)


def _sweep_panel(img, x0, y0, width, points):
    import cv2

    w, h = width - MARGIN_L - 60, PANEL_H - MARGIN_T - MARGIN_B
    ox, oy = x0 + MARGIN_L, y0 + MARGIN_T + h
    cv2.rectangle(img, (ox, oy - h), (ox + w, oy), GREY, 1)
    _text(img, "sweep: p99 end-to-end (line, ms) and late decisions (red bars) vs item rate", x0 + 8, y0 + 18, 0.45)
    if not points:
        _text(img, "no sweep (run with --sweep)", ox + 10, oy - h // 2)
        return
    rmax = _nice_max(max(p.rate for p in points))
    lmax = _nice_max(max(p.p99_ms for p in points) or 1.0)
    late_max = max(max(p.late for p in points), 1)
    xs = [ox + int(w * p.rate / rmax) for p in points]
    for p, x in zip(points, xs):
        if p.late:
            cv2.rectangle(img, (x - 4, oy - int(h * p.late / late_max)), (x + 4, oy), RED, -1)
    pts = np.array([[x, oy - int(h * p.p99_ms / lmax)] for p, x in zip(points, xs)], np.int32)
    cv2.polylines(img, [pts], False, BLUE, 1, cv2.LINE_AA)
    for p, (x, y) in zip(points, pts):
        cv2.circle(img, (int(x), int(y)), 4, GREEN if p.ok else RED, -1, cv2.LINE_AA)
        _text(img, f"{p.rate:.1f}", x - 8, oy + 13, 0.33)
    _text(img, f"{lmax:g} ms", ox - 40, oy - h + 8, 0.33, BLUE)
    _text(img, f"{late_max} late", ox + w + 4, oy - h + 8, 0.33, RED)
    _text(img, "items/s", ox + w + 4, oy + 13, 0.33)


def render(durations: dict[str, list[float]], end_to_end_ms: list[float], points=(), order=()) -> np.ndarray:
    """The whole figure as a BGR image: one panel per stage (in ``order`` first), end-to-end, the sweep."""
    names = [s for s in order if durations.get(s)] + [s for s in durations if s not in order and durations[s]]
    panels = [(n, durations[n]) for n in names] + [("end-to-end", end_to_end_ms)]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    img = np.full((rows * PANEL_H + PANEL_H, cols * PANEL_W, 3), 255, np.uint8)
    for k, (name, vals) in enumerate(panels):
        _stage_panel(img, (k % cols) * PANEL_W, (k // cols) * PANEL_H, name, vals)
    _sweep_panel(img, 0, rows * PANEL_H, cols * PANEL_W, list(points))
    return img


def write_png(path: str | Path, img: np.ndarray) -> Path:
    import cv2


    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise RigError(f"could not write the plot to {path} (is the name a .png in a writable folder?)")
    return path
