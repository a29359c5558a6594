"""The optional trunk fine-tuning: tuned blocks are stored in heads.pt and reload to match the ONNX."""

import numpy as np
import torch
from damage_rig.models.arch import OUTPUT_NAMES, TRUNK_PREFIX, DamageNet, load_trained
from damage_rig.models.train import train
from damage_rig.rig.detect.scoring import Scorer

from tests.helpers import synth


def test_finetuned_trunk_reloads_and_matches_its_onnx(tmp_path):
    ds = synth.make_dataset(tmp_path / "data", n_train=40, n_val=30, n_test=4, seed=1)
    train(ds.root, tmp_path / "model", epochs=2, input_size=64, progress=False, finetune_epochs=1)
    state = torch.load(tmp_path / "model" / "heads.pt", weights_only=True)
    tuned = [k for k in state if k.startswith(TRUNK_PREFIX)]
    assert tuned and {int(k.split(".")[2]) for k in tuned} == set(range(5, 11))
    # the tuned weights differ from ImageNet's, and the reloaded model scores like the ONNX
    fresh = load_trained(tmp_path / "model")
    imagenet = DamageNet(64, 4, 6)
    imagenet.trunk.load_pretrained()
    assert not torch.equal(fresh.trunk.blocks[8].project.conv.weight,
                           imagenet.trunk.blocks[8].project.conv.weight)
    assert torch.equal(fresh.trunk.blocks[12].project.conv.weight,
                       imagenet.trunk.blocks[12].project.conv.weight)
    scorer = Scorer.load(tmp_path / "model")
    items = ds.split("test")[:2]
    batch = np.stack([scorer.prepare_view(ds.load_rgb(it, v), ds.load_depth_mm(it, v))
                      for it in items for v in it.views])
    with torch.no_grad():
        ref = dict(zip(OUTPUT_NAMES, (t.numpy() for t in fresh(torch.from_numpy(batch)))))
    got = scorer.backend.run(batch)
    for name in OUTPUT_NAMES:
        assert np.abs(ref[name] - got[name]).max() < 1e-3, name
