"""The feature build's memory-saving paths: same bits as the plain computations; settings errors.

Block-wise scans, sums with ``np.add.at``, order sums computed on demand, per-pair customers of
the chains and the item-range medians must not change a single bit of any feature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import arrays, items, memory
from features.arrays import add_at, blocks, code_counts, counts
from features.io import Dataset, load_dataset
from features.pipeline import FeatureSet, build_feature_set
from features.purchases import Purchases
from features.synthetic import ShopConfig, write_shop
from features.threads import ENV, ThreadsSettingError, feature_threads

AS_OF = "2024-09-01"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop") / "demo"
    write_shop(ShopConfig(n_customers=400, n_items=50, seed=5), out, progress=False)
    return out


@pytest.fixture(scope="module")
def dataset(shop: Path) -> Dataset:
    return load_dataset(shop)


def _same(a: FeatureSet, b: FeatureSet) -> None:
    pd.testing.assert_frame_equal(a.users, b.users, check_exact=True)
    pd.testing.assert_frame_equal(a.items, b.items, check_exact=True)
    ma, mb = a.interactions.matrix, b.interactions.matrix
    for part in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(ma, part), getattr(mb, part))
        assert getattr(ma, part).dtype == getattr(mb, part).dtype


def test_counts_and_add_at_add_as_bincount_does() -> None:
    rng = np.random.default_rng(0)
    for dtype in (np.int16, np.int32, np.int64):
        idx = rng.integers(0, 50, 10_000).astype(dtype)
        weights = rng.normal(size=10_000) * 1e3
        assert np.array_equal(counts(idx, weights, 60), np.bincount(idx, weights, minlength=60))
        assert np.array_equal(counts(idx, None, 60), np.bincount(idx, minlength=60).astype(float))
        assert np.array_equal(code_counts(idx, 60), np.bincount(idx, minlength=60))
    out = np.zeros(3)  # block by block into one accumulator: the same sums as one pass
    idx, weights = rng.integers(0, 3, 1000), rng.normal(size=1000)
    for rows in blocks(1000, 7):
        add_at(out, idx[rows], weights[rows])
    assert np.array_equal(out, np.bincount(idx, weights, minlength=3))


def test_negative_codes_and_blocks() -> None:
    with pytest.raises(ValueError, match="codes must be >= 0"):
        counts(np.array([0, -1]), None, 3)
    assert list(blocks(10, 4)) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert list(blocks(0, 4)) == []


def test_block_size_changes_no_feature(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = build_feature_set(dataset, AS_OF, threads=1)
    monkeypatch.setattr(arrays, "BLOCK", 7)  # many blocks, boundaries inside orders
    _same(reference, build_feature_set(dataset, AS_OF, threads=1))


def test_order_sums_on_both_paths(dataset: Dataset) -> None:
    orders = dataset.orders
    shuffled = orders.iloc[np.random.default_rng(1).permutation(len(orders))].reset_index(drop=True)
    for table, contiguous in ((orders, True), (shuffled, False)):
        p = Purchases.of(table, AS_OF)
        assert p._contiguous is contiguous
        lines = table[p.buy]
        value = lines["quantity"].to_numpy() * lines["unit_price"].to_numpy()
        grouped = pd.DataFrame({"o": p.line_order, "v": value, "q": lines["quantity"].to_numpy()})
        sums = grouped.groupby("o").sum()
        np.testing.assert_allclose(p.order_values(), sums["v"].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(p.order_units(), sums["q"].to_numpy(), rtol=1e-12)
        assert np.array_equal(p.order_lines(), grouped.groupby("o").size().to_numpy())
        first = grouped.groupby("o").head(1).index.to_numpy()
        codes = table["customer_id"].cat.codes.to_numpy()[p.buy]
        assert np.array_equal(p.o_customer, codes[first])


def test_chains_hold_the_distinct_triples(dataset: Dataset) -> None:
    p = Purchases.of(dataset.orders, AS_OF)
    ch = p.chains
    assert ch.item.dtype == p.item.dtype
    triples = pd.DataFrame({"c": p.customer, "i": p.item, "o": p.line_order}).drop_duplicates()
    assert len(triples) == len(ch.order)
    expected = triples.sort_values(["c", "i", "o"])
    assert np.array_equal(ch.customer, expected["c"].to_numpy())
    assert np.array_equal(ch.item, expected["i"].to_numpy())
    assert np.array_equal(ch.pair_customer, ch.customer[ch.pair_start])


def test_median_gaps_do_not_depend_on_the_item_ranges(dataset: Dataset) -> None:
    p = Purchases.of(dataset.orders, AS_OF)
    age = items.days_before(p.as_of, p.o_when)
    one = items._median_gaps(p.chains, age, p.n_items, parts=1)
    assert np.isfinite(one).sum() > 5
    for parts in (2, 5, 200):
        assert np.array_equal(one, items._median_gaps(p.chains, age, p.n_items, parts=parts), True)


def test_bad_threads_setting_is_named_with_the_allowed_values(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for raw in ("abc", "0", "-2", "1.5"):
        monkeypatch.setenv(ENV, raw)
        with pytest.raises(
            ThreadsSettingError, match=rf"SHOPML_THREADS='{raw}'.*whole number >= 1"
        ):
            feature_threads()
        # read through threads: the setting is reported, not "cannot read the file"
        with pytest.raises(ThreadsSettingError, match="SHOPML_THREADS"):
            load_dataset(shop)
    monkeypatch.setenv(ENV, "2")
    assert feature_threads() == 2


def test_memory_helpers_are_safe_to_call_again() -> None:
    memory.release_unused_memory()
    applied = memory.map_large_arrays()
    assert isinstance(applied, bool)
    assert memory.map_large_arrays() is applied  # once per process
