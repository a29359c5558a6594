"""`rig tune`: sideline rate and recall at candidate thresholds, from the rig's reviewed items."""

from __future__ import annotations

from ._common import add_json, check_output_file, emit_json, text_to_stderr

NAME = "tune"
HELP = "sideline rate / recall at candidate thresholds from reviewed items; optionally write a tuned model"


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model directory (with model_card.yaml)")
    p.add_argument("--state", required=True, metavar="DIR", help="the rig's state directory")
    p.add_argument("--thresholds", type=float, nargs="+", metavar="T",
                   help="thresholds to evaluate (default: quantiles of the reviewed scores + the current one)")
    p.add_argument("--fpr-budget", type=float, metavar="F", help="also find the threshold for this est. FPR")
    p.add_argument("--all-versions", action="store_true", help="use items scored by any model version")
    p.add_argument("--apply", type=float, metavar="T", help="write a copy of the model with threshold T ...")
    p.add_argument("--out", metavar="NEW_MODEL_DIR", help="... into this new folder (needed with --apply)")
    add_json(p, "the report")


def run(args) -> int:
    with text_to_stderr(args):
        return _tune(args)


def _tune(args) -> int:
    from ..foundation.errors import RigError
    from ..review.tune import format_report, tune, write_tuned_model

    if args.fpr_budget is not None and not 0 < args.fpr_budget < 1:
        raise RigError(f"--fpr-budget must be between 0 and 1, got {args.fpr_budget}")
    if (args.apply is None) != (args.out is None):
        raise RigError("--apply T and --out NEW_MODEL_DIR go together")
    check_output_file(args.json, "--json")
    thresholds = list(args.thresholds or [])
    if args.apply is not None:
        thresholds.append(args.apply)
    rep = tune(args.model, args.state, thresholds or None, args.fpr_budget, args.all_versions)
    emit_json(rep.to_json(), args.json)
    print(format_report(rep))  # on stderr with --json - (text_to_stderr)
    if args.apply is not None:
        out = write_tuned_model(args.model, args.out, args.apply, rep, args.state)
        print(f"wrote {out} with threshold {args.apply} (set model.dir: {out} in the rig config to use it)")
    return 0
