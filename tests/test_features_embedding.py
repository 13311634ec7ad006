"""The embedding of what customers buy (:mod:`features.embedding`): what it is, and that it reads
nothing on or after ``as_of``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.embedding import EMBED_COLUMNS, EMBED_K, embedding_features, item_vectors
from features.purchases import Purchases
from training.snapshots import UserSnapshots, customer_features

AS_OF = pd.Timestamp("2024-03-01")


def shop(seed: int = 0, n_customers: int = 300, n_items: int = 60) -> pd.DataFrame:
    """Order lines of two kinds of customers (each buys mostly from one half of the items)."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2023-06-01")
    for c in range(n_customers):
        half = c % 2
        for o in range(int(rng.integers(1, 6))):
            when = start + pd.Timedelta(days=int(rng.integers(0, 270)), hours=int(rng.integers(24)))
            for _ in range(int(rng.integers(1, 5))):
                own = rng.random() < 0.85
                low = half * (n_items // 2) if own else (1 - half) * (n_items // 2)
                item = int(rng.integers(low, low + n_items // 2))
                rows.append((f"c{c}", f"c{c}-{o}", f"i{item}", when, 1.0 + rng.integers(3)))
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "item_id", "ordered_at", "quantity"]
    )
    df["ordered_at"] = df["ordered_at"].astype("datetime64[us]")
    df["unit_price"] = 5.0
    df["is_return"] = False
    return df


def _categorical(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in ("customer_id", "order_id", "item_id"):
        out[c] = out[c].astype(str).astype("category")
    return out


def test_embedding_separates_what_customers_buy() -> None:
    orders = shop()
    f = embedding_features(Purchases.of(orders, AS_OF))
    assert list(f.columns) == EMBED_COLUMNS and len(EMBED_COLUMNS) == EMBED_K
    assert f.notna().all().all()
    # a projection of a unit-length row: no longer than 1
    assert (np.linalg.norm(f.to_numpy(), axis=1) <= 1 + 1e-9).all()
    half = np.array([int(c[1:]) % 2 for c in f.index])
    # one of the leading directions tells the two kinds of customers apart
    gaps = [abs(f[c][half == 0].mean() - f[c][half == 1].mean()) for c in EMBED_COLUMNS[:2]]
    assert max(gaps) > 0.2
    # each direction's sign: its largest item loading is positive
    v = item_vectors(Purchases.of(orders, AS_OF)).to_numpy()[:, 1:]
    assert (v[np.argmax(np.abs(v), axis=0), np.arange(EMBED_K)] > 0).all()


def test_embedding_reads_nothing_on_or_after_as_of() -> None:
    """Lines at/after as_of of known and new customers, of known and new items, and an order at
    exactly as_of 00:00: identical columns (the fit's start vector depends on no id that only
    occurs later)."""
    orders = shop()
    rng = np.random.default_rng(5)
    later = []
    for k in range(400):
        c = f"c{int(rng.integers(0, 300))}" if k % 2 else f"new{k}"
        item = f"i{int(rng.integers(0, 60))}" if k % 3 else f"new-item{k}"
        when = AS_OF + pd.Timedelta(hours=int(rng.integers(0, 24 * 60)))
        later.append((c, f"late{k}", item, when, 2.0, 5.0, False))
    later.append(("c1", "at-as-of", "i3", AS_OF, 1.0, 5.0, False))
    extra = pd.DataFrame(later, columns=orders.columns).astype({"ordered_at": "datetime64[us]"})
    for table in (orders, _categorical(orders)):
        more = pd.concat([table.astype(object), extra.astype(object)], ignore_index=True)
        more = more.astype(orders.dtypes.to_dict())
        if isinstance(table["item_id"].dtype, pd.CategoricalDtype):
            more = _categorical(more)
        before = embedding_features(Purchases.of(table, AS_OF))
        after = embedding_features(Purchases.of(more, AS_OF))
        pd.testing.assert_frame_equal(before, after, check_exact=True)
        full = customer_features(more, AS_OF)[EMBED_COLUMNS]
        pd.testing.assert_frame_equal(full, before.reindex(full.index), check_exact=True)
    # the lines after as_of do count once as_of moves past them
    moved = embedding_features(Purchases.of(more, AS_OF + pd.Timedelta(days=61)))
    assert not np.allclose(moved.loc[before.index].to_numpy(), before.to_numpy())


def test_sample_with_all_customers_vectors_gets_the_whole_tables_rows() -> None:
    orders = shop(seed=1)
    p = Purchases.of(orders, AS_OF)
    whole = embedding_features(p)
    ids = whole.index[::4]
    part = orders[orders["customer_id"].isin(ids)]
    got = embedding_features(Purchases.of(part, AS_OF), item_vectors(p))
    np.testing.assert_allclose(got.to_numpy(), whole.loc[got.index].to_numpy(), atol=1e-12)
    alone = embedding_features(Purchases.of(part, AS_OF))  # fitted on the part only: differs
    assert not np.allclose(alone.to_numpy(), whole.loc[alone.index].to_numpy(), atol=1e-6)


def test_snapshot_cache_sample_rows_equal_the_whole_population_rows() -> None:
    orders = _categorical(shop(seed=2))
    cache = UserSnapshots(orders)
    sample = cache.population(AS_OF, 120)
    assert sample is not None
    cut = AS_OF - pd.Timedelta(days=30)
    whole = cache.features(cut)[EMBED_COLUMNS]
    part = cache.features(cut, sample)[EMBED_COLUMNS]  # float32
    np.testing.assert_allclose(
        part.to_numpy(np.float64), whole.loc[part.index].to_numpy(), atol=1e-6
    )


def test_few_items_give_missing_columns() -> None:
    orders = shop(n_items=4)  # fewer items with buyers than the embedding needs
    f = embedding_features(Purchases.of(orders, AS_OF))
    assert len(f) > 0 and f.isna().all().all()
    assert item_vectors(Purchases.of(orders, AS_OF)).empty


@pytest.mark.parametrize("max_customers", [50, 100_000])
def test_fit_on_a_capped_sample_is_deterministic(max_customers: int) -> None:
    p = Purchases.of(shop(seed=3), AS_OF)
    a, b = item_vectors(p, max_customers), item_vectors(p, max_customers)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    f = embedding_features(p, a)
    assert f.notna().all().all() and len(f) == 300
