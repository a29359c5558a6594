"""The rig's preprocessing of a view equals the model's reference (what `rig eval` runs)."""

from __future__ import annotations

import numpy as np
import pytest
from damage_rig.rig.preprocess import make_preprocessor
from damage_rig.rig.preprocess.reference import IMAGENET_MEAN, IMAGENET_STD, normalize_rgb


@pytest.mark.parametrize("backend", ["opencv", "twin"])
def test_runtime_preprocessor_matches_the_eval_reference(backend):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rois = [(10, 20, 250, 260), (300, 100, 420, 220), (0, 0, 64, 64)]
    pre = make_preprocessor(backend, 224, IMAGENET_MEAN, IMAGENET_STD)
    out = np.full((len(rois), 4, 224, 224), np.nan, np.float32)
    pre.run([frame] * len(rois), rois, out, 0)
    for i, (x0, y0, x1, y1) in enumerate(rois):
        ref = normalize_rgb(frame[y0:y1, x0:x1], 224)
        assert np.abs(out[i, :3] - ref).max() <= 1e-5
        assert np.isnan(out[i, 3]).all()  # the depth channel is filled elsewhere
