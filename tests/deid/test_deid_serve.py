"""`trivault deid serve` in a real headless Chromium (selenium): drop, slide eps, add a box, approve, screenshot."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from skimage import data

from client.deid.serve import start

CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    """A server on 127.0.0.1 and a headless Chromium at its page; yields (driver, server, tmp dir)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if CHROMEDRIVER is None or shutil.which("chromium") is None:
        pytest.fail("chromium and chromium-driver are needed: `bash scripts/setup.sh` installs them (apt-get)")
    tmp = tmp_path_factory.mktemp("serve")
    server, _ = start(tmp / "approved", port=0)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        driver.get(server.url)
        yield driver, server, tmp
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


def _wait(driver, condition, seconds: float = 60) -> None:
    """Wait for ``condition(driver)``; on timeout fail with the page's status line."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)
    except TimeoutException:
        pytest.fail(f"page did not update; status line: {_text(driver, 'status')!r}")


def _settled(driver) -> None:
    """Wait until the page shows the release of its latest request (slider, box or file)."""
    body = driver.find_element("tag name", "body")
    _wait(driver, lambda d: int(body.get_attribute("data-requested")) > 0
          and body.get_attribute("data-shown") == body.get_attribute("data-requested"))


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_owner_drops_slides_adds_a_box_and_approves(page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver, server, tmp = page
    src = tmp / "astro.png"
    original = data.astronaut()[:384, 64:448]
    Image.fromarray(original).save(src)
    driver.find_element("id", "file").send_keys(str(src))  # the drop zone's file input
    _settled(driver)
    assert _text(driver, "eps-value") == "1"
    reid_1 = _text(driver, "m-reid")
    assert 0.5 < float(_text(driver, "m-ssim")) < 1.0
    assert float(reid_1) == pytest.approx(np.e / (np.e + 99), abs=1e-3)  # one face found and replaced
    assert "1 replaced" in _text(driver, "m-faces")

    slider = driver.find_element("id", "eps")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # 1 -> 2 -> 4 -> 8
    _wait(driver, lambda d: _text(d, "eps-value") == "8")
    _settled(driver)
    assert float(_text(driver, "m-reid")) == pytest.approx(np.exp(8) / (np.exp(8) + 99), abs=1e-3)
    assert _text(driver, "m-reid") != reid_1 and float(_text(driver, "m-dist")) > 0

    Select(driver.find_element("id", "box-kind")).select_by_value("plate")
    canvas = driver.find_element("id", "view")
    rect = canvas.rect  # drag from 10% to 30% of the width, 75% to 90% of the height (the suit)
    start_x, start_y = -rect["width"] * 0.4, rect["height"] * 0.25
    (ActionChains(driver).move_to_element_with_offset(canvas, int(start_x), int(start_y)).click_and_hold()
     .move_by_offset(int(rect["width"] * 0.2), int(rect["height"] * 0.15)).release().perform())
    _wait(driver, lambda d: len(d.find_elements("css selector", "#boxes li")) == 2)
    _settled(driver)
    assert "plate" in driver.find_elements("css selector", "#boxes li")[1].text

    shot = tmp / "page.png"
    assert driver.save_screenshot(str(shot))
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    assert pixels.std() > 30 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # a rendered page, not blank

    driver.find_element("id", "approve").click()
    _wait(driver, lambda d: "approved" in _text(d, "status"))
    out_png, out_json = tmp / "approved" / "astro.deid.png", tmp / "approved" / "astro.deid.json"
    meta = json.loads(out_json.read_text())
    assert meta["eps"] == 8 and meta["mechanism"] == "dp_donor" and meta["approved"] is True
    manual = [r for r in meta["regions"] if r["source"] == "manual"]
    assert len(manual) == 1 and manual[0]["kind"] == "plate"
    released = np.asarray(Image.open(out_png).convert("RGB"))
    m = manual[0]
    assert released.shape == original.shape
    inside = (slice(m["y"], m["y"] + m["h"]), slice(m["x"], m["x"] + m["w"]))
    assert (released[inside] != original[inside]).any(axis=2).mean() > 0.5  # the hand-drawn box was replaced
    assert np.array_equal(released[:40, -40:], original[:40, -40:])  # far from every box: untouched


def test_api_refuses_calls_without_the_page_token(page) -> None:
    _, server, _ = page
    req = urllib.request.Request(server.url + "api/approve", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    assert server.server_address[0] == "127.0.0.1"
