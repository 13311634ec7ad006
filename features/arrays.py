"""Small numpy helpers the feature pipelines share."""

from __future__ import annotations

from typing import overload

import numpy as np


@overload
def unique(x: np.ndarray) -> np.ndarray: ...


@overload
def unique(x: np.ndarray, *, return_counts: bool) -> tuple[np.ndarray, np.ndarray]: ...


def unique(
    x: np.ndarray, *, return_counts: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a numeric array (optionally with their counts).

    Same result as ``np.unique``, by sorting: numpy 2.4's hash-based ``np.unique`` took 7 s on
    6M int64 values here, sorting 0.4 s.
    """
    s = np.sort(np.asarray(x).ravel())
    if len(s) == 0:
        return (s, np.zeros(0, dtype=np.int64)) if return_counts else s
    first = np.r_[True, s[1:] != s[:-1]]
    values = s[first]
    if not return_counts:
        return values
    starts = np.flatnonzero(first)
    return values, np.diff(np.r_[starts, len(s)])
