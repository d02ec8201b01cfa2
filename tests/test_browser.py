"""The studio in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium."""

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from test_app import free_port, slow_model  # noqa: E402
from painter.checkpoints import save_painter  # noqa: E402
from conftest import VOCAB  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")

RECORD_STATUS = """
window.__statuses = [];
window.__previews = 0;
const target = document.querySelector('#status');
new MutationObserver(() => window.__statuses.push(target.innerText)).observe(
    target, {subtree: true, childList: true, characterData: true});
const preview = document.querySelector('#preview');
new MutationObserver(() => window.__previews = Math.max(window.__previews,
    preview.querySelectorAll('img[src^="data:image/jpeg"]').length)).observe(preview, {subtree: true, childList: true});
"""


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    from painter.ui.app import LAUNCH_OPTIONS, create_app

    root = tmp_path_factory.mktemp("browser-models")
    save_painter(slow_model(), VOCAB, root / "slow")
    port = free_port()
    demo, _ = create_app(["--model", str(root / "slow"), "--port", str(port)])
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="painter-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1100", "--lang=zh-CN"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def clicked(element) -> bool:
    """Click, or report that something lay over the element (Gradio's progress overlay while an event of the
    component runs, longer on a busy machine), for a wait to try again."""
    try:
        element.click()
        return True
    except ElementClickInterceptedException:
        return False


def choose(driver, elem_id: str, text: str) -> None:
    """Open a Gradio dropdown and click the option whose label contains ``text``."""
    WebDriverWait(driver, 60).until(lambda d: clicked(d.find_element(By.CSS_SELECTOR, f"#{elem_id} input")))
    option = WebDriverWait(driver, 10).until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, f"#{elem_id} li[data-testid='dropdown-option'][aria-label*='{text}']")))
    option.click()


def slider(driver, elem_id: str) -> float:
    return float(driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]").get_attribute("value"))


def test_paint_in_a_real_browser(browser, studio_url, tmp_path):
    from painter import hub

    # the bundled demo model when it is there (it paints a real apple for the README's screenshot)
    model = "demo-large" if (hub.PROJECT_ROOT / "assets" / "models" / "demo-large").is_dir() else "slow"
    wait = WebDriverWait(browser, 120)
    browser.get(studio_url)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    if model == "demo-large":  # the plain style shows each model's recommended settings (its config.json)
        choose(browser, "model", "slow")
        wait.until(lambda d: slider(d, "temperature") == 1.0)
    choose(browser, "model", model)
    if model == "demo-large":
        wait.until(lambda d: slider(d, "temperature") == 0.2)
    prompt.send_keys("红苹果")
    gallery = browser.find_element(By.CSS_SELECTOR, "#gallery").text
    assert "Drop" not in gallery and "Upload" not in gallery, "the results are an output, not an upload box"
    browser.execute_script(RECORD_STATUS)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda d: "256 / 256 tokens" in d.find_element(By.CSS_SELECTOR, "#status").text)
    statuses = browser.execute_script("return window.__statuses")
    partial = [s for s in statuses if "/ 256 tokens" in s and "256 / 256" not in s]
    assert partial, statuses  # previews arrived before the final picture
    assert browser.execute_script("return window.__previews") == 1, "shown inline while painting"
    assert not browser.find_elements(By.CSS_SELECTOR, "#preview img"), "and gone when the result is there"
    images = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert images and images[0].get_attribute("naturalWidth") == "256"
    shown, box = browser.execute_script("const w = document.querySelector('#gallery .grid-wrap');"
                                        "return [document.querySelector('#gallery img').clientHeight,"
                                        " w.scrollHeight - w.clientHeight]")
    assert shown <= 448 and box <= 2, "the result is shown whole, at a sensible size"
    wait.until(lambda d: ".png" in d.find_element(By.CSS_SELECTOR, "#files").text)  # its PNG to download
    choose(browser, "style", "风景")
    wait.until(lambda d: "painter download pai-painter-scenery-base-zh" in d.find_element(By.CSS_SELECTOR, "#note").text)
    assert model in browser.find_element(By.CSS_SELECTOR, "#note").text  # says which model paints instead
    shot = Path(os.environ.get("PAINTER_SCREENSHOT", tmp_path / "studio.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def test_enter_paints_shift_enter_adds_a_line_and_stop_says_it_stopped(browser, studio_url):
    from selenium.webdriver.common.keys import Keys

    wait = WebDriverWait(browser, 120)
    browser.get(studio_url)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    choose(browser, "model", "slow")
    prompt.send_keys("红苹果")
    prompt.send_keys(Keys.SHIFT, Keys.ENTER)
    prompt.send_keys("绿叶")
    assert prompt.get_attribute("value") == "红苹果\n绿叶", "Shift+Enter starts a new line"
    assert "tokens" not in browser.find_element(By.CSS_SELECTOR, "#status").text, "and paints nothing"
    prompt.send_keys(Keys.ENTER)
    wait.until(lambda d: " / 256 tokens" in d.find_element(By.CSS_SELECTOR, "#status").text)
    browser.execute_script(RECORD_STATUS)
    browser.find_element(By.CSS_SELECTOR, "#stop").click()
    try:
        wait.until(lambda d: "已停止 Stopped" in d.find_element(By.CSS_SELECTOR, "#status").text)
    except Exception:
        raise AssertionError(browser.execute_script("return window.__statuses")[-5:])
    stopped = browser.find_element(By.CSS_SELECTOR, "#status").text
    time.sleep(2)
    assert browser.find_element(By.CSS_SELECTOR, "#status").text == stopped, "nothing paints on after Stop"


def test_on_a_phone_every_tab_shows_and_the_upload_box_speaks_both_languages(browser, studio_url):
    wait = WebDriverWait(browser, 120)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # a 360-pixel phone screen
                            {"width": 360, "height": 780, "deviceScaleFactor": 1, "mobile": True})
    try:
        browser.get(studio_url)
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
        shown = lambda d: [b.text for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.is_displayed()]
        try:  # Gradio first draws every tab, then moves those that do not fit behind "..."
            WebDriverWait(browser, 5).until(lambda d: len(shown(d)) < 4)
        except Exception:
            pass
        assert shown(browser) == ["创作 Create", "对比 Compare", "历史 History", "模型 Models"], "none behind ..."
        words = browser.execute_script("const t = document.querySelector('#restore [data-testid=upload-text]');"
                                       "return [getComputedStyle(t, '::after').content, getComputedStyle(t).fontSize]")
        assert "拖入" in words[0] and "Drop" in words[0] and words[1] == "0px"  # Gradio's one-language words hidden
        top = browser.execute_script("return document.querySelector('#examples').getBoundingClientRect().top"
                                     " + window.scrollY")
        assert top < 700, f"the examples are {top:.0f} px down the page, below the sampling controls"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_model_downloaded_from_the_models_tab_joins_the_create_list(browser, server, archive, online, monkeypatch,
                                                                      tmp_path):
    import hashlib

    from painter import hub
    from painter.ui.app import LAUNCH_OPTIONS, create_app
    from conftest import ARCHIVE_NAME, ARCHIVE_PATH

    server.files[ARCHIVE_PATH] = archive
    server.mode = "slow"  # four pieces 0.3 s apart: the progress bar is seen
    monkeypatch.setenv("PAINTER_MIRROR", server.url)
    monkeypatch.setitem(hub.registry()[ARCHIVE_NAME], "sha256", hashlib.sha256(archive).hexdigest())
    port = free_port()
    demo, _ = create_app(["--port", str(port)])
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_OPTIONS)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(f"http://127.0.0.1:{port}/")
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
        next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Models" in b.text).click()
        button = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#download")))
        assert ARCHIVE_NAME in browser.find_element(By.CSS_SELECTOR, "#download-choice input").get_attribute("value")
        button.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads progress"))
        browser.save_screenshot(str(tmp_path / "downloading.png"))
        wait.until(lambda d: "已安装" in d.find_element(By.CSS_SELECTOR, "#downloads").text)
        shot = Path(os.environ.get("PAINTER_DOWNLOAD_SCREENSHOT", tmp_path / "downloaded.png"))
        browser.save_screenshot(str(shot))
        next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Create" in b.text).click()
        choose(browser, "model", ARCHIVE_NAME)  # in the Create list without a restart
        assert browser.find_element(By.CSS_SELECTOR, "#model input").get_attribute("value") == ARCHIVE_NAME
    finally:
        demo.close()


PRESET_SHOTS = (("ecommerce", "电商"), ("scenery", "风景"), ("painting", "国画"), ("emoji", "表情"))


def test_every_preset_paints_its_domain_with_the_bundled_model_in_a_real_browser(browser, studio_url, tmp_path):
    """Each preset with bundled-large chosen (the 128 px model the domain presets fall back to; bundled-base
    paints blotches of a subject's colours), its first example, four pictures (seeds 0-3), each scored by its
    domain's measure; screenshots go to PAINTER_SCREENSHOTS when that names a folder."""
    import io
    import urllib.request

    from PIL import Image

    from painter.evaluation import domain_measures

    proxies = {"ecommerce": lambda m: m["white_border"] > 0.95, "scenery": lambda m: m["fills_frame"] > 0.75,
               "painting": lambda m: m["ink_tones"] > 0.9, "emoji": lambda m: m["colour"] > 0.5}

    folder = Path(os.environ.get("PAINTER_SCREENSHOTS", tmp_path))
    wait = WebDriverWait(browser, 120, ignored_exceptions=[StaleElementReferenceException])  # lists re-render
    browser.set_window_size(1400, 1600)  # the four pictures in sight
    browser.get(studio_url)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    for field, value in (("#images input[type=number]", "4"), ("#seed input", "0")):  # seeds 0-3
        box = browser.find_element(By.CSS_SELECTOR, field)
        box.clear()
        box.send_keys(value + "\t")
    choose(browser, "model", "bundled-large")  # the bundled model the domain presets fall back to
    shown = browser.find_element(By.CSS_SELECTOR, "#examples button").text  # the plain preset's first example
    for style, label in PRESET_SHOTS:
        choose(browser, "style", label)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#examples button").text != shown)  # its examples
        example = browser.find_element(By.CSS_SELECTOR, "#examples button")
        shown = example.text
        example.click()
        wait.until(lambda d: prompt.get_attribute("value") == shown.strip())
        browser.execute_script(RECORD_STATUS)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        # this job's previews first: until then the status still shows the last job's final line
        wait.until(lambda d: any(re.search(r"\b(?!256 )\d+ / 256 tokens", s)
                                 for s in d.execute_script("return window.__statuses")))
        wait.until(lambda d: "256 / 256 tokens" in d.find_element(By.CSS_SELECTOR, "#status").text)
        sources = [img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "#gallery img")]
        assert len(sources) == 4, sources
        for src in sources:
            measures = domain_measures(Image.open(io.BytesIO(urllib.request.urlopen(src, timeout=30).read())))
            assert proxies[style](measures), (style, shown, measures)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.find_element(By.CSS_SELECTOR, "#canvas").screenshot(str(folder / f"studio-{style}.png"))
    browser.set_window_size(1400, 1100)


PANELS = """return ['#compare-a', '#compare-b'].map(id => {
    const r = document.querySelector(id + ' .painter-compare').getBoundingClientRect();
    return [Math.round(r.width), Math.round(r.height)]; });"""


def test_compare_shows_two_equal_square_panels_that_keep_their_size(browser, studio_url):
    """Base against large: two equal squares at a useful size from the first frame to the last, each side with
    its own progress; nothing moves when the pictures come."""
    wait = WebDriverWait(browser, 300)
    browser.get(studio_url)
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "对比" in b.text).click()
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#compare")))
    before = browser.execute_script(PANELS)
    assert before[0] == before[1] and before[0][0] == before[0][1] and before[0][0] >= 256, before
    browser.find_element(By.CSS_SELECTOR, "#compare").click()
    done = lambda d: all("256 / 256" in d.find_element(By.CSS_SELECTOR, f"#compare-info-{s}").text for s in "ab")
    wait.until(done)
    assert browser.execute_script(PANELS) == before, "the panels kept their size"
    images = browser.find_elements(By.CSS_SELECTOR, ".painter-compare img[alt=png]")
    assert len(images) == 2 and all(int(i.get_attribute("naturalWidth")) >= 256 for i in images)


def test_repaint_a_result_in_the_browser(browser, studio_url, tmp_path):
    """Paint, pick the result, repaint the default box: the new picture keeps every cell outside the box (its
    PNG's codes) and changes inside it."""
    import urllib.request

    import torch

    from painter.serving.repaint import codes_from_text, keep_mask
    from painter.ui.metadata import read_params

    def result_png(driver, name) -> Path:
        src = driver.find_element(By.CSS_SELECTOR, "#gallery img").get_attribute("src")
        path = tmp_path / name
        path.write_bytes(urllib.request.urlopen(src, timeout=30).read())
        return path

    wait = WebDriverWait(browser, 120, ignored_exceptions=[StaleElementReferenceException])  # the gallery re-renders
    browser.get(studio_url)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    choose(browser, "model", "slow")
    prompt.send_keys("红苹果")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda d: "256 / 256 tokens" in d.find_element(By.CSS_SELECTOR, "#status").text)
    source = result_png(browser, "source.png")
    browser.find_element(By.CSS_SELECTOR, "#gallery img").click()  # the picture to repaint
    browser.find_element(By.CSS_SELECTOR, "#repaint-panel button").click()  # open the panel
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#repaint-source img"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#repaint-grid img"))  # the snapped region shown
    shown = browser.find_element(By.CSS_SELECTOR, "#gallery img").get_attribute("src")
    browser.find_element(By.CSS_SELECTOR, "#repaint").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery img")
               and d.find_element(By.CSS_SELECTOR, "#gallery img").get_attribute("src") != shown)
    repainted = result_png(browser, "repainted.png")
    before, after = (codes_from_text(read_params(p)["codes"], 256, 128) for p in (source, repainted))
    keep = keep_mask(16, box=(4, 4, 12, 12))
    assert torch.equal(after[keep], before[keep]) and not torch.equal(after[~keep], before[~keep])
    browser.save_screenshot(str(tmp_path / "repaint.png"))


def test_stop_right_after_paint_never_shows_error(browser, studio_url):
    """Stop pressed within a fraction of a second of Paint (before the first frame) says 已停止 Stopped; neither
    the status nor any toast says "Error" on the way."""
    wait = WebDriverWait(browser, 120)
    browser.get(studio_url)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    choose(browser, "model", "slow")
    prompt.send_keys("红苹果")
    browser.execute_script(RECORD_STATUS + """
window.__errors = [];
new MutationObserver(() => { for (const e of document.querySelectorAll('.error')) {
    const r = e.getBoundingClientRect(), style = getComputedStyle(e);
    if (/Error/.test(e.innerText) && e.offsetParent !== null && r.width > 0 && style.visibility !== 'hidden'
        && style.opacity !== '0') { const b = e.closest('[id]'); window.__errors.push((b ? b.id : '?') + ': ' + e.innerText); } } })
  .observe(document.body, {subtree: true, childList: true, characterData: true});""")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    time.sleep(0.15)
    browser.find_element(By.CSS_SELECTOR, "#stop").click()
    wait.until(lambda d: "已停止 Stopped" in d.find_element(By.CSS_SELECTOR, "#status").text)
    time.sleep(1.5)
    assert browser.execute_script("return window.__errors") == [], browser.execute_script("return window.__errors")
