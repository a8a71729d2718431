"""What stands between a client and the model: the body (size, time to arrive, JSON or form),
API keys and the per-client rate limit. Each failure is a `BadRequest` with its HTTP status."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from nmt.errors import ConfigError


class BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


async def read_body(request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refused (413) past `max_bytes` and (408) when it has not arrived within
    `timeout_s`: a client trickling its body holds only its own request."""
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > max_bytes):
        raise BadRequest(413, f"the body is over {max_bytes} bytes")
    body = bytearray()

    async def receive() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_bytes:
                raise BadRequest(413, f"the body is over {max_bytes} bytes")

    try:
        await asyncio.wait_for(receive(), timeout_s)
    except TimeoutError:
        raise BadRequest(408, f"the body did not arrive within {timeout_s:g} s") from None
    return bytes(body)


def decode_body(body: bytes, content_type: str | None) -> tuple[dict, bool]:
    """The fields of a JSON object or an `application/x-www-form-urlencoded` body, and whether
    it was a form. In a form a repeated `q` is a list, as a JSON list would be."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(400, "the form is not UTF-8") from None
        return {k: v if k == "q" and len(v) > 1 else v[-1] for k, v in fields.items()}, True
    if media.startswith("multipart/"):
        raise BadRequest(400, "multipart bodies are not read; send JSON or "
                              "application/x-www-form-urlencoded")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "the body is not JSON") from None
    except RecursionError:  # "[[[[..." nested deeper than the parser goes
        raise BadRequest(400, "the body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "the body must be a JSON object")
    return data, False


def load_api_keys(path: Path) -> tuple[str, ...]:
    """The keys in `path`: one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API keys in {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    keys = tuple(k for k in (line.strip() for line in lines) if k and not k.startswith("#"))
    if not keys:
        raise ConfigError(f"{path} holds no API key (one a line)")
    return keys


def check_key(key: object, keys: tuple[str, ...]) -> None:
    """403 unless `key` is one of `keys` (always passes when no keys are configured)."""
    if not keys:
        return
    if key is None or key == "":
        raise BadRequest(403, "this server needs an API key: send it as \"api_key\"")
    given = str(key).encode()
    # compare with every key, in constant time each, so timing tells nothing
    if not sum(hmac.compare_digest(given, k.encode()) for k in keys):
        raise BadRequest(403, "invalid API key")


class RateLimiter:
    """At most `per_minute` requests per client address, as a token bucket: a client may burst
    up to `per_minute` at once, then gets one more every 60 / `per_minute` seconds."""

    MAX_CLIENTS = 10_000  # buckets kept; full buckets are forgotten beyond this

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str) -> float:
        """0.0 when `client` may go now (its request is counted); else the seconds until it
        may."""
        now = self.clock()
        tokens, then = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
            self._forget_full(now)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        for client, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.rate >= self.capacity:
                del self._buckets[client]
        if len(self._buckets) >= self.MAX_CLIENTS:  # every bucket busy: the oldest go
            for client in list(self._buckets)[:len(self._buckets) // 2]:
                del self._buckets[client]

    def check(self, client: str) -> None:
        """429, with Retry-After, when `client` is over the limit."""
        wait = self.take(client)
        if wait > 0:
            raise BadRequest(429, f"over the limit of {self.capacity:g} requests per minute; "
                                  f"retry in {wait:.1f} s",
                             headers={"Retry-After": str(max(1, round(wait + 0.5)))})
