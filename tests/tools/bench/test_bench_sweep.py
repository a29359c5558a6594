"""The load sweep on a stand-in pipeline of known cost: it terminates, finds the known maximum, is monotone."""

from __future__ import annotations

import pytest
from damage_rig.rig.foundation.errors import RigError
from damage_rig.tools.bench.sweep import SweepPoint, find_max_rate


class StandInPipeline:
    """Two stages in series (costs a <= c seconds per item), N items at a fixed rate, a deadline D.

    A discrete-event model, so the figures are exact (no clocks): item k
    arrives at k/r, stage 1 ends at max(arrival, previous end) + a, stage 2
    likewise + c. Above 1/c the queue grows by (c - 1/r) per item, so the last
    item waits longest and the highest rate with no late item is
    r* = 1 / (c - (D - a - c) / (N - 1)).
    """

    def __init__(self, a: float, c: float, deadline: float, n: int):
        self.a, self.c, self.deadline, self.n = a, c, deadline, n
        self.calls = []

    def expected_max_rate(self) -> float:
        return 1.0 / (self.c - (self.deadline - self.a - self.c) / (self.n - 1))

    def __call__(self, rate: float) -> SweepPoint:
        self.calls.append(rate)
        end1 = end2 = 0.0
        lat = []
        for k in range(self.n):
            arrive = k / rate
            end1 = max(arrive, end1) + self.a
            end2 = max(end1, end2) + self.c
            lat.append(end2 - arrive)
        late = sum(x > self.deadline + 1e-12 for x in lat)
        lat.sort()
        return SweepPoint(rate, late == 0, 1000 * lat[len(lat) // 2], 1000 * lat[-1], late)


def test_sweep_finds_the_known_maximum_within_its_tolerance_and_stops():
    pipe = StandInPipeline(a=0.010, c=0.040, deadline=0.300, n=50)  # r* = 1 / (0.04 - 0.25/49) ~ 28.7/s
    res = find_max_rate(pipe, 1.0, 100.0, max_steps=30, tolerance=0.01)
    r_star = pipe.expected_max_rate()
    assert r_star == pytest.approx(28.655, abs=1e-3)
    assert r_star * 0.99 <= res.max_rate <= r_star
    assert len(pipe.calls) <= 32  # the two ends plus at most max_steps
    # every point agrees with the model: sustained below r*, not above
    assert all(p.ok == (p.rate <= r_star) for p in res.points)


def test_sweep_is_bounded_by_max_steps():
    pipe = StandInPipeline(a=0.010, c=0.040, deadline=0.300, n=50)
    res = find_max_rate(pipe, 1.0, 100.0, max_steps=3, tolerance=0.001)
    assert len(pipe.calls) == 5
    assert 0 < res.max_rate <= pipe.expected_max_rate()
    assert [p.rate for p in res.curve()] == sorted(pipe.calls)


@pytest.mark.parametrize("costs", [(0.005, 0.020, 0.030, 0.050, 0.080)])
def test_sweep_is_monotone_in_the_cost_of_the_slow_stage(costs):
    found = []
    for c in costs:
        pipe = StandInPipeline(a=0.004, c=c, deadline=0.1, n=40)
        res = find_max_rate(pipe, 0.5, 400.0, max_steps=25, tolerance=0.005)
        assert res.max_rate == pytest.approx(pipe.expected_max_rate(), rel=0.006)
        found.append(res.max_rate)
    assert found == sorted(found, reverse=True)  # a costlier stage never sustains a higher rate
    assert len(set(found)) == len(found)  # and strictly lower


def test_sweep_ends_when_the_low_end_already_fails_or_the_high_end_holds():
    slow = StandInPipeline(a=0.1, c=0.5, deadline=0.6, n=20)
    res = find_max_rate(slow, 5.0, 50.0)
    assert res.max_rate == 0.0 and slow.calls == [5.0]
    fast = StandInPipeline(a=0.001, c=0.002, deadline=1.0, n=20)
    res = find_max_rate(fast, 1.0, 10.0)
    assert res.max_rate == 10.0 and fast.calls == [1.0, 10.0]


@pytest.mark.parametrize("lo,hi,steps,tol,msg", [(0, 5, 3, 0.05, "0 < low < high"), (5, 5, 3, 0.05, "0 < low"),
                                                 (1, 5, -1, 0.05, "steps"), (1, 5, 3, 0.0, "tolerance")])
def test_bad_sweep_arguments_are_refused(lo, hi, steps, tol, msg):
    with pytest.raises(RigError, match=msg):
        find_max_rate(lambda r: SweepPoint(r, True), lo, hi, max_steps=steps, tolerance=tol)
