"""Operating threshold from a false-positive budget.

Damage is rare, so the rig is run at a sideline budget: the share of good
items it may divert. ``threshold_at_fpr`` picks the lowest threshold whose
false-positive rate on the given ok scores is at most the budget, with the
decision rule ``damaged = score > threshold``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..foundation.errors import ModelError

log = logging.getLogger(__name__)

VAL_OK_SCORES = "val_ok_scores.npy"  # the validation ok scores a model ships with


def threshold_at_fpr(ok_scores, fpr: float, warn: bool = True) -> float:
    """Smallest t with mean(ok_scores > t) <= fpr.

    With n ok scores sorted high to low, at most m = floor(fpr * n) may exceed t,
    so t is the (m+1)-th highest score. When fpr * n < 1 the budget cannot be
    resolved on this data and t is the highest ok score (zero false positives
    on it); a warning says how many ok items the budget would need.
    """
    s = np.sort(np.asarray(ok_scores, np.float64).ravel())[::-1]
    if s.size == 0:
        raise ModelError("cannot set a threshold: no ok items to measure the false-positive rate on")
    if not 0.0 < fpr < 1.0:
        raise ModelError(f"the FPR budget must be in (0, 1), got {fpr}")
    m = math.floor(fpr * s.size + 1e-9)
    if m == 0 and warn:
        log.warning("FPR budget %.4g needs at least %d ok items to be measured; only %d given: "
                    "threshold = highest ok score", fpr, math.ceil(1 / fpr), s.size)
    return float(s[min(m, s.size - 1)])


def fpr_at(ok_scores, threshold: float) -> float:
    s = np.asarray(ok_scores, np.float64)
    return float((s > threshold).mean()) if s.size else float("nan")


def load_ok_scores(model_dir: str | Path | None) -> np.ndarray:
    """The validation ok scores stored with a model (to set thresholds for other FPR budgets)."""
    path = Path(model_dir) / VAL_OK_SCORES if model_dir else None
    if path is None or not path.is_file():
        raise ModelError(f"{model_dir}: no {VAL_OK_SCORES}; the threshold for another "
                         "FPR budget cannot be derived (retrain with 'rig train')")
    return np.load(path)


def fpr_interval(false_positives: int, n_ok: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a false-positive rate measured as k of n.

    With 0 of 1,000 the upper end is 0.38 %: a 0.1 % budget is not shown by 1,000 ok items;
    0 of 5,000 gives 0.08 %.
    """
    if n_ok <= 0:
        return (float("nan"), float("nan"))
    p = false_positives / n_ok
    den = 1 + z * z / n_ok
    mid = (p + z * z / (2 * n_ok)) / den
    half = z * math.sqrt(p * (1 - p) / n_ok + z * z / (4 * n_ok * n_ok)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))
