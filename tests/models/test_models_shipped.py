"""The model that ships in models/shipped: complete, within budget, and scoring like its torch twin."""

import numpy as np
import pytest
from damage_rig.models import SHIPPED_DIR
from damage_rig.models.onnx_ops import check_onnx
from damage_rig.rig.detect.card import read_card
from damage_rig.rig.detect.gallery import list_versions
from damage_rig.rig.detect.scoring import Scorer
from damage_rig.rig.foundation.hashing import file_sha256 as sha256

pytestmark = pytest.mark.skipif(not (SHIPPED_DIR / "model_card.yaml").is_file(),
                                reason="no shipped model in this checkout")


def test_shipped_model_is_complete_and_small():
    card = read_card(SHIPPED_DIR)
    total = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024
    for name, digest in card["files"].items():
        assert sha256(SHIPPED_DIR / name) == digest, name
    assert card["threshold_set_on"]["fpr_resolvable"] and card["fpr_budget"] == 0.001
    assert any(v["current"] for v in list_versions(SHIPPED_DIR))
    check_onnx(SHIPPED_DIR / card["onnx"]["file"])


def test_shipped_onnx_scores_like_its_torch_model():
    import torch
    from damage_rig.models.arch import OUTPUT_NAMES, load_trained

    scorer = Scorer.load(SHIPPED_DIR)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (2, 180, 180, 3), dtype=np.uint8)
    depth = rng.uniform(500, 800, (2, 180, 180)).astype(np.float32)
    batch = np.stack([scorer.prepare_view(rgb[i], depth[i]) for i in range(2)])
    with torch.no_grad():
        ref = [t.numpy() for t in load_trained(SHIPPED_DIR)(torch.from_numpy(batch))]
    got = scorer.backend.run(batch)
    for name, r in zip(OUTPUT_NAMES, ref):
        assert np.abs(got[name] - r).max() < 1e-3, name
    item = scorer.score_item({"top": {k: v[0] for k, v in got.items()},
                              "side": {k: v[1] for k, v in got.items()}})
    assert item.sku_pred in scorer.gallery.skus and set(item.views) == {"top", "side"}
    assert item.views["top"].heatmap.shape == (14, 14)
