"""`rig eval`: score a split through the runtime path, write the CSV, print figures, draw the report.

Scoring goes through :class:`damage_rig.rig.detect.Scorer` on ONNX Runtime —
the rig's own code — never through the torch model.
"""

from __future__ import annotations

import base64
import csv
import html
import logging
from pathlib import Path

import cv2
import numpy as np

from ..rig.dataset import DAMAGE_TYPES, Dataset, Item, read_dataset
from ..rig.detect.maps import PixelAuroc, evidence_map, overlay, to_png16
from ..rig.detect.scoring import Scorer
from ..rig.foundation.errors import DatasetError
from .metrics import format_summary, roc_curve, summarize

log = logging.getLogger(__name__)

OVERLAY_FLOOR = 1.5  # evidence (x a pristine view's) below this is not painted in reports and overlays


def load_view(scorer, ds: Dataset, item: Item, view: str) -> np.ndarray:
    """One view of a dataset item, preprocessed as the rig does; errors name the item and view."""
    where = f"item {item.id!r} view {view!r}"
    rgb = ds.load_rgb(item, view)
    depth = ds.load_depth_mm(item, view)
    return scorer.prepare_view(rgb, depth, where=where)


def load_view_and_canon(scorer, ds: Dataset, item: Item, view: str):
    """(network input, canonical pose for the registered comparison or None, crop shape) of one view."""
    where = f"item {item.id!r} view {view!r}"
    rgb = ds.load_rgb(item, view)
    depth = ds.load_depth_mm(item, view)
    return scorer.prepare_view(rgb, depth, where=where), scorer.canon_view(view, rgb, depth), rgb.shape[:2]


def score_items(scorer, ds: Dataset, items: list[Item], *, progress: bool = True,
                desc: str = "scoring", batch_views: int = 16) -> list:
    """ItemScore per item through the runtime path, batching views across items."""
    from tqdm import tqdm

    results = [None] * len(items)
    pending: list[tuple[int, str, np.ndarray]] = []
    canons: dict[int, dict] = {}
    shapes: dict[tuple[int, str], tuple[int, int]] = {}

    def flush():
        if not pending:
            return
        rows = scorer.run_batch(np.stack([p[2] for p in pending]))
        by_item: dict[int, dict] = {}
        for (i, v, _), row in zip(pending, rows):
            by_item.setdefault(i, {})[v] = row
        for i, outs in by_item.items():
            results[i] = scorer.score_item(outs, item_id=items[i].id, canons=canons.pop(i, None))
            for v, vs in results[i].views.items():
                vs.shape = shapes.pop((i, v), None)
        pending.clear()

    for i, it in enumerate(tqdm(items, desc=desc, unit="item", disable=not progress)):
        if not it.views:
            raise DatasetError(f"item {it.id!r} has no views")
        for v in it.views:  # all of an item's views go into the same flush
            x, canon, shapes[(i, v)] = load_view_and_canon(scorer, ds, it, v)
            pending.append((i, v, x))
            canons.setdefault(i, {})[v] = canon
        if len(pending) >= batch_views:
            flush()
    flush()
    return results


def write_scores_csv(path: str | Path, items: list[Item], results: list) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "score", "damaged", "type", "sku_pred"])
        for it, r in zip(items, results):
            w.writerow([it.id, f"{r.score:.6f}", int(r.damaged), r.type, r.sku_pred])


def evaluate(model_dir: str | Path, data: str | Path, split: str = "test", *, scores_csv=None,
             report=None, threads: int = 2, progress: bool = True, maps=None) -> dict:
    """Score DATASET's split with the model; returns the metrics dict."""
    ds = read_dataset(data)
    items = ds.split(split)
    if not items:
        raise DatasetError(f"{ds.root}: split {split!r} is empty; nothing to evaluate")
    scorer = Scorer.load(model_dir, threads=threads, max_batch=16)
    ds.set_framing(scorer.reframe)  # views framed as the model was trained
    results = score_items(scorer, ds, items, progress=progress, desc=f"scoring {split}")
    if scores_csv:
        write_scores_csv(scores_csv, items, results)
    scores = np.array([r.score for r in results])
    labels = np.array([it.damaged for it in items])
    metrics = summarize(scores, labels, scorer.threshold, types=[it.damage for it in items],
                        printed=[it.printed_damage for it in items], sku_true=[it.sku for it in items],
                        sku_pred=[r.sku_pred for r in results], type_names=DAMAGE_TYPES,
                        damage_sizes=[it.damage_size_mm for it in items])
    pixel = write_maps(ds, items, results, maps)
    if np.isfinite(pixel):
        metrics["pixel_auroc"] = pixel
    if report:
        write_report(report, ds, items, results, metrics, scorer, model_dir, split)
    return metrics


def write_maps(ds: Dataset, items: list[Item], results: list, out=None) -> float:
    """Fused evidence map per view (rig/detect/maps.py): written to OUT/<item id>_<view>.png as
    16-bit PNG the size of the view's image when ``out`` is given (a reframed view's map is placed
    back where its crop came from, the rest at the map's minimum); returns the pixel AUROC
    against the dataset's masks (NaN when no view has a damage mask)."""
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    acc = PixelAuroc()
    has_mask = False
    for it, r in zip(items, results):
        for v, vs in r.views.items():
            shape = vs.shape or ds.load_rgb(it, v).shape[:2]
            m = evidence_map(vs, shape)
            window = ds.window(it, v)
            if window is not None:  # a reframed view: the crop's map back in the stored image's place
                m = window.paste(m)
            if out is not None:
                cv2.imwrite(str(Path(out) / f"{it.id}_{v}.png"), to_png16(m))
            mask = ds.load_mask(it, v, framed=False) if it.damaged else None
            has_mask |= mask is not None and bool((mask > 0).any())
            acc.add(m, mask)
    return acc.value() if has_mask else float("nan")


# ---- HTML report ---------------------------------------------------------------
def _svg_text(x, y, text, size=11, anchor="start", rotate=False) -> str:
    rot = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-family="sans-serif" '
            f'text-anchor="{anchor}"{rot}>{html.escape(text)}</text>')


def _svg_roc(fpr, tpr, op_fpr, op_tpr, w=360, h=300) -> str:
    """ROC on a log FPR axis (1e-4 .. 1): the operating region of a sideline budget. Every label
    inside the frame: the y label turned along the axis, ticks anchored to stay in."""
    lo, left, right, top, bottom = 1e-4, 48, 14, 12, 40

    def px(f, t):
        x = left + (np.log10(max(f, lo)) - np.log10(lo)) / -np.log10(lo) * (w - left - right)
        return x, h - bottom - t * (h - top - bottom)
    pts = " ".join(f"{px(f, t)[0]:.1f},{px(f, t)[1]:.1f}" for f, t in zip(fpr, tpr))
    ox, oy = px(op_fpr, op_tpr)
    labels = [_svg_text(px(10.0 ** e, 0)[0], h - bottom + 14, f"1e{e}" if e else "1", 10,
                        "start" if e == -4 else "end" if e == 0 else "middle") for e in range(-4, 1)]
    labels += [_svg_text(left - 4, px(1, t)[1] + 4, f"{t:g}", 10, "end") for t in (0, 0.5, 1)]
    labels += [_svg_text((left + w - right) / 2, h - 6, "false positive rate (log)", 11, "middle"),
               _svg_text(14, (top + h - bottom) / 2, "recall", 11, "middle", rotate=True)]
    x0, y0 = px(lo, 0)
    x1, y1 = px(1, 1)
    return (f'<svg width="{w}" height="{h}" style="border:1px solid #ccc">'
            f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}" fill="none" '
            f'stroke="#999"/><polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
            f'<circle cx="{ox:.1f}" cy="{oy:.1f}" r="5" fill="red"/>{"".join(labels)}</svg>')


def _svg_hist(ok, bad, thr, w=420, h=300, bins=40) -> str:
    """Score histograms (log counts) of ok and damaged items with the threshold line; the
    threshold's label sits on the side of the line that has room."""
    left, right, top, bottom = 30, 10, 26, 34
    edges = np.linspace(0, 1, bins + 1)
    hk = np.histogram(ok, edges)[0]
    hb = np.histogram(bad, edges)[0]
    peak = np.log10(max(hk.max(initial=1), hb.max(initial=1)) + 1)
    bw = (w - left - right) / bins
    rects = []
    for i in range(bins):
        for cnt, col, off in ((hk[i], "#2ca02c", 0), (hb[i], "#d62728", bw / 2)):
            if cnt:
                hh = np.log10(cnt + 1) / peak * (h - top - bottom)
                rects.append(f'<rect x="{left + i * bw + off:.1f}" y="{h - bottom - hh:.1f}" '
                             f'width="{bw / 2:.1f}" height="{hh:.1f}" fill="{col}"/>')
    tx = left + thr * (w - left - right)
    room_right = tx < w / 2
    thr_label = _svg_text(tx + 4 if room_right else tx - 4, top - 8, f"threshold {thr:.3f}", 11,
                          "start" if room_right else "end")
    axis = [_svg_text(left, h - bottom + 14, "0", 10, "start"), _svg_text(w - right, h - bottom + 14, "1", 10, "end"),
            _svg_text((left + w - right) / 2, h - 6, "score; green ok, red damaged; log counts", 11, "middle")]
    return (f'<svg width="{w}" height="{h}" style="border:1px solid #ccc">{"".join(rects)}'
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" y2="{h - bottom}" stroke="black" '
            f'stroke-dasharray="4"/>{thr_label}{"".join(axis)}</svg>')


def _png_b64(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


def _overlay(rgb: np.ndarray, heat: np.ndarray, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """(the view, the view with its evidence painted only where it exceeds a pristine view's), size x size."""
    img = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    h = cv2.resize(heat.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return img, overlay(img, h, floor=OVERLAY_FLOOR)


def false_positives_and_misses(scores: np.ndarray, labels: np.ndarray, threshold: float):
    """Indices of the ok items the rig would divert (score > threshold, highest first) and of the
    damaged items it would pass (score <= threshold, lowest first): the decision of ItemScore.damaged."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    fp = np.flatnonzero(~labels & (scores > threshold))
    miss = np.flatnonzero(labels & (scores <= threshold))
    return fp[np.argsort(-scores[fp], kind="stable")], miss[np.argsort(scores[miss], kind="stable")]


def nearest_calls(scores: np.ndarray, labels: np.ndarray, threshold: float, n: int) -> np.ndarray:
    """The ``n`` highest-scoring ok items the rig passes and the ``n`` lowest-scoring damaged items it
    diverts: correct decisions closest to becoming mistakes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    ok = np.flatnonzero(~labels & (scores <= threshold))
    caught = np.flatnonzero(labels & (scores > threshold))
    return np.r_[ok[np.argsort(-scores[ok], kind="stable")][:n],
                 caught[np.argsort(scores[caught], kind="stable")][:n]].astype(int)


def write_report(path, ds: Dataset, items, results, metrics, scorer, model_dir, split, n_worst=8):
    scores = np.array([r.score for r in results])
    labels = np.array([it.damaged for it in items])
    fpr, tpr = roc_curve(scores, labels) if labels.any() and (~labels).any() else (np.r_[0, 1], np.r_[0, 1])
    sections = []

    def cases(key, title, idx):
        rows = []
        for i in idx:
            it, r = items[i], results[i]
            cells = []
            for v, vs in r.views.items():
                rgb = ds.load_rgb(it, v)
                img, over = _overlay(rgb, evidence_map(vs, rgb.shape[:2]))
                cells.append(f'<td><img src="data:image/png;base64,{_png_b64(img)}"> '
                             f'<img src="data:image/png;base64,{_png_b64(over)}"><br>{html.escape(v)}: '
                             f'P(view) {vs.damage_prob:.3f}, anomaly {vs.anomaly:.2f}</td>')
            rows.append(f"<tr data-item='{html.escape(it.id)}' data-score='{r.score:.6f}' "
                        f"data-damaged='{int(it.damaged)}'><td><b>{html.escape(it.id)}</b><br>sku {html.escape(it.sku)} "
                        f"(pred {html.escape(r.sku_pred)})<br>truth {html.escape(it.label)} "
                        f"{html.escape(','.join(it.damage))}{' printed' if it.printed_damage else ''}"
                        f"<br>score {r.score:.4f}</td>{''.join(cells)}</tr>")
        sections.append(f"<h2 id='{key}'>{html.escape(title)}</h2><table border=1 cellpadding=4 class='{key}'>"
                        f"{''.join(rows) or '<tr><td>none</td></tr>'}</table>")
    thr = scorer.threshold
    fp, miss = false_positives_and_misses(scores, labels, thr)
    n_ok, n_bad = int((~labels).sum()), int(labels.sum())
    cases("false-positives", f"False positives: {len(fp)} of {n_ok} ok items scored over the threshold {thr:.4f}"
          + (f" (the {n_worst} highest shown)" if len(fp) > n_worst else ""), fp[:n_worst])
    cases("misses", f"Misses: {len(miss)} of {n_bad} damaged items scored at or under the threshold {thr:.4f}"
          + (f" (the {n_worst} lowest shown)" if len(miss) > n_worst else ""), miss[:n_worst])
    near = nearest_calls(scores, labels, thr, n_worst // 2)
    cases("nearest", f"Nearest the threshold {thr:.4f} on the right side of it: the highest ok items "
          "and the lowest damaged items that were decided correctly", near)
    op_f = metrics["fpr_at_threshold"] if labels.size else 0.0
    op_t = metrics["recall_at_threshold"] if labels.any() else 0.0
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>rig eval {html.escape(str(model_dir))}"
           f"</title></head><body style='font-family:sans-serif'><h1>Evaluation of {html.escape(str(model_dir))}"
           f" on {html.escape(str(ds.root))} split {html.escape(split)}</h1>"
           f"<pre>{html.escape(format_summary(metrics))}</pre>"
           f"<h2>ROC and score histograms</h2>{_svg_roc(fpr, tpr, op_f, op_t)} "
           f"{_svg_hist(scores[~labels], scores[labels], scorer.threshold)}"
           f"<p>Each view beside its evidence (rig/detect/maps.py): painted only where it exceeds "
           f"{OVERLAY_FLOOR:g}x what a pristine view of the product shows, yellow to red up to 4x.</p>"
           f"{''.join(sections)}</body></html>")
    Path(path).write_text(doc)
