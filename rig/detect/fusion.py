"""Fusion of the per-item signals into P(damage): a small logistic regression.

Features (per item, from all its views):
  0 max over views of the damage logit      (one view seeing damage is enough)
  1 mean over views of the damage logit     (agreement between views)
  2 max over views of the patch anomaly     (local damage vs the product's references)
  3 max over views of the global anomaly    (missing units, changed shape)
  4 identification margin                   (a low margin = unsure which product,
                                             so the anomaly is measured against
                                             possibly the wrong references)
  5 max over views of the height residual   (the view registered to the product's
                                             references: dents, holes, missing units)
  6 max over views of the colour residual   (the same for colour: stains, tears)
Both residuals enter as logarithms of "how many times a pristine view's
residual" (registration.py), so a product with a noisy shape and one with a
crisp shape meet on one scale.
A few weights fitted on split=val with an L2 penalty: few enough that fitting
and thresholding on the same split costs little optimism. Features are
standardised with the val mean/std stored alongside the weights. A model card
names the features its weights belong to, so older cards (five features) load
and score as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FEATURES = ("disc_max", "disc_mean", "patch_anomaly", "global_anomaly", "id_margin",
            "height_residual", "color_residual")
LEGACY_FEATURES = FEATURES[:5]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@dataclass
class Fusion:
    weights: list[float] = field(default_factory=lambda: [1.0] + [0.0] * (len(FEATURES) - 1))
    bias: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    std: list[float] = field(default_factory=lambda: [1.0] * len(FEATURES))
    features: tuple[str, ...] = FEATURES

    def vector(self, values: dict[str, float]) -> np.ndarray:
        """The fusion's input vector, in the order its weights expect, from named features."""
        return np.array([float(values[name]) for name in self.features])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, F) or (F,) features (in ``self.features`` order) -> P(damage)."""
        x = np.asarray(x, np.float64)
        z = ((x - np.asarray(self.mean)) / np.asarray(self.std)) @ np.asarray(self.weights) + self.bias
        return _sigmoid(z)

    def to_dict(self) -> dict:
        return {"features": list(self.features), "weights": [float(w) for w in self.weights],
                "bias": float(self.bias), "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> Fusion:
        names = tuple(d.get("features") or LEGACY_FEATURES[:len(d["weights"])])
        unknown = [n for n in names if n not in FEATURES]
        if unknown or len(names) != len(d["weights"]):
            raise ValueError(f"fusion features {list(names)} do not match its {len(d['weights'])} "
                             f"weights or name unknown features {unknown} (known: {list(FEATURES)})")
        return cls(list(d["weights"]), float(d["bias"]), list(d["mean"]), list(d["std"]), names)


def fit_fusion(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50,
               features: tuple[str, ...] = FEATURES) -> Fusion:
    """Class-balanced, L2-penalised logistic regression by Newton's method."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-9] = 1.0
    xs = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        # one class only: keep the discriminative logit as the score
        return Fusion([1.0] + [0.0] * (len(features) - 1), 0.0, list(mean), list(std), tuple(features))
    sw = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg) * len(y)
    w = np.zeros(xs.shape[1])
    reg = np.full(xs.shape[1], l2 * len(y))
    reg[-1] = 0.0
    for _ in range(iters):
        p = _sigmoid(xs @ w)
        grad = xs.T @ (sw * (p - y)) + reg * w
        hess = (xs * (sw * p * (1 - p))[:, None]).T @ xs + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Fusion(list(w[:-1]), float(w[-1]), list(mean), list(std), tuple(features))


def partial_auc(scores: np.ndarray, y: np.ndarray, max_fpr: float = 0.01) -> float:
    """Mean recall over the ok-score thresholds that keep the FPR at or below ``max_fpr``
    (the area under the ROC curve left of max_fpr, divided by max_fpr)."""
    s, y = np.asarray(scores, np.float64), np.asarray(y, bool)
    ok = np.sort(s[~y])[::-1]
    pos = s[y]
    if ok.size == 0 or pos.size == 0:
        return float("nan")
    k = max(1, int(np.floor(max_fpr * ok.size)))
    return float(np.mean([(pos > t).mean() for t in ok[:k]]))


def fit_fusion_low_fpr(x: np.ndarray, y: np.ndarray, max_fpr: float = 0.01, l2: float = 1e-2,
                       steps: int = 300, lr: float = 0.05,
                       features: tuple[str, ...] = FEATURES) -> tuple[Fusion, dict]:
    """A fusion for the sideline budget's tail: logistic regression first, then its weights
    tuned on a pairwise surrogate of the partial AUC at FPR <= ``max_fpr`` (every damaged item
    against the ok items that currently score highest), kept only if the val partial AUC rises.

    Returns (fusion, {"pauc_logistic", "pauc_tuned", "chosen"}).
    """
    base = fit_fusion(x, y, l2=l2, features=features)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return base, {"chosen": "logistic"}
    xs = (x - np.asarray(base.mean)) / np.asarray(base.std)
    w = np.asarray(base.weights, np.float64).copy()
    norm0 = np.linalg.norm(w) or 1.0
    pos, neg = xs[y], xs[~y]
    k = max(5, int(np.ceil(max_fpr * len(neg))))
    for _ in range(steps):
        s_neg = neg @ w
        hard = neg[np.argsort(s_neg)[-k:]]
        d = (pos @ w)[:, None] - (hard @ w)[None, :]          # (P, k) margins
        g = -1.0 / (1.0 + np.exp(np.clip(d, -30, 30)))         # d softplus(-d) / d d
        grad = (g[..., None] * (pos[:, None, :] - hard[None, :, :])).mean(axis=(0, 1)) + l2 * w
        w -= lr * grad
        w *= norm0 / (np.linalg.norm(w) or 1.0)  # the scale stays the logistic fit's
    tuned_scores = xs @ w
    p_log = partial_auc(xs @ np.asarray(base.weights), y, max_fpr)
    p_tun = partial_auc(tuned_scores, y, max_fpr)
    info = {"pauc_logistic": p_log, "pauc_tuned": p_tun, "max_fpr": max_fpr}
    if not p_tun > p_log:
        return base, {**info, "chosen": "logistic"}
    # the threshold is set on these scores afterwards, so the bias need not move
    return Fusion(list(w), base.bias, list(base.mean), list(base.std), tuple(features)), {**info, "chosen": "tuned"}
