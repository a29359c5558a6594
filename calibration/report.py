"""The technician's report: one PNG per camera (worst view with detected corners and
reprojections, and a coverage map), one residual plot per camera (every corner's
reprojection error as a vector, and its size against the distance from the image
centre), a summary PNG and an HTML page with the verdicts."""

from __future__ import annotations

import html
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

from .detect import read_grey
from .solve import project

COLOURS = {"ok": (60, 170, 60), "warn": (0, 165, 255), "fail": (40, 40, 220)}
PANEL_W = 640


def _fit(img: np.ndarray, width: int = PANEL_W) -> np.ndarray:
    s = width / img.shape[1]
    return cv2.resize(img, (width, round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


def _text(img, lines, colour=(255, 255, 255), y0=22, scale=0.55):
    for i, line in enumerate(lines):
        # OpenCV's Hershey fonts are ASCII only
        line = line.replace("\u2014", "-").encode("ascii", "replace").decode()
        y = y0 + i * int(26 * scale / 0.55)
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _pose(run, intr, name: str, moment: str) -> np.ndarray:
    if run.extrinsics is not None:
        return np.linalg.inv(run.extrinsics.T_ref_cam[name]) @ run.extrinsics.T_ref_board[moment]
    return intr.poses[moment]


def residuals(run, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) residuals (model - detected, px) of every corner of every view of ``name``,
    and the (N, 2) detected corners they belong to."""
    intr = run.intrinsics[name]
    res, where = [], []
    for view in intr.views:
        uv = project(view, intr.K, intr.dist, _pose(run, intr, name, view.moment))
        res.append(uv - view.corners)
        where.append(view.corners)
    if not res:
        return np.zeros((0, 2)), np.zeros((0, 2))
    return np.concatenate(res), np.concatenate(where)


def _axes(img, x0, y0, x1, y1):
    cv2.rectangle(img, (x0, y0), (x1, y1), (110, 110, 110), 1)


def _label(img, text, org, scale=0.45, colour=(230, 230, 230)):
    """A label kept inside the image: moved left when it would run off the right edge."""
    text = text.encode("ascii", "replace").decode()
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = max(2, min(org[0], img.shape[1] - tw - 4))
    cv2.putText(img, text, (x, org[1]), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def residual_plot(run, name: str, size: tuple[int, int] = (PANEL_W, 400)) -> np.ndarray:
    """Two panels: every corner's residual vector (dx, dy) with rings at 0.5 and 1 px, and the
    residual's size against the corner's distance from the principal point (a rising trend at
    the edge = distortion the model does not fit)."""
    w, h = size
    res, where = residuals(run, name)
    intr = run.intrinsics[name]
    mag = np.hypot(res[:, 0], res[:, 1]) if len(res) else np.zeros(0)
    top = 34
    left = np.full((h, w, 3), 30, np.uint8)
    right = np.full((h, w, 3), 30, np.uint8)
    # left: the residual vectors, scale to the 99th percentile (at least 1 px)
    lim = max(1.0, float(np.percentile(mag, 99)) if len(mag) else 1.0)
    cx, cy, rad = w // 2, top + (h - top) // 2, (h - top) // 2 - 24
    _axes(left, cx - rad, cy - rad, cx + rad, cy + rad)
    cv2.line(left, (cx - rad, cy), (cx + rad, cy), (80, 80, 80), 1)
    cv2.line(left, (cx, cy - rad), (cx, cy + rad), (80, 80, 80), 1)
    for ring, colour in ((0.5, (80, 200, 80)), (1.0, (0, 160, 255))):
        if ring <= lim:
            cv2.circle(left, (cx, cy), round(ring / lim * rad), colour, 1, cv2.LINE_AA)
            _label(left, f"{ring:g} px", (cx + round(ring / lim * rad * 0.71) + 3, cy - round(ring / lim * rad * 0.71)),
                   0.4, colour)
    for dx, dy in res:
        p = (round(cx + np.clip(dx / lim, -1, 1) * rad), round(cy + np.clip(dy / lim, -1, 1) * rad))
        cv2.circle(left, p, 1, (255, 220, 120), -1)
    _label(left, f"{name}: residual dx, dy (px), +-{lim:.2f} px", (8, 20), 0.5)
    _label(left, f"{len(res)} corners, RMS {float(np.sqrt((mag ** 2).mean())) if len(mag) else 0:.3f} px",
           (8, h - 8))
    # right: |residual| against the distance from the principal point
    pp = intr.K[:2, 2]
    r = np.hypot(*(where - pp).T) if len(where) else np.zeros(0)
    r_max = float(np.hypot(*np.maximum(pp, np.asarray(intr.size, float) - pp)))
    m_top = max(1.0, float(mag.max()) if len(mag) else 1.0)
    x0, x1, y0, y1 = 66, w - 12, top, h - 36
    _axes(right, x0, y0, x1, y1)
    for rr, mm in zip(r, mag):
        cv2.circle(right, (round(x0 + rr / r_max * (x1 - x0)), round(y1 - mm / m_top * (y1 - y0))), 1,
                   (255, 220, 120), -1)
    edges = np.linspace(0, r_max, 9)
    med = [(0.5 * (a + b), float(np.median(mag[(r >= a) & (r < b)]))) for a, b in pairwise(edges)
           if ((r >= a) & (r < b)).sum() >= 5]
    pts = np.array([(x0 + rr / r_max * (x1 - x0), y1 - mm / m_top * (y1 - y0)) for rr, mm in med], np.int32)
    if len(pts) > 1:
        cv2.polylines(right, [pts], False, (0, 160, 255), 2, cv2.LINE_AA)
    _label(right, f"{name}: |residual| vs distance from the centre", (8, 20), 0.5)
    _label(right, f"{m_top:.2f} px", (4, y0 + 12), 0.4)
    _label(right, "0", (50, y1), 0.4)
    _label(right, f"0 .. {r_max:.0f} px from the principal point; orange: median", (x0, h - 10), 0.4)
    return np.hstack([left, right])


def overlay_view(run, name: str, moment: str) -> np.ndarray:
    """The view with detected corners (green) and the model's reprojection (red), the
    error vectors drawn 20x longer."""
    intr = run.intrinsics[name]
    view = next(v for v in intr.views if v.moment == moment)
    img = cv2.cvtColor(read_grey(view.path, name), cv2.COLOR_GRAY2BGR)
    uv = project(view, intr.K, intr.dist, _pose(run, intr, name, moment))
    r = max(2, img.shape[1] // 400)
    for (x, y), (px, py) in zip(view.corners, uv):
        cv2.circle(img, (round(x), round(y)), r + 2, (0, 200, 0), 1, cv2.LINE_AA)
        tip = (round(x + 20 * (px - x)), round(y + 20 * (py - y)))
        cv2.line(img, (round(x), round(y)), tip, (0, 0, 255), 1, cv2.LINE_AA)
        cv2.drawMarker(img, (round(px), round(py)), (0, 0, 255), cv2.MARKER_CROSS, 2 * r, 1)
    return img


def coverage_image(run, name: str) -> np.ndarray:
    intr = run.intrinsics[name]
    w, h = intr.size
    img = np.full((h, w, 3), 40, np.uint8)
    cells = np.array(run.figures["cameras"][name]["coverage"]["cells"])
    gy, gx = cells.shape
    for j in range(gy):
        for i in range(gx):
            x0, x1 = i * w // gx, (i + 1) * w // gx
            y0, y1 = j * h // gy, (j + 1) * h // gy
            colour = (50, 90, 50) if cells[j, i] else (40, 40, 120)
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (80, 80, 80), 1)
    errs = run.figures["cameras"][name]["view_errors_px"]
    for v in intr.views:
        e = errs.get(v.moment, 0.0)
        colour = (80, 255, 80) if e < 0.5 else (0, 200, 255) if e < 1.0 else (0, 0, 255)
        for x, y in v.corners:
            cv2.circle(img, (round(x), round(y)), max(2, w // 500), colour, -1)
    return img


def camera_panel(run, name: str) -> np.ndarray:
    fig = run.figures["cameras"][name]
    errs = fig["view_errors_px"]
    worst = max(errs, key=errs.get) if errs else None
    left = _fit(overlay_view(run, name, worst)) if worst else np.zeros((360, PANEL_W, 3), np.uint8)
    right = _fit(coverage_image(run, name))
    if right.shape[0] != left.shape[0]:
        right = cv2.resize(right, (PANEL_W, left.shape[0]))
    _text(left, [f"{name}: worst view {worst} ({errs.get(worst, 0):.2f} px)",
                 "green: detected, red: model x20"])
    _text(right, [f"{name}: coverage {fig['coverage']['fraction']:.0%} of cells",
                  f"{fig['views']} views, RMS {fig['rms_px']:.3f} px"])
    top = np.hstack([left, right])
    lines = [f"{name}: {fig['verdict'].upper()}"] + (
        [r["message"] for r in fig["reasons"]] or ["no problems found"])
    wrapped = []
    for line in lines:
        while len(line) > 150:
            cut = line.rfind(" ", 0, 150)
            cut = cut if cut > 0 else 150
            wrapped.append(line[:cut])
            line = "    " + line[cut:].lstrip()
        wrapped.append(line)
    band = np.full((16 + 22 * len(wrapped), top.shape[1], 3), 30, np.uint8)
    cv2.rectangle(band, (0, 0), (8, band.shape[0]), COLOURS[fig["verdict"]], -1)
    _text(band, wrapped, y0=20, scale=0.5)
    return np.vstack([top, band])


def write_report(run, out_dir, truth: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = []
    for name in sorted(run.figures["cameras"]):
        panel = camera_panel(run, name)
        cv2.imwrite(str(out / f"{name}.png"), panel)
        cv2.imwrite(str(out / f"{name}_residuals.png"), residual_plot(run, name))
        panels.append(panel)
    width = max(p.shape[1] for p in panels)
    summary = np.vstack([cv2.copyMakeBorder(p, 0, 6, 0, width - p.shape[1], cv2.BORDER_CONSTANT)
                         for p in panels])
    cv2.imwrite(str(out / "report.png"), summary)
    (out / "index.html").write_text(_html(run, truth))
    return out / "index.html"


def _html(run, truth: dict | None) -> str:
    f = run.figures
    e = html.escape
    rows = []
    for name, c in sorted(f["cameras"].items()):
        reasons = "".join(f"<li class='{r['level']}'>{e(r['message'])}</li>" for r in c["reasons"]) \
            or "<li class='ok'>no problems found</li>"
        rows.append(
            f"<h2 class='{c['verdict']}'>{e(name)}: {c['verdict'].upper()}</h2><ul>{reasons}</ul>"
            f"<p>RMS {c['rms_px']:.3f} px (joint {c['joint_rms_px']:.3f} px); {c['views']} views of "
            f"{c['images']} images; coverage {c['coverage']['fraction']:.0%}; largest tilt "
            f"{c['max_tilt_deg']:.0f} deg; fx {c['K'][0][0]:.2f} fy {c['K'][1][1]:.2f} "
            f"cx {c['K'][0][2]:.2f} cy {c['K'][1][2]:.2f}</p>"
            f"<img src='{e(name)}.png' width='100%'>"
            f"<p>Residuals: every detected corner against the model (left), and their size across the "
            f"image (right; rising towards the edge = lens distortion not fitted).</p>"
            f"<img src='{e(name)}_residuals.png' width='100%'>"
            "<details><summary>per-view errors (px)</summary><table>"
            + "".join(f"<tr><td>{e(m)}</td><td>{v:.3f}</td></tr>" for m, v in c["view_errors_px"].items())
            + "</table></details>")
    cons = "".join(f"<tr><td>{e(p)}</td><td>{c['moments']}</td><td>{c['median_mm']:.2f}</td>"
                   f"<td>{c['max_mm']:.2f}</td></tr>" for p, c in f["consistency_mm"].items())
    truth_html = ""
    if truth:
        truth_html = "<h2>Against the true calibration</h2><table><tr><th>figure</th><th>worst</th>" \
                     "<th>target</th><th>met</th></tr>" + "".join(
                         f"<tr><td>{e(k)}</td><td>{truth['worst'][k]:.4f}</td><td>{t}</td>"
                         f"<td>{'yes' if truth['met'][k] else 'NO'}</td></tr>"
                         for k, t in truth["targets"].items()) + "</table>"
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>Calibration report</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:auto}} .ok{{color:#2a2}}
.warn{{color:#d80}} .fail{{color:#c22}} td,th{{padding:2px 10px;text-align:left}}</style></head><body>
<h1>Calibration report: {f['verdict'].upper()}</h1>
<p>Captures {e(f['captures'])}; board {e(run.spec.describe())}; reference frame {e(str(f['reference']))}
{'(belt frame from moment ' + e(f['belt_frame']) + ')' if f['belt_frame'] else ''}.</p>
{''.join(rows)}
<h2>Extrinsic consistency ({e(f['consistency_frame'])})</h2>
<p>Where two cameras, each from its own view of a shared moment, put the board's corners.</p>
<table><tr><th>cameras</th><th>shared moments</th><th>median mm</th><th>worst mm</th></tr>{cons}</table>
{truth_html}</body></html>"""
