"""The web page of `nmt serve` in headless Chromium: type a sentence, see a translation and its
heatmap; the LibreTranslate API from the browser; the API key field. Skipped where Chromium,
its driver or selenium is absent."""

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("starlette", reason="the `serve` extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the `serve` extra (starlette, uvicorn) is not installed")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium (a dev dependency) is not installed")

from conftest import en_de_checkpoint  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from test_serve import Server, _cli_translations  # noqa: E402

from nmt.checkpoint import save_checkpoint  # noqa: E402
from nmt.config import preset  # noqa: E402
from nmt.model import Transformer  # noqa: E402
from nmt.serve import app as serve_app  # noqa: E402

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()),
                None)
DRIVER = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "")
               if p and Path(p).exists()), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Chromium and chromedriver are not installed (apt-get install chromium "
           "chromium-driver)")


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_typing_a_sentence_shows_its_translation_and_heatmap(tmp_path, tiny_vocab, browser):
    cfg = preset("tiny", vocab_size=len(tiny_vocab), d_model=32, d_ff=64, n_heads=4,
                 n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    torch.manual_seed(1234)
    ckpt = save_checkpoint(tmp_path / "ck", Transformer(cfg).eval(), tiny_vocab, {"step": 1})
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1)
    with Server(serve_app.create_app(config)) as server:
        browser.get(server.url + "/")
        field = browser.find_element(By.ID, "source")
        field.send_keys("A man sits in the park .", Keys.ENTER)
        canvas = browser.find_element(By.ID, "heatmap")
        WebDriverWait(browser, 60).until(lambda d: canvas.get_attribute("data-drawn") == "1")
        translation = browser.find_element(By.ID, "translation").text
        assert translation.strip()
        assert browser.find_element(By.ID, "error").text == ""
        width, height = canvas.size["width"], canvas.size["height"]
        assert width > 100 and height > 50
        # the canvas holds more than the white background: the heatmap was drawn
        colours = browser.execute_script(
            "const c = document.getElementById('heatmap');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "const seen = new Set(); for (let i = 0; i < d.length; i += 4) "
            "seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]); return seen.size;")
        assert colours > 10
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 5000


def test_the_browser_speaks_libretranslate_to_the_server(tmp_path, tiny_vocab, browser):
    """The page names the pair from GET /languages; fetch() from the page, as a LibreTranslate
    web client would, gets what `nmt translate` writes (form and JSON bodies, html kept)."""
    ckpt = en_de_checkpoint(tmp_path / "ck", tiny_vocab)
    line = "A man sits in the park ."
    expected = _cli_translations(ckpt, [line], 4, 0.6)[0]
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1)
    with Server(serve_app.create_app(config)) as server:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "pair").text)
        assert browser.find_element(By.ID, "pair").text == "English \u2192 German"
        assert not browser.find_element(By.ID, "key").is_displayed()  # no keys configured
        answers = browser.execute_async_script(
            "const done = arguments[arguments.length - 1], q = arguments[0];"
            "const form = fetch('translate', {method: 'POST', body: new URLSearchParams("
            "  {q: q, source: 'auto', target: 'de'})}).then(r => r.json());"
            "const html = fetch('translate', {method: 'POST', headers: {'Content-Type': "
            "  'application/json'}, body: JSON.stringify({q: ['<p>' + q + '</p>'], "
            "  source: 'en', target: 'de', format: 'html'})}).then(r => r.json());"
            "const bad = fetch('translate', {method: 'POST', headers: {'Content-Type': "
            "  'application/json'}, body: JSON.stringify({q: q, source: 'fr', target: 'de'})})"
            "  .then(async r => [r.status, (await r.json()).error]);"
            "Promise.all([form, html, bad]).then(done, e => done(String(e)));", line)
        assert answers[0] == {"translatedText": expected, "alternatives": []}
        assert answers[1] == {"translatedText": [f"<p>{expected}</p>"], "alternatives": [[]]}
        assert answers[2][0] == 400 and "en to de only" in answers[2][1]


def test_the_page_sends_the_api_key_a_server_needs(tmp_path, tiny_vocab, browser):
    ckpt = en_de_checkpoint(tmp_path / "ck", tiny_vocab)
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, api_keys=("s3cret",))
    with Server(serve_app.create_app(config)) as server:
        browser.get(server.url + "/")
        key = browser.find_element(By.ID, "key")
        WebDriverWait(browser, 30).until(lambda d: key.is_displayed())
        field = browser.find_element(By.ID, "source")
        field.send_keys("A dog .", Keys.ENTER)
        error = browser.find_element(By.ID, "error")
        WebDriverWait(browser, 60).until(lambda d: error.text)
        assert "needs an API key" in error.text
        key.send_keys("s3cret")
        field.send_keys(Keys.ENTER)
        canvas = browser.find_element(By.ID, "heatmap")
        WebDriverWait(browser, 60).until(lambda d: canvas.get_attribute("data-drawn") == "1")
        assert error.text == ""
        assert browser.find_element(By.ID, "translation").text.strip()
