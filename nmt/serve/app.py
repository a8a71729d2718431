"""The HTTP application of `nmt serve` (Starlette on uvicorn, the `serve` extra).

- `POST /translate` `{"text": ["...", ...], "beam": 4, "lenpen": 0.6, "attention": false}` ->
  `{"translations": [...], "model": ..., "elapsed_ms": ...}`, plus `"attention"` (one
  `{source_tokens, target_tokens, weights}` per line: the last layer's head-averaged
  cross-attention) when asked for.
- `GET /health` -> status, model, device and the batching counters.
- `GET /` -> the web page.

A bad request (not JSON, wrong shape or types, too many or too long lines, an unknown field)
gets a 4xx answer with `{"error": ...}`; a full queue gets 503.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nmt.errors import ConfigError
from nmt.serve.batcher import Batcher, Overloaded
from nmt.serve.engine import Engine, Options

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


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
    max_lines: int = 64  # lines per request
    max_chars: int = 2000  # characters per line
    max_beam: int = 16
    max_body_bytes: int = 1 << 20
    defaults: Options = field(default_factory=Options)

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ConfigError("no checkpoint given")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if min(self.max_lines, self.max_chars, self.max_batch_lines, self.max_queued_lines,
               self.max_beam) < 1 or self.max_wait_ms < 0:
            raise ConfigError("serving limits must be positive")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_FIELDS = {"text", "beam", "lenpen", "alpha", "lenpen_style", "max_len_a", "max_len_b",
           "attention"}


def parse_request(body: bytes, config: ServeConfig) -> tuple[list[str], Options]:
    """The lines and options of a /translate body, or `BadRequest`."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "the body must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(_FIELDS))}")
    if "text" not in data:
        raise BadRequest(400, 'missing "text": a list of sentences')
    text = data["text"]
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
        raise BadRequest(422, '"text" must be a list of strings')
    if not text:
        raise BadRequest(422, '"text" is empty')
    if len(text) > config.max_lines:
        raise BadRequest(413, f"{len(text)} lines; at most {config.max_lines} per request")
    for n, t in enumerate(text):
        if len(t) > config.max_chars:
            raise BadRequest(413, f"line {n + 1} has {len(t)} characters; at most "
                                  f"{config.max_chars}")
    d = config.defaults

    def number(key: str, default, kind, low, high):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind) or (
                isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise BadRequest(422, f'"{key}" must be {what} in [{low}, {high}]')
        return value

    beam = number("beam", d.beam, int, 1, config.max_beam)
    alpha = number("lenpen", d.alpha, int | float, 0.0, 10.0)
    if "alpha" in data:
        alpha = number("alpha", d.alpha, int | float, 0.0, 10.0)
    style = data.get("lenpen_style", d.lenpen_style)
    if style not in ("gnmt", "fairseq"):
        raise BadRequest(422, '"lenpen_style" must be "gnmt" or "fairseq"')
    max_len_a = number("max_len_a", d.max_len_a, int | float, 0.0, 10.0)
    max_len_b = number("max_len_b", d.max_len_b, int, 0, 1000)
    if max_len_a == 0 and max_len_b == 0:
        raise BadRequest(422, "the maximum output length (a * source + b) must be positive")
    attention = data.get("attention", d.attention)
    if not isinstance(attention, bool):
        raise BadRequest(422, '"attention" must be true or false')
    # line breaks inside a line would not survive: they are spaces, as in `nmt translate`
    text = [t.translate({10: 32, 13: 32}) for t in text]
    return text, Options(beam=beam, alpha=float(alpha), lenpen_style=style,
                         max_len_a=float(max_len_a), max_len_b=max_len_b, attention=attention)


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
    html = page()

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    async def translate(request: Request) -> JSONResponse:
        started = time.perf_counter()
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > config.max_body_bytes):
            return error(413, f"the body is over {config.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return error(413, f"the body is over {config.max_body_bytes} bytes")
        try:
            lines, options = parse_request(body, config)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        try:
            outputs = await batcher.submit(lines, options)
        except Overloaded as exc:
            return error(503, str(exc), **{"Retry-After": "1"})
        answer = {"translations": [o.translation for o in outputs], "model": engine.name,
                  "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)}
        if options.attention:
            answer["attention"] = [o.attention for o in outputs]
        return JSONResponse(answer)

    async def health(request: Request) -> JSONResponse:
        s = batcher.stats
        return JSONResponse({"status": "ok", "model": engine.name, "device": engine.description,
                             "requests": s.requests, "lines": s.lines,
                             "model_calls": s.model_calls, "rejected": s.rejected,
                             "queued_lines": batcher.queued_lines})

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
                            Route("/health", health, methods=["GET"]),
                            Route("/", index, methods=["GET"])],
                    exception_handlers={HTTPException: http_error, 500: server_error},
                    lifespan=lifespan)
    app.state.batcher = batcher
    app.state.engine = engine
    return app


def _imports():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs Starlette and uvicorn: install nmt's `serve` extra "
                          "(pip install 'nmt[serve]')") from None
    return uvicorn


def run(config: ServeConfig, *, explicit_host: bool = False) -> None:
    """Load the model once and serve until interrupted. A host other than loopback is refused
    unless `explicit_host` (the user typed --host)."""
    if not is_loopback(config.host) and not explicit_host:
        raise ConfigError(f"refusing to listen on {config.host} without an explicit --host")
    uvicorn = _imports()
    app = create_app(config)
    if not is_loopback(config.host):
        log.warning("listening on %s: anyone who can reach this port can use the model "
                    "(no authentication)", config.host)
    log.info("serving %s on http://%s:%d/", app.state.engine.name, config.host, config.port)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                access_log=False)
