"""Thresholds from the rig's own traffic and its reviewers' verdicts.

Every decided item has a score; reviewers have labelled (some of) the diverted
ones. At a candidate threshold t (decision: divert when score > t):

* sideline rate  = share of all items with score > t (what the belt loses to the divert lane);
* est. FPR       = share of the items not reviewed damaged that score > t (unreviewed passes
                   count as intact: damage is rare, and a reviewer never sees them);
* recall         = share of reviewed-damaged items with score > t. Only diverted items are
                   reviewed, so this is recall *relative to the current operating point*:
                   damage the rig passed is invisible here, and lowering t below the current
                   threshold cannot show a gain. Audit samples of passed items fix that.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from .. import events
from ..foundation.errors import ModelError, RigError

CARD_NAME = "model_card.yaml"


@dataclass
class TunePoint:
    threshold: float
    sideline_rate: float
    est_fpr: float
    recall: float | None
    diverted: int
    reviewed_damaged_caught: int
    reviewed_ok_diverted: int


@dataclass
class TuneReport:
    n_items: int
    n_reviewed: int
    n_damaged: int
    model_version: str | None
    current_threshold: float | None
    points: list[TunePoint]
    budget_threshold: float | None = None  # lowest t whose est. FPR is within --fpr-budget

    def to_json(self) -> dict:
        return {**asdict(self), "points": [asdict(p) for p in self.points]}


def read_card(model_dir: str | Path) -> dict:
    path = Path(model_dir) / CARD_NAME
    try:
        card = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{model_dir}: not a model directory (no {CARD_NAME})") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: unreadable model card: {exc}") from None
    if not isinstance(card, dict):
        raise ModelError(f"{path}: the model card is not a mapping")
    return card


def evaluate(scores: np.ndarray, labels: list[str | None], thresholds, fpr_budget: float | None = None,
             model_version: str | None = None, current: float | None = None) -> TuneReport:
    scores = np.asarray(scores, dtype=np.float64)
    dmg = np.array([lab == "damaged" for lab in labels], dtype=bool)
    okrev = np.array([lab in ("not_damaged", "packaging_changed") for lab in labels], dtype=bool)
    points = []
    for t in sorted({float(t) for t in thresholds}):
        above = scores > t
        points.append(TunePoint(
            threshold=t, sideline_rate=float(above.mean()) if len(scores) else 0.0,
            est_fpr=float(above[~dmg].mean()) if (~dmg).any() else 0.0,
            recall=float(above[dmg].mean()) if dmg.any() else None,
            diverted=int(above.sum()), reviewed_damaged_caught=int((above & dmg).sum()),
            reviewed_ok_diverted=int((above & okrev).sum())))
    budget_t = None
    if fpr_budget is not None and (~dmg).any():
        ok_scores = np.sort(scores[~dmg])
        # smallest t with share(ok > t) <= budget: t at the (1 - budget) quantile of the ok scores
        k = int(np.ceil((1.0 - fpr_budget) * len(ok_scores))) - 1
        budget_t = float(ok_scores[min(max(k, 0), len(ok_scores) - 1)])
    return TuneReport(len(scores), int(dmg.sum() + okrev.sum()), int(dmg.sum()), model_version, current,
                      points, budget_t)


def tune(model_dir: str | Path, state_dir: str | Path, thresholds=None, fpr_budget: float | None = None,
         all_versions: bool = False) -> TuneReport:
    card = read_card(model_dir)
    version = card.get("version")
    conn = events.connect(state_dir, readonly=True)
    try:
        if version and not all_versions:
            rows = conn.execute("SELECT score, label FROM items WHERE model_version = ?", (version,)).fetchall()
        else:
            rows = conn.execute("SELECT score, label FROM items").fetchall()
    finally:
        conn.close()
    if not rows:
        raise RigError(f"{state_dir}: no items scored by model version {version!r} "
                       "(pass --all-versions to use items of every version)")
    scores = np.array([r[0] for r in rows])
    labels = [r[1] for r in rows]
    current = card.get("threshold")
    if thresholds is None:
        reviewed = scores[[lab is not None for lab in labels]]
        thresholds = list(np.quantile(reviewed, [0.1, 0.25, 0.5, 0.75, 0.9])) if len(reviewed) else []
        if current is not None:
            thresholds.append(float(current))
    if fpr_budget is not None:
        rep = evaluate(scores, labels, [], fpr_budget)
        thresholds = list(thresholds) + ([rep.budget_threshold] if rep.budget_threshold is not None else [])
    return evaluate(scores, labels, thresholds, fpr_budget, version, current)


def format_report(rep: TuneReport) -> str:
    lines = [
        (f"{rep.n_items} items scored by model {rep.model_version}, {rep.n_reviewed} reviewed "
         f"({rep.n_damaged} damaged); current threshold {rep.current_threshold}"),
        "recall is relative to the current threshold: only diverted items get reviewed",
        (f"{'threshold':>10s} {'sideline':>9s} {'est.FPR':>8s} {'recall':>7s} {'diverted':>9s} "
         f"{'dmg caught':>10s} {'ok diverted':>11s}"),
    ]
    for p in rep.points:
        rec = f"{p.recall:7.1%}" if p.recall is not None else "      -"
        mark = ""
        if rep.current_threshold is not None and abs(p.threshold - rep.current_threshold) < 1e-12:
            mark = "  <- current"
        elif rep.budget_threshold is not None and p.threshold == rep.budget_threshold:
            mark = "  <- FPR budget"
        lines.append(f"{p.threshold:10.4f} {p.sideline_rate:9.2%} {p.est_fpr:8.2%} {rec} {p.diverted:9d} "
                     f"{p.reviewed_damaged_caught:10d} {p.reviewed_ok_diverted:11d}{mark}")
    return "\n".join(lines)


def write_tuned_model(model_dir: str | Path, out: str | Path, threshold: float, rep: TuneReport,
                      state_dir: str | Path) -> Path:
    """Copy the model directory to ``out`` with a new card: the threshold and where it came from."""
    model_dir, out = Path(model_dir), Path(out)
    if out.exists():
        raise RigError(f"{out} already exists; choose a new folder for the tuned model")
    card = read_card(model_dir)
    shutil.copytree(model_dir, out)
    point = min(rep.points, key=lambda p: abs(p.threshold - threshold)) if rep.points else None
    card.update({
        "version": f"{card.get('version', 'model')}-tuned{time.strftime('%Y%m%d%H%M%S')}",
        "threshold": float(threshold),
        "tuned_from": {"model_dir": str(model_dir), "previous_threshold": card.get("threshold"),
                       "previous_version": card.get("version"), "state_dir": str(state_dir),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "n_items": rep.n_items, "n_reviewed": rep.n_reviewed, "n_damaged": rep.n_damaged,
                       "at_threshold": asdict(point) if point and abs(point.threshold - threshold) < 1e-12 else None,
                       "note": "recall is relative to the previous threshold (only diverted items are reviewed)"},
    })
    (out / CARD_NAME).write_text(yaml.safe_dump(card, sort_keys=False))
    return out
