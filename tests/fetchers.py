"""Both fetchers behind one call: the threaded Fetcher (resc test, resc explain) and the
watchers' AsyncFetcher, run on an event loop of its own and called from the test."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from resc.config.models import Fetch
from resc.core.metrics import FetchStats
from resc.engine.loop import LoopThread
from resc.fetch.aio import AsyncFetcher
from resc.fetch.client import Fetcher

KINDS = ["threads", "loop"]


class OnLoop:
    """An AsyncFetcher on its own event loop, called like a Fetcher."""

    def __init__(self, **options: Any) -> None:
        self._thread = LoopThread("test fetches")
        self._fetcher = AsyncFetcher(**options)

    def __call__(self, fetch: Fetch, variables: Mapping[str, bytes]) -> list[dict[str, bytes]]:
        return self._thread.submit(self._fetcher(fetch, variables)).result()

    def keep_only(self, fetches: Iterable[Fetch]) -> None:
        self._fetcher.keep_only(fetches)

    def stats(self) -> list[tuple[Fetch, FetchStats]]:
        return self._fetcher.stats()

    def close(self) -> None:
        self._thread.close(self._fetcher.close())


def fetcher_of(kind: str, **options: Any) -> Fetcher | OnLoop:
    return Fetcher(**options) if kind == "threads" else OnLoop(**options)
