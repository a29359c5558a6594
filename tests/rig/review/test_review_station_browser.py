"""The review station in a real headless Chromium driven by touch (W3C touch pointer actions) and keys.

Name once, tap to label, drag a box or brush on the crop to mark the damage, the
reference image beside the crop, new items appearing without a reload.
DAMAGE_RIG_SCREENSHOTS=DIR keeps docs/review-station.png.
"""

from __future__ import annotations

import time

import cv2
import pytest
from damage_rig.rig.events import EventLog
from damage_rig.rig.review.server import ReviewServer
from damage_rig.rig.review.store import ReviewStore

from tests.helpers.events import make_record
from tests.helpers.review import make_state
from tests.rig.review.test_review_browser import browser, sel_id, shot, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def _touch(driver):
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    return ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))


def tap(driver, element):
    r = driver.execute_script("const r = arguments[0].getBoundingClientRect(); "
                              "return [r.left + r.width / 2, r.top + r.height / 2];", element)
    ab = _touch(driver)
    ab.pointer_action.move_to_location(int(r[0]), int(r[1])).pointer_down().pause(0.05).pointer_up()
    ab.perform()


def drag(driver, selector, points):
    """A finger down at points[0] (shares of the element's box), along the others, then up."""
    r = driver.execute_script("const e = document.querySelector(arguments[0]); e.scrollIntoView({block: 'center'}); "
                              "const r = e.getBoundingClientRect(); "
                              "return [r.left, r.top, r.width, r.height];", selector)
    xy = [(int(r[0] + fx * r[2]), int(r[1] + fy * r[3])) for fx, fy in points]
    ab = _touch(driver)
    ab.pointer_action.move_to_location(*xy[0]).pointer_down()
    for p in xy[1:]:
        ab.pointer_action.move_to_location(*p)
    ab.pointer_action.pointer_up()
    ab.perform()


def test_station_by_touch_and_keys(browser, tmp_path):  # noqa: F811 (fixture)
    from selenium.webdriver.common.by import By

    state = tmp_path / "state"
    make_state(state, n=8)
    st = ReviewStore(state)
    st.label("it000000", "not_damaged", reviewer="earlier-shift")  # a crop reviewed fine: sku-a's reference
    st.close()
    browser.set_window_size(1280, 1000)
    srv = ReviewServer(state, port=0).start()
    log = EventLog(state)
    try:
        browser.get(srv.url)
        browser.execute_script("window.notReloaded = true; window.kinds = [];"
                               "document.addEventListener('pointerdown', e => kinds.push(e.pointerType), true);")
        name = wait_until(lambda: browser.find_element(By.ID, "name") if browser.find_element(
            By.ID, "namebox").is_displayed() else None, what="the name prompt")
        name.send_keys("Bea")
        tap(browser, browser.find_element(By.CSS_SELECTOR, "#nameform button"))
        wait_until(lambda: browser.find_element(By.ID, "whoname").text == "Bea", what="the name")
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".card.sel"), what="items to load")
        assert sel_id(browser) == "it000006"

        # large buttons: a touch station needs no keyboard
        for bid in ("b-not_damaged", "b-damaged", "b-type-tear", "b-next"):
            size = browser.find_element(By.ID, bid).size
            assert size["height"] >= 56 and size["width"] >= 88, (bid, size)
        tap(browser, browser.find_element(By.ID, "b-not_damaged"))
        wait_until(lambda: log.get("it000006")["label"] == "not_damaged", what="tapped label")
        assert log.get("it000006")["reviewer"] == "Bea"
        wait_until(lambda: sel_id(browser)
                   == "it000004", what="selection to move on")
        tap(browser, browser.find_element(By.ID, "b-type-tear"))
        wait_until(lambda: log.get("it000004")["label"] == "damaged", what="tapped damage type")
        assert (log.get("it000004")["label_type"], log.get("it000004")["reviewer"]) == ("tear", "Bea")

        # it000002 selected: the reference image (it000000's crop, reviewed fine) sits beside each crop
        wait_until(lambda: sel_id(browser)
                   == "it000002", what="third item")
        wait_until(lambda: browser.execute_script(
            "return [...document.querySelectorAll('.card.sel img.ref')].map(i => i.naturalWidth)") == [48, 48],
            what="reference images beside both crops")

        # mark the damage: drag a box on the top crop, then brush a stroke on the side crop
        top = ".card.sel .view[data-view=top] canvas"
        wait_until(lambda: browser.execute_script(f"return document.querySelector('{top}').width") > 90,
                   what="canvas sized to the crop")
        drag(browser, top, [(0.25, 0.25), (0.5, 0.5), (0.75, 0.75)])
        mask_top = state / "masks" / "it000002" / "top.png"
        wait_until(mask_top.is_file, what="box mask saved")
        m = cv2.imread(str(mask_top), cv2.IMREAD_GRAYSCALE)
        assert m.shape == (48, 48) and m[24, 24] == 255 and m[4, 4] == 0 and m[44, 44] == 0
        assert 0.15 < (m > 0).mean() < 0.4
        browser.find_element(By.TAG_NAME, "body").send_keys("b")  # key: brush
        assert browser.find_element(By.ID, "b-tool").text == "Mark: brush"
        drag(browser, ".card.sel .view[data-view=side] canvas", [(0.1, 0.8), (0.5, 0.8), (0.9, 0.8)])
        mask_side = state / "masks" / "it000002" / "side.png"
        wait_until(mask_side.is_file, what="brush mask saved")
        m = cv2.imread(str(mask_side), cv2.IMREAD_GRAYSCALE)
        assert m[38, 24] == 255 and m[5, 24] == 0
        assert "touch" in browser.execute_script("return window.kinds")

        # a new diverted item arrives: it shows up without a reload
        log.record(make_record(20, "divert", t0=time.time() - 1, score=0.97))
        wait_until(lambda: browser.find_elements(By.ID, "item-it000020"), timeout=15, what="polled new item")
        assert browser.execute_script("return window.notReloaded") is True
        assert "new item" in browser.find_element(By.ID, "msg").text
        sel = sel_id(browser)
        assert sel == "it000002"  # the reviewer keeps their place
        browser.execute_script("document.querySelector('.card.sel').scrollIntoView({block: 'end'})")
        shot(browser, tmp_path, "review-station.png")

        browser.find_element(By.TAG_NAME, "body").send_keys("c")  # key: clear the marks
        wait_until(lambda: not mask_top.exists() and not mask_side.exists(), what="marks cleared")
    finally:
        log.close()
        srv.stop()
