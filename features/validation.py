"""Validate raw tables against the contract: coerce types, apply row rules, report every row.

Every input row ends either in the clean table or in the quarantine table with a reason; the
report counts rows per rule and says what was done. A table that cannot be used at all raises
:class:`~features.schema.ContractError` naming the source, the column and example rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.arrays import categorical, run_starts
from features.schema import (
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ORDER_ID,
    ORDERED_AT,
    ORDERS,
    QUANTITY,
    REASON,
    SOURCE_ROW,
    UNIT_PRICE,
    Column,
    ContractError,
    Table,
)

#: Above this share of unparseable values a column is taken to have the wrong type altogether.
WRONG_TYPE_SHARE = 0.5
EXAMPLES = 5

KEPT, REPAIRED, QUARANTINED = "kept", "repaired", "quarantined"


@dataclass
class RuleCount:
    """How many rows one rule touched, and what was done with them."""

    rule: str
    rows: int
    action: str
    detail: str
    examples: list[int] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Rows in, rows kept, rows quarantined, and the count per rule."""

    source: str
    table: str
    rows_in: int = 0
    rows_kept: int = 0
    rows_quarantined: int = 0
    rules: list[RuleCount] = field(default_factory=list)

    def add(self, rule: str, mask: np.ndarray, action: str, detail: str, index: pd.Index) -> None:
        n = int(mask.sum())
        if n:
            examples = [int(i) for i in index[mask][:EXAMPLES]]
            self.rules.append(RuleCount(rule, n, action, detail, examples))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Validated:
    """A clean contract table, its quarantined rows (with reasons) and the report."""

    table: pd.DataFrame
    quarantine: pd.DataFrame
    report: ValidationReport


def _examples(series: pd.Series, mask: np.ndarray) -> str:
    bad = series[mask].head(3)
    return ", ".join(f"row {i}: {v!r}" for i, v in bad.items())


def _require_columns(df: pd.DataFrame, table: Table, source: str) -> None:
    if df.empty:
        raise ContractError(f"{source}: the {table.name} table is empty (no data rows)")
    missing = [c for c in table.required if c not in df.columns]
    if missing:
        raise ContractError(
            f"{source}: missing required column(s) {missing} for table '{table.name}'; "
            f"found columns {list(df.columns)}. Map them with --mapping or --format."
        )


def _as_id(s: pd.Series) -> pd.Series:
    """Ids as a categorical of stripped strings; empty ids are missing."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return _strip_categories(s)
    if pd.api.types.is_float_dtype(s.dtype):
        whole = s.dropna()
        if (whole == np.floor(whole)).all():
            s = s.astype("Int64")
    out = s.astype("string").str.strip()
    out = out.mask(out == "")
    return out.astype("category")


def _strip_categories(s: pd.Series) -> pd.Series:
    """A categorical id column with its categories stripped (and merged where they then agree).

    Works on the distinct values only; ``""`` becomes missing, as for plain string ids.
    """
    cats = s.cat.categories
    text = (
        pd.Index(cats.astype(str), dtype="str") if not pd.api.types.is_string_dtype(cats) else cats
    )
    clean = text.str.strip()
    empty = np.asarray(clean == "", dtype=bool)
    if clean.equals(text) and not empty.any():
        return s if text is cats else s.cat.rename_categories(list(text))
    new_codes, uniques = pd.factorize(clean.where(~empty))
    codes = s.cat.codes.to_numpy().astype(np.int64)
    lookup = np.r_[new_codes, -1]  # code -1 (missing) stays missing
    values = categorical(lookup[codes], pd.Index(uniques, dtype="str"))
    return pd.Series(values, index=s.index, name=s.name)


def drop_unused_categories(s: pd.Series) -> pd.Series:
    """``s.cat.remove_unused_categories()`` (same order, same codes), by counting codes."""
    codes = s.array.codes
    used = np.bincount(codes[codes >= 0], minlength=len(s.cat.categories)) > 0
    if used.all():
        return s
    lookup = np.r_[np.cumsum(used) - 1, -1]
    values = categorical(lookup[codes], s.cat.categories[used])
    return pd.Series(values, index=s.index, name=s.name)


def _parse(
    s: pd.Series, col: Column, source: str, date_format: str | None
) -> tuple[pd.Series, np.ndarray]:
    """Coerce one column; return it and the mask of values present but unparseable."""
    present = s.notna().to_numpy()
    if col.kind == "id":
        return _as_id(s), np.zeros(len(s), dtype=bool)
    if col.kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            out = s.dt.tz_convert(None) if getattr(s.dt, "tz", None) is not None else s
        else:
            # utc=True: times with a UTC offset are converted to UTC (an export in local time
            # has +01:00 and +02:00 across daylight saving, which pandas refuses to mix without
            # it); times without one are kept as they are
            text = s.astype("string").str.strip()
            fmt = date_format or "ISO8601"
            out = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
            if date_format is None and out.isna().mean() > 0:
                out = pd.to_datetime(text, format="mixed", errors="coerce", utc=True)
            out = out.dt.tz_localize(None)
    elif col.kind in ("float", "int"):
        if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            out = s.astype("float64")
        else:
            out = pd.to_numeric(s.astype("string").str.strip(), errors="coerce").astype("float64")
        finite = np.isfinite(out.to_numpy(dtype="float64", na_value=np.nan))
        if not finite.all():
            out = out.where(finite)
    elif col.kind == "bool":
        if pd.api.types.is_bool_dtype(s.dtype):
            out = s.astype("boolean")
        else:
            text = s.astype("string").str.strip().str.lower()
            truth = {"true": True, "1": True, "yes": True, "y": True, "t": True}
            falsy = {"false": False, "0": False, "no": False, "n": False, "f": False}
            out = text.map(truth | falsy).astype("boolean")
    else:
        if isinstance(s.dtype, pd.CategoricalDtype):
            return s, np.zeros(len(s), dtype=bool)
        return s.astype("string"), np.zeros(len(s), dtype=bool)
    bad = present & out.isna().to_numpy()
    if present.sum() and bad.sum() > WRONG_TYPE_SHARE * present.sum():
        raise ContractError(
            f"{source}: column '{col.name}' should be {col.kind} but {int(bad.sum())} of "
            f"{int(present.sum())} values are not ({_examples(s, bad)})"
        )
    return out, bad


def coerce(
    df: pd.DataFrame, table: Table, source: str, date_format: str | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Keep the contract's columns, coerce their types; return per-column unparseable masks."""
    _require_columns(df, table, source)
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    bad: dict[str, np.ndarray] = {}
    for col in table.columns:
        if col.name in df.columns:
            out[col.name], bad[col.name] = _parse(
                df[col.name].reset_index(drop=True), col, source, date_format
            )
    return out, bad


def _hashable(column: pd.Series) -> np.ndarray:
    """A numeric array equal where the column's values are equal (codes for categoricals)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return np.asarray(column.cat.codes.to_numpy(), dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return np.asarray(column.to_numpy().view(np.int64))
    if pd.api.types.is_numeric_dtype(column.dtype) and not isinstance(
        column.dtype, pd.BooleanDtype
    ):
        return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(column.astype("string").fillna("\x00<NA>").to_numpy(dtype=object))


def _row_keys(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One 64-bit value per row, equal for rows equal in ``columns``.

    Two categorical columns whose codes fit in 63 bits together are packed exactly; otherwise a
    hash of every column.
    """
    if len(columns) == 2 and all(isinstance(df[c].dtype, pd.CategoricalDtype) for c in columns):
        a, b = (df[c].cat.codes.to_numpy().astype(np.int64) + 1 for c in columns)
        width = int(len(df[columns[1]].cat.categories) + 1).bit_length()
        if int(len(df[columns[0]].cat.categories) + 1).bit_length() + width <= 63:
            return np.asarray(a << width | b)
    hashes = np.zeros(len(df), dtype=np.uint64)
    for name in columns:
        hashes = hashes * np.uint64(0x100000001B3) ^ pd.util.hash_array(_hashable(df[name]))
    return hashes


def _repeats_within_runs(df: pd.DataFrame, key: list[str], longest: int = 256) -> np.ndarray | None:
    """Rows whose (key[0], key[1]) pair repeats, found without hashing when it can be.

    When the rows of each ``key[0]`` value (an order) are contiguous and no order has more than
    ``longest`` rows, a repeat can only sit a few rows away: compare each row with the next 1, 2,
    ... rows of its run. None when that does not apply.
    """
    first, second = (df[c] for c in key)
    if not all(isinstance(c.dtype, pd.CategoricalDtype) for c in (first, second)):
        return None
    run, item = first.array.codes, second.array.codes
    n = len(run)
    starts = np.flatnonzero(run_starts(run))
    lengths = np.diff(starts, append=n)
    runs_per_value = np.bincount(run[starts] + 1)  # + 1: a missing order is a value too
    if lengths.max(initial=0) > longest or runs_per_value.max(initial=0) > 1:
        return None
    out = np.zeros(n, dtype=bool)
    lengths = lengths.astype(np.int32)
    left = np.repeat(starts.astype(np.int32) + lengths, lengths)  # end of each row's run
    left -= np.arange(1, n + 1, dtype=np.int32)  # rows after this one in its run
    rows = np.flatnonzero(left > 0)  # rows with at least one later row in their run
    step = 1
    while len(rows):
        same = rows[item[rows] == item[rows + step]]
        out[same] = True
        out[same + step] = True
        rows = rows[left[rows] > step]
        step += 1
    return out


def duplicated_rows(df: pd.DataFrame, key: list[str] | None = None) -> np.ndarray:
    """Rows equal to an earlier row in every column (``DataFrame.duplicated``, but fast).

    A 64-bit hash per row of the ``key`` columns (default: all) finds the candidates; the exact
    comparison runs on those only.
    """
    if len(df) == 0:
        return np.zeros(0, dtype=bool)
    candidates = _repeats_within_runs(df, key) if key and len(key) == 2 else None
    if candidates is None:
        keys = pd.Series(_row_keys(df, key or list(df.columns)))
        candidates = keys.duplicated(keep=False).to_numpy()
    out = np.zeros(len(df), dtype=bool)
    if candidates.any():
        out[candidates] = df[candidates].duplicated(keep="first").to_numpy()
    return out


def validate_orders(
    raw: pd.DataFrame,
    source: str = "orders",
    *,
    date_format: str | None = None,
    item_pattern: str | None = None,
    known_items: pd.Index | None = None,
    drop_duplicates: bool = False,
    zero_price_ok: bool = False,
) -> Validated:
    """Validate an orders table (contract column names) into clean lines and quarantine.

    Rules, in order (a row is quarantined by the first rule it fails): missing customer, missing
    order or item id, unparseable date, unparseable quantity or price, zero quantity,
    non-positive price (zero allowed with ``zero_price_ok``), item id not matching
    ``item_pattern`` (non-product codes such as postage).
    Negative quantities and cancellations are kept as returns (``is_return``). Exact duplicate
    lines are kept and counted (or quarantined with ``drop_duplicates``); lines of items missing
    from the catalogue are kept and counted.
    """
    report = ValidationReport(source=source, table="orders", rows_in=len(raw))
    df, bad = coerce(raw, ORDERS, source, date_format)
    n = len(df)
    reason = np.zeros(n, dtype=np.int16)  # 0: kept, i: quarantined by names[i]
    names = [""]
    index = df.index

    def rule(name: str, mask: np.ndarray, detail: str) -> None:
        mask = mask & (reason == 0)
        if mask.any():
            names.append(name)
            reason[mask] = len(names) - 1
        report.add(name, mask, QUARANTINED, detail, index)

    rule("missing_customer", df[CUSTOMER_ID].isna().to_numpy(), "no customer id")
    rule("missing_order_id", df[ORDER_ID].isna().to_numpy(), "no order id")
    rule("missing_item_id", df[ITEM_ID].isna().to_numpy(), "no item id")
    rule(
        "unparseable_date",
        df[ORDERED_AT].isna().to_numpy(),
        "ordered_at missing or not a date" + (f" in format {date_format}" if date_format else ""),
    )
    qty = df[QUANTITY].to_numpy(dtype="float64", na_value=np.nan)
    price = df[UNIT_PRICE].to_numpy(dtype="float64", na_value=np.nan)
    rule("bad_quantity", np.isnan(qty), "quantity missing or not a number")
    rule("bad_price", np.isnan(price), "unit_price missing or not a number")
    rule("zero_quantity", qty == 0, "quantity is 0")
    if zero_price_ok:
        rule("negative_price", price < 0, "unit_price < 0")
        report.add("free_item", (price == 0) & (reason == 0), KEPT, "unit_price 0: kept", index)
    else:
        rule("non_positive_price", price <= 0, "unit_price <= 0 (adjustments, free items)")
    if item_pattern:
        ids = df[ITEM_ID].astype("string")
        matches = ids.str.match(item_pattern).fillna(False).to_numpy(dtype=bool)
        rule("non_product_code", ~matches, f"item id does not match {item_pattern!r}")
    for name, mask in bad.items():
        if name not in (CUSTOMER_ID, ORDER_ID, ITEM_ID, ORDERED_AT, QUANTITY, UNIT_PRICE):
            if mask.any():  # setting through .loc costs a pass even when nothing is set
                df.loc[mask, name] = pd.NA
            report.add(f"bad_{name}", mask, REPAIRED, f"unparseable {name} set to missing", index)

    ok = reason == 0
    flagged = df[IS_RETURN].fillna(False).to_numpy(dtype=bool) if IS_RETURN in df else False
    is_return = (qty < 0) | flagged
    report.add(
        "return", ok & is_return, KEPT, "negative quantity or cancellation: kept as a return", index
    )
    df[IS_RETURN] = is_return
    dup = duplicated_rows(df, key=[ORDER_ID, ITEM_ID]) & ok  # a duplicate repeats both
    if drop_duplicates:
        rule("duplicate_line", dup, "exact duplicate of an earlier line")
        ok = reason == 0
    else:
        report.add("duplicate_line", dup, KEPT, "exact duplicate of an earlier line: kept", index)
    if known_items is not None:
        unknown = ok & ~df[ITEM_ID].isin(known_items).to_numpy()
        report.add("unknown_item", unknown, KEPT, "item not in the items table: kept", index)

    quarantine = raw.reset_index(drop=True)[~ok].copy()
    quarantine.insert(0, SOURCE_ROW, np.flatnonzero(~ok))
    quarantine.insert(1, REASON, np.asarray(names, dtype=object)[reason[~ok]])
    if ok.all():
        clean = df
    else:
        clean = df[ok].reset_index(drop=True)
        for col in (CUSTOMER_ID, ORDER_ID, ITEM_ID):
            clean[col] = drop_unused_categories(clean[col])
    report.rows_kept, report.rows_quarantined = len(clean), int((~ok).sum())
    return Validated(clean, quarantine, report)


def validate_entities(raw: pd.DataFrame, table: Table, source: str) -> Validated:
    """Validate an items or customers table: required id, one row per id (first one kept)."""
    report = ValidationReport(source=source, table=table.name, rows_in=len(raw))
    df, bad = coerce(raw, table, source)
    key = table.required[0]
    index = df.index
    missing = df[key].isna().to_numpy()
    dup = df[key].duplicated(keep="first").to_numpy() & ~missing
    report.add(f"missing_{key}", missing, QUARANTINED, f"no {key}", index)
    report.add(f"duplicate_{key}", dup, QUARANTINED, f"{key} seen before: first row kept", index)
    for name, mask in bad.items():
        if name != key:
            if mask.any():
                df.loc[mask, name] = pd.NA
            report.add(f"bad_{name}", mask, REPAIRED, f"unparseable {name} set to missing", index)
    drop = missing | dup
    quarantine = raw.reset_index(drop=True)[drop].copy()
    quarantine.insert(0, SOURCE_ROW, np.flatnonzero(drop))
    quarantine.insert(1, REASON, np.where(missing[drop], f"missing_{key}", f"duplicate_{key}"))
    clean = df[~drop].reset_index(drop=True)
    clean[key] = drop_unused_categories(clean[key])
    report.rows_kept, report.rows_quarantined = len(clean), int(drop.sum())
    return Validated(clean, quarantine, report)
