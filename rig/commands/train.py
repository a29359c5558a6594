"""`rig train`: train, export and calibrate a damage model from a dataset."""

from __future__ import annotations

from ._common import check_output_dir, progress

NAME = "train"
HELP = "train a damage model on DATASET (split=train), set its threshold on split=val, write MODEL_DIR"


def add_arguments(p):
    p.add_argument("--data", required=True, help="dataset folder (see rig/dataset.py for the format), or a "
                   "manifest YAML listing the datasets many rigs exported (models/fleet.py); under "
                   "torchrun the processes train data-parallel (models/distributed.py)")
    p.add_argument("--out", required=True, help="model folder to write (ONNX, gallery, model card)")
    p.add_argument("--fpr", type=float, default=0.001,
                   help="false-positive budget on val's ok items that sets the threshold (default 0.001)")
    p.add_argument("--epochs", type=int, default=15, help="epochs of head training (default 15)")
    p.add_argument("--input-size", type=int, default=224, help="network input size, multiple of 16 (224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bank-size", type=int, default=1024,
                   help="patches kept per SKU in the anomaly memory bank (default 1024)")
    p.add_argument("--known-good", type=int, default=64,
                   help="ok train views per SKU added to its gallery entry as known-good (default 64)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and ONNX Runtime (2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior", default=None,
                   help="heads.pt to start the heads from (e.g. from python -m damage_rig.models.prior, "
                        "trained on many simulated catalogues and cameras); default and 'none': from scratch")
    p.add_argument("--no-reframe", dest="reframe", action="store_false",
                   help="keep every view as stored; by default a view much larger than its item (a whole "
                        "camera image) is cut to the trigger's crop around the item, for training and, "
                        "through the model card, for evaluation and enrollment")
    p.add_argument("--recalibrate", action="store_true",
                   help="keep the trained network in --out; rebuild its gallery and refit the fusion and "
                        "threshold on DATASET with the current scoring code (minutes, not a retraining)")


def run(args) -> int:
    from ..foundation.errors import RigError

    if not 0.0 < args.fpr < 1.0:
        raise RigError(f"--fpr must be between 0 and 1, got {args.fpr}")
    if args.epochs < 1:
        raise RigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.input_size < 64 or args.input_size % 16:
        raise RigError(f"--input-size must be a multiple of 16 and at least 64, got {args.input_size}")
    check_output_dir(args.out, "--out")
    if args.recalibrate:
        return _recalibrate(args)
    from ...models.train import train

    command = (f"rig train --data {args.data} --out {args.out} --fpr {args.fpr:g} --epochs {args.epochs} "
               f"--input-size {args.input_size} --batch-size {args.batch_size} --bank-size {args.bank_size} "
               f"--seed {args.seed} --known-good {args.known_good}"
               + (f" --prior {args.prior}" if args.prior else "") + ("" if args.reframe else " --no-reframe"))

    import os
    import shutil
    from pathlib import Path

    # under torchrun only rank 0 writes the model folder (and removes a half-made one)
    created = not Path(args.out).exists() and os.environ.get("RANK", "0") == "0"
    try:
        card = train(args.data, args.out, fpr=args.fpr, epochs=args.epochs, input_size=args.input_size,
                     batch_size=args.batch_size, seed=args.seed, bank_size=args.bank_size,
                     threads=args.threads, progress=progress(args), command=command,
                     known_good=args.known_good, reframe=args.reframe, **_prior(args.prior))
    except BaseException:
        if created:  # a failed run leaves no half-made model folder behind (one that existed is kept)
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    if not card:  # a torchrun rank other than 0: rank 0 writes the model and reports
        return 0
    m = card["val_metrics"]
    print(f"model written to {args.out}: threshold {card['threshold']:.4f} for FPR budget {args.fpr:g}; "
          f"val AUROC {m['auroc']:.4f}, val FPR at threshold {m['fpr_at_threshold']:.4%}, "
          f"val recall at threshold {m['recall_at_threshold']:.2%}")
    return 0


def _prior(value: str | None) -> dict:
    """--prior -> train()'s keyword: absent or 'none' = heads from scratch, else a heads.pt."""
    if value is None:
        return {}
    if value.lower() == "none":
        return {"prior": None}
    from pathlib import Path

    from ..foundation.errors import RigError

    if not Path(value).is_file():
        raise RigError(f"--prior {value}: no such file (a heads.pt, or 'none')")
    return {"prior": Path(value)}


def _recalibrate(args) -> int:
    from pathlib import Path

    from ...models.train import recalibrate
    from ..foundation.errors import RigError

    if not (Path(args.out) / "model_card.yaml").is_file():
        raise RigError(f"--recalibrate: {args.out} holds no trained model (no model_card.yaml); "
                       "train one first with 'rig train --data DATASET --out MODEL_DIR'")
    card = recalibrate(args.data, args.out, threads=args.threads, progress=progress(args),
                       command=f"rig train --data {args.data} --out {args.out} --recalibrate")
    m = card["val_metrics"]
    print(f"model {args.out} recalibrated: threshold {card['threshold']:.4f} for FPR budget "
          f"{card['fpr_budget']:g}; val AUROC {m['auroc']:.4f}, val recall at threshold "
          f"{m['recall_at_threshold']:.2%}")
    return 0
