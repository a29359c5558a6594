"""`rig predict`: score any colour (and optional depth) images with a model; a CSV and heatmap overlays.

    rig predict --model DIR IMAGE... --out DIR [--sku SKU] [--depth DIR] [--json [FILE]]
    rig predict --model DIR --folder DIR --out DIR ...

Writes OUT/predictions.csv (file, sku, sku_given, sku_conf, score, threshold, decision,
type, type_prob, evidence_max, depth, overlay) and OUT/overlays/<name>.png (models/predict.py).
"""

from __future__ import annotations

from . import _common as common

NAME = "predict"
HELP = "score any colour (+depth) images with a model's gallery: a CSV and heatmap overlays"


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (model_card.yaml, gallery/)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="colour images to score")
    p.add_argument("--folder", metavar="DIR", help="score every image in DIR instead (NAME_depth.png = depth)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for predictions.csv and overlays/")
    p.add_argument("--sku", help="the product in every image (default: identify it against the gallery)")
    p.add_argument("--depth", metavar="DIR", help="depth images named like the colour ones (NAME.png or "
                   "NAME_depth.png, 16-bit); default: NAME_depth.png beside each image, where there is one")
    p.add_argument("--depth-units", type=float, default=1.0, metavar="MM",
                   help="millimetres per depth count (default 1.0)")
    p.add_argument("--view", metavar="NAME", help="which of the model's views the images show, for the "
                   "comparison with registered references (default: the model's first view)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    common.add_json(p, "the predictions")


def run(args) -> int:
    with common.text_to_stderr(args):
        return _predict(args)


def _predict(args) -> int:
    from ...models.predict import collect_images, predict
    from ..foundation.errors import RigError

    if args.folder and args.images:
        raise RigError("give IMAGE... or --folder DIR, not both")
    files = collect_images(args.images, args.folder)
    common.check_output_dir(args.out, "--out")
    common.check_output_file(args.json, "--json")
    preds = predict(args.model, files, args.out, sku=args.sku, depth_dir=args.depth,
                    depth_units_mm=args.depth_units, view=args.view, threads=args.threads,
                    progress=common.progress(args))
    width = min(max(len(p.file.name) for p in preds), 40)
    for p in preds:
        what = f"DAMAGED {p.type}" if p.damaged else "ok"
        sku = f"{p.sku} ({'given' if p.sku_given else f'identified, {p.sku_conf:.0%}'})"
        print(f"{p.file.name[:40]:<{width}}  {p.score:.4f}  {what:<16} {sku}")
    n_bad = sum(p.damaged for p in preds)
    print(f"{len(preds)} image(s): {n_bad} damaged, {len(preds) - n_bad} ok at threshold {preds[0].threshold:.4f}; "
          f"{args.out}/predictions.csv, overlays in {args.out}/overlays/")
    common.emit_json([p.row() for p in preds], args.json)
    return 0
