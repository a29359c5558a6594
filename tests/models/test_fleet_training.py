"""Fleet training: `rig train` over a manifest of datasets from two rigs, one process and two under torchrun.

Stated tolerance (docs/catalogue.md): two processes give the heads of one within a relative L2
difference of 1e-3 and the same val P(damage) within 1e-3. Exact but for float rounding: the
trunk features are cached in float16, and a row computed in another batch can round the other way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from damage_rig.calibration.model import load_calibration
from damage_rig.rig.config import PACKAGE_DATA
from damage_rig.rig.foundation.errors import DatasetError

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

TRAIN = ["train", "--epochs", "2", "--input-size", "64", "--batch-size", "16", "--known-good", "2",
         "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from damage_rig.tools.sim.generate import SimSettings, generate_dataset

    d = tmp_path_factory.mktemp("fleet")
    calib = load_calibration(PACKAGE_DATA / "demo_calib.yaml")
    for name, seed in (("rig-a", 3), ("rig-b", 4)):
        generate_dataset(d / name, calib, SimSettings(items=12, seed=seed, skus=3, refs_per_sku=1, damage_rate=0.5),
                         workers=1, progress=False)
    (d / "fleet.yaml").write_text("datasets:\n  - rig-a\n  - rig-b\n")
    return d


def _run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_processes_under_torchrun_train_the_model_one_process_trains(fleet):
    _run([sys.executable, "-m", "damage_rig.rig.cli", *TRAIN, "--data", "fleet.yaml", "--out", "one"], fleet)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "damage_rig.rig.cli", *TRAIN, "--data", "fleet.yaml", "--out", "two"], fleet)
    one, two = (yaml.safe_load((fleet / m / "model_card.yaml").read_text()) for m in ("one", "two"))
    assert one["training"]["processes"] == 1 and two["training"]["processes"] == 2
    assert one["dataset"]["n_train"] == two["dataset"]["n_train"] > 12  # both rigs' items
    a, b = (torch.load(fleet / m / "heads.pt") for m in ("one", "two"))
    num = sum(float(((a[k].float() - b[k].float()) ** 2).sum()) for k in a)
    den = sum(float((a[k].float() ** 2).sum()) for k in a)
    assert (num / den) ** 0.5 < 1e-3
    va, vb = (np.load(fleet / m / "val_ok_scores.npy") for m in ("one", "two"))
    assert np.abs(va - vb).max() < 1e-3
    assert abs(one["threshold"] - two["threshold"]) < 1e-3


def test_a_bad_manifest_is_a_clear_error(fleet, tmp_path):
    from damage_rig.models.fleet import manifest_dataset

    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: []\n")
    with pytest.raises(DatasetError, match="non-empty list"):
        manifest_dataset(bad, tmp_path / "w1")
    bad.write_text(f"datasets: [{fleet / 'rig-a'}, {fleet / 'rig-a'}]\n")
    with pytest.raises(DatasetError, match="listed twice"):
        manifest_dataset(bad, tmp_path / "w2")
    ds_path = manifest_dataset(fleet / "fleet.yaml", tmp_path / "w3")
    from damage_rig.rig.dataset import read_dataset

    ds = read_dataset(ds_path)
    assert len(ds.items) == 24 and all(it.id.startswith(("r0_", "r1_")) for it in ds.items)
    assert all(len(v) == 2 for v in ds.references.values())  # each rig's reference of the product
