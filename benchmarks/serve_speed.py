"""Throughput and latency of `nmt serve` at 1, 16 and 64 concurrent clients, with dynamic
batching and without (one sentence per model call), against `nmt translate` on the same lines.

    python benchmarks/serve_speed.py -c RUN/best [--lines 256] [--threads 1] [--beam 4]
        [--clients 1,16,64] [--api libre|nmt] [--max-wait-ms 5,20]

Translates the first --lines lines of Multi30k test_2016_flickr (from ../shared/data) with
`nmt translate` (in-process, `nmt.translate.run`), then starts the real `nmt serve` (its own
process, a free loopback port) once per server setting: batched (each --max-wait-ms window)
and one at a time (`--max-batch-lines 1 --max-wait-ms 0`), and sends the same lines, one
sentence per request, from each number of concurrent clients (asyncio in this process, one
keep-alive connection each; a client sends its next request when its answer came). Reports
sentences/s, the median and 99th-percentile request latency and the model calls as a Markdown
table, checks that every translation equals `nmt translate`'s, and stops each server with
SIGTERM (it must exit 0).
`--api libre` (default) sends LibreTranslate requests (`q`, `source`, `target`), `--api nmt`
nmt's own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmt import translate  # noqa: E402
from nmt.search import SearchConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def start(args, *options: str) -> tuple[subprocess.Popen, int]:
    """`nmt serve` with `options` in its own process, once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "nmt", "serve", "-c", str(args.checkpoint),
                             "--port", str(port), "--threads", str(args.threads), "--beam",
                             str(args.beam), "--languages", args.languages,
                             "--max-queued-lines", str(max(2048, args.lines)), *options],
                            env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(f"{url}/health").raise_for_status()
            return proc, port
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"nmt serve did not start: {proc.stderr.read()}")
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        sys.exit(f"nmt serve exited {proc.returncode}: {err}")


class Connection:
    """One keep-alive HTTP/1.1 connection POSTing JSON, on asyncio streams: a client that costs
    far less than the server (httpx's pool, at 64 concurrent connections, answered only about
    50 requests/s here even from a server that did not translate at all)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(payload).encode()
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (path.encode(), len(body), body))
        head = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(int(h.split(b":")[1]) for h in head
                      if h.lower().startswith(b"content-length:"))
        return int(head[0].split()[1]), json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(port: int, lines: list[str], n: int, api: str, pair: tuple[str, str]):
    """Every line sent once from `n` concurrent clients: (seconds, outputs, latencies in ms)."""
    out: list[str | None] = [None] * len(lines)
    latencies: list[float] = []
    todo = iter(range(len(lines)))

    async def client() -> None:
        connection = Connection(port)
        try:
            for i in todo:
                body = ({"q": lines[i], "source": pair[0], "target": pair[1]} if api == "libre"
                        else {"text": [lines[i]]})
                sent = time.perf_counter()
                status, answer = await connection.post("/translate", body)
                latencies.append((time.perf_counter() - sent) * 1000)
                if status != 200:
                    raise SystemExit(f"HTTP {status}: {answer}")
                out[i] = answer["translatedText"] if api == "libre" else answer["translations"][0]
        finally:
            connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(n)))
    return time.perf_counter() - began, out, latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--api", choices=("libre", "nmt"), default="libre")
    ap.add_argument("--languages", default="en-de")
    ap.add_argument("--max-wait-ms", default="5,20", help="batching windows to measure")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    pair = tuple(args.languages.split("-"))
    lines = (DATA / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:args.lines]

    config = translate.TranslateConfig(checkpoints=(args.checkpoint,), threads=args.threads,
                                       search=SearchConfig(beam=args.beam))
    sink = io.StringIO()
    stats = translate.run(config, stdin=io.BytesIO("".join(f"{t}\n" for t in lines).encode()),
                          stdout=sink)
    reference = sink.getvalue().splitlines()
    print(f"nmt translate: {len(lines)} lines in {stats.seconds:.2f} s = "
          f"{len(lines) / stats.seconds:.1f} sentences/s ({stats.device}, "
          f"{args.threads} thread(s), beam {args.beam})\n")

    modes = {f"batched, {ms} ms window": ("--max-wait-ms", ms)
             for ms in args.max_wait_ms.split(",")}
    modes["one at a time"] = ("--max-batch-lines", "1", "--max-wait-ms", "0")
    print("| server | clients | sentences/s | p50 ms | p99 ms | model calls | equal |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, options in modes.items():
        proc, port = start(args, *options)
        health = f"http://127.0.0.1:{port}/health"
        for n in counts:
            before = httpx.get(health).json()["model_calls"]
            seconds, out, latencies = asyncio.run(load(port, lines, n, args.api, pair))
            calls = httpx.get(health).json()["model_calls"] - before
            same = sum(a == b for a, b in zip(out, reference, strict=True))
            print(f"| {mode} | {n} | {len(lines) / seconds:.1f} | "
                  f"{percentile(latencies, 50):.0f} | {percentile(latencies, 99):.0f} | "
                  f"{calls} | {same}/{len(lines)} |", flush=True)
        stop(proc)

if __name__ == "__main__":
    main()
