"""Registered comparison with a product's references (rig/detect/registration.py).

Synthetic top views of known geometry: a belt plane at 800 mm seen by a camera
looking straight down, items drawn as height maps in mm, depth = 800 - height
with Gaussian noise. The references are the same item at other poses.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from damage_rig.rig.detect import registration as R

BELT_MM = 800.0
CROP = 200


def carton(h_mm: float = 40.0, notch: bool = True) -> np.ndarray:
    """Height map (mm) of a flat 120 x 70 px carton, with a corner notch that fixes its yaw."""
    hm = np.zeros((CROP, CROP), np.float32)
    hm[65:135, 40:160] = h_mm
    if notch:
        hm[65:85, 40:60] = h_mm / 2  # a stepped corner: the pose is unique
    return hm


def blister(units: int = 3) -> np.ndarray:
    """A 2.5 mm card with ``units`` of 3 domes (14 mm) in a row."""
    hm = np.zeros((CROP, CROP), np.float32)
    hm[60:140, 30:170] = 2.5
    yy, xx = np.mgrid[:CROP, :CROP]
    for i in range(units):
        cx = 55 + 45 * i
        hm = np.maximum(hm, 14.0 * np.clip(1 - ((xx - cx) ** 2 + (yy - 100) ** 2) / 18.0 ** 2, 0, 1))
    return hm


def pose(hm: np.ndarray, yaw_deg: float, dx: float, dy: float, order=cv2.INTER_LINEAR) -> np.ndarray:
    m = cv2.getRotationMatrix2D((CROP / 2, CROP / 2), yaw_deg, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(hm, m, (CROP, CROP), flags=order)


def view(hm: np.ndarray, rng, noise_mm: float = 1.1, art: np.ndarray | None = None):
    """(rgb, depth_mm) of a height map: grey item on a dark belt (or the given artwork)."""
    depth = (BELT_MM - hm + rng.normal(0, noise_mm, hm.shape)).astype(np.float32)
    rgb = np.where((hm > 1.0)[..., None], 180, 40).astype(np.uint8).repeat(3, 2) if art is None else art
    return np.ascontiguousarray(rgb[..., :3]), depth


def refs_of(hm_fn, rng, n: int = 6, art_fn=None) -> R.RefSet:
    s = R.scale_for([CROP])
    canons = []
    for _ in range(n):
        yaw, dx, dy = rng.uniform(-180, 180), rng.uniform(-8, 8), rng.uniform(-8, 8)
        hm = pose(hm_fn(), yaw, dx, dy)
        art = None if art_fn is None else pose(art_fn(), yaw, dx, dy)
        canons.append(R.canonical(*view(hm, rng, art=art), s))
    return R.make_refset(canons, s)


def test_registration_recovers_yaw_and_offset():
    rng = np.random.default_rng(0)
    s = R.scale_for([CROP])
    ref_hm = carton()
    ref = R.canonical(*view(ref_hm, rng, 0.3), s)
    refs = R.make_refset([ref, ref], s)
    for yaw, dx, dy in ((23.0, 5.3, -2.7), (-141.0, -6.1, 4.4), (95.0, 0.8, 7.9)):
        q = R.canonical(*view(pose(ref_hm, yaw, dx, dy), rng, 0.3), s)
        res = R.compare(q, refs)
        # query crop px -> reference crop px, through both canonical frames
        wq = np.vstack([q.warp, [0, 0, 1]])
        wr = np.vstack([ref.warp, [0, 0, 1]])
        m = np.linalg.inv(wr) @ res.pose @ wq
        got_yaw = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
        # truth: the query is the reference turned by +yaw (OpenCV: counter-clockwise on screen)
        truth = np.vstack([cv2.getRotationMatrix2D((CROP / 2, CROP / 2), yaw, 1.0), [0, 0, 1]])
        truth[:2, 2] += (dx, dy)
        want = np.linalg.inv(truth)
        want_yaw = np.degrees(np.arctan2(want[1, 0], want[0, 0]))
        assert abs((got_yaw - want_yaw + 180) % 360 - 180) < 1.0, (yaw, got_yaw, want_yaw)
        for p in ((100.0, 100.0, 1.0), (60.0, 80.0, 1.0), (150.0, 120.0, 1.0)):
            p = np.array(p)
            err = np.hypot(*((m @ p)[:2] - (want @ p)[:2]))
            assert err < 1.0, (yaw, p, err)


def clean_and_dented(refs, rng, dent, n: int):
    """``n`` random poses of the carton, each compared clean and with ``dent(clean, yy, xx)``
    subtracted: ([clean ViewResidual], [dented ViewResidual])."""
    yy, xx = np.mgrid[:CROP, :CROP]
    clean_r, dent_r = [], []
    for _ in range(n):
        yaw, dx, dy = rng.uniform(-180, 180), rng.uniform(-6, 6), rng.uniform(-6, 6)
        clean = pose(carton(), yaw, dx, dy)
        clean_r.append(R.compare(R.canonical(*view(clean, rng), refs.scale), refs))
        dent_r.append(R.compare(R.canonical(*view(clean - dent(clean, yy, xx), rng), refs.scale), refs))
    return clean_r, dent_r


def test_a_3mm_dent_is_found_and_noise_alone_is_not():
    rng = np.random.default_rng(1)
    clean, dented = clean_and_dented(
        refs_of(carton, rng), rng,
        lambda c, yy, xx: 3.0 * np.exp(-((xx - 110) ** 2 + (yy - 100) ** 2) / (2 * 9.0 ** 2)) * (c > 1), 6)
    dent_scores, noise_scores = [r.height_score for r in dented], [r.height_score for r in clean]
    assert min(dent_scores) > max(noise_scores), (dent_scores, noise_scores)


def test_a_shallow_wide_dent_shows_in_the_wide_score_more_than_in_the_cell_score():
    """A crushed card edge: 1.6 mm over ~60 px (noise 1.1 mm). The 7x7 average lifts it clear of
    noise, by a wider ratio than the few-cell score does."""
    rng = np.random.default_rng(11)
    refs = refs_of(carton, rng)
    clean_r, dent_r = clean_and_dented(
        refs, rng,
        lambda c, yy, xx: 1.6 * (np.exp(-((xx - 110) ** 2 + (yy - 100) ** 2) / (2 * 22.0 ** 2)) > 0.3) * (c > 1), 5)
    wide_gap = min(r.height_wide for r in dent_r) / max(r.height_wide for r in clean_r)
    cell_gap = min(r.height_score for r in dent_r) / max(r.height_score for r in clean_r)
    assert wide_gap > 4 and wide_gap > 1.5 * cell_gap, (wide_gap, cell_gap)
    assert len(refs.score_ref) == 3 and np.isfinite(refs.score_ref[2])


def test_a_missing_blister_unit_is_found():
    rng = np.random.default_rng(2)
    refs = refs_of(blister, rng)
    s = refs.scale
    intact = [R.compare(R.canonical(*view(pose(blister(3), a, 0, 0), rng), s), refs).height_score
              for a in (17.0, 101.0, -64.0)]
    broken = [R.compare(R.canonical(*view(pose(blister(2), a, 0, 0), rng), s), refs).height_score
              for a in (17.0, 101.0, -64.0)]
    assert min(broken) > 3 * max(intact), (broken, intact)


def test_printed_damage_artwork_is_not_flagged_but_a_real_hole_is():
    """Artwork that looks like a hole is on every reference too; a real hole is dark AND deep."""
    rng = np.random.default_rng(3)

    def art():
        a = np.full((CROP, CROP, 3), 40, np.uint8)
        a[65:135, 40:160] = (200, 170, 120)
        cv2.circle(a, (120, 100), 9, (15, 10, 10), -1)  # a printed 'hole'
        a[65:85, 40:60] = (90, 90, 200)
        return a

    refs = refs_of(carton, rng, art_fn=art)
    s = refs.scale
    yaw = 37.0
    printed = R.compare(R.canonical(*view(pose(carton(), yaw, 2, 1), rng, art=pose(art(), yaw, 2, 1)), s), refs)
    holed = carton()
    yy, xx = np.mgrid[:CROP, :CROP]
    hole = (xx - 80) ** 2 + (yy - 110) ** 2 < 8 ** 2
    holed[hole] = 2.0
    a = art()
    a[hole] = (10, 10, 10)
    real = R.compare(R.canonical(*view(pose(holed, yaw, 2, 1), rng, art=pose(a, yaw, 2, 1)), s), refs)
    assert real.height_score > 3 * printed.height_score
    assert real.color_score > 1.5 * printed.color_score


def test_the_maps_maximum_falls_inside_the_hole():
    rng = np.random.default_rng(4)
    refs = refs_of(carton, rng)
    s = refs.scale
    yy, xx = np.mgrid[:CROP, :CROP]
    hm = carton()
    hole = (xx - 125) ** 2 + (yy - 110) ** 2 < 9 ** 2
    hm[hole] = 3.0
    yaw, dx, dy = -52.0, 3.0, -4.0
    rgb, depth = view(pose(hm, yaw, dx, dy), rng)
    mask = pose(hole.astype(np.float32), yaw, dx, dy, cv2.INTER_NEAREST) > 0.5
    res = R.compare(R.canonical(rgb, depth, s), refs)
    crop_map = R.to_crop(np.abs(res.height_map), res.warp, depth.shape)
    y, x = np.unravel_index(np.argmax(crop_map), crop_map.shape)
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # within 2 px
    assert near[y, x], (y, x)


def test_views_without_depth_register_on_colour():
    rng = np.random.default_rng(5)
    s = R.scale_for([CROP])
    rgb, _ = view(carton(), rng)
    ref = R.canonical(rgb, None, s)
    assert not ref.has_depth and ref.fg.sum() > 50
    refs = R.make_refset([ref, R.canonical(view(pose(carton(), 90, 0, 0), rng)[0], None, s)], s)
    q = R.canonical(view(pose(carton(), 33, 4, -3), rng)[0], None, s)
    res = R.compare(q, refs)
    assert np.isfinite(res.color_score) and res.color_score < 0.5


@pytest.mark.parametrize("bad", [np.zeros((3, 3), np.float32), np.zeros((CROP, CROP), np.float32)])
def test_degenerate_depth_gives_a_finite_score(bad):
    rng = np.random.default_rng(6)
    refs = refs_of(carton, rng, n=3)
    rgb, _ = view(carton(), rng)
    q = R.canonical(rgb, bad if bad.shape == (CROP, CROP) else None, refs.scale)
    res = R.compare(q, refs)
    assert np.isfinite(res.color_score)


def _belt_view(rng, *, puddle: bool, belt=(40, 40, 40), gain: float = 1.0):
    """A grey carton on a textured belt; optionally a 1 mm puddle of another colour beside it."""
    hm = pose(carton(), 30.0, 0.0, -20.0)
    rgb = np.clip(np.asarray(belt, np.float32) * (1 + 0.08 * rng.standard_normal((CROP, CROP, 1))), 0, 255)
    rgb = np.where((hm > 1.0)[..., None], 180.0, rgb)
    if puddle:
        yy, xx = np.mgrid[:CROP, :CROP]
        wet = (xx - 100) ** 2 + (yy - 168) ** 2 < 22 ** 2
        hm = np.where(wet & (hm < 1.0), 1.0, hm)
        rgb[wet & (hm < 2.0)] = (150, 60, 30)
    depth = (BELT_MM - hm + rng.normal(0, 1.1, hm.shape)).astype(np.float32)
    return np.clip(rgb * gain, 0, 255).astype(np.uint8), depth


@pytest.mark.parametrize("belt, gain", [((40, 40, 40), 1.0), ((90, 60, 120), 0.6)])
def test_belt_residual_finds_a_puddle_beside_the_item_whatever_the_belt(belt, gain):
    rng = np.random.default_rng(5)
    s = R.scale_for([CROP])
    bare = [R.belt_residual(R.canonical(*_belt_view(rng, puddle=False, belt=belt, gain=gain), s))
            for _ in range(5)]
    wet = R.belt_residual(R.canonical(*_belt_view(rng, puddle=True, belt=belt, gain=gain), s))
    assert max(bare) < 4.0, bare  # a bare belt scores its own texture: ~1-3 spreads
    assert wet > 3 * max(bare), (wet, bare)



# ---- the fast versions against the straightforward ones -------------------------------------

def _coarse_costs_simple(q: R.Canon, refs: R.RefSet) -> np.ndarray:
    """R._coarse_costs as first written (numpy over all references at once, one turn at a time)."""
    rh = np.nan_to_num(refs.height.astype(np.float32))
    rvalid = np.isfinite(refs.height.astype(np.float32))
    rc = refs.rgb.astype(np.float32) / R.COLOR_Q
    out = np.zeros((refs.n, 4))
    for k in range(4):
        qf = np.rot90(q.fg, -k)
        union = qf[None] | refs.fg
        nu = np.maximum(union.sum(axis=(1, 2)), 1)
        xor = (qf[None] ^ refs.fg).sum(axis=(1, 2)) / nu
        dc = np.abs(np.rot90(q.rgb, -k)[None] - rc).sum(axis=-1)
        out[:, k] = xor + (dc * union).sum(axis=(1, 2)) / nu / 3.0
        if q.has_depth:
            qh = np.rot90(q.height, -k)
            both = union & np.isfinite(qh)[None] & rvalid
            dh = np.abs(np.nan_to_num(qh)[None] - rh) * both
            out[:, k] += dh.sum(axis=(1, 2)) / np.maximum(both.sum(axis=(1, 2)), 1) / 20.0
    return out


def _random_canon(rng, c: int, has_depth: bool = True) -> R.Canon:
    fg = np.zeros((c, c), bool)
    y0, x0 = rng.integers(0, c // 3, 2)
    fg[y0:y0 + rng.integers(c // 3, c // 2), x0:x0 + rng.integers(c // 4, c // 2)] = True
    fg ^= rng.random((c, c)) < 0.05
    h = (fg * rng.uniform(5, 40) + rng.normal(0, 1, (c, c))).astype(np.float32)
    h[rng.random((c, c)) < 0.1] = np.nan
    rgb = rng.uniform(0, 3, (c, c, 3)).astype(np.float32)
    return R.Canon(h, rgb, fg, np.eye(2, 3, dtype=np.float32), has_depth)


def _random_refs(rng, c: int, n: int) -> R.RefSet:
    cs = [_random_canon(rng, c) for _ in range(n)]
    return R.RefSet(np.stack([x.height for x in cs]).astype(np.float16),
                    np.stack([np.clip(x.rgb * R.COLOR_Q, 0, 255) for x in cs]).astype(np.uint8),
                    np.stack([x.fg for x in cs]), 0.3)


@pytest.mark.parametrize("has_depth", [True, False])
def test_coarse_costs_match_the_straightforward_version(has_depth):
    rng = np.random.default_rng(12)
    for c, n in ((24, 5), (37, 1), (108, 8)):
        refs = _random_refs(rng, c, n)
        for _ in range(3):
            q = _random_canon(rng, c, has_depth)
            # numpy sums float32 in float32, OpenCV's masked means in float64
            np.testing.assert_allclose(R._coarse_costs(q, refs), _coarse_costs_simple(q, refs),
                                       rtol=1e-6, atol=1e-7)
    # an empty footprint, a view without any depth
    q = _random_canon(rng, 24)
    q.fg[:] = False
    q.height[:] = np.nan
    refs = _random_refs(rng, 24, 3)
    np.testing.assert_allclose(R._coarse_costs(q, refs), _coarse_costs_simple(q, refs), rtol=1e-6, atol=1e-7)


def test_outside_and_edges_match_the_straightforward_versions():
    rng = np.random.default_rng(13)

    def outside_simple(q, r):
        k = np.ones((R.TOL_PX, R.TOL_PX), np.uint8)
        finite = np.isfinite(r)
        lo = cv2.erode(np.where(finite, r, np.inf).astype(np.float32), k)
        hi = cv2.dilate(np.where(finite, r, -np.inf).astype(np.float32), k)
        return q - np.clip(q, np.where(np.isfinite(lo), lo, np.nan), np.where(np.isfinite(hi), hi, np.nan))

    def edges_simple(h, fg):
        img = np.clip(np.nan_to_num(h, nan=0.0).astype(np.float32), 0, 300) / 10.0 + fg.astype(np.float32) * 3.0
        return cv2.GaussianBlur(img, (0, 0), 1.0)

    for shape in ((40, 40), (40, 40, 3)):
        q = rng.normal(0, 5, shape).astype(np.float32)
        r = rng.normal(0, 5, shape).astype(np.float32)
        q[rng.random(shape) < 0.1] = np.nan
        r[rng.random(shape) < 0.3] = np.nan
        r[5:12, 5:12] = np.nan  # windows with no finite reference value at all
        np.testing.assert_array_equal(R._outside(q, r), outside_simple(q, r))
    h = rng.normal(10, 50, (40, 40)).astype(np.float32)
    h[rng.random(h.shape) < 0.2] = np.nan
    h[0, :3] = (np.inf, -np.inf, 400.0)
    fg = rng.random(h.shape) < 0.5
    np.testing.assert_array_equal(R._edges(h, fg), edges_simple(h, fg))


@pytest.mark.parametrize("n", [108, 37])
def test_a_quarter_turn_back_is_the_inverse_turn_exactly(n):
    for k in range(4):
        np.testing.assert_array_equal(R._turn(n, k), np.linalg.inv(R._turn(n, (4 - k) % 4)))


def test_ecc_on_the_footprints_box_finds_the_whole_canvas_warp():
    """_refine over the footprints' bounding box gives the warp in canvas pixels, as over the
    whole canvas (to well under a tenth of a pixel on a clean item)."""
    rng = np.random.default_rng(14)
    s = R.scale_for([CROP])
    a = R.canonical(*view(carton(), rng, 0.3), s)
    m = cv2.getRotationMatrix2D((60.0, 50.0), 2.0, 1.0)
    m[:, 2] += (1.7, -1.2)
    bh = cv2.warpAffine(np.nan_to_num(a.height), m, a.height.shape[::-1], flags=cv2.INTER_LINEAR)
    bf = cv2.warpAffine(a.fg.astype(np.uint8), m, a.fg.shape[::-1], flags=cv2.INTER_NEAREST) > 0
    q_img, r_img = np.ascontiguousarray(R._edges(a.height, a.fg)), R._edges(bh, bf)
    box = R._box(a.fg, bf, R.ECC_MARGIN)
    assert box is not None and (box[1] - box[0]) * (box[3] - box[2]) < 0.8 * a.fg.size
    whole, boxed = R._refine(q_img, r_img), R._refine(q_img, r_img, box)
    assert not np.array_equal(whole, np.eye(2, 3, dtype=np.float32))
    corners = np.array([[0, 0, 1], [107, 0, 1], [0, 107, 1], [107, 107, 1]], np.float32).T
    assert np.abs(whole @ corners - boxed @ corners).max() < 0.1
    # the box is clipped to the canvas; an empty pair of footprints has none
    assert R._box(np.ones((10, 10), bool), np.zeros((10, 10), bool), 8) == (0, 10, 0, 10)
    assert R._box(np.zeros((10, 10), bool), np.zeros((10, 10), bool), 8) is None


def test_size_signature_tells_products_of_one_artwork_apart_by_height_and_footprint():
    """Identification's size cue: a 40 mm and a 12 mm carton of the same outline and artwork, and
    a carton and a blister card, differ in height and area whatever the yaw; the nearest reference
    is what counts (a product resting on another face brings its own)."""
    rng = np.random.default_rng(21)
    tall = refs_of(lambda: carton(40.0), rng)
    flat = refs_of(lambda: carton(12.0), rng)
    card = refs_of(blister, rng)
    s = R.scale_for([CROP])
    q = R.canonical(*view(pose(carton(40.0), 33.0, 3, -2), rng), s)
    sig = R.size_signature(q)
    assert abs(sig[0] - 40.0) < 3.0 and sig[1] > 0
    m_tall, m_flat, m_card = (R.size_mismatch(sig, r.sizes) for r in (tall, flat, card))
    assert m_tall < 0.1 < m_flat and m_tall < m_card
    # without depth only the area speaks: the two cartons look alike, the card still does not
    q_nodepth = R.canonical(view(pose(carton(40.0), 33.0, 3, -2), rng)[0], None, s)
    sig2 = R.size_signature(q_nodepth)
    assert np.isnan(sig2[0])
    assert R.size_mismatch(sig2, flat.sizes) < 0.1
    # the nearest reference counts: one matching reference among strangers is enough
    mixed = np.vstack([flat.sizes, tall.sizes[:1]])
    assert R.size_mismatch(sig, mixed) == pytest.approx(R.size_mismatch(sig, tall.sizes[:1]))


def test_outside_a_missing_reference_is_no_data_not_a_huge_residual():
    # where the reference has no depth in the whole window, at the canvas's edge too, the
    # residual is NaN (no data), never OpenCV's border value (+-3.4e38) leaking through
    r = np.full((6, 6), np.nan, np.float32)
    r[:, 3:] = 10.0
    q = np.full((6, 6), 12.0, np.float32)
    got = R._outside(q, r)
    assert np.isnan(got[:, :2]).all()
    assert np.allclose(got[:, 2:], 2.0)
