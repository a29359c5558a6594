"""`rig enroll`: add or replace a product's references in a model's gallery (a new version)."""

from __future__ import annotations

from ._common import progress

NAME = "enroll"
HELP = "add/replace a product's reference images in a model's gallery without retraining"


def add_arguments(p):
    p.add_argument("--model", required=True, help="model folder (holds model_card.yaml and gallery/)")
    p.add_argument("--sku", help="the product to add or replace (with IMAGE...)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="reference images of --sku")
    p.add_argument("--data", help="enroll every SKU of DATASET/references instead")
    p.add_argument("--keep", action="store_true",
                   help="add to the SKU's existing references instead of replacing them")
    p.add_argument("--list", action="store_true", help="list the gallery versions and exit")
    p.add_argument("--rollback", metavar="VERSION", help="make gallery VERSION current again and exit")
    p.add_argument("--note", default="", help="note stored with the new version")
    p.add_argument("--db", default=None, help="also write the change (entries and images) to this reference store: "
                   "postgresql://USER@HOST:PORT/DB")
    p.add_argument("--config", default=None, help="rig config: write to its gallery.store when it has one")


def run(args) -> int:
    from ..detect.enroll import enroll, enroll_dataset
    from ..detect.gallery import list_versions, rollback
    from ..foundation.errors import RigError

    if args.list:
        for v in list_versions(args.model):
            mark = "*" if v["current"] else " "
            print(f"{mark} {v['version']}  {v['created']}  {v['n_skus']:4d} SKUs  {v['note']}")
        return 0
    if args.rollback:
        print(f"gallery of {args.model} is now {rollback(args.model, args.rollback)}")
        return 0
    db = _store_url(args)
    if args.data:
        if args.images:
            raise RigError("give either --data DATASET or --sku SKU IMAGE..., not both")
        from ..dataset import read_dataset

        ds = read_dataset(args.data, check_files=False)
        skus = [args.sku] if args.sku else None
        version = enroll_dataset(args.model, ds, skus=skus, note=args.note, progress=progress(args))
        n = 1 if args.sku else len(ds.references)
        print(f"enrolled {n} SKU(s) from {args.data}: gallery {version} is current")
        if db:
            done = skus or sorted(ds.references)
            _to_store(db, args.model, done, {s: ds.references[s] for s in done}, args.note or f"enroll from {args.data}")
        return 0
    if not args.sku or not args.images:
        raise RigError("give --sku SKU and at least one IMAGE (or --data DATASET)")
    version = enroll(args.model, args.sku, args.images, replace=not args.keep, note=args.note)
    print(f"{'extended' if args.keep else 'enrolled'} {args.sku} with {len(args.images)} image(s): "
          f"gallery {version} is current")
    if db:
        _to_store(db, args.model, [args.sku], {args.sku: args.images}, args.note or f"enroll {args.sku}")
    return 0


def _store_url(args) -> str | None:
    if args.db:
        return args.db
    if args.config:
        from ..config import load_config

        cfg = load_config(args.config)
        return cfg.gallery.store if cfg.gallery is not None else None
    return None


def _to_store(url: str, model_dir, skus: list[str], images: dict, note: str) -> None:
    """The enrolled products' new entries (a new store version) and their reference images."""
    from ..detect.store import write_enrollment

    version, n = write_enrollment(url, model_dir, skus, images, note)
    print(f"reference store: {len(skus)} product(s), {n} image(s) written; store version {version} is current")
