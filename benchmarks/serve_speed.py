"""Throughput and latency of `nmt serve` at 1, 16 and 64 concurrent clients, with dynamic
batching and without (one sentence per model call), against `nmt translate` on the same lines.

    python benchmarks/serve_speed.py -c RUN/best [--lines 256] [--threads 1] [--beam 4]
        [--clients 1,16,64] [--api libre|nmt]

Translates the first --lines lines of Multi30k test_2016_flickr (from ../shared/data) with
`nmt translate` (in-process, `nmt.translate.run`), then starts `nmt serve` (uvicorn in a thread
of this process, on a free loopback port) twice: batched (the defaults) and one-at-a-time
(`max_batch_lines=1`, no wait), and sends the same lines, one sentence per request, from each
number of concurrent clients (each sends its next request when its answer came). Reports
sentences/s, the median and 99th-percentile request latency and the model calls, as a Markdown
table, and checks that every translation equals `nmt translate`'s. `--api libre` (default)
sends LibreTranslate requests (`q`, `source`, `target`), `--api nmt` nmt's own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmt import translate  # noqa: E402
from nmt.search import SearchConfig  # noqa: E402
from nmt.serve import app as serve_app  # noqa: E402
from nmt.serve.engine import Options  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def start(config: serve_app.ServeConfig) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(serve_app.create_app(config), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


async def load(url: str, lines: list[str], n: int, api: str, pair: tuple[str, str]):
    """Every line sent once from `n` concurrent clients: (seconds, outputs, latencies in ms)."""
    out: list[str | None] = [None] * len(lines)
    latencies: list[float] = []
    todo = iter(range(len(lines)))

    async def client(http: httpx.AsyncClient) -> None:
        for i in todo:
            body = ({"q": lines[i], "source": pair[0], "target": pair[1]} if api == "libre"
                    else {"text": [lines[i]]})
            sent = time.perf_counter()
            r = await http.post("/translate", json=body)
            latencies.append((time.perf_counter() - sent) * 1000)
            r.raise_for_status()
            answer = r.json()
            out[i] = answer["translatedText"] if api == "libre" else answer["translations"][0]

    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=n)) as http:
        await http.get("/health")
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(n)))
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

    modes = {"batched": {}, "one at a time": {"max_batch_lines": 1, "max_wait_ms": 0.0}}
    print("| server | clients | sentences/s | p50 ms | p99 ms | model calls | equal |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, limits in modes.items():
        sconfig = serve_app.ServeConfig(checkpoints=(args.checkpoint,), threads=args.threads,
                                        defaults=Options(beam=args.beam), languages=pair,
                                        max_queued_lines=max(2048, len(lines)), **limits)
        server, thread, url = start(sconfig)
        for n in counts:
            before = httpx.get(f"{url}/health").json()["model_calls"]
            seconds, out, latencies = asyncio.run(load(url, lines, n, args.api, pair))
            calls = httpx.get(f"{url}/health").json()["model_calls"] - before
            same = sum(a == b for a, b in zip(out, reference, strict=True))
            print(f"| {mode} | {n} | {len(lines) / seconds:.1f} | "
                  f"{percentile(latencies, 50):.0f} | {percentile(latencies, 99):.0f} | "
                  f"{calls} | {same}/{len(lines)} |", flush=True)
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
