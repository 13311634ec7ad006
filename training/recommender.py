"""The recommender estimator: fits ALS, item-kNN, buy-again, popularity and a re-ranker.

``RecommenderModel.fit(orders, as_of)`` builds a :class:`RecommenderArtifact` (the runtime that
serving loads). Everything it learns comes from purchases strictly before ``as_of``:

1. Snapshots of the shop at cutoffs ``as_of - d`` for each ``(d, w)`` in ``ranker_cutoffs``
   (default 90 and 45 days back), each labelled by the items bought in ``[cutoff, cutoff + w)``
   (so every label lies before ``as_of``). Candidates (history + ALS + item-kNN + popular) and
   their features come from the artifact's own code, so training and serving cannot disagree.
   Purchases are encoded once as integer codes (:func:`encode_shop`); the snapshots, including
   the final one at ``as_of``, are independent and run on ``num_threads`` threads.
2. A random ``holdout`` share of users is kept out of the re-ranker's training; on them, at the
   first cutoff (validation window ``[as_of - 90 d, as_of)``), every strategy is scored by
   NDCG@10: popularity, buy-again (popularity weight chosen there), ALS, item-kNN, re-ranker.
   The best strategy is used for "all items" and for "new items only"; a strategy that does not
   beat popularity is never chosen. Cold-user popularity (window, country weight) is chosen on
   the users who first bought in the validation window.
3. The components are refitted on everything before ``as_of``; the validated re-ranker (trained
   without the held-out users, so what was validated is what ships) is attached to the artifact,
   and the ranked lists of the most recently active users are precomputed for serving (the
   others are ranked live on request).
4. Gift-season prior (``season_prior``, default on): each item's expected log ratio of its
   demand over the next 90 days (the validation window's length) to its recent level, from
   the demand model's ramp (:mod:`training.seasonality`: the remaining December log ratio,
   pooled over name words and category, times the calendar ramp 1 October -> 15 December or
   the season's measured pace; strength 1, no constant tuned), is added to the re-ranker's
   log-odds before ranking (``RecommenderArtifact.item_season``; the validation state gets the
   prior of its own cutoff). Why on by default, from first principles: the re-ranker learns
   P(buy) from label windows before ``as_of``, and its features (popularity over 14-90 days,
   user-item recency) describe the recent level only; every window it learns from is
   off-season (the Mar-Aug label windows of an autumn fit contain no gift season, and the
   oldest history is last Christmas, learned as "old = not re-bought"). When an item's demand
   is expected to change by a factor ``m`` and P(buy) is small, its odds change by about ``m``,
   so ``log m`` is the offset on the log-odds scale. The prior is 0 wherever the ramp has not
   started (an ``as_of`` before the autumn whose season index does not yet rise: the lists
   are then identical to ``season_prior=False``) and without a December in the history.
   Checked where it can fail, on one-year synthetic shops with a gift season (``shopml
   demo-data --customers 20000 --items 400 --start 2010-12-01 --end 2011-12-10``, seeds 1 and
   2) fitted at 2011-09-01 (``python -m training.benchmarks.recommend --season-check DIR ...``,
   3 random states): R-all NDCG@10 0.5970 -> 0.5986 and 0.6044 -> 0.6061 (paired +0.0016 /
   +0.0017, SE 0.0003 each; every seed improves), R-new 0.3358 -> 0.3398 and 0.3536 -> 0.3587.

5. Fusion with buy-again, checked out of time (``fusion_weight``, default 0.2): when the
   re-ranker answers "all items" and buy-again beats popularity, the re-ranker's list is
   rank-fused with buy-again's (artifact strategy ``fusion``: ``0.8 / (10 + rank by the
   re-ranker) + 0.2 / (10 + rank by buy-again)``) if a re-ranker fitted on the first cutoff's
   rows labelled only up to the second cutoff (``as_of - 45 d``) ranks better fused than alone
   on the users who buy in ``[as_of - 45 d, as_of)`` (:meth:`RecommenderModel._fusion_check`)
   and the fusion beats popularity on the validation window. The validation window itself
   cannot decide it: the re-ranker is labelled on that window (other users), which flatters
   it against any blend. Protocol R replays (3 seeds each; fusion chosen in all 9 fits),
   R-all NDCG@10 re-ranker alone -> shipped, paired: 2011-06-03 0.4355 -> 0.4367 (+0.0012,
   SE 0.0007), 2011-04-18 0.4026 -> 0.4040 (+0.0014, SE 0.0006), 2011-05-10 0.3985 -> 0.4009
   (+0.0024, SE 0.0006); R-new unchanged (new items stay the re-ranker's). On synthetic shops
   where the fusion loses (``shopml demo-data --seed 3``, as_of 2024-09-01: -0.0018, SE 0.0006;
   the gift-season shop, seed 1, 2011-09-01: -0.0014, SE 0.0002) the check kept the re-ranker
   in all 6 fits. The weight 0.2 and constant 10 were set on the 2011-06-03 and 2011-04-18
   replays (``experiments/results/online-retail-R-diagnostics.md``). Costs one more LightGBM
   fit and the re-ranker's scores of the check's users (about +2 s of ~11 s on a busy machine).

6. Averaged ALS (``als_fits``, default 2): every snapshot fits ALS twice (seeds
   ``random_state`` and ``random_state + 7919``) and stores the two factor sets side by side,
   each scaled by ``1 / sqrt(2)``, so user . item is the mean of the two fits' scores (the ALS
   candidates and features of the re-ranker come from it; the artifact is unchanged apart from
   128 factor columns instead of 64). Why: one ALS fit is one draw of a non-convex solve, and
   the whole fit is chaotic in it (a relative 1e-4 perturbation of the factors changes 68 % of
   the users' validation lists and moves R-all NDCG@10 by about +-0.0015 per fit, the size of
   the seed-to-seed spread); the mean of two fits is a lower-variance score. Protocol R replays
   (2011-06-03 / 04-18 / 05-10, 3 seeds, and 3 more replicates with perturbed factors: 36 fits
   against 36): R-all +0.0014 (fit-level SE 0.0004; per replay +0.0017 / +0.0005 / +0.0019),
   R-new +0.0014 (SE 0.0004; +0.0000 / +0.0019 / +0.0023); fit time +0.1 s (median 6.71 ->
   6.84 s, bench lock). Three fits did not do better (R-all +0.0000, SE 0.0007, 18 fits); see
   ``experiments/results/online-retail-R-diagnostics.md``.

7. Seed-averaged re-ranker (``ranker_bags``, default 2): the shipped re-ranker is a
   :class:`~shopml.artifacts.recommender.RankerEnsemble` of two LightGBM boosters fitted on the
   same rows with different seeds (their bagging and feature subsampling differ), scored by the
   mean of their log-odds; the first is the single re-ranker of before. The out-of-time check's
   re-ranker stays one booster (a yes/no decision). On top of the averaged ALS, same replays
   and seeds, paired per fit: R-all +0.0006 (SE 0.0004, 6 of 9 fits), R-new +0.0009 (SE
   0.0002, 8 of 9); both changes together against the model before them: R-all +0.0021 (SE
   0.0005), R-new +0.0017 (SE 0.0005), 8 of 9 fits each. Costs one more LightGBM fit and
   twice the re-ranker's scoring: fit median 6.81 -> 8.04 s (bench lock, alternating; the
   validation scores each user's re-ranker once since b745eb5).

8. Item-name similarity features (``txt``, ``txt_recent``, ``txt_mean``): each item's 50
   nearest items by the cosine of the tf-idf vectors of their names' words
   (:func:`~training.recommender_components.name_neighbours`, computed once per fit: names do
   not depend on the cutoff), summed over the user's past items (binary, recency-decayed, and
   per past item). Why: the collaborative features only know items bought together by the same
   users; a shop's catalogue comes in product lines and designs ("LUNCH BAG RED RETROSPOT",
   "JUMBO BAG RED RETROSPOT", one product under two codes), and a customer who buys one line
   tends to buy its other members, including those nobody has bought with it yet (new and
   rarely bought items, where co-purchase statistics are thin). Protocol R replays (2011-06-03
   / 04-18 / 05-10, seeds 0-5, 18 fits, paired per fit against the model without them): R-all
   +0.0016 (SE 0.0004, 15 of 18 fits; per replay +0.0014 / +0.0013 / +0.0023), R-new +0.0050
   (SE 0.0008, 17 of 18; +0.0077 / +0.0020 / +0.0054). Name neighbours as extra candidates
   (30 per user) did not add to it (R-all +0.0004, SE 0.0005, 9 fits). The features only
   re-rank the existing candidates; they cost one more block of the kNN product (about +0.3 s
   per fit on Online Retail) and 50 neighbours per item in the artifact.

At scale (caps that never bind on Online Retail): the ranker snapshots are built on a fixed
random sample of ``max_snapshot_users`` users; the re-ranker learns from at most
``max_ranker_users`` labelled users per cutoff, validation scores at most
``max_validation_users``, and at most ``max_precompute_users`` lists are precomputed; the last
three shrink further on big catalogues (:func:`cell_cap`), since ranking is dense over items.
``max_users`` (default None) fits the whole model on a fixed random sample of users (the
training job's backtest uses it on very big shops; the served model always has every user).

Layout: this module holds the estimator (the steps above); each piece it runs lives beside it,
one job each: :mod:`training.encoded_shop` (purchases as integer codes, label windows),
:mod:`training.recommender_components` (ALS, item- and basket-kNN, history statistics at a
cutoff, item-name neighbours), :mod:`training.ranker` (the re-ranker's rows and fit), :mod:`training.strategy_validation`
(strategy and cold-start choice on the validation window), :mod:`training.recommender_caps`
(user caps at scale), :mod:`training.metrics` (NDCG@k) and :mod:`training.buy_again` (the
backtest's buy-again lists). Serving's runtime is :mod:`shopml.artifacts.recommender`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from features.demand import WeeklyDemand
from features.purchases import as_timestamp
from shopml.artifacts.recommender import DEFAULT_PARAMS, PRECOMPUTE_WIDTH, RecommenderArtifact
from training.base import check_fitted
from training.encoded_shop import Shop, encode_shop
from training.ranker import (
    DEFAULT_RANKER_PARAMS,
    NEGATIVE_RATE,
    Rows,
    fit_ranker,
    labelled_rows,
    relabel,
)
from training.recommender_caps import (
    PRECOMPUTE_CELLS,
    RANKER_CELLS,
    VALIDATION_CELLS,
    capped_sample,
    cell_cap,
)
from training.recommender_components import NAME_NEIGHBOURS, build_state, name_neighbours
from training.seasonality import season_log_ratio, weekly_units
from training.strategy_validation import (
    choose_cold_popularity,
    choose_strategies,
    evaluate_strategies,
)

__all__ = ["RecommenderModel", "season_by_item"]

log = logging.getLogger(__name__)


def season_by_item(shop: Shop, wd: WeeklyDemand, start: pd.Timestamp, days: int) -> np.ndarray:
    """Per item of ``shop`` (float32): the demand model's gift-season log ratio of its demand
    over ``[start, start + days)`` to its recent level (:func:`training.seasonality.
    season_log_ratio`, from weekly units before ``start``); 0 for items without weekly sales."""
    out = np.zeros(len(shop.item_ids), dtype=np.float32)
    col = pd.Index(shop.item_ids).get_indexer(pd.Index(wd.items.astype(str)))
    ok = col >= 0
    if not ok.any():
        return out
    names = np.full(len(wd.items), "", dtype=object)
    cats = np.full(len(wd.items), "", dtype=object)
    names[ok], cats[ok] = shop.item_names[col[ok]], shop.item_categories[col[ok]]
    ratio = season_log_ratio(wd, start, days, names, cats)
    out[col[ok]] = ratio[ok]
    return out


def _ago(when: pd.Timestamp, days: int) -> pd.Timestamp:
    return when - pd.Timedelta(days=days)


class RecommenderModel:
    """ALS + item-kNN + buy-again + popularity, blended by a re-ranker chosen on validation."""

    kind: ClassVar[str] = "recommender"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 8,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        knn_k: int = 100,
        n_als: int = 50,
        n_knn: int = 50,
        n_pop: int = 30,
        ranker_cutoffs: tuple[tuple[int, int], ...] = ((90, 90), (45, 45)),
        ranker_params: dict[str, Any] | None = None,
        use_ranker: bool = True,
        holdout: float = 0.2,
        negative_rate: float = NEGATIVE_RATE,
        ba_pop_weights: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0),
        cold_country_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
        random_state: int = 0,
        num_threads: int = 1,
        precompute_width: int = PRECOMPUTE_WIDTH,
        max_precompute_users: int | None = 100_000,
        max_snapshot_users: int | None = 200_000,
        max_ranker_users: int | None = 20_000,
        max_validation_users: int | None = 5_000,
        max_users: int | None = None,
        season_prior: bool = True,
        fusion_weight: float = 0.2,
        ranker_bags: int = 2,
        als_cg: bool = True,
        als_fits: int = 2,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.knn_k = knn_k
        self.n_als = n_als
        self.n_knn = n_knn
        self.n_pop = n_pop
        self.ranker_cutoffs = ranker_cutoffs
        self.ranker_params = ranker_params
        self.use_ranker = use_ranker
        self.holdout = holdout
        self.negative_rate = negative_rate
        self.ba_pop_weights = ba_pop_weights
        self.cold_country_weights = cold_country_weights
        self.random_state = random_state
        self.num_threads = num_threads
        self.precompute_width = precompute_width
        self.max_precompute_users = max_precompute_users
        self.max_snapshot_users = max_snapshot_users
        self.max_ranker_users = max_ranker_users
        self.max_validation_users = max_validation_users
        self.max_users = max_users
        self.season_prior = season_prior
        self.fusion_weight = fusion_weight
        self.ranker_bags = ranker_bags
        self.als_cg = als_cg
        self.als_fits = als_fits
        for name in ("ranker_bags", "als_fits"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "max_precompute_users",
            "max_snapshot_users",
            "max_ranker_users",
            "max_validation_users",
            "max_users",
        ):
            cap = getattr(self, name)
            if cap is not None and (isinstance(cap, bool) or int(cap) < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {cap!r}")

    # ------------------------------------------------------------------ fit
    def _state(
        self,
        shop: Shop,
        cutoff: pd.Timestamp,
        params: dict[str, Any],
        threads: int | None = None,
        user_mask: np.ndarray | None = None,
    ) -> RecommenderArtifact:
        return build_state(
            shop,
            cutoff,
            factors=self.factors,
            regularization=self.regularization,
            iterations=self.iterations,
            bm25_k1=self.bm25_k1,
            bm25_b=self.bm25_b,
            knn_k=self.knn_k,
            random_state=self.random_state,
            num_threads=self.num_threads if threads is None else threads,
            params=params,
            user_mask=user_mask,
            als_cg=self.als_cg,
            als_fits=self.als_fits,
            names=getattr(self, "_names", None),
        )

    def fit(
        self,
        orders: pd.DataFrame,
        as_of: pd.Timestamp | str,
        items: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
    ) -> Self:
        """Fit on purchases strictly before ``as_of``; choose strategies on validation."""
        t0 = time.perf_counter()
        as_of = as_timestamp(as_of)
        # nothing on/after as_of is ever seen
        shop = encode_shop(orders, items, customers, as_of)
        if len(shop.item_ids) == 0:
            raise ValueError(f"no purchases before {as_of}: nothing to fit")
        # item names do not change with the cutoff: their neighbours serve every snapshot
        self._names = name_neighbours(shop.item_names, NAME_NEIGHBOURS)
        params: dict[str, Any] = {
            **DEFAULT_PARAMS,
            "n_als": self.n_als,
            "n_knn": self.n_knn,
            "n_pop": self.n_pop,
        }
        # snapshots (the final one and those of the ranker's cutoffs) are independent: they
        # run on num_threads threads, one OpenMP thread each; results do not depend on it
        wd = weekly_units(orders, as_of) if self.season_prior else None
        with ThreadPoolExecutor(max_workers=max(self.num_threads, 1)) as pool:
            sample = self._user_sample(len(shop.user_ids), self.max_users)
            final: list[Future[RecommenderArtifact]] = []

            def submit_final() -> None:
                # queued after the snapshots: validation waits for them, not for the final
                # state, which is built while validation runs (the states do not depend on
                # the order they are built in)
                final.append(pool.submit(self._state, shop, as_of, dict(params), 1, sample))

            ranker, validation, chosen = self._learn(shop, as_of, pool, wd, submit_final)
            params.update(chosen)
            t_learn = time.perf_counter() - t0
            self.state_ = final[0].result()
        t_final = time.perf_counter() - t0
        self.state_.params = {**self.state_.params, **params}
        self.state_.ranker = ranker
        if wd is not None:
            # over the window the strategies are chosen for (the validation window's length)
            days = self.ranker_cutoffs[0][0] if self.ranker_cutoffs else 90
            self.state_.item_season = season_by_item(shop, wd, as_of, days)
            self.state_.params["season"] = {
                **validation.pop("season", {}),
                "days": days,
                "items": int((self.state_.item_season > 0).sum()),
                "max": round(float(self.state_.item_season.max(initial=0)), 4),
            }
        self.state_.params["season_prior"] = bool(self.season_prior)
        self.state_.params["validation"] = validation
        if self.precompute_width > 0:
            self.state_.precompute(
                self.precompute_width,
                threads=self.num_threads,
                max_users=cell_cap(
                    self.max_precompute_users, PRECOMPUTE_CELLS, self.state_.n_items
                ),
            )
        self.fit_seconds_ = time.perf_counter() - t0
        self.state_.params["fit_seconds"] = round(self.fit_seconds_, 2)
        log.info(
            "recommender fitted in %.1f s (validation done at %.1f s, final state at %.1f s, "
            "lists of %d users precomputed): all=%s new=%s",
            self.fit_seconds_,
            t_learn,
            t_final,
            len(self.state_.pre_users) if self.state_.has_precomputed else 0,
            params["strategy_all"],
            params["strategy_new"],
        )
        return self

    def _learn(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        pool: ThreadPoolExecutor,
        wd: WeeklyDemand | None = None,
        submit_final: Callable[[], None] | None = None,
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Snapshots at the ranker's cutoffs (on ``pool``) and their re-ranker rows, then
        :meth:`_validate` (ranker, scores, chosen parameters). With weekly units ``wd``, the
        validation state gets the gift-season prior of its own cutoff and window.
        ``submit_final`` (called once, right after the snapshots are queued on ``pool``)
        queues the final state behind them."""
        rng = np.random.default_rng(self.random_state)
        held = rng.random(len(shop.user_ids)) < self.holdout  # per user code
        cutoffs = [
            (d, w) for d, w in self.ranker_cutoffs if shop.window(None, _ago(as_of, d)).any()
        ]
        if not cutoffs:
            if submit_final is not None:
                submit_final()
            return None, {}, {}
        if not self.use_ranker:
            cutoffs = cutoffs[:1]
        mask = self._snapshot_users(len(shop.user_ids))
        # the out-of-time check of the fusion (see _fusion_check) labels the first cutoff's
        # rows again over the days up to the second cutoff
        check = self.use_ranker and self.fusion_weight > 0 and len(cutoffs) >= 2
        short = cutoffs[0][0] - cutoffs[1][0] if check else None
        jobs = [
            pool.submit(self._snapshot, shop, as_of, d, w, j, mask, short if j == 0 else None)
            for j, (d, w) in enumerate(cutoffs)
        ]
        if submit_final is not None:
            submit_final()
        done = [job.result() for job in jobs]
        val_state, val_days = done[0][0], cutoffs[0][0]
        if wd is not None:
            val_state.item_season = season_by_item(shop, wd, _ago(as_of, val_days), val_days)
        fusion_check = (
            self._fusion_check(shop, as_of, done, cutoffs[1][0], wd)
            if check and short and short > 0
            else None
        )
        Xs, ys, hs, gs = [], [], [], []
        for j, (_, codes, users, (F, y, r), _) in enumerate(done if self.use_ranker else []):
            Xs.append(F)
            ys.append(y)
            hs.append(held[codes[users]][r])
            gs.append(r + j * len(shop.user_ids))  # one group (user at a cutoff) per ranked list
        ranker, validation, chosen = self._validate(
            shop, as_of, val_state, val_days, held, Xs, ys, hs, gs, fusion_check
        )
        if wd is not None:
            validation["season"] = {
                "validation_items": int((val_state.item_season > 0).sum()),
                "validation_max": round(float(val_state.item_season.max(initial=0)), 4),
            }
        return ranker, validation, chosen

    def _user_sample(self, n_users: int, cap: int | None) -> np.ndarray | None:
        """Per user code: True for a fixed random sample of at most ``cap`` users (the same
        users for the same cap), or None for every user."""
        if cap is None or n_users <= cap:
            return None
        mask = np.zeros(n_users, dtype=bool)
        mask[capped_sample(n_users, cap, [self.random_state, 7])] = True
        return mask

    def _snapshot_users(self, n_users: int) -> np.ndarray | None:
        """The users the validation snapshots are built on: at most ``max_snapshot_users``
        (and ``max_users``), or None for every user."""
        caps = [c for c in (self.max_snapshot_users, self.max_users) if c is not None]
        return self._user_sample(n_users, min(caps) if caps else None)

    def _snapshot(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        days: int,
        window: int,
        seed: int,
        user_mask: np.ndarray | None = None,
        short: int | None = None,
    ) -> tuple[RecommenderArtifact, np.ndarray, np.ndarray, Rows, np.ndarray | None]:
        """Components at ``as_of - days`` and re-ranker rows labelled by the next ``window``
        days (capped at ``as_of``): state, user codes, labelled users (state rows), rows, and
        with ``short`` the same rows' labels over the next ``short`` days (else None).
        The re-ranker's rows come from at most ``max_ranker_users`` labelled users."""
        t0 = time.perf_counter()
        cutoff = _ago(as_of, days)
        params = {**DEFAULT_PARAMS, "n_als": self.n_als, "n_knn": self.n_knn, "n_pop": self.n_pop}
        state = self._state(shop, cutoff, params, 1, user_mask)
        t1 = time.perf_counter()
        codes = np.searchsorted(shop.user_ids, state.user_ids)
        truth = shop.truth(cutoff, min(window, days), codes)
        users = np.flatnonzero(truth.getnnz(axis=1) > 0)
        cap = cell_cap(self.max_ranker_users, RANKER_CELLS, state.n_items)
        users = users[capped_sample(len(users), cap, [self.random_state, 8])]
        if not self.use_ranker:
            users = users[:0]
        rng = np.random.default_rng([self.random_state, seed])
        F, y, r, c = labelled_rows(state, users, truth, rng, self.negative_rate)
        rows = (F, y, r)
        y_short = None
        if short is not None:
            y_short = np.asarray(shop.truth(cutoff, min(short, days), codes)[users[r], c]).ravel()
            y_short = (y_short > 0) & y
        log.debug(
            "snapshot %s: %d users, state %.1f s; %d ranker rows of %d users %.1f s",
            cutoff.date(),
            state.n_users,
            t1 - t0,
            len(rows[1]),
            len(users),
            time.perf_counter() - t1,
        )
        return state, codes, users, rows, y_short

    def _fusion_check(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        done: list[Any],
        days: int,
        wd: WeeklyDemand | None,
    ) -> Any:
        """The out-of-time check of the ``fusion`` strategy, or None when it cannot run.

        A re-ranker is fitted on the first cutoff's rows labelled only up to the second cutoff
        ``as_of - days``; on the users of the second snapshot who buy in ``[as_of - days,
        as_of)`` (after every label it learned from, so every user can be scored, as in
        serving), the returned function scores that re-ranker alone and fused with buy-again
        (its ``params``): ``(ranker NDCG@10, fusion NDCG@10, users)``."""
        _, _, _, (F, y, r), y_short = done[0]
        if y_short is None:
            return None
        state, codes, _, _, _ = done[1]
        rng = np.random.default_rng([self.random_state, 11])
        keep = relabel(y, y_short, rng, self.negative_rate)
        labels = y_short[keep]
        if not labels.any() or labels.all():
            return None
        rparams = {**DEFAULT_RANKER_PARAMS, **(self.ranker_params or {})}
        rparams.update(random_state=self.random_state, n_jobs=self.num_threads)
        oot = fit_ranker(F[keep], labels, r[keep], rparams)  # one booster: a yes/no check
        cutoff = _ago(as_of, days)
        truth = shop.truth(cutoff, days, codes)
        rows = np.flatnonzero(truth.getnnz(axis=1) > 0)
        cap = cell_cap(self.max_validation_users, VALIDATION_CELLS, state.n_items)
        rows = rows[capped_sample(len(rows), cap, [self.random_state, 12])]
        if not len(rows):
            return None
        sets = [set(truth.indices[truth.indptr[q] : truth.indptr[q + 1]].tolist()) for q in rows]
        if wd is not None:
            state.item_season = season_by_item(shop, wd, cutoff, days)
        state.ranker = oot

        def check(extra: dict[str, Any]) -> tuple[float, float, int]:
            ranker, fusion = evaluate_strategies(
                state, rows, sets, "auto", [("ranker", {}), ("fusion", extra)]
            )
            return ranker, fusion, len(rows)

        return check

    def _validate(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        state: RecommenderArtifact,
        days: int,
        held: np.ndarray,
        Xs: list[np.ndarray],
        ys: list[np.ndarray],
        hs: list[np.ndarray],
        gs: list[np.ndarray],
        fusion_check: Any = None,
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Score every strategy on held-out users of the validation window; refit the ranker."""
        cutoff = as_of - pd.Timedelta(days=days)
        codes = np.searchsorted(shop.user_ids, state.user_ids)
        truth = shop.truth(cutoff, days, codes)
        rows = np.flatnonzero((truth.getnnz(axis=1) > 0) & held[codes])
        cap = cell_cap(self.max_validation_users, VALIDATION_CELLS, state.n_items)
        rows = rows[capped_sample(len(rows), cap, [self.random_state, 9])]
        validation: dict[str, Any] = {"window": [str(cutoff), str(as_of)], "users": len(rows)}
        chosen: dict[str, Any] = {}
        ranker = None
        rparams = {**DEFAULT_RANKER_PARAMS, **(self.ranker_params or {})}
        rparams.update(random_state=self.random_state, n_jobs=self.num_threads)
        if Xs and len(rows):
            # held-out users' rows (at every cutoff) stay out of this fit
            keep = ~np.concatenate(hs)
            F, y = np.vstack(Xs)[keep], np.concatenate(ys)[keep]
            if y.any() and not y.all():
                ranker = fit_ranker(F, y, np.concatenate(gs)[keep], rparams, self.ranker_bags)
        strategies, scored = choose_strategies(
            state, rows, truth, ranker, self.ba_pop_weights, self.fusion_weight, fusion_check
        )
        chosen.update(strategies)
        validation.update(scored)
        cold, scored = choose_cold_popularity(
            shop,
            state,
            cutoff,
            as_of,
            days,
            self.cold_country_weights,
            self.max_validation_users,
            self.random_state,
        )
        chosen.update(cold)
        validation.update(scored)
        # the validated ranker (fitted without the held-out users) is the one shipped
        if "ranker" not in (chosen.get("strategy_all"), chosen.get("strategy_new")):
            ranker = None
        return ranker, validation, chosen

    # ------------------------------------------------------------------ use
    @property
    def artifact(self) -> RecommenderArtifact:
        """The fitted runtime (what serving loads)."""
        check_fitted(self, "state_")
        return self.state_

    def recommend(self, user_id: str, k: int = 10, **kwargs: Any) -> list[Any]:
        """See :meth:`RecommenderArtifact.recommend`."""
        return self.artifact.recommend(user_id, k, **kwargs)

    def recommend_batch(self, user_ids: list[str], k: int = 10, **kwargs: Any) -> list[list[str]]:
        """See :meth:`RecommenderArtifact.recommend_batch`."""
        return self.artifact.recommend_batch(user_ids, k, **kwargs)

    def similar_items(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """See :meth:`RecommenderArtifact.similar_items`."""
        return self.artifact.similar_items(item_id, k)

    def save(self, folder: Path) -> None:
        """Save the artifact (``arrays.npz``, ``meta.json``, ``ranker.txt``)."""
        self.artifact.save(folder)

    @classmethod
    def load(cls, folder: Path) -> Self:
        """Load a saved artifact into an (already fitted) estimator."""
        model = cls()
        model.state_ = RecommenderArtifact.load(folder)
        return model
