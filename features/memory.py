"""Keep the process's resident memory close to what the feature build actually holds.

Two allocators serve a feature build: Arrow's pool (mimalloc) for the Parquet read and glibc's
malloc for NumPy and pandas. Both keep freed memory for reuse, so the resident size (RSS) runs
well above the live arrays: Arrow keeps its read buffers, and glibc keeps arrays of up to 32 MB
in heaps that fragment (freed holes the next, differently sized array does not fit), one heap
per thread. On the 5.9M-line bench shop that waste was 0.1-0.25 GB, as much as a third of the
orders table.

- :func:`release_unused_memory` hands memory both allocators hold but do not use back to the
  operating system (after the read and validation, which free far more than they keep).
- :func:`map_large_arrays` makes glibc give every allocation of ``MMAP_THRESHOLD`` bytes or more
  its own mapping, returned to the system when freed, instead of carving it out of a heap. It is
  process-wide and idempotent; it costs fresh (zeroed) pages for each large array, about 0.7 s
  of CPU over a 5.9M-line build, and saves ~0.05-0.07 GB of its peak RSS.

Both do nothing where glibc is not the C library (macOS, musl). :func:`peak_rss_gb` reads the
process's peak resident memory (the benchmarks' and the training log's measure).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import resource
import sys
from pathlib import Path

import pyarrow as pa

log = logging.getLogger(__name__)

#: Allocations at least this large get their own memory mapping (see :func:`map_large_arrays`).
MMAP_THRESHOLD = 1 << 20
M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, if this process runs on it (None otherwise)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not all(hasattr(libc, f) for f in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


def release_unused_memory() -> None:
    """Return memory Arrow's pool and glibc's heaps hold without using it to the system."""
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def map_large_arrays() -> bool:
    """Serve allocations of :data:`MMAP_THRESHOLD` bytes or more from their own mappings.

    glibc only; returns whether the setting was applied. It is applied once per process (later
    calls return the first answer).
    """
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("glibc mmap threshold %s bytes: %s", MMAP_THRESHOLD, applied)
    return applied


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB.

    Linux keeps ``ru_maxrss`` across ``execve``: a child started by ``subprocess`` reports at
    least its parent's peak (a benchmark that generated its data in the parent measured 1.24 GB
    instead of 0.92). ``VmHWM`` in ``/proc/self/status`` is this program's own peak; other
    systems fall back to ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 1e9 if sys.platform == "darwin" else maxrss * 1024 / 1e9
