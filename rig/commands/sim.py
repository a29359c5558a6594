"""`rig sim`: render a simulated dataset (and librealsense recordings) from a calibration."""

from __future__ import annotations

from ._common import check_output_dir, progress

NAME = "sim"
HELP = "simulate the belt: write a dataset (and with --recording, .db3 recordings) of RGB-D items"


def add_arguments(p):
    p.add_argument("--items", type=int, default=200, help="number of items (default 200)")
    p.add_argument("--seed", type=int, default=1, help="seed of the items (default 1)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--calibration", default=None,
                   help="calibration YAML whose cameras render the views (default: the demo rig's)")
    p.add_argument("--skus", type=int, default=24, help="number of products in the catalogue (default 24)")
    p.add_argument("--catalogue-seed", type=int, default=0,
                   help="seed of the product catalogue; keep it to get the same products (default 0)")
    p.add_argument("--damage-rate", type=float, default=0.35,
                   help="share of damaged items (default 0.35; the real belt has < 0.001)")
    p.add_argument("--printed-share", type=float, default=0.3,
                   help="share of SKUs whose artwork shows damage-like pictures (default 0.3)")
    p.add_argument("--refs-per-sku", type=int, default=6, help="pristine references per SKU (default 6)")
    p.add_argument("--splits", default="0.6,0.2,0.2",
                   help="train,val,test fractions (default 0.6,0.2,0.2; e.g. 0,0,1 for a test-only set)")
    p.add_argument("--noiseless", action="store_true", help="no sensor noise, blur or depth holes")
    p.add_argument("--new-artwork", action="append", default=[], metavar="SKU",
                   help="render SKU with revised packaging artwork (repeatable)")
    p.add_argument("--recording", action="store_true",
                   help="also write DIR/recordings/CAMERA.db3: the belt seen by each camera, via pyrealsense2")
    p.add_argument("--recording-items", type=int, default=6, help="items on the recorded belt (default 6)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: up to 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def _settings(args):
    from ...tools.sim.generate import SimSettings
    from ..foundation.errors import RigError

    try:
        splits = tuple(float(x) for x in args.splits.split(","))
    except ValueError:
        splits = ()
    if len(splits) != 3 or any(x < 0 for x in splits) or abs(sum(splits) - 1) > 1e-6:
        raise RigError(f"--splits must be three non-negative fractions adding up to 1, got {args.splits!r}")
    checks = [("--items", args.items >= 1), ("--skus", args.skus >= 1),
              ("--refs-per-sku", args.refs_per_sku >= 1),
              ("--damage-rate", 0 <= args.damage_rate <= 1), ("--printed-share", 0 <= args.printed_share <= 1)]
    for name, ok in checks:
        if not ok:
            raise RigError(f"{name} is out of range ({getattr(args, name[2:].replace('-', '_'))})")
    return SimSettings(items=args.items, seed=args.seed, skus=args.skus, catalogue_seed=args.catalogue_seed,
                       damage_rate=args.damage_rate, printed_share=args.printed_share,
                       refs_per_sku=args.refs_per_sku, splits=splits, noise=not args.noiseless,
                       new_artwork=tuple(args.new_artwork))


def run(args) -> int:
    import time
    from pathlib import Path

    from ...calibration.model import load_calibration
    from ...tools.sim.generate import generate_dataset
    from ..config import PACKAGE_DATA
    from ..foundation.errors import RigError

    settings = _settings(args)
    check_output_dir(args.out, "--out")
    calib = load_calibration(args.calibration or PACKAGE_DATA / "demo_calib.yaml")
    known = {s.name for s in __import__("damage_rig.tools.sim.generate", fromlist=["x"]).catalogue_for(settings)}
    unknown = sorted(set(settings.new_artwork) - known)
    if unknown:
        raise RigError(f"--new-artwork: unknown SKU(s) {unknown}; the catalogue has {sorted(known)}")
    t0 = time.monotonic()
    print(f"rig sim: rendering {settings.items} items and {settings.skus * settings.refs_per_sku} references "
          f"for cameras {sorted(calib.cameras)} into {args.out}")
    ds = generate_dataset(args.out, calib, settings, workers=args.workers, overwrite=args.overwrite,
                          progress=progress(args))
    n_dmg = sum(it.damaged for it in ds.items)
    print(f"rig sim: wrote {len(ds.items)} items ({n_dmg} damaged) in {time.monotonic() - t0:.1f} s")
    if args.recording:
        from ...tools.sim.belt import record_belt

        paths = record_belt(Path(args.out) / "recordings", calib, settings, args.recording_items)
        for p in paths:
            print(f"rig sim: recording {p}")
    return 0
