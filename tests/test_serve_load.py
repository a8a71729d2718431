"""`nmt serve` under load and hostile input: size limits, the rate limit, a client trickling its
body, and SIGTERM finishing what is in flight (the real CLI, in a subprocess)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the `serve` extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the `serve` extra (starlette, uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (a dev dependency) is not installed")

from conftest import en_de_checkpoint  # noqa: E402
from test_serve import Server, _cli_translations, free_port  # noqa: E402

from nmt.serve import app as serve_app  # noqa: E402
from nmt.serve.guards import RateLimiter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_vocab) -> Path:
    return en_de_checkpoint(tmp_path_factory.mktemp("load") / "ck", tiny_vocab)


def open_request(port: int, body: bytes, sent: int) -> socket.socket:
    """A raw connection that has sent the headers and the first `sent` bytes of `body`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:sent])
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_slow_client_does_not_stall_others_and_times_out_alone(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, body_timeout_s=3.0)
    line = "A man sits in the park ."
    expected = _cli_translations(ckpt, [line, "A dog ."], 4, 0.6)
    with Server(serve_app.create_app(config)) as s:
        body = json.dumps({"q": line, "source": "en", "target": "de"}).encode()
        slow = open_request(s.port, body, 5)
        finished = {}

        def trickle():
            for i in range(5, len(body)):
                time.sleep(1.5 / len(body))
                slow.sendall(body[i:i + 1])
            finished["at"] = time.monotonic()

        trickler = threading.Thread(target=trickle)
        trickler.start()
        fast = httpx.post(f"{s.url}/translate", json={"text": ["A dog ."]}, timeout=30)
        answered_at = time.monotonic()
        assert fast.status_code == 200 and fast.json()["translations"] == expected[1:]
        trickler.join()
        assert answered_at < finished["at"]  # answered while the slow body was still coming
        assert read_response(slow) == (200, {"translatedText": expected[0], "alternatives": []})
        slow.close()

        stuck = open_request(s.port, body, 10)  # sends part of its body, then nothing
        started = time.monotonic()
        assert httpx.post(f"{s.url}/translate", json={"text": ["A dog ."]},
                          timeout=30).status_code == 200
        status, answer = read_response(stuck)
        assert status == 408 and "did not arrive within 3 s" in answer["error"]
        assert 2.5 < time.monotonic() - started < 15
        stuck.close()


def test_bodies_over_the_limit_get_413_with_or_without_a_length(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, max_body_bytes=1000)
    with Server(serve_app.create_app(config)) as s:
        r = httpx.post(f"{s.url}/translate", timeout=30,
                       data={"q": "x" * 2000, "source": "en", "target": "de"})
        assert r.status_code == 413 and "over 1000 bytes" in r.json()["error"]

        def chunks():  # chunked: no Content-Length to refuse up front
            for _ in range(20):
                yield b"x" * 100

        r = httpx.post(f"{s.url}/translate", content=chunks(), timeout=30,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "over 1000 bytes" in r.json()["error"]


def test_hostile_bodies_are_a_quick_400(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1)
    with Server(serve_app.create_app(config)) as s:
        r = httpx.post(f"{s.url}/translate", content=b"[" * 200_000, timeout=30,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        r = httpx.post(f"{s.url}/translate", timeout=30, headers={
            "Content-Type": "multipart/form-data; boundary=x"}, content=b"--x--")
        assert r.status_code == 400 and "multipart" in r.json()["error"]
        started = time.monotonic()  # unclosed tags and comments: no quadratic scan
        r = httpx.post(f"{s.url}/translate", timeout=30, json={
            "q": "<a" * 100_000 + "<!--" * 100_000, "source": "en", "target": "de",
            "format": "html"})
        assert r.status_code == 413 and time.monotonic() - started < 5


def test_the_rate_limit_answers_429_per_client():
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0] * 3
    assert limiter.take("a") == pytest.approx(20.0)  # 3 a minute: one more every 20 s
    assert limiter.take("b") == 0.0  # another address has its own allowance
    now[0] = 19.0
    assert limiter.take("a") == pytest.approx(1.0)
    now[0] = 20.0
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0


def test_the_server_answers_429_over_its_rate_limit(ckpt):
    config = serve_app.ServeConfig(checkpoints=(ckpt,), threads=1, rate_limit=3)
    with Server(serve_app.create_app(config)) as s:
        codes = [httpx.post(f"{s.url}/translate", timeout=30,
                            data={"q": "A dog", "source": "en", "target": "de"})
                 for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert "3 requests per minute" in codes[3].json()["error"]
        assert int(codes[3].headers["Retry-After"]) >= 1
        assert httpx.get(f"{s.url}/health").status_code == 200  # only translating is limited


def serve_cli(ckpt: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "nmt", "serve", "-c", str(ckpt), "--port",
                             str(port), "--threads", "1", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_finishes_the_request_in_flight_and_exits_0_with_one_line(ckpt):
    port = free_port()
    proc = serve_cli(ckpt, port)
    try:
        first = proc.stderr.readline()
        assert "serving ck (en-de) on http://127.0.0.1:" in first, first + proc.stderr.read()
        deadline = time.monotonic() + 30
        while True:  # the model is loaded; uvicorn starts listening a moment later
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        line = "A man sits in the park ."
        body = json.dumps({"q": line, "source": "en", "target": "de"}).encode()
        sock = open_request(port, body, 10)
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{port}/health").json()["in_flight"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no new connections once told to stop
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        sock.sendall(body[10:])
        assert read_response(sock) == (200, {
            "translatedText": _cli_translations(ckpt, [line], 4, 0.6)[0], "alternatives": []})
        sock.close()
        assert proc.wait(30) == 0
        rest = proc.stderr.read().splitlines()
        assert rest == ["nmt serve: SIGTERM: finished the 1 request(s) in flight and stopped; "
                        "1 translate request(s) answered"], rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_port_in_use_is_one_line_and_exit_2(ckpt):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = serve_cli(ckpt, port)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: "
                                "Address already in use"], err


@pytest.mark.parametrize(("option", "words"), [
    ("--api-keys", "holds no API key"), ("--languages", "--languages must be SRC-TGT")])
def test_bad_access_options_are_one_line_and_exit_2(ckpt, tmp_path, option, words):
    (tmp_path / "keys").write_text("# nothing but a comment\n\n")
    value = str(tmp_path / "keys") if option == "--api-keys" else "en_de"
    proc = serve_cli(ckpt, free_port(), option, value)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert len(err.splitlines()) == 1 and words in err, err
