"""The domain-randomised simulator (`rig sim --randomize`, tools/sim/domain.py): reproducible,
within its stated ranges, and still the dataset format that training and scoring read."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from damage_rig.rig.cli import main
from damage_rig.rig.dataset import read_dataset
from damage_rig.rig.foundation.geometry import roi_from_corners
from damage_rig.rig.trigger import Trigger
from damage_rig.tools.sim import domain
from damage_rig.tools.sim.generate import (
    SimSettings,
    calibrations_for,
    catalogue_for,
    generate_dataset,
)
from damage_rig.tools.sim.products import DamageSizes
from damage_rig.tools.sim.render import DepthNoise, Placed, apply_sensor, render
from damage_rig.tools.sim.scene import build_item, frame_roi, item_box_corners, render_views

from tests.helpers.files import tree_digest


def _wide(**kw) -> SimSettings:
    base = {"items": 4, "seed": 3, "skus": 3, "refs_per_sku": 1, "damage_rate": 0.5, "randomize": True,
            "rigs": 2}
    base.update(kw)
    return SimSettings(**base)


def test_randomized_dataset_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate_dataset(tmp_path / "a", None, _wide(), workers=1, progress=False)
    b = generate_dataset(tmp_path / "b", None, _wide(), workers=2, progress=False)
    c = generate_dataset(tmp_path / "c", None, _wide(seed=4), workers=1, progress=False)
    assert tree_digest(a.root) == tree_digest(b.root)
    assert tree_digest(a.root) != tree_digest(c.root)
    # the camera setups are named in the notes, the view list is the union of their cameras
    assert "randomized" in a.notes and "rig seed 3" in a.notes
    assert a.views == sorted({v for cal in calibrations_for(_wide(), None) for v in cal.cameras})


def _tilt_deg(cam) -> float:
    """Angle between the optical axis and straight down."""
    axis = cam.T_ref_cam[:3, 2]
    return float(np.degrees(np.arccos(np.clip(-axis[2], -1, 1))))


def test_camera_setups_vary_within_the_stated_ranges():
    sizes, names, counts, tilts = set(), set(), set(), []
    for seed in range(40):
        cal = domain.draw_rig(seed, 0).calibration
        assert 1 <= len(cal.cameras) <= 3
        counts.add(len(cal.cameras))
        names.add(tuple(sorted(cal.cameras)))
        for name, cam in cal.cameras.items():
            w, h = cam.size
            sizes.add((w, h))
            assert 320 <= w <= 1280 and 240 <= h <= 720 and (w, h) in domain.RESOLUTIONS
            assert "_" not in name and "-" not in name  # reference files are NAME_VIEW.png
            t = _tilt_deg(cam)
            lo, hi = domain.OBLIQUE_DEG
            assert t <= domain.TOP_TILT_DEG[1] + 0.01 or lo - 0.01 <= t <= hi + 0.01
            tilts.append(t)
            assert cam.T_ref_cam[2, 3] > 0.35  # the lens is above the tallest product
            # the tunnel centre projects into the image
            uv, z = cam.project(np.array([[0.0, 0.0, 0.0]]))
            assert z[0] > 0 and 0 <= uv[0, 0] < w and 0 <= uv[0, 1] < h
    assert counts == {1, 2, 3}
    assert len(sizes) >= 5
    assert len(names) >= 30
    assert min(tilts) < 12 and max(tilts) > 50 and any(30 <= t <= 40 for t in tilts)
    # reproducible: the same seed draws the same cameras
    a, b = domain.draw_rig(7, 1).calibration, domain.draw_rig(7, 1).calibration
    assert sorted(a.cameras) == sorted(b.cameras)
    assert all(np.array_equal(a.cameras[n].T_ref_cam, b.cameras[n].T_ref_cam) for n in a.cameras)


def test_views_are_framed_as_the_runtime_crops_them_or_wider():
    rng = np.random.default_rng(0)
    kinds = {"crop": 0, "full": 0, "loose": 0}
    for _ in range(600):
        roi, size = (100, 40, 180, 120), (320, 240)
        x0, y0, x1, y1 = frame_roi(roi, size, rng)
        assert 0 <= x0 <= 100 and 0 <= y0 <= 40 and 180 <= x1 <= 320 and 120 <= y1 <= 240
        kind = "crop" if (x0, y0, x1, y1) == roi else "full" if (x0, y0, x1, y1) == (0, 0, 320, 240) else "loose"
        kinds[kind] += 1
    assert kinds["crop"] > 350 and kinds["full"] > 50 and kinds["loose"] > 50


def test_generalisation_split_shares_no_product_and_no_camera_with_training():
    """The documented commands (docs/models.md): train on rig seed 301 (4 setups) and catalogue 0,
    hold out rig seed 909 and catalogue 9."""
    train = _wide(seed=301, skus=24, rigs=4)
    gen = _wide(seed=909, catalogue_seed=9, rig_seed=909, rigs=1)
    assert not {s.name for s in catalogue_for(train)} & {s.name for s in catalogue_for(gen)}
    seen = [(c.size, np.round(c.T_ref_cam, 3).tobytes()) for cal in calibrations_for(train, None)
            for c in cal.cameras.values()]
    for c in calibrations_for(gen, None)[0].cameras.values():
        assert (c.size, np.round(c.T_ref_cam, 3).tobytes()) not in seen


def test_items_and_products_vary_within_the_stated_ranges():
    cat = domain.make_wide_catalogue(60, seed=2)
    kinds = {s.kind for s in cat}
    assert kinds == {"carton", "mailer", "blister", "tub", "bottle", "flat"}
    flats = [s for s in cat if s.kind == "flat"]
    assert flats and all(2.0 <= s.height <= 3.0 for s in flats)
    assert min(s.length for s in cat) < 80 and max(s.length for s in cat) > 250
    assert all(s.name.startswith("c2-") for s in cat)  # never the name of another catalogue's product
    specs = [domain.draw_wide_spec(cat, 5, i, 0.5) for i in range(300)]
    sig = [s.depth_noise.sigma_mm for s in specs]
    assert 0.5 <= min(sig) < 0.7 and 2.8 < max(sig) <= 3.0
    assert {s.light.belt_pattern for s in specs} == set(domain.BELT_PATTERNS)
    tints = np.array([s.light.tint for s in specs])
    assert tints[:, 0].max() > 1.05 and tints[:, 2].max() > 1.05  # warm and cool casts both occur
    grey = np.array([s.light.belt_color.mean() for s in specs])
    assert grey.min() < 0.08 and grey.max() > 0.35
    assert all(s.sizes == domain.WIDE_DAMAGE for s in specs)
    # about MISSING_DEPTH of the views lose their depth frame, both ways
    lost = [domain.missing_depth(5, i, v) for i in range(2000) for v in ("top", "left")]
    share = sum(x is not None for x in lost) / len(lost)
    assert 0.02 < share < 0.07 and {"absent", "zero"} <= set(lost)


def _find_lost_frames(n_items: int, rigs: int):
    """A seed whose first items include a view with no depth file and one with an all-zero frame."""
    for seed in range(1, 400):
        cals = calibrations_for(_wide(seed=seed, rigs=rigs), None)
        kinds = {domain.missing_depth(seed, i, v)
                 for i in range(n_items) for v in cals[domain.item_rig(seed, i, rigs)].cameras}
        if {"absent", "zero"} <= kinds:
            return seed
    raise AssertionError("no seed with both kinds of missing depth frame")


def test_missing_depth_frames_are_read_and_scored(tmp_path, model_dir):
    from damage_rig.rig.detect.scoring import Scorer

    seed = _find_lost_frames(6, 1)
    ds = generate_dataset(tmp_path / "ds", None, _wide(seed=seed, items=6, rigs=1), workers=1, progress=False)
    seen = set()
    for it in ds.items:
        for v, vp in it.views.items():
            kind = domain.missing_depth(seed, int(it.id.split("-")[1]), v)
            depth = ds.load_depth_mm(it, v)
            rgb, mask = ds.load_rgb(it, v), ds.load_mask(it, v)
            assert depth is None or depth.shape == rgb.shape[:2]
            assert (mask is None) == (not it.damaged) and (mask is None or mask.shape == rgb.shape[:2])
            if kind == "absent":
                assert vp.depth is None and depth is None
            elif kind == "zero":
                assert depth is not None and not depth.any()
            else:
                assert depth is not None and depth.any()
            seen.add(kind)
    assert {"absent", "zero"} <= seen
    scorer = Scorer.load(model_dir, threads=1)
    lost = [it for it in ds.items if any(domain.missing_depth(seed, int(it.id.split("-")[1]), v)
                                         for v in it.views)]
    for it in lost:
        crops = {v: (ds.load_rgb(it, v), ds.load_depth_mm(it, v)) for v in it.views}
        score = scorer.score_crops(crops, item_id=it.id)
        assert np.isfinite(score.score) and set(score.views) == set(it.views)


@pytest.mark.parametrize("kind", ["hole", "crush", "spill", "tear"])
def test_masks_cover_small_damage_at_low_resolution(kind):
    """The smallest damage of the randomised ranges (2-3 mm holes, 3 mm dents, 6-8 mm spills), seen
    by a 320x240 camera: the mask marks it and every visible change lies next to the mask."""
    small = DamageSizes(crush_radius=(0.12, 0.15), crush_depth=(0.12, 0.13), tear_width=(2, 3),
                        tear_step=(3.0, 4.0), hole_radius=(2.5, 3.0), hole_depth=(3.0, 4.0),
                        spill_radius=(6.0, 8.0))
    rig = next(domain.draw_rig(s, 0).calibration for s in range(100)
               if any(c.size == (320, 240) for c in domain.draw_rig(s, 0).calibration.cameras.values()))
    cam = next(n for n, c in rig.cameras.items() if c.size == (320, 240))
    cat = domain.make_wide_catalogue(6, seed=1)
    k = next(i for i, s in enumerate(cat) if s.kind == "carton")
    intact = domain.draw_wide_spec(cat, 8, 0, 0.0, sku_index=k, force_damage=[])
    damaged = dataclasses.replace(domain.draw_wide_spec(cat, 8, 0, 0.0, sku_index=k, force_damage=[kind]),
                                  sizes=small)
    vi = render_views(intact, rig, cameras=[cam], noise=False)[cam]
    vd = render_views(damaged, rig, cameras=[cam], noise=False, surface=build_item(damaged))[cam]
    mask = vd.mask > 0
    assert mask.sum() >= 1 and (vi.mask == 0).all()
    if vd.roi != vi.roi:  # a spill beside the item widens the crop; its mask alone is checked
        assert kind == "spill"
        return
    changed = (np.abs(vd.depth_mm - vi.depth_mm) > 1.0) | (
        np.abs(vd.rgb.astype(int) - vi.rgb.astype(int)).max(-1) > 25)
    assert changed.sum() >= 1
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (changed & near).sum() / changed.sum() > 0.9


def test_a_2mm_flat_item_renders_and_the_trigger_crops_it_whole(demo_calib):
    cat = domain.make_wide_catalogue(12, seed=3)
    # a matte, light card (a glossy or dark one loses depth on purpose: see the dropout test)
    k = next(i for i, s in enumerate(cat) if s.kind == "flat" and s.height <= 2.2 and s.gloss < 0.4
             and s.base.mean() > 0.3)
    spec = domain.draw_wide_spec(cat, 2, 0, 0.0, sku_index=k, force_damage=[])
    top = demo_calib.cameras["top"]
    cam = top.depth_imager()
    placed = Placed(build_item(spec), spec.x_mm, spec.y_mm, spec.yaw, 0)
    r = render(cam.K, cam.size, cam.T_ref_cam, [placed], spec.light)
    assert (r.item >= 0).sum() > 1000  # the card is seen
    _, depth_mm = apply_sensor(r, np.random.default_rng(0), gain=1.0, depth_noise=DepthNoise(sigma_mm=1.1))
    units = top.depth.depth_units_mm
    depth = np.clip(np.round(depth_mm / units), 0, 65535).astype(np.uint16)
    blobs = Trigger(cam, units, 0.5, 8.0, 400).blobs(depth)
    assert len(blobs) == 1
    b = blobs[0]
    box = item_box_corners(placed)
    # the blob lies on the card (its extents within the card's box, the pointed corners of a
    # turned card trimmed by the trigger's smoothing by at most 3 cm) ...
    for lo, hi, blo, bhi in ((box[:, 0].min(), box[:, 0].max(), b.x_min, b.x_max),
                             (box[:, 1].min(), box[:, 1].max(), b.y_min, b.y_max)):
        assert lo - 0.01 < blo < lo + 0.03 and hi - 0.03 < bhi < hi + 0.01, (lo, hi, blo, bhi)
    # ... and the crop the runtime cuts from it (rig/pipeline/prepare.py) holds the whole card
    x0, y0, x1, y1 = roi_from_corners(top, b.corners())
    uv, _ = top.project(box)
    assert (uv[:, 0] >= x0).all() and (uv[:, 0] < x1).all()
    assert (uv[:, 1] >= y0).all() and (uv[:, 1] < y1).all()


def test_references_without_depth_pass_dataset_check(tmp_path, capsys):
    out = tmp_path / "nodepth"
    assert main(["sim", "--randomize", "--items", "3", "--skus", "2", "--refs-per-sku", "2", "--seed", "6",
                 "--reference-depth", "none", "--out", str(out), "--workers", "1"]) == 0
    refs = list((out / "references").rglob("*.png"))
    assert refs and not [p for p in refs if p.stem.endswith("_depth")]
    assert main(["dataset", "check", str(out)]) == 0
    assert "references: 4 images for 2 SKU(s)" in capsys.readouterr().out
    ds = read_dataset(out)
    assert "reference depth: none" in ds.notes
    line = json.loads((out / "items.jsonl").read_text().splitlines()[0])
    assert set(line["views"]) <= set(ds.views)


def test_some_references_carry_depth_and_the_policy_varies_by_seed():
    names = [s.name for s in domain.make_wide_catalogue(20, seed=0)]
    with_depth = [domain.reference_has_depth("some", n) for n in names]
    assert any(with_depth) and not all(with_depth)
    assert {domain.reference_depth_policy(s, 0) for s in range(30)} == set(domain.REFERENCE_DEPTH)
    with pytest.raises(ValueError, match="reference depth policy"):
        domain.reference_has_depth("half", names[0])


@pytest.mark.parametrize("argv, message", [
    (["--randomize", "--calibration", "x.yaml"], "leave out --calibration"),
    (["--randomize", "--recording"], "cannot be combined with --randomize"),
    (["--randomize", "--rigs", "0"], "--rigs must be between 1 and 16"),
    (["--rig-seed", "4"], "only apply with --randomize"),
])
def test_bad_randomize_options_get_a_clear_error(tmp_path, capsys, argv, message):
    assert main(["sim", "--items", "2", "--out", str(tmp_path / "x"), *argv]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
