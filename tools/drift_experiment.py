"""Alive gallery in the simulator: new packaging raises false diverts; enrolling the reviewed
images brings them back within the FPR budget — without retraining.

    python -m damage_rig.tools.drift_experiment [--model DIR] [--sku SKU] [--items N] [--json OUT]

1. **before**: N intact items of one SKU with its trained-on artwork, scored by the model
   (the rig's Scorer, the same code as `rig eval` and the runtime);
2. **new packaging**: N intact items of the same SKU with revised artwork
   (``Sku.revision = 1``): false diverts rise;
3. **review + enroll**: the diverted new-packaging items are written to an event log as the
   rig would (crops on disk), labelled "packaging changed" through the review store, and the
   review terminal's one action (``rig.review.enroll.enroll_reviewed``) enrolls them;
4. **after**: N *fresh* intact new-packaging items (other seeds) and N damaged ones:
   false diverts fall back, damage is still caught.
The model directory is copied first; the shipped gallery is never touched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..calibration.model import load_calibration
from ..rig.config import PACKAGE_DATA, SHIPPED_MODEL_DIR
from ..rig.detect.scoring import Scorer
from ..rig.events import EventLog, ItemRecord
from ..rig.review.enroll import enroll_reviewed
from ..rig.review.store import ReviewStore
from .sim.products import APPLICABLE, make_catalogue
from .sim.scene import draw_spec, render_views


def _items(catalogue, sku_index: int, seed: int, n: int, damage: list[str] | None, calib):
    """n items of one SKU; ``damage`` kinds are used in turn (one per item), none when empty."""
    out = []
    for k in range(n):
        kinds = [damage[k % len(damage)]] if damage else []
        spec = draw_spec(catalogue, seed, k, 0.0, sku_index=sku_index, force_damage=kinds)
        views = render_views(spec, calib)
        out.append((spec, {v: (x.rgb, x.depth_mm) for v, x in views.items()}))
    return out


def _score(scorer, items, threshold):
    scores = [scorer.score_crops(crops, item_id=f"{spec.seed}-{spec.index}") for spec, crops in items]
    return scores, [s.score >= threshold for s in scores]


def run(model: Path, sku: str | None, n: int, seed: int, work: Path, damage: str) -> dict:
    calib = load_calibration(PACKAGE_DATA / "demo_calib.yaml")
    model_dir = work / "model"
    shutil.copytree(model, model_dir)
    scorer = Scorer.load(model_dir)
    thr = scorer.threshold
    old = make_catalogue(24, 0, 0.3)
    if sku is None:  # the first carton without damage-like print
        sku = next(s.name for s in old if s.kind == "carton" and not s.printed_damage)
    k = next(i for i, s in enumerate(old) if s.name == sku)
    new = make_catalogue(24, 0, 0.3, {sku: 1})
    fig = {"sku": sku, "items_per_phase": n, "threshold": thr, "fpr_budget": scorer.fpr_budget}

    before_s, before_d = _score(scorer, _items(old, k, seed, n, None, calib), thr)
    drift_items = _items(new, k, seed + 1, n, None, calib)
    drift_s, drift_d = _score(scorer, drift_items, thr)
    fig["before"] = {"false_diverts": int(sum(before_d)), "fpr": sum(before_d) / n,
                     "mean_score": float(np.mean([s.score for s in before_s])),
                     "sku_top1": float(np.mean([s.sku_pred == sku for s in before_s]))}
    fig["new_packaging"] = {"false_diverts": int(sum(drift_d)), "fpr": sum(drift_d) / n,
                            "mean_score": float(np.mean([s.score for s in drift_s])),
                            "sku_top1": float(np.mean([s.sku_pred == sku for s in drift_s]))}
    # the rig diverts them; an associate marks each "packaging changed"; one action enrolls
    state = work / "state"
    log = EventLog(state)
    diverted = [(spec, crops, sc) for (spec, crops), sc, d in zip(drift_items, drift_s, drift_d) if d]
    if not diverted:  # nothing diverted: nothing for reviewers to see
        fig["enrolled_items"] = 0
    for i, (spec, crops, sc) in enumerate(diverted):
        # new artwork can also fool identification; the associate confirms the product (its
        # barcode) before "packaging changed", so the item is filed under the true SKU
        log.record(ItemRecord(id=f"drift-{i:03d}", captured_at=time.time(), belt_pos=0, sku_pred=sku,
                              sku_conf=sc.sku_conf, score=sc.score, type=sc.type, decision="divert",
                              reason="score", latency_ms=0.0, model_version=scorer.version,
                              views={v: {"rgb": rgb, "heatmap": None} for v, (rgb, _) in crops.items()}))
    log.close()
    if diverted:
        store = ReviewStore(state)
        for i in range(len(diverted)):
            store.label(f"drift-{i:03d}", "packaging_changed")
        res = enroll_reviewed(store, model_dir, sku)
        store.close()
        fig["enrolled_items"] = len(res["items"])
        fig["gallery_version"] = res["version"]
    scorer = Scorer.load(model_dir)
    after_s, after_d = _score(scorer, _items(new, k, seed + 2, n, None, calib), thr)
    fig["after_enroll"] = {"false_diverts": int(sum(after_d)), "fpr": sum(after_d) / n,
                           "mean_score": float(np.mean([s.score for s in after_s])),
                           "sku_top1": float(np.mean([s.sku_pred == sku for s in after_s]))}
    kinds = list(APPLICABLE[new[k].kind]) if damage == "all" else [damage]
    damaged = _items(new, k, seed + 3, n, kinds, calib)  # the same damaged items, before and after
    before_dmg = _score(Scorer.load(model), damaged, thr)[1]
    _, dmg_d = _score(scorer, damaged, thr)
    fig["new_packaging"]["damaged_caught"] = f"{sum(before_dmg)}/{len(before_dmg)} ({', '.join(kinds)})"
    fig["after_enroll"]["damaged_caught"] = f"{sum(dmg_d)}/{len(dmg_d)} ({', '.join(kinds)})"
    return fig


def main(argv=None) -> int:

    p = argparse.ArgumentParser(prog="python -m damage_rig.tools.drift_experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR)
    p.add_argument("--sku", default=None)
    p.add_argument("--items", type=int, default=40, help="items per phase (default 40)")
    p.add_argument("--seed", type=int, default=500)
    p.add_argument("--damage", default="all",
                   help="damage kind for the still-caught check (default: every kind the product can show)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drift-") as work:
        fig = run(a.model, a.sku, a.items, a.seed, Path(work), a.damage)
    print(json.dumps(fig, indent=2))
    if a.json:
        a.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
