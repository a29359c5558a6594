"""The depth trigger on the live belt simulator: one capture per item, at its best frame."""

from __future__ import annotations

import numpy as np
from damage_rig.rig.trigger import Trigger
from damage_rig.tools.sim.belt import BeltSim
from damage_rig.tools.sim.generate import SimSettings


class _Held:
    def __init__(self):
        self.refs = 0

    def hold(self):
        self.refs += 1
        return self

    def release(self):
        self.refs -= 1


def test_each_item_captured_once_near_the_tunnel_centre(demo_calib):
    n_items, speed, fps = 8, 0.5, 15
    belt = BeltSim(demo_calib, ["top"], SimSettings(seed=4, damage_rate=0.4), speed, 0.5, n_items=n_items)
    top = demo_calib.cameras["top"]
    trig = Trigger(top.depth_imager(), top.depth.depth_units_mm, speed, 5.0, 400)
    frames = []
    captures = []
    t = 0.0
    end = belt.item(n_items - 1).t_center + 1.2
    while t < end:
        _, depth = belt.frame("top", t)
        f = _Held()
        frames.append(f)
        captures += [(t, c) for c in trig.update({"top": f}, depth, t, t * 1000.0)]
        t += 1.0 / fps
    captures += [(t, c) for c in trig.flush()]
    assert len(captures) == n_items
    for k, (t_done, cap) in enumerate(sorted(captures, key=lambda tc: tc[1].host_time)):
        it = belt.item(k)
        true_x = it.x_m(cap.host_time, speed)
        assert abs(cap.blob.x - true_x) < 0.02  # measured from depth vs the simulator's truth
        assert abs(cap.blob.y - it.spec.y_mm / 1000) < 0.02
        assert abs(true_x) <= speed / fps  # the best frame is the one nearest the centre
        assert cap.blob.height > 0.01
    # only the captured frames are still held, once each
    assert sum(f.refs for f in frames) == n_items


def test_an_item_entering_in_fragments_is_still_one_item(demo_calib):
    """Seed 11's blister (item 21) shows up as two blobs for a frame as it enters the view."""
    speed, fps = 0.5, 30
    belt = BeltSim(demo_calib, ["top"], SimSettings(seed=11, damage_rate=0.4), speed, 0.5, n_items=23)
    top = demo_calib.cameras["top"]
    trig = Trigger(top.depth_imager(), top.depth.depth_units_mm, speed, 8.0, 400)
    t = belt.item(20).t_center - 0.3  # item 20 is already in view: it is captured too
    caps = []
    while t < belt.item(22).t_center + 1.2:
        _, depth = belt.frame("top", t)
        caps += trig.update({"top": _Held()}, depth, t, t * 1000.0)
        t += 1.0 / fps
    caps += trig.flush()
    assert len(caps) == 3
    for k, cap in zip((20, 21, 22), sorted(caps, key=lambda c: c.host_time)):
        assert abs(belt.item(k).x_m(cap.host_time, speed) - cap.blob.x) < 0.02


def _flat_item_depth(cam, units, x0_m, x1_m, y0_m, y1_m, height_m, noise_mm, rng):
    """Depth (camera units) of a flat belt with a box of ``height_m`` between the given belt-frame
    x/y bounds, seen by ``cam`` (a depth imager), with Gaussian noise."""
    import numpy as np

    w, h = cam.size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    K = cam.K
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    R, t = cam.T_ref_cam[:3, :3], cam.T_ref_cam[:3, 3]
    d = rays @ R.T  # ray directions in the belt frame
    z_belt = -t[2] / d[..., 2]  # camera z (metres) where each ray meets the belt plane
    x, y = t[0] + d[..., 0] * z_belt, t[1] + d[..., 1] * z_belt
    on_top = (x > x0_m) & (x < x1_m) & (y > y0_m) & (y < y1_m)
    z = np.where(on_top, (height_m - t[2]) / d[..., 2], z_belt)
    mm = z * 1000.0 + rng.normal(0, noise_mm, z.shape)
    return np.clip(np.round(mm / units), 0, 65535).astype(np.uint16)


def test_a_2mm_item_is_found_and_cropped_whole(demo_calib):
    """A 2 mm flat mailer (200 x 120 mm) at 1.1 mm depth noise: one blob covering all of it;
    noise alone gives none."""
    import numpy as np

    top = demo_calib.cameras["top"]
    cam = top.depth_imager()
    units = top.depth.depth_units_mm
    rng = np.random.default_rng(0)
    trig = Trigger(cam, units, 0.5, 8.0, 400)
    noise_only = _flat_item_depth(cam, units, 5, 6, 5, 6, 0.0, 1.1, rng)
    assert trig.blobs(noise_only) == []
    depth = _flat_item_depth(cam, units, -0.10, 0.10, -0.06, 0.06, 0.002, 1.1, rng)
    blobs = trig.blobs(depth)
    assert len(blobs) == 1
    b = blobs[0]
    # the crop box comes from these extents: within 1.5 cm of the item's edges
    assert abs(b.x_min + 0.10) < 0.015 and abs(b.x_max - 0.10) < 0.015, (b.x_min, b.x_max)
    assert abs(b.y_min + 0.06) < 0.015 and abs(b.y_max - 0.06) < 0.015, (b.y_min, b.y_max)
    # without the thin level the 2 mm item is not seen at all (the old behaviour)
    assert Trigger(cam, units, 0.5, 8.0, 400, thin_height_mm=0).blobs(depth) == []


def test_a_tall_items_box_ends_at_its_edges_not_on_the_belt_behind_it(demo_calib):
    """A 160 mm box off the camera's axis: the belt seen just past its top edge lies up to 45 mm
    farther out on the belt. The thin level (a 5x5 mean) must not pull those belt pixels into the
    blob: the box, and so the crop (roi_from_corners), stays within 1.5 cm of the item's edges.
    Before the heights were capped the box reached 3-4 cm past them (`rig demo`'s crops of tall
    cartons and tubs were up to 25 % larger and off-centre against the dataset's)."""
    top = demo_calib.cameras["top"]
    cam = top.depth_imager()
    units = top.depth.depth_units_mm
    rng = np.random.default_rng(1)
    w, h = cam.size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    K = cam.K
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) @ cam.T_ref_cam[:3, :3].T
    o = cam.T_ref_cam[:3, 3]
    z_top = (0.16 - o[2]) / d[..., 2]  # camera z where each ray meets the box's top plane
    x, y = o[0] + d[..., 0] * z_top, o[1] + d[..., 1] * z_top
    z = np.where((np.abs(x) < 0.09) & (y > 0.0) & (y < 0.17), z_top, -o[2] / d[..., 2])
    depth = np.clip(np.round((z * 1000.0 + rng.normal(0, 1.1, z.shape)) / units), 0, 65535).astype(np.uint16)
    blobs = Trigger(cam, units, 0.5, 8.0, 400).blobs(depth)
    assert len(blobs) == 1
    b = blobs[0]
    assert abs(b.x_min + 0.09) < 0.015 and abs(b.x_max - 0.09) < 0.015, (b.x_min, b.x_max)
    assert abs(b.y_min - 0.0) < 0.015 and abs(b.y_max - 0.17) < 0.015, (b.y_min, b.y_max)


def test_an_item_is_released_at_its_best_frame_not_one_frame_later(demo_calib):
    """Predictive release: the frame nearest the centre goes out in the same update that shows it
    (the next one, predicted from the track's motion, would be farther), not when a later frame
    shows the item past the centre; the frame chosen is still the nearest one."""
    n_items, speed, fps = 6, 0.5, 15
    belt = BeltSim(demo_calib, ["top"], SimSettings(seed=4, damage_rate=0.4), speed, 0.5, n_items=n_items)
    top = demo_calib.cameras["top"]
    trig = Trigger(top.depth_imager(), top.depth.depth_units_mm, speed, 5.0, 400)
    released_at = {}
    t, k = 0.0, 0
    end = belt.item(n_items - 1).t_center + 1.2
    while t < end:
        _, depth = belt.frame("top", t)
        for cap in trig.update({"top": _Held()}, depth, t, t * 1000.0):
            released_at[cap.item_no] = (k, cap)
        k += 1
        t = k / fps
    assert len(released_at) == n_items
    step = speed / fps
    for frame_no, cap in released_at.values():
        assert cap.host_time == frame_no / fps  # released by the frame it was captured in
        true_x = belt.item(sorted(released_at).index(cap.item_no)).x_m(cap.host_time, speed)
        assert abs(true_x) <= step / 2 + 0.01  # and that frame is the one nearest the centre
    assert trig.predicted == n_items


def test_release_waits_when_the_next_frame_will_be_nearer(demo_calib):
    """The rule itself, on blobs: at x = -0.02 m with 0.033 m to the next frame the next one is
    nearer (x = +0.013): hold; at -0.01 the next (+0.023) is farther: this frame is the best."""
    from damage_rig.rig.trigger import Blob

    top = demo_calib.cameras["top"]
    trig = Trigger(top.depth_imager(), top.depth.depth_units_mm, 1.0, 5.0, 400)
    blob = lambda x: Blob(x, 0.0, x - 0.05, x + 0.05, -0.05, 0.05, 0.05, 100, False)
    assert not trig._next_is_farther(blob(-0.02), {"top": 1}, 1.0, 0.033)
    assert trig._next_is_farther(blob(-0.01), {"top": 1}, 1.0, 0.033)
    assert trig._next_is_farther(blob(0.002), {"top": 1}, 1.0, 0.033)
    # no frame interval yet, or a partial frame set a complete later one would outrank: no prediction
    assert not trig._next_is_farther(blob(-0.01), {"top": 1}, 1.0, None)
    trig.n_cameras = 2
    assert not trig._next_is_farther(blob(-0.01), {"top": 1}, 1.0, 0.033)


def test_the_height_kernel_finds_the_same_item_as_numpy(demo_calib):
    """height.cu (its CPU twin here; the GPU on a rig whose preprocessing is cuda) drives the
    trigger to the same blob as the numpy height map."""
    top = demo_calib.cameras["top"]
    cam, units = top.depth_imager(), top.depth.depth_units_mm
    depth = _flat_item_depth(cam, units, -0.10, 0.10, -0.06, 0.06, 0.03, 1.0, np.random.default_rng(2))
    got = Trigger(cam, units, 0.5, 8.0, 400, height_backend="twin").blobs(depth)
    want = Trigger(cam, units, 0.5, 8.0, 400).blobs(depth)
    assert len(got) == len(want) == 1
    g, w = got[0], want[0]
    assert abs(g.area_px - w.area_px) <= 2
    assert max(abs(g.x - w.x), abs(g.y - w.y), abs(g.height - w.height)) < 1e-3
