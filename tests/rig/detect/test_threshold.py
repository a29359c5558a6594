"""Threshold selection, fusion and metrics against synthetic scores with known distributions."""

import math

import numpy as np
import pytest
from damage_rig.models.metrics import auroc, recall_at_fpr, summarize
from damage_rig.rig.detect.fusion import FEATURES, fit_fusion, fit_fusion_low_fpr, partial_auc
from damage_rig.rig.detect.threshold import fpr_at, threshold_at_fpr
from damage_rig.rig.foundation.errors import ModelError


@pytest.mark.parametrize("budget", [0.001, 0.01, 0.05])
def test_threshold_meets_budget_on_the_data_it_was_set_on(budget):
    rng = np.random.default_rng(1)
    ok = rng.normal(0.0, 1.0, 20000)
    t = threshold_at_fpr(ok, budget)
    achieved = fpr_at(ok, t)
    assert achieved <= budget
    # and it is the lowest such threshold: one ok item short of the budget at most
    assert achieved >= budget - 1.0 / len(ok)


def test_threshold_generalises_to_fresh_samples_of_the_same_distribution():
    rng = np.random.default_rng(2)
    t = threshold_at_fpr(rng.normal(size=50000), 0.01)
    # N(0,1): the 99th percentile is 2.326
    assert abs(t - 2.326) < 0.05
    fresh = fpr_at(rng.normal(size=200000), t)
    assert abs(fresh - 0.01) < 0.0015


def test_threshold_with_too_few_ok_items_gives_zero_false_positives():
    ok = np.array([0.1, 0.5, 0.3])
    assert threshold_at_fpr(ok, 0.001, extrapolate=False) == 0.5
    t = threshold_at_fpr(ok, 0.001)
    assert t >= 0.5 and fpr_at(ok, t) == 0.0


def test_few_ok_items_extrapolate_the_tail_to_the_budget():
    """350 ok items cannot resolve 0.1 %: the highest of them lets through ~1/351 of new ok items;
    the tail fit brings the fresh FPR back near the budget, and it never flags a val ok item."""
    rng = np.random.default_rng(5)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    fresh = sigmoid(rng.logistic(-4, 1, 1_000_000))
    tail, emp = [], []
    for _ in range(60):
        ok = sigmoid(rng.logistic(-4, 1, 350))
        t = threshold_at_fpr(ok, 0.001, warn=False)
        assert fpr_at(ok, t) == 0.0
        tail.append(fpr_at(fresh, t))
        emp.append(fpr_at(fresh, threshold_at_fpr(ok, 0.001, extrapolate=False)))
    assert np.mean(emp) > 0.002          # the empirical rule: about 1/351
    assert 0.0003 < np.mean(tail) < 0.0016  # the extrapolated threshold: near the 0.1 % budget
    # with enough ok items the rule is the empirical one, unchanged
    ok = sigmoid(rng.logistic(-4, 1, 10000))
    assert threshold_at_fpr(ok, 0.001) == threshold_at_fpr(ok, 0.001, extrapolate=False)


def test_threshold_refuses_empty_or_bad_budget():
    with pytest.raises(ModelError, match="no ok items"):
        threshold_at_fpr([], 0.01)
    with pytest.raises(ModelError, match="budget"):
        threshold_at_fpr([0.1], 1.5)


def test_auroc_matches_the_binormal_formula():
    rng = np.random.default_rng(3)
    d = 1.5
    ok, bad = rng.normal(0, 1, 20000), rng.normal(d, 1, 20000)
    expected = 0.5 * (1 + math.erf(d / 2))  # Phi(d / sqrt(2))
    s = np.r_[ok, bad]
    y = np.r_[np.zeros(ok.size), np.ones(bad.size)]
    assert abs(auroc(s, y) - expected) < 0.01
    assert auroc([0.1, 0.2, 0.2, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)  # a tie counts half


def test_recall_at_fpr_on_separated_normals():
    rng = np.random.default_rng(4)
    ok, bad = rng.normal(0, 1, 100000), rng.normal(4, 1, 5000)
    r, t = recall_at_fpr(np.r_[ok, bad], np.r_[np.zeros(ok.size), np.ones(bad.size)], 0.001)
    # threshold ~3.09, recall = P(N(4,1) > 3.09) = 0.818
    assert abs(t - 3.09) < 0.05 and abs(r - 0.818) < 0.02


def test_fusion_learns_which_signal_carries_the_label():
    rng = np.random.default_rng(5)
    n = 4000
    y = rng.random(n) < 0.3
    x = rng.normal(size=(n, 5))
    x[:, 2] += 3.0 * y            # only the patch anomaly is informative
    f = fit_fusion(x, y)
    w = np.abs(f.weights)
    assert np.argmax(w) == 2 and w[2] > 5 * np.delete(w, 2).max()
    assert auroc(f(x), y) > 0.97


def test_summary_counts_printed_damage_and_broken_sets():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7])
    labels = np.array([1, 0, 0, 1, 1], bool)
    types = [["broken_set"], [], [], ["hole"], ["broken_set", "crush"]]
    m = summarize(scores, labels, 0.5, types=types, printed=[False, False, True, False, False],
                  sku_true=list("abcde"), sku_pred=list("abcdx"), type_names=("hole", "broken_set"))
    assert m["broken_set_recall"] == 1.0 and m["recall_per_type"]["hole"]["recall"] == 0.0
    assert m["printed_damage_false_alarm_rate"] == 1.0 and m["false_alarms"] == 1
    assert m["identification_top1"] == 0.8


def test_low_fpr_fusion_is_chosen_out_of_sample():
    """Tuning for the tail is judged on folds it was not fitted on; the winner is refitted on all."""
    rng = np.random.default_rng(3)
    n_ok, n_bad = 3000, 300
    x = rng.normal(0, 1, (n_ok + n_bad, 3))
    y = np.r_[np.zeros(n_ok, bool), np.ones(n_bad, bool)]
    x[y, 0] += 2.5                      # the signal
    x[y, 1] += rng.choice([0.0, 3.0], n_bad)  # half the damage shows in a second signal only
    fusion, info = fit_fusion_low_fpr(x, y, features=FEATURES[:3])
    assert info["folds"] == 2 and np.isfinite(info["pauc_logistic"]) and np.isfinite(info["pauc_tuned"])
    assert info["chosen"] == ("tuned" if info["pauc_tuned"] > info["pauc_logistic"] else "logistic")
    again, info2 = fit_fusion_low_fpr(x, y, features=FEATURES[:3])
    assert info2 == info and np.allclose(again.weights, fusion.weights)
    # whichever was chosen ranks fresh items of the same kind better than chance in the tail
    xt = rng.normal(0, 1, (n_ok + n_bad, 3))
    xt[y, 0] += 2.5
    xt[y, 1] += rng.choice([0.0, 3.0], n_bad)
    assert partial_auc(fusion(xt), y, 0.01) > 0.3
    assert fusion.weights[2] ** 2 < 0.1 * (fusion.weights[0] ** 2 + fusion.weights[1] ** 2)  # noise ignored


def test_fusion_weights_keep_each_features_direction():
    """A feature that only helps by pushing "less damaged" (here the max-over-views logit, when
    the mean carries it on the fitting split) is held at 0; the identification margin may only
    count against a low margin."""
    rng = np.random.default_rng(11)
    n = 3000
    y = rng.random(n) < 0.3
    mean = rng.normal(size=n) + 2.0 * y
    x = np.zeros((n, len(FEATURES)))
    x[:, 1] = mean
    x[:, 0] = mean + 0.3 * rng.normal(size=n) - 1.0 * y   # correlated with the mean, damage lowers it
    x[:, 4] = rng.normal(size=n) + 1.0 * y                # a higher margin on damaged items
    free = fit_fusion(x, y, signed=False)
    # (the unconstrained fit would use both the wrong way; the signed one does not)
    f = fit_fusion(x, y)
    assert f.weights[0] == 0.0 and f.weights[4] == 0.0 and f.weights[1] > 0
    assert auroc(f(x), y) > 0.9
    assert free.weights[0] < 0 and free.weights[4] > 0  # the scenario the constraint is for


def test_fusion_clips_a_wild_feature_value():
    """One absurd value (a view with no depth, a misidentified item's residual) moves the score at
    most as far as CLIP standard deviations of that feature."""
    from damage_rig.rig.detect.fusion import CLIP, Fusion
    rng = np.random.default_rng(12)
    n = 2000
    y = rng.random(n) < 0.3
    x = rng.normal(size=(n, len(FEATURES))) + np.outer(y, np.linspace(2.0, 0.5, len(FEATURES)))
    f = fit_fusion(x, y)
    assert f.clip == CLIP and Fusion.from_dict(f.to_dict()).clip == CLIP
    wild = np.array(f.mean, float)
    wild[5] = 1e9
    z_max = np.log(f(wild) / (1 - f(wild)))
    assert z_max <= f.bias + CLIP * f.weights[5] + 1e-6
    # an older card (no clip) keeps scoring unclipped
    d = f.to_dict()
    d.pop("clip")
    assert Fusion.from_dict(d).clip is None


def test_a_small_val_split_gets_a_stronger_penalty_and_no_tail_tuning():
    """Few val items, many weak features: cross-validation picks a stronger L2 than the default
    0.01, and with ~1 ok item in a fold's 1 % tail the tail tuning is not tried."""
    from damage_rig.rig.detect.fusion import choose_l2

    rng = np.random.default_rng(7)

    def draw(n_ok, n_bad):
        x = rng.normal(0, 1, (n_ok + n_bad, len(FEATURES)))
        y = np.r_[np.zeros(n_ok, bool), np.ones(n_bad, bool)]
        x[y, :2] += 0.8  # two weakly informative features, seven of noise
        return x, y

    x, y = draw(120, 60)
    l2, cv = choose_l2(x, y)
    assert l2 > 0.01 and cv[l2] == max(cv.values())
    fusion, info = fit_fusion_low_fpr(x, y)
    assert info["l2"] == l2 and info["chosen"] == "logistic" and "not tried" in info["tuning"]
    xt, yt = draw(4000, 400)
    weak = fit_fusion(x, y, l2=0.01)
    assert partial_auc(fusion(xt), yt, 0.05) > partial_auc(weak(xt), yt, 0.05) - 0.01
    from damage_rig.rig.detect.fusion import _auroc
    assert _auroc(fusion(xt), yt) > _auroc(weak(xt), yt)  # the noise features' weights shrank
