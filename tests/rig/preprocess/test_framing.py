"""Reframing a whole camera image to the trigger's crop around its item (rig/preprocess/framing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from damage_rig.rig.dataset import DatasetWriter, Item, read_dataset
from damage_rig.rig.foundation.errors import ModelError
from damage_rig.rig.preprocess.framing import Window, check_framing, frame, framing_default, item_window

H, W = 240, 320


def _scene(rng, box=(100, 150, 180, 250), height_mm=40.0, noise_mm=1.0, belt_grey=60, item_rgb=(200, 60, 40),
           tilt=True):
    """A 320x240 frame: a belt 600 mm away (tilted like an overhead camera off vertical), one item."""
    y0, y1, x0, x1 = box
    v, u = np.mgrid[:H, :W]
    belt = 600.0 + (0.15 * v if tilt else 0.0)
    depth = belt + rng.normal(0, noise_mm, (H, W))
    depth[y0:y1, x0:x1] -= height_mm
    rgb = np.full((H, W, 3), belt_grey, np.uint8)
    rgb += rng.integers(0, 12, (H, W, 3), dtype=np.uint8)  # belt texture
    rgb[y0:y1, x0:x1] = item_rgb
    return rgb, depth.astype(np.float32)


def _contains(win: Window, box) -> bool:
    y0, y1, x0, x1 = box
    return win.y0 <= y0 and win.y1 >= y1 and win.x0 <= x0 and win.x1 >= x1


def test_a_whole_frame_is_cut_to_a_padded_square_around_its_item():
    rng = np.random.default_rng(0)
    box = (100, 150, 180, 250)  # 50 x 70 px
    rgb, depth = _scene(rng, box)
    win = item_window(rgb, depth)
    assert win is not None and _contains(win, box)
    side_y, side_x = win.y1 - win.y0, win.x1 - win.x0
    assert side_y == side_x  # square, like the trigger's crop
    assert 70 * 1.4 <= side_x <= 70 * 1.6  # the longer side plus 25 % on each side
    assert win.shape == (H, W)


def test_a_thin_card_is_found_under_depth_noise():
    """2 mm above the belt, 1.1 mm of noise: single pixels cannot tell, the local mean can."""
    rng = np.random.default_rng(1)
    box = (60, 120, 40, 140)
    rgb, depth = _scene(rng, box, height_mm=2.0, noise_mm=1.1, item_rgb=(62, 62, 62))  # belt-coloured
    win = item_window(rgb, depth)
    assert win is not None
    y0, y1, x0, x1 = box  # the card's whole extent, up to the few pixels the local mean blurs away
    assert win.y0 <= y0 + 4 and win.y1 >= y1 - 4 and win.x0 <= x0 + 4 and win.x1 >= x1 - 4


def test_a_view_that_already_is_a_crop_is_kept_whole():
    rng = np.random.default_rng(3)
    box = (100, 150, 180, 250)
    rgb, depth = _scene(rng, box)
    y0, y1, x0, x1 = box
    side = int(70 * 1.5)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    crop = (slice(cy - side // 2, cy + side // 2), slice(cx - side // 2, cx + side // 2))
    assert item_window(rgb[crop], depth[crop]) is None
    assert frame(rgb[crop], depth[crop], framing_default())[0].shape == rgb[crop].shape


def test_an_empty_belt_is_kept_whole():
    rng = np.random.default_rng(4)
    rgb, depth = _scene(rng, box=(0, 0, 0, 0))
    assert item_window(rgb, depth) is None


@pytest.mark.parametrize("box, with_depth", [
    ((30, 90, 200, 280), False),  # no depth: the item is found by its colour against the belt
    ((0, 40, 270, 320), True),    # at the image's corner: the window stays inside the image
])
def test_the_window_holds_the_item_and_stays_in_the_image(box, with_depth):
    rgb, depth = _scene(np.random.default_rng(5), box)
    win = item_window(rgb, depth if with_depth else None)
    assert win is not None and _contains(win, box)
    assert 0 <= win.y0 < win.y1 <= H and 0 <= win.x0 < win.x1 <= W


def test_paste_puts_a_crop_map_back_at_the_view_size():
    win = Window(10, 60, 100, 150, (H, W))
    crop_map = np.arange(25, dtype=np.float32).reshape(5, 5) + 1.0  # coarser than the crop: resized
    full = win.paste(crop_map)
    assert full.shape == (H, W)
    assert full[0, 0] == 1.0  # outside: the map's minimum
    assert full[59, 149] > full[10, 100]
    mask = np.zeros((H // 2, W // 2), np.uint8)  # a half-size mask is cut at the same place
    mask[5:30, 50:75] = 255
    assert win.cut(mask).shape == (25, 25) and (win.cut(mask) == 255).all()


def test_check_framing_names_the_fault():
    assert check_framing(None) is None
    assert check_framing({"pad": 0.25, "below": 0.5}) == {"pad": 0.25, "below": 0.5}
    with pytest.raises(ModelError, match="input.reframe"):
        check_framing({"pad": 0.25})
    with pytest.raises(ModelError, match="numbers"):
        check_framing({"pad": "wide", "below": 0.5})
    with pytest.raises(ModelError, match="below"):
        check_framing({"pad": 0.25, "below": 3})


def test_a_framed_dataset_loads_crops_and_keeps_the_stored_mask(tmp_path):
    rng = np.random.default_rng(6)
    box = (100, 150, 180, 250)
    rgb, depth = _scene(rng, box)
    mask = np.zeros((H, W), np.uint8)
    mask[120:130, 200:210] = 255
    with DatasetWriter(tmp_path / "ds", "t", ["top"], depth_units_mm=1.0) as w:
        views = {"top": w.write_view("i0", "top", rgb, depth, mask)}
        w.add_item(Item("i0", "skuA", "test", "damaged", ["hole"], False, views))
    ds = read_dataset(tmp_path / "ds")
    it = ds.items[0]
    assert ds.load_rgb(it, "top").shape == (H, W, 3)  # no framing: as stored
    ds.set_framing(framing_default())
    crop = ds.load_rgb(it, "top")
    assert crop.shape[0] == crop.shape[1] < H
    assert ds.load_depth_mm(it, "top").shape == crop.shape[:2]
    assert ds.load_mask(it, "top").shape == crop.shape[:2]
    assert (ds.load_mask(it, "top") == 255).sum() == 100  # the damage is inside the crop
    assert ds.load_mask(it, "top", framed=False).shape == (H, W)
    assert ds.window(it, "top").shape == (H, W)


def test_depth_at_another_resolution_than_colour_frames_the_same_item():
    """A depth imager at half the colour resolution (aligned field of view): the item is found on
    the depth image and the window is in colour pixels; cutting the depth scales the window."""
    rng = np.random.default_rng(8)
    box = (100, 150, 180, 250)
    rgb, depth = _scene(rng, box, item_rgb=(62, 62, 62))  # colour alone cannot see it
    half = depth[::2, ::2].copy()
    win = item_window(rgb, half)
    assert win is not None and _contains(win, box)
    d = win.cut(half)
    assert abs(d.shape[0] * 2 - (win.y1 - win.y0)) <= 2 and abs(d.shape[1] * 2 - (win.x1 - win.x0)) <= 2
