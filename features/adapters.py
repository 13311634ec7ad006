"""Adapters: map known exports (UCI Online Retail, CDNOW, a column-mapping file) onto the contract.

An adapter only renames and derives columns; every row rule lives in :mod:`features.validation`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from features.schema import (
    CATEGORY,
    COUNTRY,
    CUSTOMER_ID,
    DISCOUNT,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    ORDER_ID,
    ORDERED_AT,
    ORDERS,
    QUANTITY,
    SIGNED_UP_AT,
    UNIT_PRICE,
    ContractError,
)


@dataclass
class Adapted:
    """Raw tables renamed onto the contract, plus the rules the source needs."""

    orders: pd.DataFrame
    items: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    item_pattern: str | None = None
    date_format: str | None = None
    zero_price_ok: bool = False
    drop_duplicates: bool = False
    notes: list[str] = field(default_factory=list)


class ColumnMapping(BaseModel):
    """A shop export's column names and date format, mapped onto the contract (YAML or TOML).

    Example::

        columns: {customer_id: Customer, order_id: Order No, item_id: SKU,
                  ordered_at: Date, quantity: Qty, unit_price: Price}
        date_format: "%d/%m/%Y %H:%M"
        return_order_prefix: "R"
        item_pattern: "^[0-9]+$"
        drop_duplicates: true     # exact copies of a line are quarantined, not kept
        decimal: ","              # numbers written 1.234,50

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, str]
    date_format: str | None = None
    item_pattern: str | None = None
    return_order_prefix: str | None = None
    zero_price_ok: bool = False
    #: Quarantine exact duplicate lines (``duplicate_line``) instead of keeping and counting them.
    drop_duplicates: bool = False
    #: Decimal mark of the export's numbers: ``","`` reads ``1.234,50`` as 1234.5 (quantity,
    #: unit_price, discount).
    decimal: Literal[".", ","] = "."


def validation_summary(exc: ValidationError) -> str:
    """pydantic's multi-line error as one line: ``where: what; where: what``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()
    )


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read and validate a mapping file; unknown keys or contract columns are errors."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        mapping = ColumnMapping.model_validate(data)
    except FileNotFoundError as exc:
        raise ContractError(f"{path}: mapping file not found") from exc
    except ValidationError as exc:
        raise ContractError(f"{path}: invalid mapping file: {validation_summary(exc)}") from exc
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ContractError(f"{path}: invalid mapping file: {exc}") from exc
    unknown = set(mapping.columns) - set(ORDERS.names)
    if unknown:
        raise ContractError(
            f"{path}: mapping names unknown contract column(s) {sorted(unknown)}; "
            f"contract columns are {ORDERS.names}"
        )
    return mapping


def apply_mapping(raw: pd.DataFrame, mapping: ColumnMapping, source: str) -> Adapted:
    """Rename a shop export with a :class:`ColumnMapping`."""
    missing = [src for src in mapping.columns.values() if src not in raw.columns]
    if missing:
        raise ContractError(
            f"{source}: mapped column(s) {missing} not in the file; found {list(raw.columns)}"
        )
    orders = raw.rename(columns={src: dst for dst, src in mapping.columns.items()})
    if mapping.decimal == ",":
        for col in (QUANTITY, UNIT_PRICE, DISCOUNT):
            if col in orders.columns and not pd.api.types.is_numeric_dtype(orders[col].dtype):
                text = orders[col].astype("string").str.strip()
                orders[col] = text.str.replace(".", "", regex=False).str.replace(
                    ",", ".", regex=False
                )
    if mapping.return_order_prefix:
        prefix = mapping.return_order_prefix
        orders[IS_RETURN] = orders[ORDER_ID].astype("string").str.startswith(prefix).fillna(False)
    return Adapted(
        orders,
        item_pattern=mapping.item_pattern,
        date_format=mapping.date_format,
        zero_price_ok=mapping.zero_price_ok,
        drop_duplicates=mapping.drop_duplicates,
    )


ONLINE_RETAIL_COLUMNS = {
    "InvoiceNo": ORDER_ID,
    "StockCode": ITEM_ID,
    "InvoiceDate": ORDERED_AT,
    "Quantity": QUANTITY,
    "UnitPrice": UNIT_PRICE,
    "CustomerID": CUSTOMER_ID,
}


def _mode_per_key(df: pd.DataFrame, key: str, value: str) -> pd.Series:
    """The most frequent non-missing value of ``value`` per ``key`` (ties: first seen)."""
    counts = df[[key, value]].dropna().value_counts(sort=True)
    first = counts.reset_index().drop_duplicates(key, keep="first")
    return first.set_index(key)[value]


def category_from_name(names: pd.Series) -> pd.Series:
    """A coarse category from a product name: its last word (``... T-LIGHT HOLDER`` -> ``HOLDER``).

    Online Retail has no category column; the head noun of the description groups products well
    enough for popularity-per-category and pooling.
    """
    words = names.astype("string").str.upper().str.replace(r"[^A-Z ]", " ", regex=True)
    last = words.str.split().str[-1]
    return last.fillna("OTHER").astype("string")


def first_seen(orders: pd.DataFrame) -> pd.Series:
    """Per customer id, the time of their first order line (NaT when no time parses)."""
    when = pd.to_datetime(orders[ORDERED_AT], errors="coerce", utc=True).dt.tz_localize(None)
    return when.groupby(orders[CUSTOMER_ID].to_numpy()).min()


def whole_number_ids(ids: pd.Series) -> pd.Series:
    """Ids as text without a float suffix: ``17850``, ``17850.0`` and ``"17850.0"`` -> ``"17850"``.

    Exports often write integer customer ids as floats; anything else (text ids) is kept as is.
    """
    text = ids.astype("string").str.strip()
    return text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)


def online_retail(raw: pd.DataFrame, source: str = "online_retail") -> Adapted:
    """UCI Online Retail: invoices starting with ``C`` are cancellations (kept as returns);
    stock codes not starting with five digits (postage, fees, manual adjustments) are not products.
    """
    missing = [c for c in ONLINE_RETAIL_COLUMNS if c not in raw.columns]
    if missing:
        raise ContractError(f"{source}: not an Online Retail export, missing {missing}")
    orders = raw.rename(columns=ONLINE_RETAIL_COLUMNS)
    orders[CUSTOMER_ID] = whole_number_ids(orders[CUSTOMER_ID])
    orders[IS_RETURN] = orders[ORDER_ID].astype("string").str.startswith("C").fillna(False)
    items = None
    if "Description" in raw.columns:
        names = _mode_per_key(raw, "StockCode", "Description")
        items = pd.DataFrame({ITEM_ID: names.index.astype(str), ITEM_NAME: names.to_numpy()})
        items[CATEGORY] = category_from_name(items[ITEM_NAME]).to_numpy()
    customers = None
    if "Country" in raw.columns:
        country = _mode_per_key(orders, CUSTOMER_ID, "Country")
        customers = pd.DataFrame(
            {CUSTOMER_ID: country.index.astype(str), COUNTRY: country.to_numpy()}
        )
        # the export has no sign-up time: a customer is known from their first line (of any
        # kind), so features at an earlier date do not count them (e.g. in country_share)
        customers[SIGNED_UP_AT] = first_seen(orders).reindex(country.index).to_numpy()
    return Adapted(
        orders,
        items,
        customers,
        item_pattern=r"^\d{5}",
        notes=["item category derived from the last word of the product description"],
    )


CDNOW_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def cdnow(raw: pd.DataFrame, source: str = "cdnow") -> Adapted:
    """CDNOW master file: one row per customer-day; every CD counts as the same item ``CD``."""
    missing = [c for c in CDNOW_COLUMNS if c not in raw.columns]
    if missing:
        raise ContractError(f"{source}: not a CDNOW export, missing {missing}")
    qty = raw["number_of_cds"].astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        price = raw["dollar_value"].astype("float64") / qty
    orders = pd.DataFrame(
        {
            CUSTOMER_ID: raw["customer_id"].astype(str),
            ORDER_ID: raw["customer_id"].astype(str) + "-" + raw["date"].astype(str),
            ITEM_ID: "CD",
            ORDERED_AT: raw["date"],
            QUANTITY: qty,
            UNIT_PRICE: price,
        }
    )
    return Adapted(
        orders,
        zero_price_ok=True,
        notes=["one order per customer-day; every CD is item 'CD'; $0 purchases kept"],
    )


ADAPTERS: dict[str, Callable[[pd.DataFrame, str], Adapted]] = {
    "online-retail": online_retail,
    "cdnow": cdnow,
}


def detect_format(columns: pd.Index) -> str:
    """Guess the adapter from the column names: ``online-retail``, ``cdnow`` or ``contract``."""
    cols = set(columns)
    if set(ONLINE_RETAIL_COLUMNS) <= cols:
        return "online-retail"
    if set(CDNOW_COLUMNS) <= cols:
        return "cdnow"
    return "contract"
