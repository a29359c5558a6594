"""`rig bench gallery`: the reference store, the cache and ANN identification at catalogue scale
(tools/bench/gallery.py does the work)."""

from __future__ import annotations

PARENT = "bench"  # reached as `rig bench gallery` (rig/cli.py: nested commands)
NAME = "gallery"
HELP = ("fill a synthetic catalogue in a reference store and report store size, push throughput, cold fetch, "
        "identification latency, ANN recall and the rig's memory")


def add_arguments(p):
    p.add_argument("--products", type=int, default=100_000, help="products in the synthetic catalogue")
    p.add_argument("--db", default=None, help="postgresql://USER@HOST:PORT/DB (a database for benchmarks)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON")
    p.add_argument("--cache-mb", type=float, default=512.0, help="the rig's cache bound (default 512)")
    p.add_argument("--items", type=int, default=2000, help="3-view items identified (default 2000)")
    p.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@1 (default 1000)")
    p.add_argument("--cold", type=int, default=500, help="cold fetches timed (default 500)")
    p.add_argument("--nprobe", type=int, default=32, help="inverted lists searched (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index-only", action="store_true",
                   help="identification alone: the ANN index over the synthetic products, no store (no --db needed)")
    p.add_argument("--reuse", action="store_true",
                   help="measure a catalogue an earlier run filled (same --products and --seed) instead of filling")


def run(args) -> int:
    import json
    from pathlib import Path

    from ..foundation.errors import RigError

    if not 1_000 <= args.products <= 100_000_000:
        raise RigError(f"--products must be between 1,000 and 100,000,000, got {args.products}")
    if not 16 <= args.cache_mb <= 1_000_000:
        raise RigError(f"--cache-mb must be between 16 and 1,000,000, got {args.cache_mb:g}")
    if not args.db and not args.index_only:
        raise RigError("give --db postgresql://USER@HOST:PORT/DB (or --index-only)")
    for opt in ("items", "recall_queries", "cold", "nprobe"):
        if getattr(args, opt) < 1:
            raise RigError(f"--{opt.replace('_', '-')} must be at least 1")
    from ...tools.bench.gallery import run_gallery_bench

    report = run_gallery_bench(args.db, args.products, cache_mb=args.cache_mb, items=args.items,
                               recall_queries=args.recall_queries, cold=args.cold, seed=args.seed,
                               nprobe=args.nprobe, reuse=args.reuse, index_only=args.index_only)
    keys = ("products", "store_mb", "push_products_per_s", "push_mb_per_s", "cold_fetch_p50_ms",
            "cold_fetch_p99_ms", "identify_p50_ms", "identify_p99_ms", "identify_cpu_p99_ms", "ann_recall_at_1", "rss_mb",
            "index", "load_avg_start", "load_avg_end")
    for k in keys:
        if k in report:
            print(f"{k:22s} {report[k]}")
    for k, t in report["targets"].items():
        print(f"target {k:15s} {'met   ' if t['met'] else 'MISSED'} ({report[k]} vs {t['target']})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
