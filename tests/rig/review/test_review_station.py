"""The review station's API: damage masks, reference images, reviewer on every label, and the export."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from damage_rig.rig.cli import main
from damage_rig.rig.dataset import read_dataset
from damage_rig.rig.review.server import ReviewServer

from tests.helpers.review import make_state
from tests.rig.review.test_review_api import call, jcall


@pytest.fixture
def server(tmp_path):
    make_state(tmp_path / "state")
    refs = tmp_path / "refs"
    srv = ReviewServer(tmp_path / "state", port=0, references=refs).start()
    srv.refs_dir = refs
    yield srv
    srv.stop()


def _mask_png(srv, item, view):
    status, data, ctype = call(srv, "GET", f"/img/{item}/{view}.mask.png")
    assert status == 200 and ctype == "image/png"
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def test_box_and_brush_become_a_mask_at_the_crops_size(server):
    body = {"view": "top", "reviewer": "ana", "shapes": [{"box": [0.25, 0.5, 0.75, 1.0]}]}
    status, data = jcall(server, "POST", "/api/items/it000006/mask", body)
    assert status == 200 and data["share"] == pytest.approx(0.25, abs=0.01)
    assert data["item"]["views"]["top"]["mask"].startswith("/img/it000006/top.mask.png")
    assert data["item"]["views"]["side"]["mask"] is None
    m = _mask_png(server, "it000006", "top")
    assert m.shape == (48, 48) and set(np.unique(m)) == {0, 255}
    assert m[24:, 12:36].min() == 255 and m[:24].max() == 0 and m[:, :12].max() == 0
    info = server.masks.info("it000006", "top")
    assert info["reviewer"] == "ana" and info["size"] == [48, 48]
    # a brush stroke across the top row replaces it
    body["shapes"] = [{"brush": [[0.0, 0.1], [1.0, 0.1]], "r": 0.05}]
    assert jcall(server, "POST", "/api/items/it000006/mask", body)[0] == 200
    m = _mask_png(server, "it000006", "top")
    assert m[5, :].min() == 255 and m[40:].max() == 0
    # no shapes clears it
    body["shapes"] = []
    status, data = jcall(server, "POST", "/api/items/it000006/mask", body)
    assert status == 200 and data["item"]["views"]["top"]["mask"] is None and data["share"] == 0.0
    assert call(server, "GET", "/img/it000006/top.mask.png")[0] == 404


@pytest.mark.parametrize("body, code, text", [
    ({"view": "top", "shapes": [{"box": [0, 0, 1, 1]}]}, 400, "reviewer"),
    ({"view": "top", "reviewer": "a", "shapes": "box"}, 400, "'shapes' must be a list"),
    ({"view": "top", "reviewer": "a", "shapes": [{"box": [0, 0, 1]}]}, 400, "[x0, y0, x1, y1]"),
    ({"view": "top", "reviewer": "a", "shapes": [{"box": [0, 0, 1, "1"]}]}, 400, "finite"),
    ({"view": "top", "reviewer": "a", "shapes": [{"box": [0, 0, 9, 1]}]}, 400, "in the crop"),
    ({"view": "top", "reviewer": "a", "shapes": [{"brush": [[0, 0]], "r": 2}]}, 400, "radius"),
    ({"view": "top", "reviewer": "a", "shapes": [{"circle": [0, 0]}]}, 400, "expected"),
    ({"view": "top", "reviewer": "a", "shapes": [{"box": [0, 0, 1, 1]}] * 65}, 400, "at most 64"),
    ({"view": "../x", "reviewer": "a", "shapes": []}, 404, "no stored crop"),
    ({"view": "back", "reviewer": "a", "shapes": []}, 404, "no stored crop"),
])
def test_bad_mask_requests_are_refused(server, body, code, text):
    status, data = jcall(server, "POST", "/api/items/it000006/mask", body)
    assert status == code and text in data["error"], data
    assert not (server.store.state_dir / "masks").exists() or not any((server.store.state_dir / "masks").rglob("*.png"))


def test_non_finite_coordinates_are_refused(server):
    raw = b'{"view": "top", "reviewer": "a", "shapes": [{"box": [0, 0, 1, Infinity]}]}'
    status, data = jcall(server, "POST", "/api/items/it000006/mask", raw=raw)
    assert status == 400 and "finite" in data["error"]


def test_mask_on_an_item_never_diverted_is_refused(server):
    status, data = jcall(server, "POST", "/api/items/it000001/mask",
                         {"view": "top", "reviewer": "a", "shapes": [{"box": [0, 0, 1, 1]}]})
    assert status == 409 and "never diverted" in data["error"]


def test_reference_image_from_the_folder_else_a_crop_reviewed_fine(server):
    assert call(server, "GET", "/ref/sku-a/top.jpg")[0] == 404  # nothing known yet
    assert jcall(server, "POST", "/api/items/it000004/label",
                 {"verdict": "not_damaged", "reviewer": "ana"})[0] == 200
    status, data, _ = call(server, "GET", "/ref/sku-a/top.jpg")
    assert status == 200 and data == call(server, "GET", "/img/it000004/top.jpg")[1]
    (server.refs_dir / "sku-a").mkdir(parents=True)
    ref = np.full((30, 20, 3), 200, np.uint8)
    cv2.imwrite(str(server.refs_dir / "sku-a" / "ref00_side.png"), ref)
    cv2.imwrite(str(server.refs_dir / "sku-a" / "ref01_top.png"), ref // 2)
    status, data, ctype = call(server, "GET", "/ref/sku-a/top.jpg")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and ctype == "image/png" and img.shape == (30, 20, 3) and img[0, 0, 0] == 100
    assert call(server, "GET", "/ref/..%2Fetc/top.jpg")[0] == 404


def test_export_puts_masks_in_the_dataset_and_names_reviewers(server, tmp_path, capsys):
    jcall(server, "POST", "/api/items/it000006/label", {"verdict": "damaged", "type": "tear", "reviewer": "ana"})
    jcall(server, "POST", "/api/items/it000006/mask",
          {"view": "side", "reviewer": "ana", "shapes": [{"box": [0, 0, 0.5, 0.5]}]})
    jcall(server, "POST", "/api/items/it000004/label", {"verdict": "not_damaged", "reviewer": "bo"})
    out = tmp_path / "ds"
    assert main(["dataset", "export", "--state", str(server.store.state_dir), "--out", str(out)]) == 0
    assert "1 damage mask(s)" in capsys.readouterr().out
    ds = read_dataset(out)
    it = {i.id: i for i in ds.items}
    m = ds.load_mask(it["it000006"], "side")
    assert m.shape == (48, 48) and m[:24, :24].min() == 255 and m[24:].max() == 0
    assert ds.load_mask(it["it000006"], "top") is None and ds.load_mask(it["it000004"], "side") is None
    rows = {r["id"]: r for r in csv.DictReader((out / "reviews.csv").open())}
    assert rows["it000006"]["reviewer"] == "ana" and rows["it000006"]["masked_views"] == "side"
    assert rows["it000004"]["reviewer"] == "bo"


def test_property_any_mask_body_gets_200_or_a_4xx_json_never_a_crash(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    num = hs.floats(allow_nan=True, allow_infinity=True) | hs.integers(-3, 3) | hs.booleans() | hs.text(max_size=3)
    point = hs.lists(num, min_size=0, max_size=3)
    shape = (hs.fixed_dictionaries({"box": hs.lists(num, min_size=3, max_size=5)})
             | hs.fixed_dictionaries({"brush": hs.lists(point, max_size=6)}, optional={"r": num})
             | hs.dictionaries(hs.sampled_from(["box", "brush", "r", "x"]), num, max_size=3))
    bodies = hs.fixed_dictionaries(
        {"view": hs.sampled_from(["top", "side", "", "../top", 3]),
         "shapes": hs.lists(shape, max_size=5) | num},
        optional={"reviewer": hs.sampled_from(["ana", "", None, 7])})

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def check(body):
        status, data = jcall(server, "POST", "/api/items/it000006/mask", body)
        assert status in (200, 400, 404), (status, data, body)
        if status != 200:
            assert "error" in data
        else:
            m = server.masks.path("it000006", body["view"])
            assert (m is None) == (not body["shapes"])

    check()


def test_cli_refuses_a_missing_references_folder(tmp_path, capsys):
    make_state(tmp_path / "s")
    assert main(["review", "--state", str(tmp_path / "s"), "--references", str(tmp_path / "nope"), "--port", "0"]) == 1
    assert "no such folder" in capsys.readouterr().err
