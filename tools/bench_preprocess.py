"""Benchmark: CPU twin vs OpenCV preprocess of 8 ROIs cut from 1280x720 frames (224 px).

Prints the median time of each path and the ratio twin/opencv (target <= 1.2),
measured in the same run on the same inputs, plus a breakdown of the OpenCV
path so a miss can be attributed, and the twin on one host thread for reference.
Both paths do the same work: crop, bilinear resize, normalise, HWC -> CHW into
the batch buffer. Thread counts: OpenCV uses cv2.getNumThreads() (its default:
every CPU), the twin DAMAGE_RIG_TWIN_THREADS or every CPU (or --threads).
Run:  python -m damage_rig.tools.bench_preprocess [--min-side 64 --max-side 640] [--fp16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from damage_rig.rig.preprocess import make_preprocessor

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _median_ms(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.monotonic()
        fn()
        ts.append(time.monotonic() - t0)
    return float(np.median(ts)) * 1e3


def main(argv=None) -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--min-side", type=int, default=120)
    ap.add_argument("--max-side", type=int, default=480)
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="host threads for the twin (default: DAMAGE_RIG_TWIN_THREADS or every CPU)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(3)]
    images = [frames[i % 3] for i in range(8)]
    rois = []
    for _ in range(8):
        w, h = (int(rng.integers(args.min_side, args.max_side + 1)) for _ in range(2))
        x0, y0 = int(rng.integers(0, 1280 - w + 1)), int(rng.integers(0, 720 - h + 1))
        rois.append((x0, y0, x0 + w, y0 + h))
    out = np.zeros((8, 4, args.size, args.size), np.float16 if args.fp16 else np.float32)
    pres = {n: make_preprocessor(n, args.size, MEAN, STD) for n in ("opencv", "twin")}
    if args.threads is not None:
        pres["twin"].set_threads(args.threads)
    twin_threads = pres["twin"].threads
    ms = {}
    for _ in range(2):  # interleave to share the machine's load fairly
        for name, pre in pres.items():
            ms.setdefault(name, []).append(_median_ms(lambda p=pre: p.run(images, rois, out),
                                                      args.repeats // 2))
    ms = {n: min(v) for n, v in ms.items()}
    if twin_threads > 1:
        pres["twin"].set_threads(1)
        serial = _median_ms(lambda: pres["twin"].run(images, rois, out), args.repeats // 2)
        pres["twin"].set_threads(twin_threads)
    else:
        serial = ms["twin"]

    crops = [img[y0:y1, x0:x1] for img, (x0, y0, x1, y1) in zip(images, rois)]
    fl = [c.astype(np.float32) for c in crops]
    sz = (args.size, args.size)
    parts = {
        "crop to float32": _median_ms(lambda: [c.astype(np.float32) for c in crops], args.repeats),
        "cv2.resize": _median_ms(lambda: [cv2.resize(f, sz, interpolation=cv2.INTER_LINEAR)
                                          for f in fl], args.repeats),
    }
    print(f"8 ROIs ({args.min_side}..{args.max_side} px) from 1280x720 -> {args.size}x{args.size}, "
          f"{out.dtype}, cv2 threads {cv2.getNumThreads()}")
    print(f"  opencv path : {ms['opencv']:.2f} ms  (of which {', '.join(f'{k} {v:.2f} ms' for k, v in parts.items())})")
    print(f"  CPU twin    : {ms['twin']:.2f} ms  (tap-table + pixel launches, {twin_threads} host "
          f"thread{'s' if twin_threads > 1 else ''}; on 1 thread {serial:.2f} ms)")
    ratio = ms["twin"] / ms["opencv"]
    print(f"  ratio twin/opencv: {ratio:.2f}  (target <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'}; "
          f"twin on 1 thread: {serial / ms['opencv']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
