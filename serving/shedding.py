"""Load shedding: a cap on the API requests in progress per worker, 429 with Retry-After beyond.

A request is *in progress* from the moment the app has read it until it is answered. The
handlers of :mod:`serving.service` are ``async def`` and CPU-bound: each runs to completion
without yielding, so on its own no two requests would ever be in progress at once and a cap
could never trigger (the queue formed unseen in the sockets: p99 95 s, no 429, in the last
overload run before this module). Hence the one ``await asyncio.sleep(0)`` after counting a
request: every request the event loop read in the same turn is counted before the first of them
is computed, and those beyond ``limit`` are answered at once with ``429``
(``{"error": ..., "field": null}`` and ``Retry-After``). An admitted request therefore waits at
most about ``limit`` handler runs. Only ``/v1/...`` routes count; ``/readyz``, ``/healthz``,
``/metrics`` and the docs are never shed.

BentoML's own ``traffic.max_concurrency`` counts the same way but without the yield (so it never
fired here) and answers a bare ``{"error": "Too many requests"}`` without ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from serving.auth import App, Receive, Scope, Send, send_json

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 64
RETRY_AFTER_S = 1


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` ``/v1/`` requests in progress (0: no limit)."""

    def __init__(self, app: App, *, limit: int, retry_after_s: int = RETRY_AFTER_S) -> None:
        if limit < 0:
            raise ValueError(f"SHOPML_MAX_CONCURRENCY must be >= 0 (0: no limit), got {limit}")
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_progress = 0
        self.shed = 0
        self._last_log = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.limit
            or not str(scope.get("path", "")).startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            await self._refuse(send)
            return
        self.in_progress += 1
        try:
            await asyncio.sleep(0)  # let the requests read in this loop turn count themselves
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _refuse(self, send: Send) -> None:
        self.shed += 1
        now = time.monotonic()
        if now - self._last_log >= 10:  # one line per 10 s at most, however many are shed
            self._last_log = now
            log.warning(
                "overloaded: %d requests in progress (limit %d); %d answered 429 so far",
                self.in_progress,
                self.limit,
                self.shed,
            )
        message = (
            f"server busy: {self.in_progress} requests in progress, the limit of this worker "
            f"(SHOPML_MAX_CONCURRENCY); retry after {self.retry_after_s} s"
        )
        await send_json(
            send,
            429,
            {"error": message, "field": None},
            headers=[(b"retry-after", str(self.retry_after_s).encode())],
        )
