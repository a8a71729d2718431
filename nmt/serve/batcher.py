"""Dynamic batching: concurrent requests are translated together.

A request's lines wait in a queue bounded by `max_queued_lines` (a request that does not fit
is refused with `Overloaded`, so memory does not grow under overload). One worker task takes
the oldest request, keeps collecting for at most `max_wait_s` or until `max_batch_lines`, then
translates the collected lines with one model call per distinct `Options`, in a single worker
thread (the event loop keeps answering meanwhile), and hands each request its results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nmt.errors import NmtError
from nmt.serve.engine import Options, Output

log = logging.getLogger(__name__)


class Overloaded(NmtError):
    """The queue is full: the client should retry later (HTTP 503)."""


@dataclass
class _Request:
    lines: list[str]
    options: Options
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    requests: int = 0  # requests answered
    lines: int = 0  # lines translated
    model_calls: int = 0  # calls of the translate function (batches)
    rejected: int = 0  # requests refused because the queue was full


class Batcher:
    def __init__(self, translate: Callable[[list[str], Options], list[Output]], *,
                 max_wait_s: float = 0.005, max_batch_lines: int = 64,
                 max_queued_lines: int = 2048) -> None:
        self.translate = translate
        self.max_wait_s = max_wait_s
        self.max_batch_lines = max_batch_lines
        self.max_queued_lines = max_queued_lines
        self.stats = BatchStats()
        self.queued_lines = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmt-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._work(), name="nmt-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, lines: list[str], options: Options) -> list[Output]:
        """The translations of `lines`, once a batch holding them has been translated."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.queued_lines + len(lines) > self.max_queued_lines:
            self.stats.rejected += 1
            raise Overloaded(f"{self.queued_lines} lines are waiting; try again later")
        request = _Request(lines, options, asyncio.get_running_loop().create_future())
        self.queued_lines += len(lines)
        self._queue.put_nowait(request)
        return await request.future

    async def _collect(self) -> list[_Request]:
        first = await self._queue.get()
        batch, size = [first], len(first.lines)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < self.max_batch_lines:
            left = deadline - asyncio.get_running_loop().time()
            try:
                request = (self._queue.get_nowait() if left <= 0
                           else await asyncio.wait_for(self._queue.get(), left))
            except (TimeoutError, asyncio.QueueEmpty):
                break
            batch.append(request)
            size += len(request.lines)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Options, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.options, []).append(request)
            for options, requests in groups.items():
                lines = [line for r in requests for line in r.lines]
                try:
                    outputs = await loop.run_in_executor(self._executor, self.translate, lines,
                                                         options)
                except Exception as exc:  # answer the requests; keep serving
                    log.exception("a batch of %d lines failed", len(lines))
                    for r in requests:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    outputs = None
                finally:
                    self.queued_lines -= len(lines)
                self.stats.model_calls += 1
                if outputs is None:
                    continue
                start = 0
                for r in requests:
                    if not r.future.done():  # the client may have gone
                        r.future.set_result(outputs[start:start + len(r.lines)])
                    start += len(r.lines)
                    self.stats.requests += 1
                self.stats.lines += len(lines)
