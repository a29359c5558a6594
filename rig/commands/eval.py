"""`rig eval`: score a dataset split with a model through the rig's own inference path."""

from __future__ import annotations

from ._common import check_output_dir, check_output_file, progress

NAME = "eval"
HELP = "evaluate MODEL_DIR on a dataset split via ONNX Runtime; write per-item scores and a report"


def add_arguments(p):
    p.add_argument("--model", required=True, help="model folder (model_card.yaml, model.onnx, gallery/)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="(default test)")
    p.add_argument("--scores", metavar="OUT.csv",
                   help="also write a per-item CSV: id,score,damaged,type,sku_pred")
    p.add_argument("--report", metavar="OUT.html", help="HTML report: ROC, histograms, worst cases")
    p.add_argument("--maps", metavar="DIR",
                   help="write one fused evidence map per view: DIR/<item id>_<view>.png, 16-bit, the "
                        "size of the view's image, higher = more damaged (4096 counts = a pristine view's "
                        "level); the pixel AUROC against the dataset's masks is printed")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")


def run(args) -> int:
    check_output_file(args.scores, "--scores")
    check_output_file(args.report, "--report")
    check_output_dir(args.maps, "--maps")
    from ...models.evaluate import evaluate
    from ...models.metrics import format_summary

    metrics = evaluate(args.model, args.data, args.split, scores_csv=args.scores, report=args.report,
                       threads=args.threads, progress=progress(args), maps=args.maps)
    print(format_summary(metrics))
    if "pixel_auroc" in metrics:
        print(f"pixel AUROC of the evidence maps: {metrics['pixel_auroc']:.4f}")
    written = [f"scores to {args.scores}" if args.scores else "", f"report to {args.report}" if args.report else "",
               f"maps to {args.maps}/" if args.maps else ""]
    if any(written):
        print("written: " + ", ".join(w for w in written if w))
    return 0
