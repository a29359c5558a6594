"""Reproduce the prior heads: ``python -m damage_rig.models.prior --work DIR``.

Heads trained on simulated data as varied as the simulator can make it, so
that they have seen damage on many products, cameras and belts before they see
one site's; ``rig train --prior DIR/prior/heads.pt`` starts its heads from them
(``train._warm_start``), and docs/models.md ("Prior heads") says what that did:

1. ``rig sim --randomize`` (tools/sim/domain.py): 6,000 items of 96 products
   (catalogue seed 901), 6 drawn camera setups (rig seed 902: 320x240 to
   1280x720, overhead and 30-60 degree oblique views, other view names), depth
   noise and dropouts, lights, belts, half of the items damaged, splits 80/20;
   no catalogue or camera seed that the project evaluates on;
2. ``rig train --data DIR/prior-data --out DIR/prior-model --prior none``;
3. its heads.pt is copied to ``DIR/prior/heads.pt`` (0.5 MB) and
   ``DIR/prior/prior.yaml`` records the commands, the dataset's hash and the
   prior model's own val figures.

A dataset or model already complete in DIR is reused, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from .ship import _complete, _rig

ITEMS = 6000
SIM = ["--randomize", "--items", str(ITEMS), "--skus", "96", "--catalogue-seed", "901", "--rig-seed", "902",
       "--rigs", "6", "--seed", "903", "--damage-rate", "0.5", "--splits", "0.8,0.2,0"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m damage_rig.models.prior", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="folder for the simulated dataset and the prior model")
    p.add_argument("--out", default=None, help="folder of heads.pt (default: WORK/prior)")
    p.add_argument("--workers", default="2", help="simulator processes (default 2)")
    args = p.parse_args(argv)
    work = Path(args.work)
    out = Path(args.out) if args.out else work / "prior"
    data, model = work / "prior-data", work / "prior-model"
    if not _complete(data, ITEMS):
        _rig("sim", *SIM, "--out", str(data), "--workers", args.workers, "--overwrite")
    if not (model / "model_card.yaml").is_file():
        rc = _rig("train", "--data", str(data), "--out", str(model), "--prior", "none", check=False)
        if rc:
            return rc
    card = yaml.safe_load((model / "model_card.yaml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model / "heads.pt", out / "heads.pt")
    record = {"reproduce": f"python -m damage_rig.models.prior --work {args.work}",
              "sim": "rig sim " + " ".join(SIM), "train": card.get("command"),
              "dataset": card.get("dataset"), "val_metrics": card.get("val_metrics"),
              "training": card.get("training")}
    (out / "prior.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    print(f"prior heads written to {out / 'heads.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
