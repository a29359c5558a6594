"""`rig view`: the live page of the demo rig (sim belt) in a real headless Chromium, and its CLI guards.

DAMAGE_RIG_SCREENSHOTS=DIR keeps docs/view-page.png.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from damage_rig.calibration.model import load_calibration
from damage_rig.rig.capture.sources import open_sources
from damage_rig.rig.cli import main
from damage_rig.rig.config import DEMO_CONFIG, load_config
from damage_rig.rig.service.liveview import LiveView, ViewServer

from tests.helpers.review import make_state
from tests.rig.review.test_review_browser import browser, shot, wait_until  # noqa: F401 (fixture)


@pytest.fixture
def live(tmp_path):
    make_state(tmp_path / "state", n=8)
    cfg = load_config(DEMO_CONFIG)
    calib = load_calibration(cfg.calibration_path)
    view = LiveView(cfg, calib, open_sources(cfg, calib), tmp_path / "state").start()
    srv = ViewServer(view, port=0).start()
    srv.calib, srv.cfg = calib, cfg
    yield srv
    srv.stop()
    view.stop()


def get(srv, path, method="GET"):
    req = urllib.request.Request(srv.url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.browser
def test_live_page_shows_cameras_roi_heights_tracks_and_decisions(live, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    # the trigger tracks the sim belt's items, with their heights above the belt
    # (a 2-core machine under load can starve the sim camera for a moment: that shows as an error, then clears)
    state = wait_until(lambda: (s := json.loads(get(live, "/api/state")[1]))["tracks"] and s["error"] is None
                       and s, timeout=30, what="a tracked item")
    assert state["trigger_camera"] == "top"
    assert all(t["height_mm"] > live.cfg.trigger.min_height_mm for t in state["tracks"])
    assert [d["id"] for d in state["decisions"]][:2] == ["it000007", "it000006"]

    # the belt ROI is drawn where the calibration puts the belt's edge
    status, data = get(live, "/snap/top.jpg")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    cam = live.calib.camera("top")
    uv, _ = cam.project(np.array([[0.3, live.cfg.belt.width_m / 2, 0.0]]))
    u, v = np.round(uv[0]).astype(int)
    patch = img[v - 2:v + 3, u - 2:u + 3].reshape(-1, 3).astype(int)
    assert status == 200 and img.shape == (480, 640, 3)
    assert ((patch[:, 0] > 180) & (patch[:, 2] < 120)).any(), patch  # blue (BGR 255, 140, 30)
    assert get(live, "/snap/height.jpg")[0] == 200
    status, data = get(live, "/snap/front.jpg")
    assert status == 404 and b"top, side" in data
    assert get(live, "/api/state", method="POST")[0] == 405

    browser.set_window_size(1280, 1000)
    browser.get(live.url)
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#snaps img")) == 3, what="snapshots")
    for name in ("top", "side", "height"):
        img = browser.find_element(By.ID, "snap-" + name)
        wait_until(lambda img=img: browser.execute_script("return arguments[0].naturalWidth", img) == 640,
                   what=f"{name} snapshot")
    first = browser.find_element(By.ID, "snap-top").get_attribute("src")
    wait_until(lambda: browser.find_element(By.ID, "snap-top").get_attribute("src") != first,
               what="the snapshot to refresh")
    # the tables are rebuilt on every refresh: read them in one script run
    wait_until(lambda: browser.execute_script("return document.querySelectorAll('#tracks tbody tr').length"),
               what="tracked items")
    first, diverts = wait_until(lambda: browser.execute_script(
        "const td = document.querySelector('#decisions tbody td');"
        "return td && [td.textContent, document.querySelectorAll('#decisions tbody tr.divert').length];"),
        what="decisions")
    assert first == "it000007" and diverts == 4
    shot(browser, tmp_path, "view-page.png")


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "without an access token"),
    (["--port", "70000"], "not a port number"),
])
def test_view_cli_refuses_bad_binds(args, message, capsys, monkeypatch):
    monkeypatch.delenv("RIG_REVIEW_TOKEN", raising=False)
    assert main(["view", *args]) == 1
    assert message in capsys.readouterr().err
