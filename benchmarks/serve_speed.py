"""Throughput and latency of `nmt serve` against `nmt translate` on the same lines.

    python benchmarks/serve_speed.py -c RUN/best [--lines 200] [--threads 1] [--beam 4]

Translates the first --lines lines of Multi30k test_2016_flickr (from ../shared/data) with
`nmt translate` (in-process, `nmt.translate.run`), then starts `nmt serve` (uvicorn in a
thread of this process, on a free loopback port) and sends the same lines one per request:
from 1 client (sequential requests) and from 16 concurrent clients, and reports sentences/s;
then single-sentence latency (one request at a time, median and 90th percentile over 50
requests). Checks that the server's translations equal `nmt translate`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    lines = (DATA / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:args.lines]

    config = translate.TranslateConfig(checkpoints=(args.checkpoint,), threads=args.threads,
                                       search=SearchConfig(beam=args.beam))
    sink = io.StringIO()
    stats = translate.run(config, stdin=io.BytesIO("".join(f"{t}\n" for t in lines).encode()),
                          stdout=sink)
    reference = sink.getvalue().splitlines()
    print(f"nmt translate: {len(lines)} lines in {stats.seconds:.2f} s = "
          f"{len(lines) / stats.seconds:.1f} sentences/s ({stats.device}, "
          f"{args.threads} thread(s), beam {args.beam})")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sconfig = serve_app.ServeConfig(checkpoints=(args.checkpoint,), threads=args.threads,
                                    port=port, defaults=Options(beam=args.beam))
    server = uvicorn.Server(uvicorn.Config(serve_app.create_app(sconfig), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"

    async def clients(n: int) -> tuple[float, list[str]]:
        out: list[str | None] = [None] * len(lines)
        todo = iter(range(len(lines)))

        async def client(http: httpx.AsyncClient) -> None:
            for i in todo:
                r = await http.post("/translate", json={"text": [lines[i]]})
                r.raise_for_status()
                out[i] = r.json()["translations"][0]

        async with httpx.AsyncClient(base_url=url, timeout=600,
                                     limits=httpx.Limits(max_connections=n)) as http:
            await http.get("/health")
            start = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(n)))
            return time.perf_counter() - start, out

    for n in (1, args.clients):
        before = httpx.get(f"{url}/health").json()["model_calls"]
        seconds, out = asyncio.run(clients(n))
        calls = httpx.get(f"{url}/health").json()["model_calls"] - before
        same = sum(a == b for a, b in zip(out, reference, strict=True))
        print(f"nmt serve, {n:>2} client(s): {len(lines)} requests in {seconds:.2f} s = "
              f"{len(lines) / seconds:.1f} sentences/s, {calls} model calls, "
              f"{same}/{len(lines)} equal to nmt translate")

    latencies = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for line in lines[:50]:
            start = time.perf_counter()
            http.post("/translate", json={"text": [line]}).raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    print(f"single-sentence latency: median {statistics.median(latencies):.1f} ms, "
          f"p90 {latencies[int(0.9 * len(latencies)) - 1]:.1f} ms over {len(latencies)} "
          f"requests")
    server.should_exit = True
    thread.join(10)


if __name__ == "__main__":
    main()
