"""The fitted recommender runtime: arrays in, ranked items with a reason and a strategy out.

:class:`RecommenderArtifact` is self-contained: id maps, each user's purchase history (CSR),
item repeat-purchase rates and typical repurchase intervals, popularity (recent, overall, per
country, filterable by category), ALS factors, item-item neighbours and, when validation chose
it, a LightGBM re-ranker (native text model). Training (``training/recommender.py``) builds
and saves it; serving loads it with :meth:`RecommenderArtifact.load` and never fits anything.

Strategies (``params["strategy_all"]`` for ``exclude="auto"|"never"``, ``params["strategy_new"]``
for ``exclude="always"``) are chosen on a validation window at fit time:

- ``ranker``: candidates from the user's history, ALS, item-kNN and recent popularity, scored by
  the re-ranker on :data:`FEATURES` (among them the similarity of the candidate's name to the
  user's past items' names, ``txt_*``, from ``txt_idx``/``txt_sim``), plus (when fitted with
  it) each item's gift-season log demand ratio ``item_season`` on the log-odds scale;
- ``fusion`` (all items only): the ``ranker``'s list rank-fused with ``buy-again``'s,
  ``(1 - a) / (c + rank by the ranker) + a / (c + rank by buy-again)`` (``params``
  ``fusion_weight`` = a, ``fusion_k`` = c; ranks 0-based over every item, before any filter,
  capped at :data:`FUSION_DEPTH`), so filters apply to one fused order as for the others;
- ``buy-again``: own items by ``n_orders * (1 + item repeat rate) + w * recent popularity``;
- ``als`` / ``knn``: collaborative scores; ``popular``: recent popularity.

Unknown users get popularity (overall or recent, mixed with their country's when given).

Serving speed: :meth:`RecommenderArtifact.precompute` (called at fit time) stores every known
user's ranked list twice (``exclude="never"`` with the all-items strategy, ``exclude="always"``
with the new-items strategy; ``auto`` filters the first), with scores, the answering strategy
and the item behind a "bought together" reason, as ragged arrays in the npz.
:meth:`RecommenderArtifact.recommend` then only filters and slices that list; it ranks live
only when filters leave fewer than ``k`` items of a truncated list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from shopml.artifacts.meta import read_meta, write_meta

log = logging.getLogger(__name__)

KIND = "recommender"
ARRAYS_FILE = "arrays.npz"
RANKER_FILE = "ranker.txt"
MAX_K = 100
EXCLUDE_POLICIES = ("auto", "always", "never")
STRATEGIES = ("ranker", "fusion", "buy-again", "als", "knn", "popular")
#: ranks beyond this count as this in the ``fusion`` strategy (an item that deep in both lists
#: scores below every item ranked above it in either list, so the top of the fused list is kept)
FUSION_DEPTH = 256
NOT_BOUGHT_DAYS = 999.0
PRECOMPUTE_WIDTH = 120
#: dense (users x items) cells per chunk of users ranked at once: bounds memory on big catalogues
CHUNK_CELLS = 1 << 21
#: strategy codes of precomputed entries (``pre_kind``)
KIND_STRATEGY = ("popular", "personalized", "buy-again")

FEATURES = (
    "n",
    "share",
    "days_last",
    "days_first",
    "u_days_last",
    "u_orders",
    "u_items",
    "rate",
    "buyers",
    "interval",
    "last_over_interval",
    "pop30",
    "pop90",
    "popall",
    "trend",
    "als",
    "als_rel",
    "knn",
    "knn_rel",
    "u_repeat",
    "n30",
    "n90",
    "u_rate",
    "expected",
    "tenure",
    "u_items90",
    "decay",
    "since_user_last",
    "ba_rank",
    "item_age",
    "country_share",
    "cat_share",
    "pop14",
    "knn_recent",
    "bknn",
    "bknn_recent",
    "txt",
    "txt_recent",
    "txt_mean",
)

DEFAULT_PARAMS: dict[str, Any] = {
    "strategy_all": "buy-again",
    "strategy_new": "als",
    "ba_pop_weight": 0.3,
    "cold_window": "all",
    "cold_country_weight": 0.0,
    "n_als": 50,
    "n_knn": 50,
    "n_pop": 30,
    "fusion_weight": 0.2,
    "fusion_k": 10,
}


class RankerEnsemble:
    """Re-rankers fitted on the same rows with different seeds (so their bagging and feature
    subsampling differ), scored as one: the mean of their raw scores (log-odds for the binary
    objective), which :meth:`predict` maps through the sigmoid like a single binary booster.
    Averaging lowers the variance of the scores: the ranking depends less on one seed's
    subsample and on tiny differences of the features (e.g. ALS factors across machines)."""

    def __init__(self, boosters: Sequence[Any]) -> None:
        if not boosters:
            raise ValueError("a ranker ensemble needs at least one booster")
        self.boosters = list(boosters)
        objectives = {str(b.params.get("objective", "")).split()[0] for b in self.boosters}
        self.binary = objectives == {"binary"}

    def predict(self, X: np.ndarray, num_threads: int = 1, raw_score: bool = False) -> np.ndarray:
        """Mean raw score of the boosters (its sigmoid for the binary objective unless
        ``raw_score``; a ranking objective's score is raw either way)."""
        raw = np.mean(
            [b.predict(X, num_threads=num_threads, raw_score=True) for b in self.boosters], axis=0
        )
        if raw_score or not self.binary:
            return np.asarray(raw)
        return np.asarray(1.0 / (1.0 + np.exp(-raw)))


def ranker_boosters(ranker: Any) -> list[Any]:
    """The LightGBM boosters of a re-ranker (one booster or a :class:`RankerEnsemble`)."""
    if ranker is None:
        return []
    return list(ranker.boosters) if isinstance(ranker, RankerEnsemble) else [ranker]


def ranker_file(b: int) -> str:
    """File of the ``b``-th booster of a saved re-ranker (``ranker.txt`` for the first)."""
    return RANKER_FILE if b == 0 else f"ranker-{b}.txt"


class Recommendation(NamedTuple):
    """One recommended item: id, score (higher is better), a plain reason, the strategy."""

    item_id: str
    score: float
    reason: str
    strategy: str  # "personalized" | "buy-again" | "popular"


def check_k(k: int) -> int:
    """Validate ``k`` (1..100)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def check_exclude(exclude: str) -> str:
    """Validate an exclusion policy."""
    if exclude not in EXCLUDE_POLICIES:
        raise ValueError(
            f"unknown exclude policy {exclude!r}; use one of {', '.join(EXCLUDE_POLICIES)}"
        )
    return exclude


def row_chunk(n_items: int, cap: int = 512) -> int:
    """Users per chunk of dense (users x ``n_items``) work: ``cap``, fewer on big catalogues."""
    return int(max(1, min(cap, CHUNK_CELLS // max(n_items, 1))))


def _str_array(values: Iterable[Any]) -> np.ndarray:
    arr = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return arr if arr.size else np.array([], dtype="<U1")


@dataclass(eq=False)
class RecommenderArtifact:
    """Arrays and parameters of a fitted recommender (see the module docstring).

    History arrays are a CSR over (user row, item column): ``hist_n`` = orders containing the
    item, ``hist_last``/``hist_first`` = days from the last/first such order to ``as_of``,
    ``hist_n30``/``hist_n90`` = orders in the last 30/90 days. ``nn_*``: item neighbours over
    customers (cosine), ``bnn_*``: over orders (items bought in the same basket). ``pre_users``:
    the rows whose lists :meth:`precompute` stored (the others are ranked live).
    """

    as_of: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_names: np.ndarray
    item_categories: np.ndarray
    countries: np.ndarray
    user_country: np.ndarray
    hist_indptr: np.ndarray
    hist_indices: np.ndarray
    hist_n: np.ndarray
    hist_last: np.ndarray
    hist_first: np.ndarray
    hist_n30: np.ndarray
    hist_n90: np.ndarray
    u_orders: np.ndarray
    u_days_last: np.ndarray
    u_tenure: np.ndarray
    item_buyers: np.ndarray
    item_repeaters: np.ndarray
    item_interval: np.ndarray
    pop30: np.ndarray
    pop90: np.ndarray
    popall: np.ndarray
    country_pop: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    nn_idx: np.ndarray
    nn_sim: np.ndarray
    hist_decay: np.ndarray
    item_age: np.ndarray
    params: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    ranker: Any = None  # lightgbm.Booster, RankerEnsemble (seed-averaged boosters) or None
    pre_indptr: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pre_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    pre_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    pre_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    pre_via: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    pre_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pop14: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    bnn_idx: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    bnn_sim: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    #: per item, the expected log ratio of its demand over the recommendation window to its
    #: recent level (the demand model's gift-season prior, ``training/seasonality.py``), added
    #: to the re-ranker's log-odds; empty (or all 0): no adjustment
    item_season: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    #: item neighbours by the similarity of their names (``training.recommender_components.
    #: name_neighbours``); empty: the ``txt`` features are 0
    txt_idx: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    txt_sim: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def __post_init__(self) -> None:
        self.params = {**DEFAULT_PARAMS, **self.params}
        if not len(self.pre_users) and len(self.pre_indptr) == 2 * self.n_users + 1:
            self.pre_users = np.arange(self.n_users, dtype=np.int64)  # lists of every user
        self._set_pre_slots()
        self._user_index = {u: i for i, u in enumerate(self.user_ids.tolist())}
        self._item_index = {t: j for j, t in enumerate(self.item_ids.tolist())}
        cats = self.item_categories
        self._categories = {c: np.flatnonzero(cats == c) for c in np.unique(cats) if c}
        self._country_index = {c: j for j, c in enumerate(self.countries.tolist())}
        lengths = np.diff(self.hist_indptr)
        rows = np.repeat(np.arange(len(self.user_ids)), lengths)
        self.u_items = lengths.astype(np.float32)
        self.u_items90 = np.bincount(
            rows, weights=(self.hist_n90 > 0), minlength=len(self.user_ids)
        ).astype(np.float32)
        repeat = np.bincount(rows, weights=(self.hist_n >= 2), minlength=len(self.user_ids))
        self.u_repeat = (repeat / np.maximum(lengths, 1)).astype(np.float32)
        self.item_rate = (self.item_repeaters / (self.item_buyers + 2.0)).astype(np.float32)
        # rank of each past item in its user's buy-again order (0 = first)
        ba = self.hist_n * (1 + self.item_rate[self.hist_indices]) - 1e-3 * self.hist_last
        self._hist_rank = _rank_within(rows, ba)
        self._pop90_order = np.argsort(-self.pop90, kind="stable")
        self._nn_matrix: sp.csr_matrix | None = None
        self._bnn_matrix: sp.csr_matrix | None = None
        self._pair_matrix: sp.csr_matrix | None = None
        self._nn_sentinel: np.ndarray | None = None
        names = sorted(self._categories)
        self._category_code = {c: i for i, c in enumerate(names)}
        code = np.full(self.n_items, -1, dtype=np.int32)
        for c, cols in self._categories.items():
            code[cols] = self._category_code[c]
        self._item_category_code = code
        self._rebought = self.item_repeaters > 0
        self._item_factors64 = np.ascontiguousarray(self.item_factors, dtype=np.float64)

    # ------------------------------------------------------------------ basics
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def knows_user(self, user_id: str) -> bool:
        """True when the user has purchase history in the artifact."""
        return str(user_id) in self._user_index

    def categories(self) -> list[str]:
        """Known item categories (for the category filter)."""
        return sorted(self._categories)

    # ------------------------------------------------------------------ public API
    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        category: str | None = None,
        exclude: str = "auto",
        exclude_items: Sequence[str] = (),
        country: str | None = None,
    ) -> list[Recommendation]:
        """Top-``k`` items for one user, each with a score, a reason and the strategy.

        ``exclude``: ``auto`` hides the user's past items unless they are re-bought items (some
        customer bought them in two or more orders); ``always`` hides every past item (only new
        items); ``never`` hides nothing. ``exclude_items`` are always hidden (e.g. the basket).
        ``category`` keeps only items of that category (ValueError if unknown). Unknown users
        get popular items (mixed with ``country``'s favourites when the fit chose to).
        """
        k = check_k(k)
        exclude = check_exclude(exclude)
        cat_items = self._category_items(category)
        row = self._user_index.get(str(user_id))
        if row is None:
            return self._cold(k, cat_items, exclude_items, country)
        fast = self._from_precomputed(row, k, exclude, category, exclude_items)
        if fast is not None:
            return fast
        return self.recommend_live(
            user_id, k, category=category, exclude=exclude, exclude_items=exclude_items
        )

    def recommend_live(
        self,
        user_id: str,
        k: int = 10,
        *,
        category: str | None = None,
        exclude: str = "auto",
        exclude_items: Sequence[str] = (),
    ) -> list[Recommendation]:
        """:meth:`recommend` for a known user, ranked live (no precomputed list); KeyError if
        the user is unknown. Reference for the precomputed path and its fallback."""
        k = check_k(k)
        exclude = check_exclude(exclude)
        cat_items = self._category_items(category)
        row = self._user_index.get(str(user_id))
        if row is None:
            raise KeyError(f"unknown user {user_id!r}")
        rows = np.array([row])
        allowed = self._allowed(rows, exclude, cat_items, exclude_items)
        top, scores, parts = self._rank(rows, k, exclude, allowed)
        items, vals = top[0], scores[0]
        keep = items >= 0
        return self._explain(row, items[keep], vals[keep], parts)

    def recommend_batch(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        category: str | None = None,
        exclude: str = "auto",
        countries: Sequence[str | None] | None = None,
        chunk: int | None = None,
    ) -> list[list[str]]:
        """Top-``k`` item ids for many users at once (vectorised; for evaluation and batch jobs).

        Same policies as :meth:`recommend`; ``countries`` (one per user, optional) is used for
        unknown users only.
        """
        k = check_k(k)
        exclude = check_exclude(exclude)
        cat_items = self._category_items(category)
        ids = [str(u) for u in user_ids]
        rows = np.array([self._user_index.get(u, -1) for u in ids], dtype=np.int64)
        out: list[list[str]] = [[] for _ in ids]
        known = np.flatnonzero(rows >= 0)
        chunk = chunk or row_chunk(self.n_items)
        if self.has_precomputed:
            live = []
            for q in known.tolist():
                fast = self._from_precomputed(int(rows[q]), k, exclude, category, ())
                if fast is None:
                    live.append(q)
                else:
                    out[q] = [r.item_id for r in fast]
            known = np.array(live, dtype=np.int64)
        for start in range(0, len(known), chunk):
            pos = known[start : start + chunk]
            allowed = self._allowed(rows[pos], exclude, cat_items, ())
            top, _, _ = self._rank(rows[pos], k, exclude, allowed)
            for p, t in zip(pos, top, strict=True):
                out[p] = self.item_ids[t[t >= 0]].tolist()
        cold_cache: dict[str | None, list[str]] = {}
        for p in np.flatnonzero(rows < 0):
            c = countries[int(p)] if countries is not None else None
            if c not in cold_cache:
                cold_cache[c] = [r.item_id for r in self._cold(k, cat_items, (), c)]
            out[p] = cold_cache[c]
        return out

    def similar_items(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """Items most often bought by the same customers (cosine); KeyError for an unknown item."""
        k = check_k(k)
        j = self._item_index.get(str(item_id))
        if j is None:
            raise KeyError(f"unknown item {item_id!r}")
        idx, sim = self.nn_idx[j], self.nn_sim[j]
        keep = (idx >= 0) & (sim > 0)
        return [
            (str(self.item_ids[i]), float(s))
            for i, s in zip(idx[keep][:k], sim[keep][:k], strict=True)
        ]

    # ------------------------------------------------------------------ precomputed lists
    @property
    def has_precomputed(self) -> bool:
        """True when :meth:`precompute` ran (or its lists were loaded), for some users at least."""
        n = len(self.pre_users)
        return n > 0 and len(self.pre_indptr) == 2 * n + 1

    def _set_pre_slots(self) -> None:
        """Map user rows to their precomputed list slot (-1: ranked live)."""
        self._pre_slot = np.full(self.n_users, -1, dtype=np.int64)
        self._pre_slot[self.pre_users] = np.arange(len(self.pre_users))

    def _category_counts(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), categories + 1) float32: each user's distinct past items per category
        (the last column counts items without a category)."""
        starts, ends = self.hist_indptr[rows], self.hist_indptr[rows + 1]
        local = np.repeat(np.arange(len(rows)), ends - starts)
        code = self._item_category_code[self.hist_indices[_ranges(starts, ends)]]
        n_cat = len(self._category_code) + 1
        code = np.where(code >= 0, code, n_cat - 1)
        counts = np.bincount(local * n_cat + code, minlength=len(rows) * n_cat)
        return counts.reshape(len(rows), n_cat).astype(np.float32)

    def precompute_users(self, max_users: int | None = None) -> np.ndarray:
        """Rows whose lists :meth:`precompute` stores: every user, or the ``max_users`` most
        recently active ones (fewest days since their last order; ties to the lower row)."""
        if max_users is None or max_users >= self.n_users:
            return np.arange(self.n_users, dtype=np.int64)
        if max_users < 0:
            raise ValueError(f"max_users must be >= 0, got {max_users}")
        recent = np.lexsort((np.arange(self.n_users), self.u_days_last))[:max_users]
        return np.sort(recent).astype(np.int64)

    def precompute(
        self,
        width: int = PRECOMPUTE_WIDTH,
        chunk: int | None = None,
        threads: int = 1,
        max_users: int | None = None,
    ) -> None:
        """Rank users once (top ``width``) for both list kinds; see the module doc.

        ``max_users`` keeps lists for the most recently active users only (the others are
        ranked live on request). Chunks of users run on ``threads`` threads (numpy and LightGBM
        release the GIL).
        """
        width = max(1, min(int(width), self.n_items))
        users = self.precompute_users(max_users)
        chunk = chunk or row_chunk(self.n_items)
        self._neighbour_pair()  # built once, before threads share them
        blocks = [users[s : s + chunk] for s in range(0, len(users), chunk)]
        if threads > 1 and len(blocks) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                done = list(pool.map(lambda rows: self._precompute_chunk(rows, width), blocks))
        else:
            done = [self._precompute_chunk(rows, width, threads) for rows in blocks]
        self.pre_users = users
        self._set_pre_slots()
        if not done:
            self.pre_indptr = np.zeros(0, dtype=np.int64)
            return
        # per list kind (never, always): lengths, items, scores, kinds, reason items
        out = [[[part[mode][j] for part in done] for j in range(5)] for mode in range(2)]
        lengths = np.concatenate(out[0][0] + out[1][0]).astype(np.int64)
        self.pre_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def cat(j: int, dt: type) -> np.ndarray:
            parts = out[0][j] + out[1][j]
            return np.concatenate(parts).astype(dt) if parts else np.zeros(0, dtype=dt)

        self.pre_items = cat(1, np.int32)
        self.pre_scores = cat(2, np.float64)
        self.pre_kind = cat(3, np.int8)
        self.pre_via = cat(4, np.int32)
        self.params["precomputed_width"] = width

    def _precompute_chunk(
        self, rows: np.ndarray, width: int, threads: int = 1
    ) -> list[list[np.ndarray]]:
        """Both precomputed lists of the user ``rows`` (see :meth:`precompute`)."""
        local = np.arange(len(rows))[:, None]
        parts = self._parts(rows)
        bought = parts["bought"]
        dense: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        per_mode = []
        targets = np.zeros(bought.shape, dtype=bool)
        strategies = [self._strategy(exclude) for exclude in ("never", "always")]
        if "fusion" in strategies:  # the ranker's scores, computed once for both lists
            s = self._dense_scores(rows, "ranker", parts, None, threads)
            dense["ranker"] = (s, self._personal(parts, "ranker"))
        for exclude, strategy in zip(("never", "always"), strategies, strict=True):
            if strategy not in dense:
                if strategy == "fusion":
                    s = self._fusion_scores(rows, parts, threads, dense["ranker"][0])
                else:
                    s = self._dense_scores(rows, strategy, parts, None, threads)
                dense[strategy] = (s, self._personal(parts, strategy))
            s, personal = dense[strategy]
            if exclude == "always":
                s = np.where(bought, -np.inf, s)
            top, vals = topk(s, width)
            valid = top >= 0  # a prefix of each row
            tc = np.maximum(top, 0)
            kind = np.where(bought[local, tc], 2, np.where(personal[local, tc], 1, 0))
            kind = kind.astype(np.int8)
            targets[local, tc] |= valid & (kind == 1)
            per_mode.append((top, vals, kind, valid, tc))
        via = self._via_chunk(rows, targets)
        result = []
        for top, vals, kind, valid, tc in per_mode:
            reason = np.where(kind == 1, via[local, tc], -1)
            result.append([valid.sum(axis=1), top[valid], vals[valid], kind[valid], reason[valid]])
        return result

    def _personal(self, parts: dict[str, Any], strategy: str) -> np.ndarray:
        """Boolean (rows, n_items): items in the user's ALS or kNN top (for the reason)."""
        if strategy in ("ranker", "fusion", "als", "knn"):
            return self._collab(parts)
        return np.zeros(parts["bought"].shape, dtype=bool)

    def _via_chunk(self, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(len(rows), n_items) int32: for each target item, the user's past item closest to it
        (highest neighbour similarity, ties to the lower column); -1 where none is a neighbour."""
        starts, ends = self.hist_indptr[rows], self.hist_indptr[rows + 1]
        local = np.repeat(np.arange(len(rows)), ends - starts)
        hist = self.hist_indices[_ranges(starts, ends)]
        _, sentinel = self._neighbour_arrays()
        width = self.n_items + 1
        flat = np.zeros((len(rows), width), dtype=bool)
        flat[:, :-1] = targets
        nb = sentinel[hist]
        hit = flat.ravel()[nb + (local * width)[:, None]]
        r, c = np.nonzero(hit)
        u, t, s = local[r], nb[r, c], self.nn_sim[hist[r], c]
        # per (user, target): the highest similarity, then the lowest past item among those
        best = np.full(targets.shape, -np.inf, dtype=np.float32)
        np.maximum.at(best, (u, t), s)
        top = s == best[u, t]
        pick = np.full(targets.shape, len(hist), dtype=np.int64)
        np.minimum.at(pick, (u[top], t[top]), r[top])
        via = np.full(targets.shape, -1, dtype=np.int32)
        found = pick < len(hist)
        via[found] = hist[pick[found]]
        return via

    def _from_precomputed(
        self,
        row: int,
        k: int,
        exclude: str,
        category: str | None,
        exclude_items: Sequence[str],
    ) -> list[Recommendation] | None:
        """Top-``k`` from the user's precomputed list, or None when it cannot answer exactly."""
        if not self.has_precomputed or self._pre_slot[row] < 0:
            return None
        p = int(self._pre_slot[row]) + (len(self.pre_users) if exclude == "always" else 0)
        s, e = int(self.pre_indptr[p]), int(self.pre_indptr[p + 1])
        items = self.pre_items[s:e]
        kind = self.pre_kind[s:e]
        keep = None
        if exclude == "auto":
            keep = (kind != 2) | self._rebought[items]
        if category is not None:
            code = self._category_code[category]
            in_cat = self._item_category_code[items] == code
            keep = in_cat if keep is None else keep & in_cat
        if exclude_items:
            bad = [self._item_index[t] for t in map(str, exclude_items) if t in self._item_index]
            if bad:
                ok = ~np.isin(items, bad)
                keep = ok if keep is None else keep & ok
        pos = np.arange(len(items)) if keep is None else np.flatnonzero(keep)
        if len(pos) < k and e - s >= int(self.params.get("precomputed_width", 0)):
            return None  # a truncated list ran out: rank live
        pos = pos[:k]
        hs, he = int(self.hist_indptr[row]), int(self.hist_indptr[row + 1])
        hist = self.hist_indices[hs:he]
        out = []
        for j, v, c, via in zip(
            items[pos].tolist(),
            self.pre_scores[s:e][pos].tolist(),
            kind[pos].tolist(),
            self.pre_via[s:e][pos].tolist(),
            strict=True,
        ):
            if c == 2:
                h = hs + int(np.searchsorted(hist, j))
                times = self.hist_n[h]
                if times >= 2:
                    days = (self.hist_first[h] - self.hist_last[h]) / (times - 1)
                    reason = f"you buy this every ~{max(round(days), 1)} days"
                else:
                    reason = "you bought this before"
            elif c == 1:
                if via >= 0:
                    name = str(self.item_names[via] or self.item_ids[via]).strip()
                    reason = f"bought together with {name}"
                else:
                    reason = "customers with baskets like yours bought this"
            else:
                reason = self._popular_reason(j)
            out.append(Recommendation(str(self.item_ids[j]), v, reason, KIND_STRATEGY[c]))
        return out

    # ------------------------------------------------------------------ scoring internals
    def _category_items(self, category: str | None) -> np.ndarray | None:
        if category is None:
            return None
        if category not in self._categories:
            raise ValueError(f"unknown category {category!r}")
        return self._categories[category]

    def _hist_dense(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Dense (len(rows), n_items) history arrays for some users."""
        starts, ends = self.hist_indptr[rows], self.hist_indptr[rows + 1]
        lengths = ends - starts
        local = np.repeat(np.arange(len(rows)), lengths)
        pos = _ranges(starts, ends)
        cols = self.hist_indices[pos]
        out = {}
        for name, values, fill in (
            ("n", self.hist_n, 0.0),
            ("last", self.hist_last, NOT_BOUGHT_DAYS),
            ("first", self.hist_first, NOT_BOUGHT_DAYS),
            ("n30", self.hist_n30, 0.0),
            ("n90", self.hist_n90, 0.0),
            ("decay", self.hist_decay, 0.0),
            ("rank", self._hist_rank, NOT_BOUGHT_DAYS),
        ):
            dense = np.full((len(rows), self.n_items), fill, dtype=np.float32)
            dense[local, cols] = values[pos]
            out[name] = dense
        return out

    def _knn_scores(self, rows: np.ndarray, bought: np.ndarray) -> np.ndarray:
        """Sum of neighbour similarities from each user's past items (binary history)."""
        if len(rows) == 1:
            hist = np.flatnonzero(bought[0])
            idx, sim = self.nn_idx[hist].ravel(), self.nn_sim[hist].ravel()
            ok = idx >= 0
            return np.bincount(idx[ok], weights=sim[ok], minlength=self.n_items)[None].astype(
                np.float32
            )
        # float64 sums rounded to float32: the same values as the one-user path above
        matrix, _ = self._neighbour_arrays()
        dense = (sp.csr_matrix(bought.astype(np.float64)) @ matrix).todense()
        return np.asarray(dense, dtype=np.float32)

    def _basket_matrix(self) -> sp.csr_matrix:
        """Item-item similarity of items bought in the same order, as a sparse matrix (all
        zeros when the artifact has no basket neighbours)."""
        if self._bnn_matrix is None:
            self._bnn_matrix = self._similarity_matrix(self.bnn_idx, self.bnn_sim)
        return self._bnn_matrix

    def _similarity_matrix(self, idx: np.ndarray, sim: np.ndarray) -> sp.csr_matrix:
        """Neighbour lists (-1: none) as a sparse item-item matrix (all zeros when empty)."""
        n = self.n_items
        if idx.shape[0] != n:
            return sp.csr_matrix((n, n), dtype=np.float64)
        ok = idx.ravel() >= 0
        r = np.repeat(np.arange(n), idx.shape[1])[ok]
        return sp.csr_matrix(
            (sim.ravel()[ok].astype(np.float64), (r, idx.ravel()[ok])), shape=(n, n)
        )

    def _neighbour_arrays(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """Item-item similarity as a sparse matrix, and the neighbour lists as int32 with
        -1 replaced by ``n_items`` (built on first use)."""
        if self._nn_matrix is None or self._nn_sentinel is None:
            n, kk = self.nn_idx.shape
            ok = self.nn_idx.ravel() >= 0
            r = np.repeat(np.arange(n), kk)[ok]
            self._nn_matrix = sp.csr_matrix(
                (self.nn_sim.ravel()[ok].astype(np.float64), (r, self.nn_idx.ravel()[ok])),
                shape=(n, n),
            )
            nn = self.nn_idx
            self._nn_sentinel = np.where(nn < 0, self.n_items, nn).astype(np.int32)
        return self._nn_matrix, self._nn_sentinel

    def _allowed(
        self,
        rows: np.ndarray,
        exclude: str,
        cat_items: np.ndarray | None,
        exclude_items: Sequence[str],
    ) -> np.ndarray:
        """Boolean (len(rows), n_items): items that may be recommended."""
        allowed = np.ones((len(rows), self.n_items), dtype=bool)
        if cat_items is not None:
            allowed[:] = False
            allowed[:, cat_items] = True
        if exclude != "never":
            starts, ends = self.hist_indptr[rows], self.hist_indptr[rows + 1]
            for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
                cols = self.hist_indices[s:e]
                if exclude == "auto":
                    cols = cols[self.item_repeaters[cols] <= 0]
                allowed[i, cols] = False
        bad = [self._item_index[t] for t in map(str, exclude_items) if t in self._item_index]
        if bad:
            allowed[:, bad] = False
        return allowed

    def features(
        self, rows: np.ndarray, cand_r: np.ndarray, cand_c: np.ndarray, parts: dict[str, Any]
    ) -> np.ndarray:
        """Feature matrix (:data:`FEATURES` order) for candidates (local row, item column)."""
        h = {k: v[cand_r, cand_c] for k, v in parts["hist"].items()}
        uu = rows[cand_r]
        n = h["n"]
        bought = n > 0
        u_orders = self.u_orders[uu]
        tenure = self.u_tenure[uu]
        share = n / np.maximum(u_orders, 1)
        u_rate = u_orders / np.maximum(tenure, 30)
        interval = self.item_interval[cand_c]
        als, knn = parts["als"][cand_r, cand_c], parts["knn"][cand_r, cand_c]
        als_max = np.maximum(parts["als"].max(axis=1), 1e-6)[cand_r]
        knn_max = np.maximum(parts["knn"].max(axis=1), 1e-6)[cand_r]
        cols = {
            "n": n,
            "share": share,
            "days_last": h["last"],
            "days_first": h["first"],
            "u_days_last": self.u_days_last[uu],
            "u_orders": u_orders,
            "u_items": self.u_items[uu],
            "rate": self.item_rate[cand_c],
            "buyers": self.item_buyers[cand_c],
            "interval": interval,
            "last_over_interval": np.where(bought, h["last"] / np.maximum(interval, 1), 99.0),
            "pop30": self.pop30[cand_c],
            "pop90": self.pop90[cand_c],
            "popall": self.popall[cand_c],
            "trend": (self.pop30[cand_c] + 1) / (self.pop90[cand_c] / 3 + 1),
            "als": als,
            "als_rel": als / als_max,
            "knn": knn,
            "knn_rel": knn / knn_max,
            "u_repeat": self.u_repeat[uu],
            "n30": h["n30"],
            "n90": h["n90"],
            "u_rate": u_rate,
            "expected": share * u_rate * 90,
            "tenure": tenure,
            "u_items90": self.u_items90[uu],
            "decay": h["decay"],
            "since_user_last": np.where(bought, h["last"] - self.u_days_last[uu], NOT_BOUGHT_DAYS),
            "ba_rank": h["rank"],
            "item_age": self.item_age[cand_c],
            "country_share": self._country_share(uu, cand_c),
            "cat_share": self._cat_share(uu, cand_r, cand_c, parts),
            "pop14": self.pop14[cand_c] if len(self.pop14) else np.zeros(len(cand_c)),
            "knn_recent": parts["knn_recent"][cand_r, cand_c],
            "bknn": parts["bknn"][cand_r, cand_c],
            "bknn_recent": parts["bknn_recent"][cand_r, cand_c],
            "txt": parts["txt"][cand_r, cand_c],
            "txt_recent": parts["txt_recent"][cand_r, cand_c],
            "txt_mean": parts["txt"][cand_r, cand_c] / np.maximum(self.u_items[uu], 1),
        }
        return np.column_stack([cols[f] for f in FEATURES]).astype(np.float64)

    def _cat_share(
        self, users: np.ndarray, cand_r: np.ndarray, cand_c: np.ndarray, parts: dict[str, Any]
    ) -> np.ndarray:
        """Share of the user's past items in the candidate's category (-1 without category)."""
        code = self._item_category_code[cand_c]
        counts = parts["categories"][cand_r, np.maximum(code, 0)]
        share = counts / np.maximum(self.u_items[users], 1)
        return np.where(code >= 0, share, -1.0).astype(np.float32)

    def _country_share(self, users: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Share of the item's buyers from the user's country (-1 when the country is unknown)."""
        c = self.user_country[users] if len(self.countries) else np.full(len(users), -1)
        out = np.full(len(users), -1.0, dtype=np.float32)
        ok = c >= 0
        if ok.any():
            out[ok] = self.country_pop[c[ok], cols[ok]] / np.maximum(self.item_buyers[cols[ok]], 1)
        return out

    def _parts(self, rows: np.ndarray) -> dict[str, Any]:
        hist = self._hist_dense(rows)
        bought = hist["n"] > 0
        # float64 product rounded to float32: one user and a batch get the same scores
        uf = self.user_factors[rows].astype(np.float64)
        als = (uf @ self._item_factors64.T).astype(np.float32)
        # binary and recency-decayed histories x (user kNN | basket kNN | names) in one product
        n, m = len(rows), self.n_items
        both = sp.vstack([self._hist_sparse(rows, None), self._hist_sparse(rows, self.hist_decay)])
        prod = np.asarray((both.tocsr() @ self._neighbour_pair()).todense(), dtype=np.float32)
        # one user: the exact bincount path (batches sum in the same order as it)
        knn = self._knn_scores(rows, bought) if n == 1 else prod[:n, :m]
        return {
            "hist": hist,
            "bought": bought,
            "als": als,
            "knn": knn,
            "knn_recent": prod[n:, :m],
            "bknn": prod[:n, m : 2 * m],
            "bknn_recent": prod[n:, m : 2 * m],
            "txt": prod[:n, 2 * m :],
            "txt_recent": prod[n:, 2 * m :],
            "categories": self._category_counts(rows),
        }

    def _hist_sparse(self, rows: np.ndarray, values: np.ndarray | None) -> sp.csr_matrix:
        """(len(rows), n_items) float64 CSR of some users' history ``values`` (1 if None)."""
        starts, ends = self.hist_indptr[rows], self.hist_indptr[rows + 1]
        pos = _ranges(starts, ends)
        data = np.ones(len(pos)) if values is None else values[pos].astype(np.float64)
        indptr = np.r_[0, np.cumsum(ends - starts)].astype(np.int64)
        return sp.csr_matrix(
            (data, self.hist_indices[pos], indptr), shape=(len(rows), self.n_items)
        )

    def _neighbour_pair(self) -> sp.csr_matrix:
        """``[user kNN | basket kNN | name similarity]`` item-item similarities side by side
        (built once)."""
        if self._pair_matrix is None:
            matrix, _ = self._neighbour_arrays()
            names = self._similarity_matrix(self.txt_idx, self.txt_sim)
            self._pair_matrix = sp.hstack([matrix, self._basket_matrix(), names]).tocsr()
        return self._pair_matrix

    def candidates(
        self, rows: np.ndarray, parts: dict[str, Any], allowed: np.ndarray | None = None
    ) -> np.ndarray:
        """Boolean (len(rows), n_items): the re-ranker's candidates (history + ALS + kNN + popular)."""
        mask = self._collab(parts, allowed) | parts["bought"]
        mask[:, self._pop90_order[: int(self.params["n_pop"])]] = True
        return mask

    def _collab(self, parts: dict[str, Any], allowed: np.ndarray | None = None) -> np.ndarray:
        """Boolean (rows, n_items): each user's top unbought (allowed) ALS and kNN items."""
        if allowed is None and "collab" in parts:
            return np.asarray(parts["collab"])
        bought = parts["bought"]
        mask = np.zeros(bought.shape, dtype=bool)
        for name in ("als", "knn"):
            s = np.where(bought, -np.inf, parts[name])
            if allowed is not None:
                s = np.where(allowed, s, -np.inf)
            n = min(int(self.params[f"n_{name}"]), self.n_items - 1)
            if n > 0:
                top = np.argpartition(-s, n, axis=1)[:, :n]
                np.put_along_axis(mask, top, True, axis=1)
        if allowed is None:
            parts["collab"] = mask
        return mask

    def scores(self, rows: np.ndarray, strategy: str, parts: dict[str, Any]) -> np.ndarray:
        """Dense (len(rows), n_items) scores of a non-ranker strategy (higher is better)."""
        pop = self.pop90 / max(float(self.pop90.max()), 1.0)
        if strategy == "buy-again":
            h = parts["hist"]
            return (
                h["n"] * (1 + self.item_rate)[None]
                + self.params["ba_pop_weight"] * pop[None]
                - 1e-5 * np.minimum(h["last"], NOT_BOUGHT_DAYS)
            )
        if strategy == "als":
            return np.asarray(parts["als"], dtype=np.float64)
        if strategy == "knn":
            return np.asarray(parts["knn"], dtype=np.float64) + 1e-6 * pop[None]
        if strategy == "popular":
            return np.tile(pop, (len(rows), 1))
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")

    def _rank(
        self,
        rows: np.ndarray,
        k: int,
        exclude: str,
        allowed: np.ndarray,
        *,
        strategy: str | None = None,
        parts: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Top-k item columns (-1 padded) and scores for known users (rows of the artifact)."""
        strategy = self._strategy(exclude, strategy)
        if parts is None:
            parts = self._parts(rows)
        parts = dict(parts)
        s = self._dense_scores(rows, strategy, parts, allowed)
        top, vals = topk(np.where(allowed, s, -np.inf), k)
        parts["strategy"] = strategy
        return top, vals, parts

    def _strategy(self, exclude: str, strategy: str | None = None) -> str:
        """The strategy answering ``exclude`` (the ranker's fallback when there is none)."""
        if strategy is None:
            strategy = self.params["strategy_new" if exclude == "always" else "strategy_all"]
        if strategy in ("ranker", "fusion") and self.ranker is None:
            strategy = "buy-again" if exclude != "always" else "als"
        return str(strategy)

    def _dense_scores(
        self,
        rows: np.ndarray,
        strategy: str,
        parts: dict[str, Any],
        allowed: np.ndarray | None,
        threads: int = 1,
    ) -> np.ndarray:
        """Dense (len(rows), n_items) scores before the ``allowed`` mask.

        For the ranker, candidates outside ``allowed`` are not scored; ALS/kNN candidates are
        picked among unbought allowed items, so "never" and "always" share one score matrix.
        """
        if strategy == "fusion":
            return self._fusion_scores(rows, parts, threads)
        if strategy != "ranker":
            return self.scores(rows, strategy, parts)
        cand = self.candidates(rows, parts, allowed)
        if allowed is not None:
            cand &= allowed
        r, c = np.nonzero(cand)
        s = np.full((len(rows), self.n_items), -np.inf)
        if len(r):
            feats = self.features(rows, r, c, parts)
            s[r, c] = self._ranker_scores(feats, c, threads)
        # pad with popular items below every ranked candidate
        pop = self.pop90 / max(float(self.pop90.max()), 1.0)
        return np.where(np.isfinite(s), s, pop[None] - 1e6)

    def _fusion_scores(
        self,
        rows: np.ndarray,
        parts: dict[str, Any],
        threads: int = 1,
        ranker: np.ndarray | None = None,
    ) -> np.ndarray:
        """Dense scores of the ``fusion`` strategy (module docstring): reciprocal ranks of the
        ranker's scores over every item (``ranker``: those scores when already computed) and of
        buy-again's, weighted ``1 - fusion_weight`` and ``fusion_weight``. Filters are applied
        afterwards, so a precomputed list filtered later and a live ranking agree."""
        if ranker is None:
            ranker = self._dense_scores(rows, "ranker", parts, None, threads)
        again = self.scores(rows, "buy-again", parts)
        a, c = float(self.params["fusion_weight"]), float(self.params["fusion_k"])
        return (1 - a) / (c + _capped_ranks(ranker, FUSION_DEPTH)) + a / (
            c + _capped_ranks(again, FUSION_DEPTH)
        )

    def _ranker_scores(self, feats: np.ndarray, cols: np.ndarray, threads: int = 1) -> np.ndarray:
        """The re-ranker's P(buy) of candidate items ``cols``, with :attr:`item_season` added on
        the log-odds scale: when an item's demand is expected to change by a factor ``m`` and
        P(buy) is small, its odds change by about ``m`` (for a ranking objective the raw score is
        shifted and mapped through the same monotone sigmoid)."""
        season = self.item_season
        if len(season) != self.n_items or not season[cols].any():
            return np.asarray(self.ranker.predict(feats, num_threads=threads))
        raw = self.ranker.predict(feats, num_threads=threads, raw_score=True)
        return np.asarray(1.0 / (1.0 + np.exp(-(raw + season[cols]))))

    def _cold_scores(self, country: str | None) -> np.ndarray:
        base = self.popall if self.params["cold_window"] == "all" else self.pop90
        score = base / max(float(base.max()), 1.0)
        w = float(self.params["cold_country_weight"])
        j = self._country_index.get(country) if country is not None else None
        if w > 0 and j is not None:
            cp = self.country_pop[j]
            score = score + w * cp / max(float(cp.max()), 1.0)
        return np.asarray(score, dtype=np.float64)

    def _cold(
        self,
        k: int,
        cat_items: np.ndarray | None,
        exclude_items: Sequence[str],
        country: str | None,
    ) -> list[Recommendation]:
        s = self._cold_scores(country)
        mask = np.ones(self.n_items, dtype=bool)
        if cat_items is not None:
            mask[:] = False
            mask[cat_items] = True
        bad = [self._item_index[t] for t in map(str, exclude_items) if t in self._item_index]
        mask[bad] = False
        top, vals = topk(np.where(mask, s, -np.inf)[None], k)
        return [
            Recommendation(str(self.item_ids[j]), float(v), self._popular_reason(j), "popular")
            for j, v in zip(top[0], vals[0], strict=True)
            if j >= 0
        ]

    def _popular_reason(self, j: int) -> str:
        cat = self.item_categories[j]
        return f"popular in {cat.lower()}" if cat else "popular right now"

    def _explain(
        self, row: int, items: np.ndarray, vals: np.ndarray, parts: dict[str, Any]
    ) -> list[Recommendation]:
        h = parts["hist"]
        bought = parts["bought"][0]
        hist_items = np.flatnonzero(bought)
        personal = self._personal(parts, parts["strategy"])[0]
        out = []
        for j, v in zip(items.tolist(), vals.tolist(), strict=True):
            if bought[j]:
                times = float(h["n"][0, j])
                if times >= 2:
                    days = (h["first"][0, j] - h["last"][0, j]) / (times - 1)
                    reason = f"you buy this every ~{max(round(days), 1)} days"
                else:
                    reason = "you bought this before"
                out.append(Recommendation(str(self.item_ids[j]), v, reason, "buy-again"))
            elif personal[j]:
                reason = "customers with baskets like yours bought this"
                if len(hist_items):
                    nb = self.nn_idx[hist_items]
                    hit = nb == j
                    if hit.any():
                        sims = np.where(hit, self.nn_sim[hist_items], 0).max(axis=1)
                        best = hist_items[int(np.argmax(sims))]
                        name = str(self.item_names[best] or self.item_ids[best]).strip()
                        reason = f"bought together with {name}"
                out.append(Recommendation(str(self.item_ids[j]), v, reason, "personalized"))
            else:
                out.append(
                    Recommendation(str(self.item_ids[j]), v, self._popular_reason(j), "popular")
                )
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path | str) -> None:
        """Write ``arrays.npz`` (no pickle), ``meta.json`` and ``ranker.txt`` (if any; an
        ensemble's further boosters in ``ranker-1.txt``, ``ranker-2.txt``, ...)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("as_of", "params", "ranker")
        }
        np.savez(folder / ARRAYS_FILE, **arrays)  # type: ignore[arg-type]
        boosters = ranker_boosters(self.ranker)
        for b, booster in enumerate(boosters):
            (folder / ranker_file(b)).write_text(booster.model_to_string())
        write_meta(
            folder,
            KIND,
            as_of=self.as_of,
            params=self.params,
            features=list(FEATURES),
            n_users=self.n_users,
            n_items=self.n_items,
            ranker=self.ranker is not None,
            ranker_models=len(boosters),
        )

    @classmethod
    def load(cls, folder: Path | str) -> RecommenderArtifact:
        """Read a folder written by :meth:`save` (no training code, no pickle)."""
        folder = Path(folder)
        meta = read_meta(folder)
        if meta.get("kind") != KIND:
            raise ValueError(f"{folder}: not a recommender artifact (kind={meta.get('kind')!r})")
        if list(meta.get("features", FEATURES)) != list(FEATURES):
            raise ValueError(f"{folder}: saved with other ranker features; retrain the model")
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        ranker = None
        if meta.get("ranker"):
            import lightgbm as lgb

            n = int(meta.get("ranker_models", 1))
            loaded = [lgb.Booster(model_file=str(folder / ranker_file(b))) for b in range(n)]
            ranker = loaded[0] if n == 1 else RankerEnsemble(loaded)
        return cls(as_of=str(meta["as_of"]), params=dict(meta["params"]), ranker=ranker, **arrays)


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k columns and values, ties broken by the lower column; -1 where -inf."""
    n_rows, n = scores.shape
    k_eff = min(k, n)
    out_idx = -np.ones((n_rows, k), dtype=np.int64)
    out_val = np.full((n_rows, k), -np.inf)
    if n_rows == 0 or k_eff == 0:
        return out_idx, out_val
    if k_eff < n:
        kth = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1]
        r, c = np.nonzero(scores >= kth[:, None])
    else:
        r, c = np.nonzero(np.ones(scores.shape, dtype=bool))
    v = scores[r, c]
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    rank = np.arange(len(r)) - np.searchsorted(r, np.arange(n_rows))[r]
    sel = rank < k_eff
    r, c, v, rank = r[sel], c[sel], v[sel], rank[sel]
    out_idx[r, rank] = np.where(np.isfinite(v), c, -1)
    out_val[r, rank] = v
    return out_idx, out_val


def _capped_ranks(scores: np.ndarray, depth: int) -> np.ndarray:
    """Per row, the 0-based rank of each column by score (highest first, ties to the lower
    column, as :func:`topk`), or ``depth`` beyond the first ``depth``."""
    top, _ = topk(scores, depth)
    ranks = np.full(scores.shape, float(depth))
    r, pos = np.nonzero(top >= 0)
    ranks[r, top[r, pos]] = pos
    return ranks


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair (int64, vectorised)."""
    lengths = (ends - starts).astype(np.int64)
    if not len(lengths) or not lengths.sum():
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts.astype(np.int64) - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + offsets


def _rank_within(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """0-based rank of each value (highest first) among the entries of its group."""
    if not len(values):
        return np.zeros(0, dtype=np.float32)
    order = np.lexsort((-values, groups))
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.empty(len(values), dtype=np.float32)
    rank[order] = np.arange(len(values)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return rank
