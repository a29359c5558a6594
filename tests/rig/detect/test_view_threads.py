"""An item's views compared with their references on several threads score exactly as one after the other."""

from __future__ import annotations

import numpy as np
import pytest
from damage_rig.calibration.model import load_calibration
from damage_rig.rig.config import DEMO_CONFIG, check_config
from damage_rig.rig.foundation.errors import ModelError
from damage_rig.rig.foundation.geometry import roi_from_corners
from damage_rig.rig.preprocess import make_preprocessor
from damage_rig.rig.service.assemble import load_scorer
from damage_rig.rig.trigger import Trigger
from damage_rig.tools.sim.belt import BeltSim
from damage_rig.tools.sim.generate import SimSettings


def _item_views(scorer, calib, belt, k):
    """Network outputs and canonical views of belt item k at the tunnel centre (the pipeline's steps)."""
    pre = make_preprocessor("opencv", scorer.input_size, scorer.mean, scorer.std)
    top = calib.camera("top")
    t = belt.item(k).t_center
    frames = {c: belt.frame(c, t) for c in ("top", "side")}
    trig = Trigger(top.depth_imager(), top.depth.depth_units_mm, 0.5, 8.0, 400)
    blob = min(trig.blobs(frames["top"][1]), key=lambda b: abs(b.x))
    outs, canons = {}, {}
    for c, (color, depth) in frames.items():
        cam = calib.camera(c)
        roi = roi_from_corners(cam, blob.corners())
        x0, y0, x1, y1 = roi
        aligned = pre.align(depth, cam.depth.K, cam.K, cam.size, cam.depth.T_color_depth,
                            cam.depth.depth_units_mm / 1000.0, window=roi)
        depth_mm = aligned.astype(np.float32) * np.float32(cam.depth.depth_units_mm)
        x = np.empty((1, scorer.channels, scorer.input_size, scorer.input_size), np.float32)
        pre.run([color], [roi], x, 0)
        x[0, 3:] = scorer.depth_channel(depth_mm)
        outs[c] = {n: v[0] for n, v in scorer.run(x).items()}
        canons[c] = scorer.canon_view(c, color[y0:y1, x0:x1].copy(), depth_mm)
    return outs, canons


def test_views_compared_side_by_side_score_the_same():
    cfg = check_config(DEMO_CONFIG)
    calib = load_calibration(cfg.calibration_path)
    scorer = load_scorer(cfg)
    belt = BeltSim(calib, ["top", "side"], SimSettings(seed=5, damage_rate=0.5), 0.5, 0.5, n_items=3)
    items = [_item_views(scorer, calib, belt, k) for k in range(3)]
    serial = [scorer.score_item(o, canons=c) for o, c in items]
    scorer.set_view_threads(2)
    try:
        parallel = [scorer.score_item(o, canons=c) for o, c in items]
    finally:
        scorer.set_view_threads(1)
    assert any(np.isfinite(v.height_residual) for s in serial for v in s.views.values())  # compared
    for a, b in zip(serial, parallel):
        assert a.score == b.score and a.sku_pred == b.sku_pred
        for v in a.views:
            assert a.views[v].height_residual == b.views[v].height_residual or (
                np.isnan(a.views[v].height_residual) and np.isnan(b.views[v].height_residual))
            assert a.views[v].color_residual == b.views[v].color_residual
    with pytest.raises(ModelError, match="at least 1"):
        scorer.set_view_threads(0)
