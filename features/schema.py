"""The data contract: canonical table names, column names and dtypes.

Column names are module constants; functions use them as keyword defaults so a caller can
point a function at differently named columns without renaming a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# orders: one row per order line
CUSTOMER_ID = "customer_id"
ORDER_ID = "order_id"
ITEM_ID = "item_id"
ORDERED_AT = "ordered_at"
QUANTITY = "quantity"
UNIT_PRICE = "unit_price"
CHANNEL = "channel"
DISCOUNT = "discount"
IS_RETURN = "is_return"
# derived
REVENUE = "revenue"

# items
ITEM_NAME = "name"
CATEGORY = "category"
PRICE = "price"
STOCK_ON_HAND = "stock_on_hand"
LAUNCHED_AT = "launched_at"

# customers
SIGNED_UP_AT = "signed_up_at"
COUNTRY = "country"
SEGMENT = "segment"

# quarantine
REASON = "reason"
SOURCE_ROW = "source_row"


class ContractError(ValueError):
    """Input that cannot be used at all (missing column, wrong type, empty file)."""


@dataclass(frozen=True)
class Column:
    """One column of a contract table: its name, kind and whether it must be present."""

    name: str
    kind: str  # "id" | "datetime" | "int" | "float" | "bool" | "str"
    required: bool
    doc: str


@dataclass(frozen=True)
class Table:
    """A canonical table of the contract."""

    name: str
    columns: tuple[Column, ...]
    doc: str

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


ORDERS = Table(
    "orders",
    (
        Column(CUSTOMER_ID, "id", True, "who ordered (string id)"),
        Column(ORDER_ID, "id", True, "order / invoice id; lines of one order share it"),
        Column(ITEM_ID, "id", True, "product id (SKU)"),
        Column(ORDERED_AT, "datetime", True, "order time (naive local time or UTC)"),
        Column(
            QUANTITY,
            "float",
            True,
            "units (fractional for goods sold by weight); negative on a return line",
        ),
        Column(UNIT_PRICE, "float", True, "price per unit, > 0"),
        Column(CHANNEL, "str", False, "sales channel (web, app, store, ...)"),
        Column(DISCOUNT, "float", False, "discount share of the price, 0..1"),
        Column(IS_RETURN, "bool", False, "true for returns/cancellations (derived if absent)"),
    ),
    "one row per order line (required)",
)

ITEMS = Table(
    "items",
    (
        Column(ITEM_ID, "id", True, "product id"),
        Column(ITEM_NAME, "str", False, "display name"),
        Column(CATEGORY, "str", False, "category"),
        Column(PRICE, "float", False, "current list price"),
        Column(STOCK_ON_HAND, "float", False, "units in stock"),
        Column(LAUNCHED_AT, "datetime", False, "first day on sale"),
    ),
    "product catalogue (optional)",
)

CUSTOMERS = Table(
    "customers",
    (
        Column(CUSTOMER_ID, "id", True, "customer id"),
        Column(SIGNED_UP_AT, "datetime", False, "account creation time"),
        Column(COUNTRY, "str", False, "country"),
        Column(SEGMENT, "str", False, "the shop's own segment label"),
    ),
    "customer attributes (optional)",
)

TABLES = {t.name: t for t in (ORDERS, ITEMS, CUSTOMERS)}


def purchases(orders: pd.DataFrame) -> pd.DataFrame:
    """The order lines that are purchases (not returns)."""
    return orders[~orders[IS_RETURN].to_numpy()]


def contract_markdown() -> str:
    """The contract as Markdown tables (the README's data-contract section is generated from it)."""
    out = []
    for table in TABLES.values():
        out.append(f"**{table.name}**: {table.doc}\n")
        out.append("| column | type | required | meaning |\n|---|---|---|---|")
        for c in table.columns:
            out.append(f"| `{c.name}` | {c.kind} | {'yes' if c.required else 'no'} | {c.doc} |")
        out.append("")
    return "\n".join(out)
