"""The HTTP application of `nmt serve` (Starlette on uvicorn, the `serve` extra).

- `POST /translate` speaks two schemas, told apart by the body: a form, or a JSON object with
  `q`, `source` or `target` and no `text`, is the LibreTranslate API (`libre`); any other
  JSON object is nmt's own (`native`: `{"text": [...], "beam": 4, ...}` ->
  `{"translations": [...], ...}`).
- `GET /languages` -> the LibreTranslate language list (the pair the model serves).
- `GET /health` -> status, model, device, languages and the batching counters.
- `GET /` -> the web page.

Every failure is `{"error": ...}`: 400 (bad input; 422 for a well-formed nmt request with bad
values), 403 (API keys configured and a wrong or missing `api_key`), 408 (the body did not
arrive in time), 413 (too large: body, lines or characters), 429 (over `rate_limit`), 503
(the queue is full), 500 (a failure of the server). `run` serves until SIGTERM, then finishes
the requests in flight and returns what it did.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nmt.errors import ConfigError
from nmt.serve import libre, native
from nmt.serve.batcher import Batcher, Overloaded
from nmt.serve.engine import Engine, Options
from nmt.serve.guards import BadRequest, RateLimiter, check_key, decode_body, read_body

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LIBRE_FIELDS = frozenset({"q", "source", "target"})  # a JSON body with one (and no "text")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    checkpoints: tuple[Path, ...]
    host: str = LOOPBACK  # anything but a loopback address must be asked for explicitly
    port: int = 8080
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    batch_tokens: int = 6000  # padded source tokens per search batch, x beam
    max_wait_ms: float = 5.0  # how long a request waits for others to batch with
    max_batch_lines: int = 64  # lines collected into one model call at most
    max_queued_lines: int = 2048  # more waiting lines than this: 503
    max_lines: int = 64  # sentences per request (nmt: lines; LibreTranslate: lines or segments)
    max_chars: int = 2000  # characters per sentence
    max_beam: int = 16
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0  # a body not arrived by then: 408
    rate_limit: int | None = None  # translate requests per minute per client address
    api_keys: tuple[str, ...] = ()  # when set, every translate request needs one of them
    languages: tuple[str, str] | None = None  # (source, target); default: the checkpoint's
    shutdown_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may take
    defaults: Options = field(default_factory=Options)

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ConfigError("no checkpoint given")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if min(self.max_lines, self.max_chars, self.max_batch_lines, self.max_queued_lines,
               self.max_beam, self.max_body_bytes) < 1 or self.max_wait_ms < 0 or min(
               self.body_timeout_s, self.shutdown_timeout_s) <= 0:
            raise ConfigError("serving limits must be positive")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ConfigError(f"--rate-limit must be at least 1 request per minute, "
                              f"not {self.rate_limit}")


@dataclass
class Counters:
    in_flight: int = 0  # translate requests being handled now
    answered: int = 0  # translate requests answered (any status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page() -> bytes:
    return resources.files("nmt.serve").joinpath("page.html").read_bytes()


def create_app(config: ServeConfig, engine: Engine | None = None):
    """The Starlette application; `engine` defaults to loading `config.checkpoints`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    engine = engine or Engine(config.checkpoints, device=config.device,
                              precision=config.precision, threads=config.threads,
                              batch_tokens=config.batch_tokens)
    batcher = Batcher(engine.translate, max_wait_s=config.max_wait_ms / 1000,
                      max_batch_lines=config.max_batch_lines,
                      max_queued_lines=config.max_queued_lines)
    pair = config.languages or getattr(engine, "languages", None)
    limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
    counters = Counters()
    html = page()

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def submit(lines: list[str], options: Options):
        try:
            return await batcher.submit(lines, options)
        except Overloaded as exc:
            raise BadRequest(503, str(exc), headers={"Retry-After": "1"}) from None

    async def native_translate(data: dict, started: float) -> JSONResponse:
        check_key(data.get("api_key"), config.api_keys)
        lines, options = native.parse_request(data, config)
        outputs = await submit(lines, options)
        answer = {"translations": [o.translation for o in outputs], "model": engine.name,
                  "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)}
        if options.attention:
            answer["attention"] = [o.attention for o in outputs]
        return JSONResponse(answer)

    async def libre_translate(data: dict) -> JSONResponse:
        check_key(data.get("api_key"), config.api_keys)
        request = libre.parse(data, config, pair)
        sentences = request.sentences
        outputs = await submit(sentences, request.options) if sentences else []
        return JSONResponse(libre.answer(request, outputs))

    async def translate(request: Request) -> JSONResponse:
        started = time.perf_counter()
        counters.in_flight += 1
        try:
            if limiter is not None:
                limiter.check(request.client.host if request.client else "")
            body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
            data, form = decode_body(body, request.headers.get("content-type"))
            if form or ("text" not in data and not LIBRE_FIELDS.isdisjoint(data)):
                return await libre_translate(data)
            return await native_translate(data, started)
        except BadRequest as exc:
            return error(exc.status, str(exc), exc.headers)
        finally:
            counters.in_flight -= 1
            counters.answered += 1

    async def languages(request: Request) -> JSONResponse:
        return JSONResponse(libre.languages(pair))

    async def health(request: Request) -> JSONResponse:
        s = batcher.stats
        return JSONResponse({"status": "ok", "model": engine.name, "device": engine.description,
                             "languages": "-".join(pair) if pair else None,
                             "api_keys": bool(config.api_keys),
                             "requests": s.requests, "lines": s.lines,
                             "model_calls": s.model_calls, "rejected": s.rejected,
                             "queued_lines": batcher.queued_lines,
                             "in_flight": counters.in_flight})

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, "internal error")

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = Starlette(routes=[Route("/translate", translate, methods=["POST"]),
                            Route("/languages", languages, methods=["GET"]),
                            Route("/health", health, methods=["GET"]),
                            Route("/", index, methods=["GET"])],
                    exception_handlers={HTTPException: http_error, 500: server_error},
                    lifespan=lifespan)
    app.state.batcher = batcher
    app.state.engine = engine
    app.state.counters = counters
    return app


def _imports():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs Starlette and uvicorn: install nmt's `serve` extra "
                          "(pip install 'nmt[serve]')") from None
    return uvicorn


@dataclass
class Stopped:
    """How `run` ended."""

    signal: str | None  # "SIGTERM", or None when the server stopped by itself
    in_flight: int  # translate requests in flight when the signal came (all were finished)
    answered: int  # translate requests answered in all


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), or a one-line ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(config: ServeConfig, *, explicit_host: bool = False) -> Stopped:
    """Load the model once and serve until SIGTERM (then finish the requests in flight, at
    most `shutdown_timeout_s`) or SIGINT. A host other than loopback is refused unless
    `explicit_host` (the user typed --host)."""
    if not is_loopback(config.host) and not explicit_host:
        raise ConfigError(f"refusing to listen on {config.host} without an explicit --host")
    uvicorn = _imports()
    sock = listen(config.host, config.port)
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    if not is_loopback(config.host):
        log.warning("listening on %s: anyone who can reach this port can use the model%s",
                    config.host, "" if config.api_keys else " (no API keys)")
    port = sock.getsockname()[1]
    counters: Counters = app.state.counters
    stopped = Stopped(None, 0, 0)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if stopped.signal is None:
                stopped.signal = signal.Signals(sig).name
                stopped.in_flight = counters.in_flight
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                   timeout_graceful_shutdown=config.shutdown_timeout_s))
    pair = config.languages or app.state.engine.languages
    log.info("serving %s%s on http://%s:%d/", app.state.engine.name,
             f" ({'-'.join(pair)})" if pair else "", config.host, port)
    # uvicorn re-raises the signal it stopped on once it has shut down; SIGTERM then lands
    # here, so the process exits 0 (SIGINT stays a KeyboardInterrupt: exit 130)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if main:
            signal.signal(signal.SIGTERM, previous)
    stopped.answered = counters.answered
    return stopped
