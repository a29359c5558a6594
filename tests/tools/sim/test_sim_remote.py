"""The simulated cameras in a driver process: frames arrive through shared memory on each camera's clock."""

from __future__ import annotations

import numpy as np
from damage_rig.rig.config import PACKAGE_DATA
from damage_rig.tools.sim.belt import BeltSim
from damage_rig.tools.sim.generate import SimSettings
from damage_rig.tools.sim.remote import RemoteBelt


def test_driver_process_delivers_each_cameras_frames_in_order(demo_calib):
    belt = RemoteBelt(demo_calib, PACKAGE_DATA / "demo_calib.yaml", [("top", 15, 0.0), ("side", 15, 0.7)],
                      2.0, 0.5, seed=2, n_items=1)
    try:
        cams = {n: belt.camera(n) for n in ("top", "side")}
        belt.begin()
        got = {n: [] for n in cams}
        for _ in range(400):
            for n, cam in cams.items():
                g = cam.grab(0.5)
                if g is not None:
                    got[n].append((g.frame_number, g.timestamp_ms, g.host_time - belt.start,
                                   g.color.copy(), g.depth.copy()))
            if all(c.finished for c in cams.values()):
                break
        assert all(c.finished for c in cams.values()), "the driver never said it was done"
    finally:
        belt.close()
    ref = BeltSim(demo_calib, ["top", "side"], SimSettings(seed=2), 2.0, 0.5, n_items=1)
    for n, frames in got.items():
        assert len(frames) >= 5
        numbers = [f[0] for f in frames]
        assert numbers == sorted(set(numbers))  # in order, none twice (late frames are skipped, as a sensor does)
        offset = 0.7 if n == "side" else 0.0
        for k, ts, t, color, depth in frames:
            assert abs(ts - 1000.0 * (k / 15 + offset / 1000.0)) < 1e-6 and abs(t - ts / 1000.0) < 1e-9
        # the frames are the simulator's (up to its sensor noise)
        k, _, t, color, depth = frames[len(frames) // 2]
        want_c, want_d = ref.frame(n, t)
        assert color.shape == want_c.shape and depth.shape == want_d.shape
        valid = (depth > 0) & (want_d > 0)
        assert np.median(np.abs(depth[valid].astype(int) - want_d[valid].astype(int))) <= 3
        assert np.median(np.abs(color.astype(int) - want_c.astype(int))) <= 4
