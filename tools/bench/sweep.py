"""Load sweep: the highest item rate the pipeline sustains with no late decision.

``find_max_rate(measure, lo, hi)`` only needs a function that runs (or
models) the pipeline at one rate and says whether that rate was sustained, so
the search is tested on a pipeline of known cost and used on the real one.

The search assumes what a queueing pipeline does: a rate it sustains, it also
sustains when slower. It first checks both ends, then bisects the bracket
``[ok, failed]``; every step halves the bracket, so it ends after at most
``max_steps`` measurements beyond the two ends, or once the bracket is narrower
than ``tolerance`` (relative). Noise can make a measured point contradict that
assumption; the search does not re-measure, it keeps the bracket, and the
points it returns show what was seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ...rig.foundation.errors import RigError

log = logging.getLogger(__name__)


@dataclass
class SweepPoint:
    rate: float               # items per second
    ok: bool                  # sustained: no late decision, no fail-safe, no overload
    p50_ms: float = 0.0       # end-to-end latency
    p99_ms: float = 0.0
    late: int = 0
    failsafe: int = 0
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rate_items_per_s": round(self.rate, 3), "ok": self.ok, "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms, "late": self.late, "failsafe": self.failsafe, **self.detail}


@dataclass
class SweepResult:
    max_rate: float           # highest sustained rate measured (0 when even ``lo`` failed)
    points: list[SweepPoint]  # in the order measured

    def curve(self) -> list[SweepPoint]:
        """The measured points sorted by rate (for the plot and the JSON)."""
        return sorted(self.points, key=lambda p: p.rate)


def find_max_rate(measure: Callable[[float], SweepPoint], lo: float, hi: float, *, max_steps: int = 5,
                  tolerance: float = 0.05) -> SweepResult:
    """Bisect for the highest sustained rate in [lo, hi]; at most ``max_steps + 2`` measurements."""
    if not (lo > 0 and hi > lo):
        raise RigError(f"sweep range must satisfy 0 < low < high, got low={lo}, high={hi}")
    if max_steps < 0:
        raise RigError(f"sweep steps must be >= 0, got {max_steps}")
    if not 0 < tolerance < 1:
        raise RigError(f"sweep tolerance must be in (0, 1), got {tolerance}")
    points = []

    def probe(rate: float) -> SweepPoint:
        pt = measure(rate)
        points.append(pt)
        log.info("sweep: %.2f items/s -> %s (p99 %.1f ms, %d late)", rate, "ok" if pt.ok else "FAILED",
                 pt.p99_ms, pt.late)
        return pt

    if not probe(lo).ok:
        return SweepResult(0.0, points)
    if probe(hi).ok:
        return SweepResult(hi, points)
    good, bad = lo, hi
    for _ in range(max_steps):
        if (bad - good) <= tolerance * good:
            break
        mid = 0.5 * (good + bad)
        if probe(mid).ok:
            good = mid
        else:
            bad = mid
    return SweepResult(good, points)
