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
from ..rig.detect.maps import PixelAuroc, evidence_map, to_png16
from ..rig.detect.scoring import Scorer
from ..rig.foundation.errors import DatasetError
from .metrics import format_summary, roc_curve, summarize

log = logging.getLogger(__name__)


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
    results = score_items(scorer, ds, items, progress=progress, desc=f"scoring {split}")
    if scores_csv:
        write_scores_csv(scores_csv, items, results)
    scores = np.array([r.score for r in results])
    labels = np.array([it.damaged for it in items])
    metrics = summarize(scores, labels, scorer.threshold, types=[it.damage for it in items],
                        printed=[it.printed_damage for it in items], sku_true=[it.sku for it in items],
                        sku_pred=[r.sku_pred for r in results], type_names=DAMAGE_TYPES)
    pixel = write_maps(ds, items, results, maps)
    if np.isfinite(pixel):
        metrics["pixel_auroc"] = pixel
    if report:
        write_report(report, ds, items, results, metrics, scorer, model_dir, split)
    return metrics


def write_maps(ds: Dataset, items: list[Item], results: list, out=None) -> float:
    """Fused evidence map per view (rig/detect/maps.py): written to OUT/<item id>_<view>.png as
    16-bit PNG the size of the view's image when ``out`` is given; returns the pixel AUROC
    against the dataset's masks (NaN when no view has a damage mask)."""
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    acc = PixelAuroc()
    has_mask = False
    for it, r in zip(items, results):
        for v, vs in r.views.items():
            shape = vs.shape or ds.load_rgb(it, v).shape[:2]
            m = evidence_map(vs, shape)
            if out is not None:
                cv2.imwrite(str(Path(out) / f"{it.id}_{v}.png"), to_png16(m))
            mask = ds.load_mask(it, v) if it.damaged else None
            has_mask |= mask is not None and bool((mask > 0).any())
            acc.add(m, mask)
    return acc.value() if has_mask else float("nan")


# ---- HTML report ---------------------------------------------------------------
def _svg_roc(fpr, tpr, op_fpr, op_tpr, w=360, h=300) -> str:
    """ROC on a log FPR axis (1e-4 .. 1): the operating region of a sideline budget."""
    lo = 1e-4

    def px(f, t):
        x = 40 + (np.log10(max(f, lo)) - np.log10(lo)) / -np.log10(lo) * (w - 50)
        return x, h - 30 - t * (h - 40)
    pts = " ".join(f"{px(f, t)[0]:.1f},{px(f, t)[1]:.1f}" for f, t in zip(fpr, tpr))
    ox, oy = px(op_fpr, op_tpr)
    ticks = "".join(f'<text x="{px(10.0 ** e, 0)[0]:.0f}" y="{h - 12}" font-size="10" '
                    f'text-anchor="middle">1e{e}</text>' for e in range(-4, 1))
    return (f'<svg width="{w}" height="{h}" style="border:1px solid #ccc">'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
            f'<circle cx="{ox:.1f}" cy="{oy:.1f}" r="5" fill="red"/>{ticks}'
            f'<text x="{w / 2}" y="{h - 1}" font-size="11" text-anchor="middle">FPR (log)</text>'
            f'<text x="10" y="15" font-size="11">recall</text></svg>')


def _svg_hist(ok, bad, thr, w=420, h=300, bins=40) -> str:
    """Score histograms (log counts) of ok and damaged items with the threshold line."""
    edges = np.linspace(0, 1, bins + 1)
    hk = np.histogram(ok, edges)[0]
    hb = np.histogram(bad, edges)[0]
    top = np.log10(max(hk.max(initial=1), hb.max(initial=1)) + 1)
    bw = (w - 40) / bins
    rects = []
    for i in range(bins):
        for cnt, col, off in ((hk[i], "#2ca02c", 0), (hb[i], "#d62728", bw / 2)):
            if cnt:
                hh = np.log10(cnt + 1) / top * (h - 40)
                rects.append(f'<rect x="{30 + i * bw + off:.1f}" y="{h - 20 - hh:.1f}" '
                             f'width="{bw / 2:.1f}" height="{hh:.1f}" fill="{col}"/>')
    tx = 30 + thr * (w - 40)
    return (f'<svg width="{w}" height="{h}" style="border:1px solid #ccc">{"".join(rects)}'
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="10" y2="{h - 20}" stroke="black" stroke-dasharray="4"/>'
            f'<text x="{tx + 3:.1f}" y="20" font-size="11">threshold {thr:.3f}</text>'
            f'<text x="30" y="{h - 5}" font-size="11">score 0 .. 1; green ok, red damaged; log counts'
            f'</text></svg>')


def _png_b64(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


def _overlay(rgb: np.ndarray, heat: np.ndarray, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    img = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    h = cv2.resize(heat.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    h8 = np.clip(h / max(3.0, float(h.max())) * 255, 0, 255).astype(np.uint8)
    col = cv2.cvtColor(cv2.applyColorMap(h8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return img, (0.55 * img + 0.45 * col).astype(np.uint8)


def write_report(path, ds: Dataset, items, results, metrics, scorer, model_dir, split, n_worst=8):
    scores = np.array([r.score for r in results])
    labels = np.array([it.damaged for it in items])
    fpr, tpr = roc_curve(scores, labels) if labels.any() and (~labels).any() else (np.r_[0, 1], np.r_[0, 1])
    sections = []

    def cases(title, idx):
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
            rows.append(f"<tr><td><b>{html.escape(it.id)}</b><br>sku {html.escape(it.sku)} "
                        f"(pred {html.escape(r.sku_pred)})<br>truth {html.escape(it.label)} "
                        f"{html.escape(','.join(it.damage))}{' printed' if it.printed_damage else ''}"
                        f"<br>score {r.score:.4f}</td>{''.join(cells)}</tr>")
        sections.append(f"<h2>{title}</h2><table border=1 cellpadding=4>{''.join(rows) or '<tr><td>none</td></tr>'}"
                        "</table>")
    ok_idx = np.flatnonzero(~labels)
    bad_idx = np.flatnonzero(labels)
    cases("Worst false positives (ok items, highest scores)", ok_idx[np.argsort(-scores[ok_idx])][:n_worst])
    cases("Worst misses (damaged items, lowest scores)", bad_idx[np.argsort(scores[bad_idx])][:n_worst])
    op_f = metrics["fpr_at_threshold"] if labels.size else 0.0
    op_t = metrics["recall_at_threshold"] if labels.any() else 0.0
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>rig eval {html.escape(str(model_dir))}"
           f"</title></head><body style='font-family:sans-serif'><h1>Evaluation of {html.escape(str(model_dir))}"
           f" on {html.escape(str(ds.root))} split {html.escape(split)}</h1>"
           f"<pre>{html.escape(format_summary(metrics))}</pre>"
           f"<h2>ROC and score histograms</h2>{_svg_roc(fpr, tpr, op_f, op_t)} "
           f"{_svg_hist(scores[~labels], scores[labels], scorer.threshold)}"
           f"<p>Heatmaps: patch anomaly against the identified product's references "
           f"(1 = as unusual as a pristine reference).</p>{''.join(sections)}</body></html>")
    Path(path).write_text(doc)
