"""How many threads reading and the feature build use: the one place that decides it.

numpy and pyarrow release the GIL, so independent steps (the columns of a Parquet file, weekly
demand beside the shared purchases) run on two cores as threads, sharing the same arrays (no
processes, no copies). Results do not depend on the number of threads: each step is the same
sequential code whichever thread runs it. ``$SHOPML_THREADS`` sets the number (1: no threads).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Environment variable that sets the default number of threads.
ENV = "SHOPML_THREADS"
ALLOWED = (
    "a whole number >= 1 (1: no extra threads), or unset for the default (the machine's cores, "
    "at most 2 for reading and features, at most 8 for model fitting)"
)


class ThreadsSettingError(ValueError):
    """An unusable number of threads (``$SHOPML_THREADS`` or an argument)."""


def feature_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``$SHOPML_THREADS``, else min(2, the machine's cores).

    Raises :class:`ThreadsSettingError` naming the setting and the values it accepts.
    """
    if threads is None:
        raw = os.environ.get(ENV, "").strip()
        if not raw:
            return min(2, os.cpu_count() or 1)
        try:
            threads = int(raw)
        except ValueError:
            raise ThreadsSettingError(
                f"{ENV}={raw!r} is not a number of threads; use {ALLOWED}"
            ) from None
        if threads < 1:
            raise ThreadsSettingError(f"{ENV}={raw!r} is not a number of threads; use {ALLOWED}")
    if threads < 1:
        raise ThreadsSettingError(f"threads must be >= 1, got {threads}")
    return threads


class Inline(Executor):
    """An executor that runs each task at once in the calling thread (one thread: no pool)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # re-raised by .result(), as a pool would
            future.set_exception(exc)
        return future


@contextmanager
def helpers(threads: int | None = None) -> Iterator[Executor]:
    """An executor for work beside the calling thread: ``threads - 1`` more threads.

    With one thread the tasks run inline, in the order they are submitted.
    """
    n = feature_threads(threads)
    if n == 1:
        yield Inline()
        return
    with ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="shopml") as pool:
        yield pool


def parallel_map(fn: Callable[[T], R], values: Iterable[T], threads: int | None = None) -> list[R]:
    """``[fn(v) for v in values]`` on ``threads`` threads, results in the order of ``values``."""
    values = list(values)
    n = min(feature_threads(threads), len(values))
    if n <= 1:
        return [fn(v) for v in values]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="shopml") as pool:
        return list(pool.map(fn, values))
