"""Fuzzing of data ingestion: random corruptions of a real-looking Online Retail export.

A small synthetic shop (:mod:`features.synthetic`) is written as an Online Retail CSV (the UCI
columns, ``C`` invoices for cancellations, postage lines, blank customer ids, ``m/d/Y H:M`` dates).
Hypothesis then applies one to three corruptions (truncated lines, wrong encodings, mixed date
formats, swapped columns, extreme values, duplicated header, empty file, gzip that is not gzip,
...). Every case must end in a clean :class:`~features.io.Dataset` whose reports account for every
row (``rows_in = rows_kept + rows_quarantined``, and ``rows_in`` is the number of rows read) or
in a :class:`~features.schema.ContractError`; never another exception.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.io import Dataset, load_dataset
from features.schema import ContractError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
COLUMNS = HEADER.split(",")
CI_EXAMPLES = int(os.environ.get("SHOPML_FUZZ_EXAMPLES", "150"))
TRIED: list[str] = []
OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    """Print the inputs tried and outcomes (``pytest -s``: the figures of RELIABILITY.md)."""
    yield
    print(f"\ningestion fuzz: {len(TRIED)} corrupted exports; outcomes {dict(OUTCOMES)}")


@cache
def export_text() -> str:
    """The clean export as CSV text (about 300 lines)."""
    from features.synthetic import ShopConfig, generate, items_table

    config = ShopConfig(
        n_customers=40, n_items=20, start=date(2023, 1, 1), end=date(2023, 7, 1), seed=1
    )
    orders = pd.concat(list(generate(config)), ignore_index=True)
    names = items_table(config).set_index("item_id")["name"].astype(str)
    rng = np.random.default_rng(0)
    item_num = orders["item_id"].astype(str).str[1:].astype(int)
    order_num = orders["order_id"].astype(str).str[1:].astype(int) + 536_000
    cust_num = orders["customer_id"].astype(str).str[1:].astype(int) + 12_000
    returns = orders["is_return"].to_numpy()
    frame = pd.DataFrame(
        {
            "InvoiceNo": np.where(returns, "C", "") + order_num.astype(str),
            "StockCode": (84_000 + item_num).astype(str),
            "Description": orders["item_id"].astype(str).map(names).str.upper(),
            "Quantity": np.where(returns, -1, 1) * orders["quantity"].abs().round().clip(1),
            "InvoiceDate": orders["ordered_at"].dt.strftime("%-m/%-d/%Y %-H:%M"),
            "UnitPrice": orders["unit_price"].round(2),
            "CustomerID": cust_num.astype(str),
            "Country": rng.choice(
                ["United Kingdom", "France", "Côte d'Ivoire", "Österreich"], len(orders)
            ),
        }
    )
    frame.loc[rng.random(len(frame)) < 0.05, "CustomerID"] = ""
    postage = frame.sample(5, random_state=1).assign(StockCode="POST", Description="POSTAGE")
    frame = pd.concat([frame, postage], ignore_index=True)
    frame.loc[3, "Description"] = 'CAFÉ "CRÈME", 12 PACK'
    return str(frame.to_csv(index=False, lineterminator="\n"))


# ---------------------------------------------------------------- corruptions
Corruption = Callable[[bytes, st.DrawFn], bytes]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _frame(data: bytes) -> pd.DataFrame | None:
    """The CSV as text columns, or None when an earlier corruption made it unreadable."""
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError):  # ParserError and EmptyDataError are ValueErrors
        return None
    return None if df.empty or len(df.columns) < 2 else df


def truncate_file(data: bytes, draw: st.DrawFn) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


def truncate_lines(data: bytes, draw: st.DrawFn) -> bytes:
    lines = _lines(data)
    for _ in range(draw(st.integers(1, 10))):
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
    return b"\n".join(lines)


def reencode(data: bytes, draw: st.DrawFn) -> bytes:
    enc = draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-8-sig", "utf-32", "mac-roman"]))
    return data.decode("utf-8", errors="replace").encode(enc, errors="replace")


def random_bytes(data: bytes, draw: st.DrawFn) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 20))):
        if not out:
            break
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


def mixed_dates(data: bytes, draw: st.DrawFn) -> bytes:
    formats = ["%Y-%m-%d %H:%M:%S", "%d.%m.%Y", "%d/%m/%Y %H:%M", "%Y%m%d", "%b %d %Y", "epoch"]
    df = _frame(data)
    if df is None or "InvoiceDate" not in df:
        return data
    dates = pd.to_datetime(df["InvoiceDate"], format="%m/%d/%Y %H:%M", errors="coerce")
    for _ in range(draw(st.integers(1, 30))):
        i = draw(st.integers(0, len(df) - 1))
        fmt = draw(st.sampled_from([*formats, "garbage", "", "2023-02-30", "9999-12-31 23:59"]))
        if pd.isna(dates.iloc[i]) or fmt in ("garbage", "", "2023-02-30", "9999-12-31 23:59"):
            df.loc[i, "InvoiceDate"] = "not a date" if fmt == "garbage" else fmt
        elif fmt == "epoch":
            df.loc[i, "InvoiceDate"] = str(int(dates.iloc[i].timestamp()))
        else:
            df.loc[i, "InvoiceDate"] = dates.iloc[i].strftime(fmt)
    return df.to_csv(index=False, lineterminator="\n").encode()


def swap_columns(data: bytes, draw: st.DrawFn) -> bytes:
    lines = _lines(data)
    head = lines[0].split(b",")
    if len(head) < 2:
        return data
    i, j = draw(st.lists(st.integers(0, len(head) - 1), min_size=2, max_size=2, unique=True))
    head[i], head[j] = head[j], head[i]
    return b"\n".join([b",".join(head), *lines[1:]])


def extreme_values(data: bytes, draw: st.DrawFn) -> bytes:
    df = _frame(data)
    if df is None:
        return data
    values = [
        "1e308", "-1e308", "1e309", "inf", "-inf", "NaN", "nan", "-0", "0", "0.0",
        "99999999999999999999999", "-1", "1,5", "1.5.5", " 3 ", "0x10", "1_000", "∞",
        "", "None", "null", "TRUE", "9" * 400,
    ]  # fmt: skip
    for _ in range(draw(st.integers(1, 30))):
        i = draw(st.integers(0, len(df) - 1))
        col = draw(st.sampled_from(list(df.columns)))
        df.loc[i, col] = draw(st.sampled_from(values))
    return df.to_csv(index=False, lineterminator="\n").encode()


def duplicate_header(data: bytes, draw: st.DrawFn) -> bytes:
    lines = _lines(data)
    for _ in range(draw(st.integers(1, 3))):
        lines.insert(draw(st.integers(0, len(lines))), lines[0])
    return b"\n".join(lines)


def duplicate_lines(data: bytes, draw: st.DrawFn) -> bytes:
    lines = _lines(data)
    for _ in range(draw(st.integers(1, 20))):
        i = draw(st.integers(1, max(1, len(lines) - 1)))
        lines.insert(i, lines[min(i, len(lines) - 1)])
    return b"\n".join(lines)


def ragged_rows(data: bytes, draw: st.DrawFn) -> bytes:
    lines = _lines(data)
    for _ in range(draw(st.integers(1, 10))):
        i = draw(st.integers(1, max(1, len(lines) - 1)))
        extra = draw(st.sampled_from([b",x", b",,,,", b'"', b',"unclosed', b"\r", b"\x00", b";"]))
        lines[min(i, len(lines) - 1)] += extra
    return b"\n".join(lines)


def drop_column(data: bytes, draw: st.DrawFn) -> bytes:
    df = _frame(data)
    if df is None:
        return data
    col = draw(st.sampled_from(list(df.columns)))
    return df.drop(columns=[col]).to_csv(index=False, lineterminator="\n").encode()


def line_endings(data: bytes, draw: st.DrawFn) -> bytes:
    return data.replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r", b"\n\n"])))


def header_only(data: bytes, draw: st.DrawFn) -> bytes:
    return _lines(data)[0] + draw(st.sampled_from([b"", b"\n", b"\n\n\n"]))


def empty_file(data: bytes, draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from([b"", b"\n", b" ", b"\xef\xbb\xbf", b",,,,\n"]))


CORRUPTIONS: dict[str, Corruption] = {
    f.__name__: f
    for f in (
        truncate_file,
        truncate_lines,
        reencode,
        random_bytes,
        mixed_dates,
        swap_columns,
        extreme_values,
        duplicate_header,
        duplicate_lines,
        ragged_rows,
        drop_column,
        line_endings,
        header_only,
        empty_file,
    )
}
CONTAINERS = ("csv", "gzip", "fake_gzip", "truncated_gzip")


@st.composite
def corrupted_export(draw: st.DrawFn) -> tuple[str, bytes, list[str]]:
    """(file suffix, file bytes, names of the corruptions applied)."""
    data = export_text().encode("utf-8")
    names = draw(st.lists(st.sampled_from(sorted(CORRUPTIONS)), min_size=1, max_size=3))
    for name in names:
        data = CORRUPTIONS[name](data, draw)
    container = draw(st.sampled_from(CONTAINERS))
    if container == "gzip":
        return ".csv.gz", gzip.compress(data), [*names, container]
    if container == "fake_gzip":
        return ".csv.gz", data, [*names, container]
    if container == "truncated_gzip":
        packed = gzip.compress(data)
        return ".csv.gz", packed[: draw(st.integers(0, len(packed) - 1))], [*names, container]
    return ".csv", data, names


def load_or_contract_error(suffix: str, data: bytes) -> Dataset | None:
    """Load the bytes as an orders file; ``None`` on a ContractError; other errors propagate."""
    with tempfile.TemporaryDirectory(prefix="shopml-fuzz-") as tmp:
        path = Path(tmp) / f"orders{suffix}"
        path.write_bytes(data)
        try:
            ds = load_dataset(path)
        except ContractError as exc:
            assert str(exc), "a ContractError must say what is wrong"
            OUTCOMES["contract_error"] += 1
            return None
        OUTCOMES["dataset"] += 1
        OUTCOMES["rows_in"] += ds.reports[0].rows_in
        OUTCOMES["rows_quarantined"] += ds.reports[0].rows_quarantined
        return ds


def assert_accounts_for_every_row(ds: Dataset) -> None:
    """rows_in = rows_kept + rows_quarantined for every table; rows_in = rows read."""
    assert ds.reports, "no validation report"
    for report in ds.reports:
        assert report.rows_in == report.rows_kept + report.rows_quarantined, report
        quarantine = ds.quarantine.get(report.table)
        assert quarantine is not None and len(quarantine) == report.rows_quarantined
    orders = next(r for r in ds.reports if r.table == "orders")
    assert len(ds.orders) == orders.rows_kept
    assert orders.rows_in == next(s.rows for s in ds.sources if s.table == "orders")
    assert ds.orders["customer_id"].notna().all() and ds.orders["ordered_at"].notna().all()
    assert np.isfinite(ds.orders["quantity"].to_numpy(dtype=float)).all()
    assert (ds.orders["unit_price"].to_numpy(dtype=float) > 0).all()


def test_clean_export_loads_without_loss() -> None:
    ds = load_or_contract_error(".csv", export_text().encode())
    assert ds is not None
    assert_accounts_for_every_row(ds)
    report = ds.reports[0]
    assert report.rows_in == export_text().count("\n") - 1
    reasons = set(ds.quarantine["orders"]["reason"])
    assert {"missing_customer", "non_product_code"} <= reasons
    assert ds.orders["is_return"].any()


@settings(
    max_examples=CI_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=corrupted_export())
def test_corrupted_exports_end_clean_or_in_a_contract_error(
    case: tuple[str, bytes, list[str]],
) -> None:
    suffix, data, names = case
    TRIED.append("+".join(names))
    ds = load_or_contract_error(suffix, data)
    if ds is not None:
        assert_accounts_for_every_row(ds)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=corrupted_export())
def test_corrupted_exports_long(case: tuple[str, bytes, list[str]]) -> None:
    suffix, data, _ = case
    ds = load_or_contract_error(suffix, data)
    if ds is not None:
        assert_accounts_for_every_row(ds)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_alone(name: str) -> None:
    """Every corruption at least once, deterministically (first examples of each)."""

    @settings(max_examples=15, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        corrupted = CORRUPTIONS[name](export_text().encode(), data.draw)  # type: ignore[arg-type]
        for suffix, blob in ((".csv", corrupted), (".csv.gz", gzip.compress(corrupted))):
            ds = load_or_contract_error(suffix, blob)
            if ds is not None:
                assert_accounts_for_every_row(ds)

    run()


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00garbage", b"not gzip at all", gzip.compress(b"")],
    ids=["empty", "magic-only", "bad-deflate", "plain-text", "gzip-of-nothing"],
)
def test_gzip_that_is_not_gzip(blob: bytes) -> None:
    assert load_or_contract_error(".csv.gz", blob) is None


def test_online_retail_csv_customer_ids_float_formatted() -> None:
    lines = export_text().splitlines()
    head, rows = lines[0], lines[1:]
    fixed = [
        ",".join(
            [
                *r.split(",")[:-2],
                r.split(",")[-2] + ".0" if r.split(",")[-2] else "",
                r.split(",")[-1],
            ]
        )
        for r in rows
        if '"' not in r
    ]
    ds = load_or_contract_error(".csv", "\n".join([head, *fixed]).encode())
    assert ds is not None
    assert_accounts_for_every_row(ds)


def test_online_retail_csv_customer_ids_non_numeric() -> None:
    lines = export_text().splitlines()
    row = lines[1].split(",")
    row[6] = "abc"
    lines[1] = ",".join(row)
    ds = load_or_contract_error(".csv", "\n".join(lines).encode())
    if ds is not None:
        assert_accounts_for_every_row(ds)
