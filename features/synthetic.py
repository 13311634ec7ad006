"""A seeded synthetic shop: realistic orders, items and customers for the demo, tests and benchmarks.

The model, in the order it is simulated (everything vectorised with numpy, one customer chunk at
a time, so a million customers and tens of millions of order lines fit in a few GiB):

- customers sign up staggered over time (some before the window); each has a purchase rate
  ``lambda ~ Gamma(r, 1/alpha)`` per day and a dropout probability ``p ~ Beta(a, b)`` after every
  purchase (BG/NBD); the ones that signed up inside the window often order on sign-up day;
- order days follow a non-homogeneous Poisson process: a weekday pattern, a winter/summer swing and
  a Q4 ramp; within the day an hour-of-day profile;
- an order has ``1 + Poisson`` lines; a line's category comes from the customer's Dirichlet
  category affinities (and, in the gift season, more often from gift categories), the item from a
  Zipf popularity inside the category; items not launched yet are redrawn; durables a customer
  already owns are redrawn once;
- every consumable line starts a chain of refills of the same item at the category's typical
  interval (gamma noise) until the chain stops or the customer drops out: "buy again" is real;
- list prices change in a few steps per item; discounts are more frequent in sales periods;
  ``unit_price`` is the price paid (list price times ``1 - discount``);
- a few percent of lines come back days later as negative-quantity lines with ``is_return`` in
  a separate return order.

Same config (seed included) gives identical output. ``chunk_customers`` is part of the config: a
different chunk size gives a different (equally valid) shop. Order ids are chronological inside
each chunk and increase from chunk to chunk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from features.io import atomic_dir, write_json, write_parquet
from features.schema import (
    CATEGORY,
    CHANNEL,
    COUNTRY,
    CUSTOMER_ID,
    DISCOUNT,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    LAUNCHED_AT,
    ORDER_ID,
    ORDERED_AT,
    PRICE,
    QUANTITY,
    SEGMENT,
    SIGNED_UP_AT,
    STOCK_ON_HAND,
    UNIT_PRICE,
)

log = logging.getLogger(__name__)

ORDERS_DIR = "orders.parquet"
ITEMS_FILE = "items.parquet"
CUSTOMERS_FILE = "customers.parquet"
SHOP_FILE = "shop.json"
PART_NAME = "part-{:05d}.parquet"

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365.25

# Random streams: each part of the shop draws from its own stream, so parts are independent.
STREAM_CATALOG, STREAM_CUSTOMERS, STREAM_ORDERS = 1, 2, 3


@dataclass(frozen=True)
class CategorySpec:
    """A product category: consumables are re-bought every ``refill_days``; durables rarely."""

    name: str
    median_price: float
    consumable: bool
    gift: bool = False
    refill_days: float = 0.0
    nouns: tuple[str, ...] = ()


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("coffee", 11.0, True, False, 28, ("Espresso Beans", "Filter Roast", "Decaf")),
    CategorySpec("tea", 7.5, True, False, 40, ("Green Tea", "Black Tea", "Herbal Blend")),
    CategorySpec("chocolate", 4.0, True, True, 21, ("Dark Bar", "Pralines", "Truffles")),
    CategorySpec("snacks", 3.5, True, False, 14, ("Crackers", "Nut Mix", "Cookies")),
    CategorySpec("spices", 5.0, True, False, 60, ("Pepper", "Curry", "Paprika")),
    CategorySpec("pet food", 19.0, True, False, 30, ("Dry Food", "Wet Food", "Treats")),
    CategorySpec("cleaning", 6.0, True, False, 45, ("Dish Soap", "Detergent", "Sponges")),
    CategorySpec("skincare", 16.0, True, True, 50, ("Face Cream", "Lip Balm", "Serum")),
    CategorySpec("vitamins", 14.0, True, False, 30, ("Vitamin D", "Magnesium", "Omega-3")),
    CategorySpec("candles", 13.0, True, True, 60, ("Scented Candle", "Tealights", "Pillar")),
    CategorySpec("wine", 12.0, True, True, 30, ("Red Wine", "White Wine", "Sparkling")),
    CategorySpec("baby care", 10.0, True, False, 20, ("Diapers", "Wipes", "Baby Lotion")),
    CategorySpec("batteries", 7.0, True, False, 90, ("AA Pack", "AAA Pack", "Coin Cells")),
    CategorySpec("mugs", 10.0, False, True, 0, ("Mug", "Cup", "Tumbler")),
    CategorySpec("teapots", 30.0, False, True, 0, ("Teapot", "Kettle", "Infuser")),
    CategorySpec("coffee makers", 80.0, False, False, 0, ("Moka Pot", "French Press", "Dripper")),
    CategorySpec("grinders", 55.0, False, False, 0, ("Hand Grinder", "Burr Grinder")),
    CategorySpec("kitchenware", 25.0, False, False, 0, ("Knife", "Pan", "Cutting Board")),
    CategorySpec("gifts", 25.0, False, True, 0, ("Gift Box", "Hamper", "Gift Card Set")),
    CategorySpec("toys", 20.0, False, True, 0, ("Puzzle", "Plush", "Building Set")),
    CategorySpec("books", 15.0, False, True, 0, ("Cookbook", "Novel", "Guide")),
    CategorySpec("games", 30.0, False, True, 0, ("Board Game", "Card Game", "Dice Set")),
    CategorySpec("stationery", 8.0, False, False, 0, ("Notebook", "Pen Set", "Planner")),
    CategorySpec("home decor", 35.0, False, True, 0, ("Vase", "Frame", "Cushion")),
    CategorySpec("bags", 45.0, False, False, 0, ("Tote", "Backpack", "Pouch")),
    CategorySpec("electronics", 90.0, False, True, 0, ("Speaker", "Headphones", "Charger")),
    CategorySpec("garden", 30.0, False, False, 0, ("Planter", "Seeds Kit", "Watering Can")),
    CategorySpec("jewelry", 50.0, False, True, 0, ("Necklace", "Bracelet", "Earrings")),
    CategorySpec("clothing", 35.0, False, False, 0, ("Scarf", "Socks", "Sweater")),
    CategorySpec("sports", 40.0, False, False, 0, ("Yoga Mat", "Bottle", "Resistance Band")),
)
ADJECTIVES = ("Classic", "Organic", "Premium", "Everyday", "Deluxe", "Mini", "Vintage", "Eco")

COUNTRIES = {"DE": 0.30, "GB": 0.15, "FR": 0.12, "NL": 0.08, "AT": 0.06, "IT": 0.06, "ES": 0.06}
COUNTRIES |= {"CH": 0.05, "BE": 0.05, "US": 0.04, "PL": 0.03}
#: segment -> (share of customers, purchase-rate multiplier, quantity multiplier)
SEGMENTS = {"standard": (0.80, 1.0, 1.0), "member": (0.17, 1.6, 1.0), "wholesale": (0.03, 1.0, 4.0)}
CHANNELS = ("web", "app")

# customers
PRE_WINDOW_SIGNUP_SHARE = 0.35  # signed up before the window starts ...
PRE_WINDOW_YEARS = 3.0  # ... within this many years
SIGNUP_GROWTH_PER_YEAR = 0.5  # in-window sign-ups grow exponentially at this rate
FIRST_ORDER_AT_SIGNUP = 0.6  # share of in-window sign-ups ordering on sign-up day
AFFINITY_CONCENTRATION = 6.0  # Dirichlet total concentration: lower = narrower taste
APP_SHARE_BETA = (1.2, 2.5)  # per-customer probability of ordering in the app

# calendar (weights are relative; the calendar normalises them to mean 1)
WEEKDAY_WEIGHTS = np.array([1.10, 1.05, 1.00, 1.00, 0.92, 0.85, 1.08])  # Monday .. Sunday
WINTER_SUMMER_SWING = 0.12  # +12% around New Year, -12% in early July
GIFT_SEASON = (288, 355, 359)  # day of year: ramp starts (Oct 15), peaks (Dec 21), ends (Dec 25)
Q4_VOLUME_BOOST = 0.6  # order volume at the gift-season peak, relative
GIFT_BOOST_SHARE = 0.4  # at the peak, this share of lines goes to gift categories
HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 10, 11, 10, 9, 9, 10, 11, 13, 15, 16, 14, 9, 5], float
)

# items
ZIPF_RANK_OFFSET = 1.0  # weight ~ 1 / (rank + offset) ** exponent
PRICE_SPREAD = 0.5  # log-normal sigma of item prices around the category median
PRE_WINDOW_LAUNCH_SHARE = 0.75
PRICE_STEPS_MEAN, MAX_PRICE_STEPS = 1.5, 4
PRICE_STEP_LOG_MEAN, PRICE_STEP_LOG_SD = 0.03, 0.06  # mostly increases
OUT_OF_STOCK_SHARE, MAX_WEEKS_OF_COVER = 0.05, 10.0
EXPECTED_LINES_PER_ORDER = 2.0  # only to size the stock
LAUNCH_REDRAWS = 3
DURABLE_REDRAWS = 3

# orders
BASKET_EXTRA_LINES, MAX_BASKET_LINES = 1.4, 12
QTY_EXTRA, CHEAP_QTY_EXTRA, CHEAP_PRICE, MAX_QUANTITY = 0.3, 1.2, 8.0, 24
REFILL_STOP_PROB, MAX_REFILLS, REFILL_GAMMA_SHAPE, MIN_REFILL_DAYS = 0.5, 24, 6.0, 3.0
ORDER_ID_HEADROOM = 100  # order-id width fits this many orders per customer

# discounts: share of lines discounted per day, and the discount levels
BASE_DISCOUNT_SHARE = 0.06
SALES = ((11, 24, 30, 0.45), (1, 2, 15, 0.25), (7, 1, 14, 0.25))  # (month, from day, to day, share)
DISCOUNT_LEVELS = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.50])
DISCOUNT_WEIGHTS = np.array([0.15, 0.30, 0.15, 0.20, 0.10, 0.07, 0.03])

# returns
RETURN_RATE_DURABLE, RETURN_RATE_CONSUMABLE = 0.06, 0.015
RETURN_MIN_DAYS, RETURN_DELAY_GAMMA = 2, (2.0, 5.0)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


@dataclass(frozen=True)
class ShopConfig:
    """Size, window, seed and behaviour of a synthetic shop (orders fall in ``[start, end)``).

    The defaults make the demo shop: 5,000 customers, 500 items and about 125,000 order lines
    over two years. ``start``/``end`` accept ISO strings too.
    """

    n_customers: int = 5_000
    n_items: int = 500
    start: date = date(2023, 1, 1)
    end: date = date(2025, 1, 1)
    seed: int = 0
    chunk_customers: int = 100_000
    rate_shape: float = 0.9  # r: Gamma shape of the daily purchase rate
    rate_scale: float = 0.05  # 1/alpha: Gamma scale of the daily purchase rate
    dropout_a: float = 1.0  # a, b: Beta prior of the dropout probability after a purchase
    dropout_b: float = 20.0
    zipf_exponent: float = 1.2
    return_scale: float = 1.0  # multiplies the return rates

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _as_date(self.start))
        object.__setattr__(self, "end", _as_date(self.end))
        for name in ("n_customers", "n_items", "chunk_customers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ShopConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.end <= self.start:
            raise ValueError(f"ShopConfig.end ({self.end}) must be after start ({self.start})")
        if self.seed < 0:
            raise ValueError(f"ShopConfig.seed must be >= 0, got {self.seed}")
        for name in ("rate_shape", "rate_scale", "dropout_a", "dropout_b", "zipf_exponent"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ShopConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.return_scale < 0:
            raise ValueError(f"ShopConfig.return_scale must be >= 0, got {self.return_scale}")

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days

    @property
    def n_chunks(self) -> int:
        return -(-self.n_customers // self.chunk_customers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (dates as ISO strings)."""
        return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in self._items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ShopConfig field(s): {sorted(unknown)}")
        return cls(**data)

    def _items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


# ----------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class Calendar:
    """Per-day weights of the window: order volume, gift-season share and discount share."""

    days: pd.DatetimeIndex
    cum_weight: np.ndarray  # len n_days + 1, cum_weight[d] = order volume before day d
    gift_share: np.ndarray
    discount_share: np.ndarray


def _gift_ramp(day_of_year: np.ndarray) -> np.ndarray:
    start, peak, stop = GIFT_SEASON
    ramp = np.clip((day_of_year - start) / (peak - start), 0.0, 1.0)
    return np.where(day_of_year >= stop, 0.0, ramp)


def _calendar(config: ShopConfig) -> Calendar:
    days = pd.date_range(config.start, periods=config.n_days, freq="D")
    doy = days.dayofyear.to_numpy().astype(float)
    ramp = _gift_ramp(doy)
    swing = 1 + WINTER_SUMMER_SWING * np.cos(2 * np.pi * doy / DAYS_PER_YEAR)
    weight = WEEKDAY_WEIGHTS[days.dayofweek.to_numpy()] * swing * (1 + Q4_VOLUME_BOOST * ramp)
    weight /= weight.mean()
    discount = np.full(len(days), BASE_DISCOUNT_SHARE)
    month, mday = days.month.to_numpy(), days.day.to_numpy()
    for sale_month, first, last, share in SALES:
        discount[(month == sale_month) & (mday >= first) & (mday <= last)] = share
    return Calendar(days, np.r_[0.0, np.cumsum(weight)], GIFT_BOOST_SHARE * ramp, discount)


# ----------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Catalog:
    """The items as arrays, plus lookup tables to draw items by category with Zipf weights."""

    category: np.ndarray  # category index per item
    weight: np.ndarray  # Zipf popularity weight per item
    launch_day: np.ndarray  # day relative to start (negative: launched before the window)
    step_day: np.ndarray  # (n_items, MAX_PRICE_STEPS) day of each price change, inf padded
    step_price: np.ndarray  # (n_items, MAX_PRICE_STEPS + 1) list price after k changes
    by_category: np.ndarray  # item indices sorted by category, then popularity
    cum_flat: np.ndarray  # category index + cumulative share within the category
    cat_first: np.ndarray  # position of each category's first item in ``by_category``
    cat_size: np.ndarray
    specs: tuple[CategorySpec, ...]

    @property
    def consumable(self) -> np.ndarray:
        return np.array([s.consumable for s in self.specs])

    @property
    def gift(self) -> np.ndarray:
        return np.array([s.gift for s in self.specs])

    @property
    def category_share(self) -> np.ndarray:
        share = np.bincount(self.category, self.weight, minlength=len(self.specs))
        return share / share.sum()

    def list_price(self, item: np.ndarray, day: np.ndarray) -> np.ndarray:
        """List price of ``item`` on ``day`` (after the price steps up to that day)."""
        steps = (self.step_day[item] <= day[:, None]).sum(axis=1)
        return self.step_price[item, steps]


def _pretty_price(price: np.ndarray) -> np.ndarray:
    """Shop-style prices: x.99 above 2, cents below, never below 0.10."""
    return np.maximum(np.where(price >= 2, np.ceil(price) - 0.01, np.round(price, 2)), 0.10)


def _assign_categories(n_items: int, n_cats: int, rng: np.random.Generator) -> np.ndarray:
    """Every category gets at least one item; the rest are spread evenly at random."""
    category = np.r_[np.arange(n_cats), rng.integers(0, n_cats, n_items - n_cats)]
    return rng.permutation(category)


def _price_steps(
    base: np.ndarray, n_days: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = len(base)
    n_steps = np.minimum(rng.poisson(PRICE_STEPS_MEAN, n), MAX_PRICE_STEPS)
    step_day = np.sort(rng.uniform(0, n_days, (n, MAX_PRICE_STEPS)), axis=1)
    step_day[np.arange(MAX_PRICE_STEPS) >= n_steps[:, None]] = np.inf
    factor = np.exp(rng.normal(PRICE_STEP_LOG_MEAN, PRICE_STEP_LOG_SD, (n, MAX_PRICE_STEPS)))
    raw = base[:, None] * np.c_[np.ones(n), np.cumprod(factor, axis=1)]
    return np.floor(step_day), _pretty_price(raw)


def _catalog(config: ShopConfig) -> Catalog:
    rng = np.random.default_rng([config.seed, STREAM_CATALOG])
    n = config.n_items
    specs = CATEGORIES[: min(len(CATEGORIES), n)]
    category = _assign_categories(n, len(specs), rng)
    rank = rng.permutation(n)
    weight = 1.0 / (rank + ZIPF_RANK_OFFSET) ** config.zipf_exponent
    median = np.array([s.median_price for s in specs])[category]
    base = median * np.exp(rng.normal(0.0, PRICE_SPREAD, n))
    step_day, step_price = _price_steps(base, config.n_days, rng)
    launched_before = rng.random(n) < PRE_WINDOW_LAUNCH_SHARE
    launch_day = np.where(
        launched_before,
        -rng.uniform(0, PRE_WINDOW_YEARS * DAYS_PER_YEAR, n),
        rng.uniform(0, config.n_days, n),
    ).round()
    by_category, cum_flat, cat_first, cat_size = _category_lookup(category, weight, len(specs))
    launch_day[by_category[cat_first]] = -1.0  # each category's top item is on sale from day one
    return Catalog(
        category,
        weight,
        launch_day,
        step_day,
        step_price,
        by_category,
        cum_flat,
        cat_first,
        cat_size,
        specs,
    )


def _category_lookup(
    category: np.ndarray, weight: np.ndarray, n_cats: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items sorted by category and popularity, ``category + cumulative share in the category``
    (so one ``searchsorted`` draws items of many categories at once), first position, size."""
    by_category = np.lexsort((-weight, category))
    cat_sorted = category[by_category]
    cat_size = np.bincount(category, minlength=n_cats)
    cat_first = np.r_[0, np.cumsum(cat_size)[:-1]]
    within = np.cumsum(weight[by_category])
    before = np.r_[0.0, within[cat_first[1:] - 1]]  # cumulative weight of earlier categories
    totals = np.bincount(category, weight, minlength=n_cats)
    share = (within - before[cat_sorted]) / totals[cat_sorted]
    share[cat_first + cat_size - 1] = 1.0
    return by_category, cat_sorted + share, cat_first, cat_size


def _stock_on_hand(catalog: Catalog, config: ShopConfig, rng: np.random.Generator) -> np.ndarray:
    """Units in stock: a few weeks of the item's expected demand, some items sold out."""
    daily_orders = config.n_customers * config.rate_shape * config.rate_scale
    lines_per_week = daily_orders * 7 * EXPECTED_LINES_PER_ORDER
    demand = lines_per_week * catalog.weight / catalog.weight.sum()
    stock = np.round(demand * rng.uniform(0, MAX_WEEKS_OF_COVER, len(demand)))
    return np.where(rng.random(len(demand)) < OUT_OF_STOCK_SHARE, 0.0, stock)


def _item_names(catalog: Catalog, rng: np.random.Generator) -> list[str]:
    adjective = rng.integers(0, len(ADJECTIVES), len(catalog.category))
    noun = rng.integers(0, 1 << 16, len(catalog.category))
    return [
        f"{ADJECTIVES[a]} {catalog.specs[c].nouns[k % len(catalog.specs[c].nouns)]}"
        for a, c, k in zip(
            adjective.tolist(), catalog.category.tolist(), noun.tolist(), strict=True
        )
    ]


def _categorical(codes: np.ndarray, categories: list[str] | pd.Index) -> pd.Categorical:
    """A categorical from integer codes into string categories."""
    return pd.Categorical.from_codes(codes.astype(np.int64), pd.Index(categories, dtype="str"))


def _ids(prefix: str, numbers: np.ndarray | range, width: int) -> pd.Index:
    return pd.Index([f"{prefix}{n:0{width}d}" for n in numbers], dtype="str")


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(n)))


def _item_ids(config: ShopConfig) -> pd.Index:
    return _ids("I", range(1, config.n_items + 1), _width(config.n_items, 5))


def items_table(config: ShopConfig) -> pd.DataFrame:
    """The catalogue: item_id, name, category, price (list price at the end), launched_at, stock."""
    catalog = _catalog(config)
    rng = np.random.default_rng([config.seed, STREAM_CATALOG, 1])
    n = config.n_items
    last_price = catalog.list_price(np.arange(n), np.full(n, config.n_days))
    start = pd.Timestamp(config.start)
    return pd.DataFrame(
        {
            ITEM_ID: pd.Categorical(_item_ids(config)),
            ITEM_NAME: pd.array(_item_names(catalog, rng), dtype="str"),
            CATEGORY: _categorical(catalog.category, [s.name for s in catalog.specs]),
            PRICE: last_price,
            LAUNCHED_AT: start + pd.to_timedelta(catalog.launch_day, unit="D"),
            STOCK_ON_HAND: _stock_on_hand(catalog, config, rng),
        }
    )


# ----------------------------------------------------------------------------- customers


@dataclass(frozen=True)
class Customers:
    """One chunk of customers: attributes and the hidden behaviour parameters."""

    first: int  # global index of the chunk's first customer
    signup_day: np.ndarray  # float, relative to start (negative: before the window)
    country: np.ndarray
    segment: np.ndarray
    rate: np.ndarray  # purchases per day
    dropout: np.ndarray  # probability to drop out after each purchase
    app_share: np.ndarray
    affinity: np.ndarray  # (n, n_categories) category preferences

    def __len__(self) -> int:
        return len(self.rate)


def _signup_days(n: int, n_days: int, rng: np.random.Generator) -> np.ndarray:
    before = rng.random(n) < PRE_WINDOW_SIGNUP_SHARE
    pre = -rng.uniform(0, PRE_WINDOW_YEARS * DAYS_PER_YEAR, n)
    growth = SIGNUP_GROWTH_PER_YEAR / DAYS_PER_YEAR
    u = rng.random(n)  # inverse CDF of an exponentially growing sign-up density on [0, n_days)
    inside = np.log1p(u * np.expm1(growth * n_days)) / growth
    return np.where(before, pre, inside)


def _customers(config: ShopConfig, chunk: int, category_share: np.ndarray) -> Customers:
    first = chunk * config.chunk_customers
    n = min(config.chunk_customers, config.n_customers - first)
    rng = np.random.default_rng([config.seed, STREAM_CUSTOMERS, chunk])
    segment = rng.choice(len(SEGMENTS), n, p=[v[0] for v in SEGMENTS.values()])
    rate_boost = np.array([v[1] for v in SEGMENTS.values()])[segment]
    return Customers(
        first=first,
        signup_day=_signup_days(n, config.n_days, rng),
        country=rng.choice(len(COUNTRIES), n, p=np.array(list(COUNTRIES.values()))),
        segment=segment,
        rate=rng.gamma(config.rate_shape, config.rate_scale, n) * rate_boost,
        dropout=np.clip(rng.beta(config.dropout_a, config.dropout_b, n), 1e-6, 1.0),
        app_share=rng.beta(*APP_SHARE_BETA, n),
        affinity=rng.dirichlet(AFFINITY_CONCENTRATION * category_share, n),
    )


def _customer_ids(config: ShopConfig, first: int, n: int) -> pd.Index:
    return _ids("C", range(first + 1, first + n + 1), _width(config.n_customers, 6))


def _to_timestamps(start: date, seconds: np.ndarray) -> np.ndarray:
    origin = np.datetime64(start.isoformat(), "s")
    return (origin + seconds.astype("timedelta64[s]")).astype("datetime64[us]")


def _customer_frame(config: ShopConfig, chunk: int, catalog: Catalog) -> pd.DataFrame:
    c = _customers(config, chunk, catalog.category_share)
    seconds = np.round(c.signup_day * SECONDS_PER_DAY).astype(np.int64)
    return pd.DataFrame(
        {
            CUSTOMER_ID: pd.Categorical(_customer_ids(config, c.first, len(c))),
            SIGNED_UP_AT: _to_timestamps(config.start, seconds),
            COUNTRY: _categorical(c.country, list(COUNTRIES)),
            SEGMENT: _categorical(c.segment, list(SEGMENTS)),
        }
    )


def customers_table(config: ShopConfig) -> pd.DataFrame:
    """All customers: customer_id, signed_up_at, country, segment."""
    catalog = _catalog(config)
    frames = [_customer_frame(config, k, catalog) for k in range(config.n_chunks)]
    out = pd.concat(frames, ignore_index=True)
    out[CUSTOMER_ID] = out[CUSTOMER_ID].astype("category")
    return out


# ----------------------------------------------------------------------------- orders


@dataclass
class Lines:
    """Order lines of one chunk as parallel arrays (``order`` is a chunk-local order key)."""

    order: np.ndarray
    customer: np.ndarray
    day: np.ndarray
    item: np.ndarray
    quantity: np.ndarray

    def take(self, index: np.ndarray) -> Lines:
        return Lines(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def extend(self, other: Lines) -> Lines:
        fields = dataclasses.fields(self)
        return Lines(*(np.r_[getattr(self, f.name), getattr(other, f.name)] for f in fields))


def _rank_in_group(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of ``counts`` consecutive elements."""
    starts = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(starts, counts)


def _purchase_days(
    cust: Customers, cal: Calendar, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD order events of the window: (customer, day) sorted by customer and day, and the day
    each customer is alive until (the window end if they did not drop out)."""
    n, n_days = len(cust), len(cal.cum_weight) - 1
    budget = rng.geometric(cust.dropout)  # purchases until dropout, the last one included
    budget -= rng.poisson(cust.rate * np.maximum(-cust.signup_day, 0))  # used up before start
    active_from = np.maximum(cust.signup_day, 0)
    w_from = np.interp(active_from, np.arange(n_days + 1), cal.cum_weight)
    w_end = cal.cum_weight[-1]
    n_free = rng.poisson(cust.rate * (w_end - w_from))
    who = np.repeat(np.arange(n), n_free)
    u = w_from[who] + rng.random(len(who)) * (w_end - w_from[who])
    day = np.searchsorted(cal.cum_weight, u, side="right") - 1
    at_signup = np.flatnonzero((cust.signup_day >= 0) & (rng.random(n) < FIRST_ORDER_AT_SIGNUP))
    who = np.r_[who, at_signup]
    day = np.clip(np.r_[day, np.floor(cust.signup_day[at_signup])], 0, n_days - 1).astype(np.int64)
    order = np.lexsort((day, who))
    who, day = who[order], day[order]
    counts = np.bincount(who, minlength=n)
    keep = _rank_in_group(counts) < budget[who]
    who, day = who[keep], day[keep]
    kept = np.bincount(who, minlength=n)
    last = np.full(n, -1)
    last[kept > 0] = day[np.cumsum(kept)[kept > 0] - 1]  # sorted by day within customer
    alive_until = np.where(counts >= budget, last, n_days)
    return who, day, alive_until


def _draw_rows(cum_rows: np.ndarray, row: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of a column per element, each from its own row of cumulative weights."""
    k = cum_rows.shape[1]
    flat = (cum_rows + np.arange(len(cum_rows))[:, None]).ravel()
    return np.searchsorted(flat, row + u, side="right") - row * k


def _cumulative(weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(weights, axis=-1)
    cum /= cum[..., -1:]
    cum[..., -1] = 1.0
    return cum


def _draw_categories(
    cust: Customers,
    catalog: Catalog,
    cal: Calendar,
    who: np.ndarray,
    day: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    category = _draw_rows(_cumulative(cust.affinity), who, rng.random(len(who)))
    gift_weight = catalog.category_share * catalog.gift
    if gift_weight.sum() > 0:
        boost = np.flatnonzero(rng.random(len(who)) < cal.gift_share[day])
        gift_cum = _cumulative(gift_weight)[None, :]
        category[boost] = _draw_rows(gift_cum, np.zeros(len(boost), int), rng.random(len(boost)))
    return category


def _draw_items(catalog: Catalog, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pos = np.searchsorted(catalog.cum_flat, category + rng.random(len(category)), side="right")
    return catalog.by_category[pos]


def _uniform_items(catalog: Catalog, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    offset = np.floor(rng.random(len(category)) * catalog.cat_size[category]).astype(np.int64)
    return catalog.by_category[catalog.cat_first[category] + offset]


def _launched_items(
    catalog: Catalog, category: np.ndarray, day: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Zipf draws; items not on sale yet are redrawn, then replaced by the category's top item."""
    item = _draw_items(catalog, category, rng)
    for _ in range(LAUNCH_REDRAWS):
        early = np.flatnonzero(catalog.launch_day[item] > day)
        item[early] = _draw_items(catalog, category[early], rng)
    early = catalog.launch_day[item] > day
    item[early] = catalog.by_category[catalog.cat_first[category[early]]]
    return item


def _owned_durables(catalog: Catalog, lines: Lines) -> np.ndarray:
    """Lines buying a durable item the same customer bought before."""
    order = np.lexsort((lines.day, lines.item, lines.customer))
    customer, item = lines.customer[order], lines.item[order]
    same = np.r_[False, (np.diff(customer) == 0) & (np.diff(item) == 0)]
    return order[same & ~catalog.consumable[catalog.category[item]]]


def _avoid_owned_durables(catalog: Catalog, lines: Lines, rng: np.random.Generator) -> Lines:
    """Durables a customer already owns are redrawn (uniformly in their category) a few times;
    the lines that still repeat one are dropped (the customer bought nothing of that kind)."""
    for _ in range(DURABLE_REDRAWS):
        again = _owned_durables(catalog, lines)
        new = _uniform_items(catalog, catalog.category[lines.item[again]], rng)
        ok = catalog.launch_day[new] <= lines.day[again]
        lines.item[again[ok]] = new[ok]
    keep = np.ones(len(lines.item), dtype=bool)
    keep[_owned_durables(catalog, lines)] = False
    return lines.take(keep)


def _drop_repeated_in_order(lines: Lines) -> Lines:
    key = lines.order * (int(lines.item.max(initial=0)) + 1) + lines.item
    _, first = np.unique(key, return_index=True)
    return lines.take(np.sort(first))


def _quantities(
    catalog: Catalog, cust: Customers, who: np.ndarray, item: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    cheap = catalog.consumable[catalog.category[item]] & (catalog.step_price[item, 0] < CHEAP_PRICE)
    extra = rng.poisson(np.where(cheap, CHEAP_QTY_EXTRA, QTY_EXTRA))
    factor = np.array([v[2] for v in SEGMENTS.values()])[cust.segment[who]]
    return np.minimum(np.round((1 + extra) * factor), MAX_QUANTITY)


def _baskets(
    cust: Customers,
    catalog: Catalog,
    cal: Calendar,
    who: np.ndarray,
    day: np.ndarray,
    rng: np.random.Generator,
) -> Lines:
    """Expand order events into 1..n lines each, with category, item and quantity."""
    n_lines = np.minimum(1 + rng.poisson(BASKET_EXTRA_LINES, len(who)), MAX_BASKET_LINES)
    order = np.repeat(np.arange(len(who)), n_lines)
    who, day = who[order], day[order]
    category = _draw_categories(cust, catalog, cal, who, day, rng)
    item = _launched_items(catalog, category, day, rng)
    lines = Lines(order, who, day, item, np.zeros(len(order)))
    lines = _drop_repeated_in_order(_avoid_owned_durables(catalog, lines, rng))
    lines.order = np.unique(lines.order, return_inverse=True)[1]  # orders left empty are gone
    lines.quantity = _quantities(catalog, cust, lines.customer, lines.item, rng)
    return lines


def _refills(
    lines: Lines, catalog: Catalog, alive_until: np.ndarray, n_orders: int, rng: np.random.Generator
) -> Lines:
    """Each consumable line starts a chain of single-line refill orders of the same item."""
    category = catalog.category[lines.item]
    source = np.flatnonzero(catalog.consumable[category])
    n_refills = np.minimum(rng.geometric(REFILL_STOP_PROB, len(source)) - 1, MAX_REFILLS)
    parent = np.repeat(source, n_refills)
    interval_days = np.array([s.refill_days for s in catalog.specs])[category[parent]]
    gap = np.maximum(
        interval_days * rng.gamma(REFILL_GAMMA_SHAPE, 1 / REFILL_GAMMA_SHAPE, len(parent)),
        MIN_REFILL_DAYS,
    )
    total = np.cumsum(gap)
    group_start = np.cumsum(n_refills) - n_refills
    before = np.repeat(np.r_[0.0, total][group_start], n_refills)
    day = np.floor(lines.day[parent] + total - before).astype(np.int64)
    keep = day < alive_until[lines.customer[parent]]
    parent, day = parent[keep], day[keep]
    order = n_orders + np.arange(len(parent))
    return Lines(order, lines.customer[parent], day, lines.item[parent], lines.quantity[parent])


def _returns(
    lines: Lines,
    catalog: Catalog,
    order_day: np.ndarray,
    n_days: int,
    scale: float,
    rng: np.random.Generator,
) -> tuple[Lines, int]:
    """A few lines come back later (a negative line in one return order per original order);
    returns the return lines and the number of return orders."""
    durable = ~catalog.consumable[catalog.category[lines.item]]
    rate = scale * np.where(durable, RETURN_RATE_DURABLE, RETURN_RATE_CONSUMABLE)
    back = np.flatnonzero(rng.random(len(lines.item)) < rate)
    delay = RETURN_MIN_DAYS + np.floor(rng.gamma(*RETURN_DELAY_GAMMA, len(order_day)))
    day = (order_day + delay).astype(np.int64)[lines.order[back]]
    back, day = back[day < n_days], day[day < n_days]
    originals, return_order = np.unique(lines.order[back], return_inverse=True)
    returned = lines.take(back)
    order = len(order_day) + return_order
    return Lines(order, returned.customer, day, returned.item, -returned.quantity), len(originals)


def _order_seconds(
    order_day: np.ndarray, order_customer: np.ndarray, cust: Customers, rng: np.random.Generator
) -> np.ndarray:
    """Order time in seconds since start: hour-of-day profile, never before the sign-up."""
    hour = rng.choice(24, len(order_day), p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    second = hour * 3600 + rng.integers(0, 3600, len(order_day))
    signup = cust.signup_day[order_customer]
    same_day = np.floor(signup) == order_day
    signup_second = (signup - np.floor(signup)) * SECONDS_PER_DAY
    later = signup_second + rng.random(len(order_day)) * (SECONDS_PER_DAY - 1 - signup_second)
    second = np.where(same_day, np.maximum(second, np.ceil(later)), second)
    return order_day * SECONDS_PER_DAY + second.astype(np.int64)


def _per_order(values: np.ndarray, order: np.ndarray, n_orders: int) -> np.ndarray:
    """The value of each order (all its lines share it)."""
    out = np.zeros(n_orders, dtype=values.dtype)
    out[order] = values
    return out


def _discounts(day: np.ndarray, cal: Calendar, rng: np.random.Generator) -> np.ndarray:
    discounted = rng.random(len(day)) < cal.discount_share[day]
    level = rng.choice(DISCOUNT_LEVELS, len(day), p=DISCOUNT_WEIGHTS / DISCOUNT_WEIGHTS.sum())
    return np.where(discounted, level, 0.0)


@dataclass(frozen=True)
class Chunk:
    """Everything one chunk of orders is built from."""

    config: ShopConfig
    catalog: Catalog
    calendar: Calendar
    item_ids: pd.Index
    order_width: int


def _chunk_lines(ctx: Chunk, cust: Customers, rng: np.random.Generator) -> tuple[Lines, int]:
    """All purchase, refill and return lines of a customer chunk, and the number of orders."""
    who, day, alive_until = _purchase_days(cust, ctx.calendar, rng)
    lines = _baskets(cust, ctx.catalog, ctx.calendar, who, day, rng)
    n_orders = int(lines.order.max(initial=-1)) + 1
    refills = _refills(lines, ctx.catalog, alive_until, n_orders, rng)
    lines, n_orders = lines.extend(refills), n_orders + len(refills.order)
    order_day = _per_order(lines.day, lines.order, n_orders)
    back, n_returns = _returns(
        lines, ctx.catalog, order_day, ctx.config.n_days, ctx.config.return_scale, rng
    )
    return lines.extend(back), n_orders + n_returns


def _order_frame(
    ctx: Chunk,
    cust: Customers,
    lines: Lines,
    n_orders: int,
    first_order: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Number orders chronologically, price the lines and build the contract frame."""
    order_day = _per_order(lines.day, lines.order, n_orders)
    order_customer = _per_order(lines.customer, lines.order, n_orders)
    seconds = _order_seconds(order_day, order_customer, cust, rng)
    app = rng.random(n_orders) < cust.app_share[order_customer]
    order_rank = np.empty(n_orders, dtype=np.int64)
    order_rank[np.lexsort((np.arange(n_orders), seconds))] = np.arange(n_orders)
    is_return = lines.quantity < 0
    discount = np.where(is_return, 0.0, _discounts(lines.day, ctx.calendar, rng))
    list_price = ctx.catalog.list_price(lines.item, lines.day)
    paid = np.maximum(np.round(list_price * (1 - discount), 2), 0.01)
    sort = np.lexsort((lines.item, order_rank[lines.order]))
    order_ids = _ids("O", range(first_order + 1, first_order + n_orders + 1), ctx.order_width)
    cust_ids = _customer_ids(ctx.config, cust.first, len(cust))
    o = lines.order[sort]
    return pd.DataFrame(
        {
            CUSTOMER_ID: _categorical(lines.customer[sort], cust_ids),
            ORDER_ID: _categorical(order_rank[o], order_ids),
            ITEM_ID: _categorical(lines.item[sort], ctx.item_ids),
            ORDERED_AT: _to_timestamps(ctx.config.start, seconds[o]),
            QUANTITY: lines.quantity[sort].astype(np.float64),
            UNIT_PRICE: paid[sort],
            DISCOUNT: discount[sort],
            CHANNEL: _categorical(app[o].astype(np.int8), list(CHANNELS)),
            IS_RETURN: is_return[sort],
        }
    )


def generate(config: ShopConfig) -> Iterator[pd.DataFrame]:
    """Order lines, one frame per customer chunk (contract columns, id columns categorical)."""
    catalog = _catalog(config)
    ctx = Chunk(
        config,
        catalog,
        _calendar(config),
        _item_ids(config),
        _width(config.n_customers * ORDER_ID_HEADROOM, 7),
    )
    next_order = 0
    for chunk in range(config.n_chunks):
        cust = _customers(config, chunk, catalog.category_share)
        rng = np.random.default_rng([config.seed, STREAM_ORDERS, chunk])
        lines, n_orders = _chunk_lines(ctx, cust, rng)
        yield _order_frame(ctx, cust, lines, n_orders, next_order, rng)
        next_order += n_orders


# ----------------------------------------------------------------------------- writing


def _as_export(frame: pd.DataFrame) -> pd.DataFrame:
    """Order ids as plain strings, as a shop's export has them.

    Written as a categorical, every Parquet row group would carry the whole chunk's order-id
    dictionary (millions of ids, decoded once per row group by every reader).
    """
    return frame.assign(**{ORDER_ID: frame[ORDER_ID].astype("str")})


def write_shop(config: ShopConfig, out_dir: str | Path, progress: bool = True) -> dict[str, int]:
    """Write ``orders.parquet/part-*.parquet``, ``items.parquet``, ``customers.parquet`` and
    ``shop.json`` into ``out_dir`` atomically (the folder is replaced whole); return row counts.
    """
    from rich.progress import Progress

    out_dir = Path(out_dir)
    counts = {"orders": 0, "order_lines": 0, "return_lines": 0, "items": 0, "customers": 0}
    log.debug("writing a synthetic shop to %s: %s", out_dir, config.to_dict())
    with atomic_dir(out_dir) as tmp, Progress(disable=not progress) as bar:
        task = bar.add_task("synthetic orders", total=config.n_chunks)
        parts = tmp / ORDERS_DIR
        parts.mkdir()
        for k, frame in enumerate(generate(config)):
            write_parquet(_as_export(frame), parts / PART_NAME.format(k))
            counts["order_lines"] += len(frame)
            counts["return_lines"] += int(frame[IS_RETURN].sum())
            counts["orders"] += len(frame[ORDER_ID].cat.categories)
            bar.advance(task)
            log.debug("chunk %d/%d: %d lines", k + 1, config.n_chunks, len(frame))
        items = items_table(config)
        write_parquet(items, tmp / ITEMS_FILE)
        customers = customers_table(config)
        write_parquet(customers, tmp / CUSTOMERS_FILE)
        counts["items"], counts["customers"] = len(items), len(customers)
        write_json({"config": config.to_dict(), "counts": counts}, tmp / SHOP_FILE)
    log.debug("wrote %s: %s", out_dir, counts)
    return counts
