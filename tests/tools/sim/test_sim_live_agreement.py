"""The dataset's crops (scene.render_views, what `rig sim` writes and the model is calibrated on) against
the live rig's crops of the same item (belt simulator -> trigger -> ROI -> depth aligned to colour,
rig/pipeline/prepare.py): the same box and the same depth, so that a model calibrated on the one
holds on the other. `rig demo` once diverted 2.2 % of ok items against 0.05 % on the dataset: the
dataset's depth was rendered from the colour camera, the rig's comes from the depth imager aligned
to colour, and tall items' trigger boxes reached past their edges."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from damage_rig.calibration.align import align_depth_to_color
from damage_rig.rig.foundation.geometry import roi_from_corners
from damage_rig.rig.trigger import Trigger
from damage_rig.tools.sim.belt import BeltSim
from damage_rig.tools.sim.generate import SimSettings
from damage_rig.tools.sim.scene import render_views

SEED = 11
# seed 11's belt: a 157 mm carton (item 30), a 120 mm tub (32), a blister (2), a mailer (9), a bottle (7)
ITEMS = (2, 7, 9, 30, 32)


class _Held:
    def hold(self):
        return self

    def release(self):
        pass


def _live_capture(belt: BeltSim, trig: Trigger, k: int, fps: float = 30.0):
    """Run the trigger on the top camera's frames, one of them exactly at item k's centre time
    (the sprites are then where the renderer puts them, no sub-pixel shift); item k's capture."""
    it = belt.item(k)
    t = it.t_center - 0.6
    t = it.t_center - round((it.t_center - t) * fps) / fps
    while t < it.t_center + 0.6:
        _, depth = belt.frame("top", t)
        for cap in trig.update({"top": _Held(), "side": _Held()}, depth, t, t * 1000.0):
            if abs(cap.blob.x - it.x_m(cap.host_time, belt.speed)) < 0.05:
                return cap
        t += 1.0 / fps
    raise AssertionError(f"item {k} was not captured")


@pytest.fixture(scope="module")
def pairs(demo_calib):
    belt = BeltSim(demo_calib, ["top", "side"], SimSettings(seed=SEED, damage_rate=0.2, noise=False), 0.5, 0.5,
                   noise=False, n_items=max(ITEMS) + 2)
    top = demo_calib.cameras["top"]
    out = []
    for k in ITEMS:
        trig = Trigger(top.depth_imager(), top.depth.depth_units_mm, 0.5, 8.0, 400, n_cameras=2)
        cap = _live_capture(belt, trig, k)
        t = cap.host_time
        spec = belt.item(k).spec
        # the dataset's rendering of this item where the live frame showed it
        spec = dataclasses.replace(spec, x_mm=belt.item(k).x_m(t, belt.speed) * 1000.0, gain=1.0)
        views = render_views(spec, demo_calib, noise=False)
        for name, view in views.items():
            cam = demo_calib.cameras[name]
            rgb, d16 = belt.frame(name, t)
            roi = roi_from_corners(cam, cap.blob.corners())
            live_depth = align_depth_to_color(d16, cam.depth.K, cam.K, cam.size, cam.depth.T_color_depth,
                                              cam.depth.depth_units_mm / 1000.0, window=roi
                                              ).astype(np.float32) * cam.depth.depth_units_mm
            out.append((k, name, spec.sku.name, roi, rgb, live_depth, view))
    return out


def test_live_and_dataset_crop_boxes_agree(pairs):
    """The dataset crops where the rig's trigger says the item is (scene.trigger_corners): the same
    box to 2 px. Before, the dataset cropped around the item's true box and the trigger's boxes were
    up to 25 % larger (tall items: belt behind the top edge) or 17 % smaller (a mailer's thin rim)."""
    for k, name, sku, roi, _, _, view in pairs:
        assert np.abs(np.subtract(roi, view.roi)).max() <= 2, (k, name, sku, roi, view.roi)


def test_live_and_dataset_depth_agree_pixel_for_pixel(pairs):
    """Where the two crops overlap, the dataset's depth is the rig's aligned depth: no pixel more
    than 5 mm off (with depth rendered from the colour camera, 1-2 % of a tall item's side view
    were, and the shipped model's side-view damage logit of seed 11's tub 32 went from -1 to 19)."""
    for k, name, sku, roi, _, live_depth, view in pairs:
        x0, y0 = max(roi[0], view.roi[0]), max(roi[1], view.roi[1])
        x1, y1 = min(roi[2], view.roi[2]), min(roi[3], view.roi[3])
        live = live_depth[y0 - roi[1]:y1 - roi[1], x0 - roi[0]:x1 - roi[0]]
        ds = view.depth_mm[y0 - view.roi[1]:y1 - view.roi[1], x0 - view.roi[0]:x1 - view.roi[0]]
        assert ((live > 0) == (ds > 0)).mean() > 0.999, (k, name, sku)
        both = (live > 0) & (ds > 0)
        off = np.abs(live - ds)[both]
        assert (off > 5.0).mean() < 0.001 and np.median(off) < 0.6, (k, name, sku, (off > 5).mean(), np.median(off))


def test_live_and_dataset_colour_agree(pairs):
    """Same light and exposure (gain 1, as the belt has): the colour crops match but for the sprite's
    edge pixels."""
    for k, name, sku, roi, rgb, _, view in pairs:
        x0, y0 = max(roi[0], view.roi[0]), max(roi[1], view.roi[1])
        x1, y1 = min(roi[2], view.roi[2]), min(roi[3], view.roi[3])
        live = rgb[y0:y1, x0:x1].astype(int)
        ds = view.rgb[y0 - view.roi[1]:y1 - view.roi[1], x0 - view.roi[0]:x1 - view.roi[0]].astype(int)
        diff = np.abs(live - ds).max(-1)
        assert np.median(diff) <= 1 and (diff > 20).mean() < 0.01, (k, name, sku, (diff > 20).mean())
