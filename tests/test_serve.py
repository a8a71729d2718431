"""`nmt serve`: a real uvicorn server on a free port, driven over HTTP."""

import asyncio
import io
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import toy_pairs

pytest.importorskip("starlette", reason="the `serve` extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the `serve` extra (starlette, uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (a dev dependency) is not installed")

import uvicorn  # noqa: E402

from nmt import translate  # noqa: E402
from nmt.checkpoint import save_checkpoint  # noqa: E402
from nmt.config import preset  # noqa: E402
from nmt.errors import ConfigError  # noqa: E402
from nmt.model import Transformer  # noqa: E402
from nmt.search import SearchConfig  # noqa: E402
from nmt.serve import app as serve_app  # noqa: E402
from nmt.serve.engine import Output  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving `app` in a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_vocab) -> Path:
    cfg = preset("tiny", vocab_size=len(tiny_vocab), d_model=32, d_ff=64, n_heads=4,
                 n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    torch.manual_seed(1234)
    model = Transformer(cfg).eval()
    return save_checkpoint(tmp_path_factory.mktemp("serve") / "ck", model, tiny_vocab,
                           {"step": 1})


@pytest.fixture(scope="module")
def server(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, max_wait_ms=30.0,
                                   max_lines=8, max_chars=200)
    with Server(serve_app.create_app(config)) as s:
        yield s


LINES = [en for en, _ in toy_pairs()[::15]] + ["Dog", "A man ."]


def _cli_translations(ckpt, lines, beam, alpha):
    config = translate.TranslateConfig(checkpoints=(ckpt,), threads=1,
                                       search=SearchConfig(beam=beam, alpha=alpha))
    sink = io.StringIO()
    translate.run(config, stdin=io.BytesIO("".join(f"{t}\n" for t in lines).encode()),
                  stdout=sink)
    return sink.getvalue().splitlines()


def test_http_translations_equal_nmt_translate(server, ckpt):
    for beam, alpha in ((4, 0.6), (1, 0.6), (3, 1.0)):
        expected = _cli_translations(ckpt, LINES, beam, alpha)
        got = []
        for start in range(0, len(LINES), 8):
            r = httpx.post(f"{server.url}/translate", timeout=60,
                           json={"text": LINES[start:start + 8], "beam": beam, "lenpen": alpha})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == "ck" and body["elapsed_ms"] > 0
            got += body["translations"]
        assert got == expected


def test_attention_is_returned_when_asked(server):
    r = httpx.post(f"{server.url}/translate", json={"text": ["A man sits ."], "attention": True},
                   timeout=60)
    assert r.status_code == 200, r.text
    att = r.json()["attention"][0]
    assert att["source_tokens"][-1] == "</s>"
    assert len(att["weights"]) == len(att["target_tokens"])
    assert all(len(row) == len(att["source_tokens"]) for row in att["weights"])
    assert all(abs(sum(row) - 1) < 1e-2 for row in att["weights"])
    assert "attention" not in httpx.post(f"{server.url}/translate",
                                         json={"text": ["A dog"]}, timeout=60).json()


def test_fifty_concurrent_requests_are_batched(server, ckpt):
    lines = [LINES[i % len(LINES)] for i in range(50)]
    expected = dict(zip(LINES, _cli_translations(ckpt, LINES, 4, 0.6), strict=True))
    before = httpx.get(f"{server.url}/health").json()

    async def everyone():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/translate", json={"text": [line]})
                                          for line in lines))

    answers = asyncio.run(everyone())
    assert [a.status_code for a in answers] == [200] * 50
    assert [a.json()["translations"][0] for a in answers] == [expected[t] for t in lines]
    after = httpx.get(f"{server.url}/health").json()
    assert after["requests"] - before["requests"] == 50
    calls = after["model_calls"] - before["model_calls"]
    assert 1 <= calls < 50, calls


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "object"),
    (b'{"beam": 2}', 400, "missing"),
    (b'{"text": 5}', 422, "list of strings"),
    (b'{"text": ["a", 3]}', 422, "list of strings"),
    (b'{"text": []}', 422, "empty"),
    (b'{"text": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', 413, "at most 8"),
    (b'{"text": ["' + b"x" * 201 + b'"]}', 413, "characters"),
    (b'{"text": ["a"], "beam": "4"}', 422, "beam"),
    (b'{"text": ["a"], "beam": 0}', 422, "beam"),
    (b'{"text": ["a"], "beam": true}', 422, "beam"),
    (b'{"text": ["a"], "lenpen": NaN}', 422, "lenpen"),
    (b'{"text": ["a"], "attention": "yes"}', 422, "attention"),
    (b'{"text": ["a"], "bean": 4}', 400, "unknown"),
    (b"\xff\xfe", 400, "not JSON"),
])
def test_malformed_requests_get_a_json_4xx(server, body, status, words):
    r = httpx.post(f"{server.url}/translate", content=body, timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_wrong_routes_and_methods_are_json_and_the_server_lives(server):
    r = httpx.get(f"{server.url}/translate")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(f"{server.url}/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.post(f"{server.url}/translate", content=b"x" * (2 << 20))
    assert r.status_code == 413 and "error" in r.json()
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["queued_lines"] == 0
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<canvas" in page.text and "http" not in page.text.split(
        "<script>")[1]  # no external resources


class SlowEngine:
    name, description = "slow", "none"

    def translate(self, texts, options):
        time.sleep(0.3)
        return [Output(t.upper()) for t in texts]


def test_overload_answers_503_and_recovers(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), max_queued_lines=4, max_lines=4)
    with Server(serve_app.create_app(config, engine=SlowEngine())) as s:
        async def flood():
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as client:
                return await asyncio.gather(*(client.post("/translate", json={"text": ["a", "b"]})
                                              for _ in range(10)))

        codes = sorted(r.status_code for r in asyncio.run(flood()))
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        assert httpx.post(f"{s.url}/translate", json={"text": ["ok"]},
                          timeout=30).json()["translations"] == ["OK"]
        assert httpx.get(f"{s.url}/health").json()["rejected"] >= 1


def test_non_loopback_hosts_need_an_explicit_host(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), host="0.0.0.0")
    with pytest.raises(ConfigError, match="explicit --host"):
        serve_app.run(config)
    assert serve_app.is_loopback("127.0.0.1") and serve_app.is_loopback("::1")
    assert serve_app.is_loopback("localhost") and not serve_app.is_loopback("0.0.0.0")
