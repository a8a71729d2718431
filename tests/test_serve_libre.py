"""`nmt serve` speaks the LibreTranslate API: the real `libretranslatepy` client and raw HTTP
against a uvicorn server on a loopback port."""

import io
import json
from pathlib import Path
from urllib.error import HTTPError

import pytest

pytest.importorskip("starlette", reason="the `serve` extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the `serve` extra (starlette, uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (a dev dependency) is not installed")
libretranslatepy = pytest.importorskip("libretranslatepy",
                                       reason="libretranslatepy (a dev dependency) is absent")

from conftest import en_de_checkpoint  # noqa: E402
from test_serve import LINES, Server, _cli_translations  # noqa: E402

from nmt import translate  # noqa: E402
from nmt.checkpoint import save_checkpoint  # noqa: E402
from nmt.config import preset  # noqa: E402
from nmt.model import Transformer  # noqa: E402
from nmt.search import SearchConfig  # noqa: E402
from nmt.serve import app as serve_app  # noqa: E402
from nmt.serve.engine import Output  # noqa: E402
from nmt.serve.markup import segment  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_vocab) -> Path:
    return en_de_checkpoint(tmp_path_factory.mktemp("libre") / "ck", tiny_vocab)


@pytest.fixture(scope="module")
def server(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, max_wait_ms=20.0,
                                   max_lines=8, max_chars=200)
    with Server(serve_app.create_app(config)) as s:
        yield s


def test_libretranslatepy_gets_what_nmt_translate_writes(server, ckpt):
    client = libretranslatepy.LibreTranslateAPI(server.url + "/")
    assert client.languages() == [{"code": "en", "name": "English", "targets": ["de"]},
                                  {"code": "de", "name": "German", "targets": []}]
    expected = _cli_translations(ckpt, LINES[:3], 4, 0.6)
    assert [client.translate(line, "en", "de", timeout=60) for line in LINES[:3]] == expected
    assert client.translate(LINES[0], "auto", "de", timeout=60) == expected[0]
    with pytest.raises(HTTPError) as caught:
        client.translate(LINES[0], "fr", "de", timeout=60)
    assert caught.value.code == 400
    assert "en to de only" in json.loads(caught.value.read())["error"]


def test_json_list_input_gets_lists_and_alternatives_are_the_n_best(server, ckpt):
    r = httpx.post(f"{server.url}/translate", timeout=60,
                   json={"q": LINES[:2], "source": "en", "target": "de", "format": "text"})
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": _cli_translations(ckpt, LINES[:2], 4, 0.6),
                        "alternatives": [[], []]}

    config = translate.TranslateConfig(checkpoints=(ckpt,), threads=1, output_format="jsonl",
                                       search=SearchConfig(beam=4, nbest=3))
    sink = io.StringIO()
    translate.run(config, stdin=io.BytesIO(f"{LINES[0]}\n".encode()), stdout=sink)
    hyps = [h["translation"] for h in json.loads(sink.getvalue())["hypotheses"]]
    r = httpx.post(f"{server.url}/translate", timeout=60,
                   json={"q": LINES[0], "source": "en", "target": "de", "alternatives": 2})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["translatedText"] == hyps[0]
    assert answer["alternatives"] == list(dict.fromkeys(h for h in hyps[1:] if h != hyps[0]))
    assert answer["alternatives"]


def test_html_keeps_tags_and_translates_the_text_between(server, ckpt):
    q = ('<p class="x">A man sits .</p>\n<script>var a = "A dog";</script>'
         '<!-- the dog --><b>A dog &amp; a cat</b>')
    r = httpx.post(f"{server.url}/translate", timeout=60,
                   data={"q": q, "source": "en", "target": "de", "format": "html"})
    assert r.status_code == 200, r.text
    man, dog = _cli_translations(ckpt, ["A man sits .", "A dog & a cat"], 4, 0.6)
    esc = dog.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert r.json()["translatedText"] == (f'<p class="x">{man}</p>\n<script>var a = "A dog";'
                                          f"</script><!-- the dog --><b>{esc}</b>")


def test_text_format_keeps_lines_and_segments_rebuild_their_input():
    seg = segment("  One .\n\nTwo .  \r\nthree", "text")
    assert seg.sentences == ["One .", "Two .", "three"]
    assert seg.join(["1", "2", "3"]) == "  1\n\n2  \r\n3"
    seg = segment("a < b <i>x</i> <br/>", "html")
    assert seg.sentences == ["a < b", "x"]
    assert seg.join(["A<B", "X"]) == "A&lt;B <i>X</i> <br/>"


@pytest.mark.parametrize(("fields", "words"), [
    ({"source": "en", "target": "de"}, "missing"),
    ({"q": 3, "source": "en", "target": "de"}, "string"),
    ({"q": [], "source": "en", "target": "de"}, "string"),
    ({"q": "  ", "source": "en", "target": "de"}, "empty"),
    ({"q": "a", "target": "de"}, '"source" is missing'),
    ({"q": "a", "source": "en"}, '"target" is missing'),
    ({"q": "a", "source": "de", "target": "en"}, "de-en is not served"),
    ({"q": "a", "source": "en", "target": "fr"}, "en-fr is not served"),
    ({"q": "a", "source": "en", "target": "de", "format": "pdf"}, "format"),
    ({"q": "a", "source": "en", "target": "de", "alternatives": -1}, "alternatives"),
    ({"q": "a", "source": "en", "target": "de", "alternatives": 16}, "alternatives"),
    ({"q": "a", "source": "en", "target": "de", "alternatives": "two"}, "alternatives"),
])
def test_bad_libretranslate_requests_get_400(server, fields, words):
    r = httpx.post(f"{server.url}/translate", json=fields, timeout=30)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]
    assert httpx.post(f"{server.url}/translate", content=b"q=%ff&source=en&target=de",
                      headers={"Content-Type": "application/x-www-form-urlencoded"},
                      timeout=30).status_code == 400


def test_too_many_or_too_long_sentences_get_413(server):
    r = httpx.post(f"{server.url}/translate", timeout=30,
                   data={"q": "\n".join(["a"] * 9), "source": "en", "target": "de"})
    assert r.status_code == 413 and "at most 8" in r.json()["error"]
    r = httpx.post(f"{server.url}/translate", timeout=30,
                   json={"q": ["ok", "x" * 201], "source": "en", "target": "de"})
    assert r.status_code == 413 and "sentence 2 has 201 characters" in r.json()["error"]


def test_a_model_without_languages_says_how_to_give_them(tiny_vocab, tmp_path):
    cfg = preset("tiny", vocab_size=len(tiny_vocab), d_model=32, d_ff=64, n_heads=4,
                 n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    ckpt = save_checkpoint(tmp_path / "ck", Transformer(cfg).eval(), tiny_vocab, {"step": 1})
    with Server(serve_app.create_app(serve_app.ServeConfig(checkpoints=(ckpt,), threads=1))) as s:
        assert httpx.get(f"{s.url}/languages").json() == []
        r = httpx.post(f"{s.url}/translate", json={"q": "a", "source": "en", "target": "de"})
        assert r.status_code == 400 and "--languages" in r.json()["error"]
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, languages=("en", "de"))
    with Server(serve_app.create_app(config)) as s:
        r = httpx.post(f"{s.url}/translate", json={"q": "A dog", "source": "en", "target": "de"},
                       timeout=60)
        assert r.status_code == 200 and isinstance(r.json()["translatedText"], str)


def test_api_keys_guard_both_apis(ckpt, tmp_path):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, api_keys=("k1", "k2"))
    with Server(serve_app.create_app(config)) as s:
        missing = libretranslatepy.LibreTranslateAPI(s.url + "/")
        wrong = libretranslatepy.LibreTranslateAPI(s.url + "/", api_key="k3")
        for client, words in ((missing, "needs an API key"), (wrong, "invalid API key")):
            with pytest.raises(HTTPError) as caught:
                client.translate("A dog", "en", "de", timeout=60)
            assert caught.value.code == 403
            assert words in json.loads(caught.value.read())["error"]
        right = libretranslatepy.LibreTranslateAPI(s.url + "/", api_key="k2")
        assert isinstance(right.translate("A dog", "en", "de", timeout=60), str)
        assert right.languages()[0]["code"] == "en"  # the language list needs no key
        assert httpx.post(f"{s.url}/translate", json={"text": ["A dog"]}).status_code == 403
        r = httpx.post(f"{s.url}/translate", json={"text": ["A dog"], "api_key": "k1"},
                       timeout=60)
        assert r.status_code == 200 and len(r.json()["translations"]) == 1
        assert httpx.get(f"{s.url}/health").json()["api_keys"] is True


class FailingEngine:
    name, description, languages = "failing", "none", ("en", "de")

    def translate(self, texts, options):
        if texts == ["boom"]:
            raise RuntimeError("the model fell over")
        return [Output(t.upper()) for t in texts]


def test_a_failing_model_is_a_json_500_and_the_server_goes_on(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,))
    with Server(serve_app.create_app(config, engine=FailingEngine())) as s:
        r = httpx.post(f"{s.url}/translate", json={"q": "boom", "source": "en", "target": "de"})
        assert r.status_code == 500 and r.json() == {"error": "internal error"}
        r = httpx.post(f"{s.url}/translate", json={"q": "fine", "source": "en", "target": "de"})
        assert r.json()["translatedText"] == "FINE"
