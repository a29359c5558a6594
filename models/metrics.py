"""Evaluation figures at a false-positive budget (numpy only)."""

from __future__ import annotations

import numpy as np

from ..rig.detect.threshold import threshold_at_fpr

#: issue 12's small-hole target: holes under this diameter (mm), per the items' damage_size_mm
SMALL_HOLE_MM = 8.0


def auroc(scores, labels) -> float:
    """Area under the ROC curve by the rank-sum (ties count one half)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / max(y.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~y).sum(), 1)]
    return fpr, tpr


def recall_at_fpr(scores, labels, fpr: float) -> tuple[float, float]:
    """(recall, threshold) with the threshold set on these ok scores at the budget."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    if (~y).sum() == 0 or y.sum() == 0:
        return float("nan"), float("nan")
    t = threshold_at_fpr(s[~y], fpr, warn=False, extrapolate=False)
    return float((s[y] > t).mean()), t


def hole_diameter(sizes) -> float | None:
    """The hole diameter (mm) an item's damage_size_mm records, or None."""
    d = (sizes or {}).get("hole", {}).get("diameter")
    return None if d is None else float(d)


def summarize(scores, labels, threshold: float, *, types=None, printed=None, sku_true=None,
              sku_pred=None, type_names=(), damage_sizes=None) -> dict:
    """Every figure `rig eval` prints, as a dict of plain floats and counts.

    ``damage_sizes``: each item's damage_size_mm (rig/dataset.py). When any records a hole
    diameter, ``recall_small_holes`` gives, for the damaged items with a hole under SMALL_HOLE_MM,
    their count ``n`` and recall at ``threshold`` and at this split's own FPR 0.1 % threshold."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    flagged = s > threshold
    out = {"n_items": len(s), "n_ok": int((~y).sum()), "n_damaged": int(y.sum()),
           "auroc": auroc(s, y)}
    for budget in (0.001, 0.01):
        r, _ = recall_at_fpr(s, y, budget)
        out[f"recall_at_fpr_{budget:g}"] = r
    out["threshold"] = float(threshold)
    out["fpr_at_threshold"] = float(flagged[~y].mean()) if (~y).any() else float("nan")
    out["recall_at_threshold"] = float(flagged[y].mean()) if y.any() else float("nan")
    out["false_alarms"] = int(flagged[~y].sum())
    if types is not None:
        per = {}
        for t in type_names:
            m = np.array([t in ts for ts in types]) & y
            if m.any():
                per[t] = {"n": int(m.sum()), "recall": float(flagged[m].mean())}
        out["recall_per_type"] = per
        bs = per.get("broken_set")
        out["broken_set_recall"] = bs["recall"] if bs else float("nan")
    if printed is not None:
        p = np.asarray(printed, bool) & ~y
        out["printed_damage_ok"] = int(p.sum())
        out["printed_damage_false_alarm_rate"] = float(flagged[p].mean()) if p.any() else float("nan")
    if sku_true is not None and sku_pred is not None:
        st, sp = np.asarray(sku_true), np.asarray(sku_pred)
        out["identification_top1"] = float((st == sp).mean()) if len(st) else float("nan")
    if damage_sizes is not None:
        diam = [hole_diameter(d) for d in damage_sizes]
        if any(d is not None for d in diam):
            small = np.array([d is not None and d < SMALL_HOLE_MM for d in diam]) & y
            _, t_budget = recall_at_fpr(s, y, 0.001)
            out["recall_small_holes"] = {
                "max_diameter_mm": SMALL_HOLE_MM, "n": int(small.sum()),
                "at_threshold": float(flagged[small].mean()) if small.any() else float("nan"),
                "at_fpr_0.001": (float((s[small] > t_budget).mean())
                                 if small.any() and np.isfinite(t_budget) else float("nan"))}
    return out


def format_summary(m: dict) -> str:
    def pct(v):
        return "n/a" if np.isnan(v) else f"{100 * v:.2f} %"

    lines = [f"items: {m['n_items']} ({m['n_ok']} ok, {m['n_damaged']} damaged)",
             "AUROC: n/a" if np.isnan(m["auroc"]) else f"AUROC: {m['auroc']:.4f}",
             f"recall at FPR 0.1 %: {pct(m['recall_at_fpr_0.001'])}",
             f"recall at FPR 1 %: {pct(m['recall_at_fpr_0.01'])}",
             (f"at the model threshold {m['threshold']:.4f}: FPR {pct(m['fpr_at_threshold'])} "
              f"({m['false_alarms']} false alarms), recall {pct(m['recall_at_threshold'])}")]
    if "recall_per_type" in m:
        for t, v in m["recall_per_type"].items():
            lines.append(f"  recall {t:15s}: {pct(v['recall'])} (n={v['n']})")
        lines.append(f"broken-set recall: {pct(m['broken_set_recall'])}")
    if "printed_damage_ok" in m:
        lines.append(f"printed-damage ok items falsely flagged: "
                     f"{pct(m['printed_damage_false_alarm_rate'])} (n={m['printed_damage_ok']})")
    if "identification_top1" in m:
        lines.append(f"identification top-1: {pct(m['identification_top1'])}")
    if "recall_small_holes" in m:
        sh = m["recall_small_holes"]

        def pct1(v):
            return "n/a" if np.isnan(v) else f"{100 * v:.1f} %"
        items = "item" if sh["n"] == 1 else "items"
        lines.append(f"holes under {sh['max_diameter_mm']:g} mm: {sh['n']} {items}, recall "
                     f"{pct1(sh['at_threshold'])} at the threshold, "
                     f"{pct1(sh['at_fpr_0.001'])} at FPR 0.1 %")
    return "\n".join(lines)
