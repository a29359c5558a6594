"""What scoring one item costs, for several models in one run: ``python -m damage_rig.tools.bench_scoring``.

    python -m damage_rig.tools.bench_scoring --model OLD --model NEW --data DATASET [--items 100]

Per model, the same items (all their views) go through the runtime path one
item at a time — preprocessing, the canonical pose for the registered
comparison, ONNX Runtime (``--threads``, default 2), identification, anomaly,
registered comparison, fusion — as the rig scores them. Models take turns item
by item, so a change in machine load hits them alike. It prints the median
and 90th percentile milliseconds per item, their ratio to the first model, and
the load average before and after (a figure measured on a loaded machine says
so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ..rig.dataset import read_dataset
from ..rig.detect.scoring import Scorer


def _score_once(scorer: Scorer, ds, item) -> float:
    if ds.framing != scorer.reframe:  # each model's views framed as it was trained (its card)
        ds.set_framing(scorer.reframe)
    t0 = time.perf_counter()
    crops = {v: (ds.load_rgb(item, v), ds.load_depth_mm(item, v)) for v in item.views}
    t_io = time.perf_counter() - t0  # file reading (and framing, the trigger's work) is not scoring: subtracted
    scorer.score_crops(crops, item.id)
    return (time.perf_counter() - t0 - t_io) * 1000.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m damage_rig.tools.bench_scoring", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model folder (repeat to compare)")
    p.add_argument("--data", required=True, help="dataset whose items are scored")
    p.add_argument("--split", default="test")
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    ds = read_dataset(args.data)
    items = ds.split(args.split)[: args.items] or ds.items[: args.items]
    scorers = [Scorer.load(m, threads=args.threads, max_batch=8) for m in args.model]
    load0 = os.getloadavg()
    for s in scorers:  # warm-up: sessions, caches
        _score_once(s, ds, items[0])
    times = [[] for _ in scorers]
    for it in items:
        for k, s in enumerate(scorers):
            times[k].append(_score_once(s, ds, it))
    load1 = os.getloadavg()
    base = float(np.median(times[0]))
    print(f"{len(items)} items ({sum(len(it.views) for it in items)} views), ONNX Runtime {args.threads} "
          f"threads; load average {load0[0]:.2f} before, {load1[0]:.2f} after, on {os.cpu_count()} cores")
    for m, t in zip(args.model, times):
        med, p90 = float(np.median(t)), float(np.percentile(t, 90))
        print(f"  {m}: {med:.1f} ms/item median, {p90:.1f} ms p90, x{med / base:.2f} of the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
