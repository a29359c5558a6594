"""The review page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

Labelling a diverted item takes one keystroke. Set DAMAGE_RIG_SCREENSHOTS=DIR to keep the screenshots
(docs/review-*.png were made that way).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from damage_rig.rig.events import EventLog
from damage_rig.rig.review.server import ReviewServer

from tests.helpers.review import make_state

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900"]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    driver_path = shutil.which("chromedriver")
    if not Path(CHROMIUM).is_file() or driver_path is None:
        pytest.skip("Debian chromium / chromium-driver not installed (apt-get install -y chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
    yield drv
    drv.quit()


def wait_until(fn, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sel_id(driver):
    """The selected card's item id, read in one script run (cards are rebuilt when the list changes)."""
    return driver.execute_script("const c = document.querySelector('.card.sel'); return c && c.dataset.id;")


def shot(driver, tmp_path, name):
    driver.save_screenshot(str(tmp_path / name))
    keep = os.environ.get("DAMAGE_RIG_SCREENSHOTS")
    if keep:
        shutil.copy(tmp_path / name, Path(keep) / name)


def test_one_keystroke_labels_the_selected_item(browser, tmp_path):
    from selenium.webdriver.common.by import By

    state = tmp_path / "state"
    make_state(state, n=8)
    srv = ReviewServer(state, port=0).start()
    try:
        browser.get(srv.url)
        # the station asks for the reviewer's name once (kept in the browser for the next labels)
        name = wait_until(lambda: browser.find_element(By.ID, "name") if browser.find_element(
            By.ID, "namebox").is_displayed() else None, what="the name prompt")
        name.send_keys("Ana\n")
        wait_until(lambda: browser.find_element(By.ID, "whoname").text == "Ana", what="the name to be taken")
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".card.sel"), what="items to load")
        assert sel_id(browser) == "it000006"  # newest diverted item selected
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 4
        wait_until(lambda: browser.execute_script(
            "return [...document.querySelectorAll('.card.sel img:not(.ref)')].map(i => i.naturalWidth)")
            == [48] * 4, what="crops and overlays to load")
        shot(browser, tmp_path, "review-page.png")

        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("n")  # ONE keystroke: not damaged
        log = EventLog(state)
        wait_until(lambda: log.get("it000006")["label"] == "not_damaged", what="label in the DB")
        assert log.get("it000006")["reviewer"] == "Ana"
        # the selection moved on to the next unreviewed item
        wait_until(lambda: sel_id(browser)
                   == "it000004", what="selection to move")
        body.send_keys("3")  # damaged, third damage type
        wait_until(lambda: log.get("it000004")["label"] == "damaged", what="second label")
        assert log.get("it000004")["label_type"] == "hole"
        body.send_keys("p")
        wait_until(lambda: log.get("it000002")["label"] == "packaging_changed", what="third label")
        shot(browser, tmp_path, "review-labelled.png")

        # a stale page: someone else labels it000000 behind this page's back
        from damage_rig.rig.review.store import ReviewStore

        other = ReviewStore(state)
        other.label("it000000", "damaged", rev=0, reviewer="other-station")
        other.close()
        body.send_keys("d")
        msg = wait_until(lambda: browser.find_element(By.ID, "msg").text if "reload" in
                         browser.find_element(By.ID, "msg").text else None, what="stale-page error")
        assert "other-station" in msg
        assert browser.find_element(By.ID, "msg").get_attribute("class") == "error"
        shot(browser, tmp_path, "review-stale.png")
        log.close()
    finally:
        srv.stop()
