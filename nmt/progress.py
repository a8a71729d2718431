"""How long-running stages report progress: `ProgressSink` (the CLI passes a Rich bar from
`nmt.display`) and `NoProgress`, which shows nothing, for library callers and tests."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Receives progress of a long stage, one stage at a time."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    """A `ProgressSink` that shows nothing."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def stop(self) -> None:
        pass
