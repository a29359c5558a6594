"""The simulator records each applied damage's drawn size (items.jsonl damage_size_mm)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from damage_rig.tools.sim.domain import WIDE_DAMAGE
from damage_rig.tools.sim.products import DamageSizes, make_catalogue
from damage_rig.tools.sim.scene import build_item, draw_spec

SZ = DamageSizes()


def _first(catalogue, kind):
    return next(i for i, s in enumerate(catalogue) if s.kind == kind)


@pytest.mark.parametrize("sku_kind, damage", [
    ("carton", ["hole"]), ("carton", ["tear"]), ("carton", ["crush"]), ("carton", ["spill"]),
    ("carton", ["deconstruction"]), ("blister", ["broken_set"]), ("mailer", ["tear", "hole"]),
])
def test_sizes_recorded_for_the_applied_kinds_only(sku_kind, damage):
    cat = make_catalogue(10, seed=0)
    k = _first(cat, sku_kind)
    for index in range(3):
        surf = build_item(draw_spec(cat, 4, index, 0.0, sku_index=k, force_damage=damage))
        sizes = surf.damage_size_mm
        assert set(sizes) == set(damage), sizes
        for named in sizes.values():
            assert named and all(np.isfinite(v) and v > 0 for v in named.values())
        if "hole" in sizes:
            assert 2 * SZ.hole_radius[0] <= sizes["hole"]["diameter"] <= 2 * SZ.hole_radius[1]
        if "tear" in sizes:
            w = sizes["tear"]["width"]
            assert isinstance(w, int) and SZ.tear_width[0] <= w < SZ.tear_width[1]
            assert 8 * SZ.tear_step[0] <= sizes["tear"]["length"] <= 8 * SZ.tear_step[1]
        if "crush" in sizes:
            sku = cat[k]
            r = sizes["crush"]["radius"] / min(sku.length, sku.width)
            assert SZ.crush_radius[0] - 1e-3 <= r <= SZ.crush_radius[1] + 1e-3
            assert sizes["crush"]["depth"] > 0
        if "spill" in sizes:
            assert SZ.spill_radius[0] <= sizes["spill"]["radius"] <= SZ.spill_radius[1]
        if "deconstruction" in sizes:
            r = sizes["deconstruction"]["contents_radius"]
            assert SZ.contents_radius[0] <= r <= SZ.contents_radius[1]
        if "broken_set" in sizes:
            assert sizes["broken_set"] == {"units_missing": 1}
            assert surf.units_present == cat[k].units - 1


def test_intact_item_records_no_size():
    cat = make_catalogue(10, seed=0)
    assert build_item(draw_spec(cat, 4, 0, 0.0, force_damage=[])).damage_size_mm == {}


def test_wide_damage_reaches_small_holes():
    """The randomised simulator's holes go down to 4 mm: some fall under issue 12's 8 mm."""
    cat = make_catalogue(10, seed=0)
    k = _first(cat, "carton")
    diam = []
    for index in range(40):
        spec = draw_spec(cat, 6, index, 0.0, sku_index=k, force_damage=["hole"])
        spec.sizes = WIDE_DAMAGE
        diam.append(build_item(spec).damage_size_mm["hole"]["diameter"])
    assert all(2 * WIDE_DAMAGE.hole_radius[0] <= d <= 2 * WIDE_DAMAGE.hole_radius[1] for d in diam)
    assert min(diam) < 8.0


def test_the_written_dataset_carries_the_sizes(small_sim_dataset):
    ds = small_sim_dataset
    damaged = [it for it in ds.items if it.damaged]
    assert damaged
    for it in ds.items:
        assert set(it.damage_size_mm) == set(it.damage)
    lines = [json.loads(x) for x in (ds.root / "items.jsonl").read_text().splitlines()]
    assert all(("damage_size_mm" in o) == (o["label"] == "damaged") for o in lines)
