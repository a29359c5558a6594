"""`rig dataset ...`: check datasets and bring data in (import-mvtec)."""

from __future__ import annotations

from ._common import check_output_dir

NAME = "dataset"
HELP = "dataset tools: check a dataset, merge one into another, import an MVTec-AD-style tree, export reviewed items"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("check", help="validate DATASET and print its counts")
    c.add_argument("dataset")
    m = sub.add_parser("import-mvtec", help="convert an MVTec-AD-style tree into the dataset format")
    m.add_argument("root", help="folder holding CATEGORY/train/good, CATEGORY/test/DEFECT, ...")
    m.add_argument("--out", required=True, help="new dataset folder")
    m.add_argument("--reference-share", type=float, default=0.2,
                   help="share of train/good per category kept as references (default 0.2)")
    m.add_argument("--val-share", type=float, default=0.5,
                   help="share of the test images that become split=val (default 0.5)")
    m.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("merge", help="add SRC's items to the dataset INTO (e.g. many simulated ok items into val)")
    g.add_argument("src", help="dataset whose items are added")
    g.add_argument("--into", required=True, metavar="DATASET", help="dataset that receives them")
    g.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="put every added item in this split (default: keep each item's own)")
    from ..review.export import add_export_arguments

    e = sub.add_parser("export", help="write the rig's reviewed items (event log) in the dataset format")
    add_export_arguments(e)


def _summary(ds) -> str:
    from collections import Counter

    lines = [f"{ds.root}: dataset {ds.name!r}, views {ds.views}, depth units {ds.depth_units_mm} mm"]
    for split in ("train", "val", "test"):
        items = ds.split(split)
        c = Counter(it.label for it in items)
        lines.append(f"  {split:5s}: {len(items):6d} items ({c['ok']} ok, {c['damaged']} damaged)")
    lines.append(f"  references: {sum(len(v) for v in ds.references.values())} images for "
                 f"{len(ds.references)} SKU(s)")
    return "\n".join(lines)


def run(args) -> int:
    from ..dataset import import_mvtec, read_dataset
    from ..foundation.errors import RigError

    if args.action == "check":
        print(_summary(read_dataset(args.dataset)))
        return 0
    if args.action == "merge":
        from ..dataset import merge_items

        n = merge_items(args.src, args.into, args.split)
        print(f"merged {n} items of {args.src} into {args.into}")
        print(_summary(read_dataset(args.into)))
        return 0
    check_output_dir(args.out, "--out")  # export and import-mvtec write a dataset there
    if args.action == "export":
        from ..review.export import run_export

        return run_export(args)
    for name in ("reference_share", "val_share"):
        if not 0.0 < getattr(args, name) < 1.0:
            raise RigError(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(args, name)}")
    ds = import_mvtec(args.root, args.out, args.reference_share, args.val_share, args.seed)
    print(_summary(ds))
    return 0
