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
#: below this many ok items above the empirical threshold, the threshold is extrapolated from the tail
TAIL_MIN_EXCEEDANCES = 5


def threshold_at_fpr(ok_scores, fpr: float, warn: bool = True, extrapolate: bool = True) -> float:
    """Smallest t with mean(ok_scores > t) <= fpr, extrapolated where the data cannot resolve it.

    With n ok scores sorted high to low, at most m = floor(fpr * n) may exceed t,
    so the empirical threshold is the (m+1)-th highest score. When fewer than
    ``TAIL_MIN_EXCEEDANCES`` ok items would lie above it (0.1 % of fewer than
    5,000 items), the empirical threshold is mostly noise: with 350 ok items it
    is the highest one, and the FPR it gives on new items averages 1/(n+1) =
    0.29 %, three times the budget. There the budget's quantile is extrapolated
    from the ok tail (:func:`tail_quantile`) and the threshold is the higher of
    the two, so it never lets through more val ok items than the rule allows.
    ``extrapolate=False`` gives the empirical threshold always (a ROC point of
    the data at hand, as metrics read it).
    """
    s = np.sort(np.asarray(ok_scores, np.float64).ravel())[::-1]
    if s.size == 0:
        raise ModelError("cannot set a threshold: no ok items to measure the false-positive rate on")
    if not 0.0 < fpr < 1.0:
        raise ModelError(f"the FPR budget must be in (0, 1), got {fpr}")
    m = math.floor(fpr * s.size + 1e-9)
    empirical = float(s[min(m, s.size - 1)])
    if m >= TAIL_MIN_EXCEEDANCES or not extrapolate:
        if m == 0 and warn:
            log.warning("FPR budget %.4g needs at least %d ok items to be measured; only %d given: "
                        "threshold = highest ok score", fpr, math.ceil(1 / fpr), s.size)
        return empirical
    if warn:
        log.warning("FPR budget %.4g needs %d ok items to be measured directly (%d given): the threshold "
                    "is extrapolated from the ok scores' tail", fpr, math.ceil(TAIL_MIN_EXCEEDANCES / fpr), s.size)
    return max(empirical, tail_quantile(s, fpr))


def tail_quantile(ok_scores, fpr: float) -> float:
    """The score exceeded by a share ``fpr`` of ok items, from an exponential fit to their tail.

    Probabilities (all scores in [0, 1]) are fitted as logits; their upper tail is modelled as exponential
    above the (k+1)-th highest, k = max(10, 10 % of n) (peaks over a threshold,
    generalised Pareto with shape 0: a Gaussian or logistic tail is at most this
    heavy, so the estimate errs towards fewer false alarms). Resampling 350 of
    the shipped model's 5,055 ok val scores: the empirical rule's FPR on all
    5,055 averages 0.27 % (90th percentile 0.65 %), this one's 0.09 % (0.22 %).
    """
    s = np.sort(np.asarray(ok_scores, np.float64).ravel())[::-1]
    n = s.size
    k = min(n - 1, max(10, math.ceil(0.1 * n)))
    if k < 2:
        return float(s[0])
    probabilities = bool(s[0] <= 1.0 and s[-1] >= 0.0)
    if probabilities:
        p = np.clip(s, 1e-12, 1 - 1e-12)
        z = np.log(p) - np.log1p(-p)
    else:
        z = s
    u = z[k]
    scale = float(np.mean(z[:k] - u))
    q = u + scale * math.log(k / (n * fpr)) if scale > 0 else float(z[0])
    if not probabilities:
        return float(q)
    return float(1.0 / (1.0 + math.exp(-min(max(q, -60.0), 60.0))))


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
