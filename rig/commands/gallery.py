"""`rig gallery`: a model's gallery in the site's reference store (push, list, rollback)."""

from __future__ import annotations

NAME = "gallery"
HELP = "upload a model's gallery to the reference store (PostgreSQL), list its versions, roll back"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    push = sub.add_parser("push", help="upload the model's current gallery as a new store version")
    push.add_argument("--model", required=True, help="model folder (model_card.yaml, gallery/)")
    push.add_argument("--db", required=True, help="postgresql://USER@HOST:PORT/DB (password: ~/.pgpass)")
    push.add_argument("--version", default=None, help="local gallery version to push (default: current)")
    push.add_argument("--images", action="store_true",
                      help="also upload the reference images the gallery names (where the files exist)")
    push.add_argument("--note", default="", help="note stored with the new version")
    site = sub.add_parser("site", help="set the products a site handles (its rigs index only those)")
    site.add_argument("--db", required=True, help="postgresql://USER@HOST:PORT/DB")
    site.add_argument("--site", required=True, help="the site's name (the rigs' gallery.site)")
    site.add_argument("skus_file", metavar="FILE", help="one SKU a line; an empty file removes the list")
    for name, help_ in (("list", "list the store's gallery versions for the model"),
                        ("rollback", "make an earlier store version current again")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--model", required=True, help="model folder (its card gives the model key)")
        q.add_argument("--db", required=True, help="postgresql://USER@HOST:PORT/DB")
        if name == "rollback":
            q.add_argument("version", type=int, help="store gallery version number")


def run(args) -> int:
    import time

    from ..detect.card import read_card
    from ..detect.store import ReferenceStore, model_key

    if args.action == "site":
        return _site(args)
    card = read_card(args.model)
    key = model_key(card)
    store = ReferenceStore(args.db, create=args.action == "push")
    try:
        if args.action == "list":
            cur = store.require_model(key)
            for v in store.versions(key):
                print(f"{'*' if v.version == cur else ' '} {v.version:5d}  {v.n_products:8d} products  {v.note}")
            return 0
        if args.action == "rollback":
            store.require_model(key)
            print(f"model {key}: store gallery version {store.rollback(key, args.version)} is current")
            return 0
        from ..detect.gallery import load_gallery

        gallery = load_gallery(args.model, args.version)
        t0 = time.monotonic()
        store.register_model(key, card)
        version = store.push(key, gallery.skus, replace_all=True,
                             note=args.note or f"push of {args.model} gallery {gallery.version}")
        n_img = _push_images(store, gallery) if args.images else 0
        dt = time.monotonic() - t0
        print(f"pushed {len(gallery.skus)} products ({n_img} images) of model {key} in {dt:.1f} s: "
              f"store version {version} is current")
        return 0
    finally:
        store.close()


def _site(args) -> int:
    from pathlib import Path

    from ..detect.store import ReferenceStore
    from ..foundation.errors import RigError

    try:
        skus = [ln.strip() for ln in Path(args.skus_file).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise RigError(f"{args.skus_file}: {exc}") from None
    store = ReferenceStore(args.db, create=True)
    try:
        n = store.set_site_products(args.site, skus)
    finally:
        store.close()
    print(f"site {args.site}: {n} products listed" if n else f"site {args.site}: no list (the whole catalogue)")
    return 0


def _push_images(store, gallery) -> int:
    from pathlib import Path

    from ..dataset import reference_depth_path

    n = 0
    for sku, e in gallery.skus.items():
        rows = []
        for src in e.sources:
            p = Path(src)
            if p.suffix.lower() != ".png" or not p.is_file():
                continue
            dp = reference_depth_path(p)
            rows.append((p.name, p.read_bytes(), dp.read_bytes() if dp is not None else None))
        if rows:
            n += store.put_images(sku, rows)
    return n
