"""Prior heads: `rig train --prior HEADS` starts its heads from another model's."""

import pytest
import torch
from damage_rig.models.arch import DamageNet
from damage_rig.models.train import _warm_start
from damage_rig.rig.foundation.errors import DatasetError


def _saved_heads(path, channels=6, seed=1):
    torch.manual_seed(seed)
    net = DamageNet(64, channels, 6, hidden=16, embed_dim=8, patch_dim=4)
    torch.save(dict(net.heads.state_dict()), path)
    return net.heads.state_dict()


def test_warm_start_takes_every_matching_tensor_but_the_pca(tmp_path):
    prior = _saved_heads(tmp_path / "heads.pt")
    prior_pca = prior["pca_mean"].clone()
    torch.manual_seed(2)
    net = DamageNet(64, 6, 6, hidden=16, embed_dim=8, patch_dim=4)
    net.heads.pca_mean.fill_(7.0)
    got = _warm_start(net, tmp_path / "heads.pt")
    state = net.heads.state_dict()
    assert torch.equal(state["damage.weight"], prior["damage.weight"])
    assert torch.equal(state["depth.net.0.weight"], prior["depth.net.0.weight"])
    assert torch.all(state["pca_mean"] == 7.0) and not torch.all(prior_pca == 7.0)
    assert got["tensors"] == len([k for k in state if not k.startswith("pca")])
    assert len(got["sha256"]) == 64


def test_warm_start_skips_tensors_of_another_shape(tmp_path):
    prior = _saved_heads(tmp_path / "heads.pt", channels=6)
    torch.manual_seed(3)
    rgb_only = DamageNet(64, 3, 6, hidden=16, embed_dim=8, patch_dim=4)  # no depth branch: hidden.0 is narrower
    before = {k: v.clone() for k, v in rgb_only.heads.state_dict().items()}
    got = _warm_start(rgb_only, tmp_path / "heads.pt")
    state = rgb_only.heads.state_dict()
    assert torch.equal(state["hidden.0.weight"], before["hidden.0.weight"])  # shape differs: kept
    assert torch.equal(state["hidden.2.weight"], prior["hidden.2.weight"])  # same shape: taken
    assert 0 < got["tensors"] < len(state)


def test_warm_start_without_a_prior_and_with_a_missing_file(tmp_path):
    net = DamageNet(64, 6, 6, hidden=16, embed_dim=8, patch_dim=4)
    assert _warm_start(net, None) == {}
    with pytest.raises(DatasetError, match="prior heads not found"):
        _warm_start(net, tmp_path / "nope.pt")


def test_rig_train_names_a_missing_prior_before_reading_anything(tmp_path, capsys):
    from damage_rig.rig.cli import main

    rc = main(["train", "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "m"),
               "--prior", str(tmp_path / "nope.pt")])
    assert rc != 0
    assert "--prior" in capsys.readouterr().err and not (tmp_path / "m").exists()
