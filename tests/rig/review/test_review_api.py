"""The review terminal's JSON API over real HTTP: listing, labelling, images and clear errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from damage_rig.rig.events import EventLog
from damage_rig.rig.review.server import ReviewServer

from tests.helpers.review import make_state


@pytest.fixture
def server(tmp_path):
    diverted = make_state(tmp_path)
    srv = ReviewServer(tmp_path, port=0).start()
    srv.diverted = diverted
    yield srv
    srv.stop()


def call(srv, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(srv.url.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "X-CSRF-Token": srv.guard.csrf})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read(), res.headers.get("Content-Type")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type")


def jcall(srv, method, path, body=None, raw=None):
    status, data, _ = call(srv, method, path, body, raw)
    return status, json.loads(data)


def test_lists_diverted_items_newest_first(server):
    status, data = jcall(server, "GET", "/api/items")
    assert status == 200
    assert [it["id"] for it in data["items"]] == ["it000006", "it000004", "it000002", "it000000"]
    first = data["items"][0]
    assert first["score"] == pytest.approx(0.86) and first["sku_pred"] == "sku-a" and first["reason"] == "score"
    assert first["views"]["top"] == {"image": "/img/it000006/top.jpg", "overlay": "/img/it000006/top.overlay.jpg",
                                     "mask": None, "reference": "/ref/sku-a/top.jpg"}
    assert "crush" in data["damage_types"] and data["drift"] == []
    assert str(server.store.state_dir) not in json.dumps(data)  # no filesystem paths leak


def test_label_roundtrip_and_unreviewed_filter(server, tmp_path):
    status, item = jcall(server, "POST", "/api/items/it000004/label", {"verdict": "damaged", "type": "tear",
                                                                       "rev": 0, "reviewer": "ana"})
    assert status == 200 and item["label"] == "damaged" and item["label_type"] == "tear" and item["label_rev"] == 1
    status, item = jcall(server, "POST", "/api/items/it000002/label", {"verdict": "damaged", "rev": 0,
                                                                       "reviewer": "ana"})
    assert item["label_type"] == "crush"  # the predicted type, when the reviewer did not pick one
    status, data = jcall(server, "GET", "/api/items?unreviewed=1")
    assert [it["id"] for it in data["items"]] == ["it000006", "it000000"]
    with EventLog(tmp_path) as log:  # written to the event database
        row = log.get("it000004")
    assert (row["label"], row["label_type"], row["reviewer"]) == ("damaged", "tear", "ana")


def test_clear_errors(server):
    cases = [
        ("/api/items/nope/label", {"verdict": "not_damaged"}, 404, "no item 'nope'"),
        ("/api/items/it000001/label", {"verdict": "not_damaged"}, 409, "never diverted"),
        ("/api/items/it000000/label", {"verdict": "broken"}, 400, "verdict 'broken'"),
        ("/api/items/it000000/label", {"verdict": "damaged", "type": "dent"}, 400, "damage type 'dent'"),
        ("/api/items/it000000/label", {"verdict": "not_damaged", "type": "tear"}, 400, "only goes with"),
        ("/api/items/it000000/label", {"verdict": "damaged", "rev": "x"}, 400, "'rev' must be an integer"),
    ]
    for path, body, code, text in cases:
        status, data = jcall(server, "POST", path, {**body, "reviewer": "ana"})
        assert (status, text in data["error"]) == (code, True), (path, body, data)
    for who in (None, "", "   ", 7):  # every label names its reviewer
        body = {"verdict": "not_damaged"} if who is None else {"verdict": "not_damaged", "reviewer": who}
        status, data = jcall(server, "POST", "/api/items/it000000/label", body)
        assert status == 400 and "reviewer" in data["error"], (who, data)
    status, data = jcall(server, "POST", "/api/items/it000000/label", raw=b"{not json")
    assert status == 400 and "not JSON" in data["error"]
    status, data = jcall(server, "GET", "/api/items/nope")
    assert status == 404
    status, data = jcall(server, "GET", "/api/nothing")
    assert status == 404 and "no API" in data["error"]
    status, data = jcall(server, "POST", "/api/gallery/enroll", {"sku": "sku-a"})
    assert status == 503 and "model directory" in data["error"]


def test_stale_page_is_refused(server):
    # two tabs loaded the item at revision 0; the first labels it, the second is stale
    assert jcall(server, "POST", "/api/items/it000006/label", {"verdict": "not_damaged", "rev": 0,
                                                                       "reviewer": "ana"})[0] == 200
    status, data = jcall(server, "POST", "/api/items/it000006/label", {"verdict": "damaged", "rev": 0,
                                                                       "reviewer": "bo"})
    assert status == 409 and "reload the page" in data["error"] and "'not_damaged'" in data["error"]
    # with the current revision a correction goes through
    status, item = jcall(server, "POST", "/api/items/it000006/label", {"verdict": "packaging_changed", "rev": 1,
                                                                       "reviewer": "bo"})
    assert status == 200 and item["label"] == "packaging_changed" and item["label_rev"] == 2


def test_images_and_heatmap_overlay(server):
    status, data, ctype = call(server, "GET", "/img/it000004/top.jpg")
    assert status == 200 and ctype == "image/jpeg"
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    status, data, _ = call(server, "GET", "/img/it000004/top.overlay.jpg")
    over = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == over.shape == (48, 48, 3)
    # the heatmap of item 4 peaks at cell (4, 4) of a 24x24 map: the overlay changes the crop most there
    diff = np.abs(over.astype(int) - crop.astype(int)).sum(axis=2)
    y, x = np.unravel_index(diff.argmax(), diff.shape)
    assert abs(y / 2 - 4) <= 1.5 and abs(x / 2 - 4) <= 1.5
    assert diff[40:, 40:].mean() < 10  # far from the peak the crop is untouched
    assert call(server, "GET", "/img/it000004/front.jpg")[0] == 404


def test_page_is_served(server):
    status, data, ctype = call(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"/api/items" in data
