"""Ingestion: readers, adapters, validation rules and every unusable-file case."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.adapters import category_from_name, load_mapping
from features.io import atomic_dir, load_dataset, read_file
from features.schema import IS_RETURN, ContractError, contract_markdown, purchases
from features.validation import validate_orders

GOOD = pd.DataFrame(
    {
        "customer_id": ["c1", "c1", "c2", "c3"],
        "order_id": ["o1", "o1", "o2", "o3"],
        "item_id": ["i1", "i2", "i1", "i3"],
        "ordered_at": ["2024-01-01 10:00", "2024-01-01 10:00", "2024-01-05", "2024-02-01"],
        "quantity": ["1", "2", "3", "1"],
        "unit_price": ["9.5", "3", "9.5", "20"],
    }
)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def rules(result) -> dict[str, tuple[int, str]]:  # type: ignore[no-untyped-def]
    return {r.rule: (r.rows, r.action) for r in result.report.rules}


def test_clean_file_round_trips_with_contract_types(tmp_path: Path) -> None:
    ds = load_dataset(write_csv(GOOD, tmp_path / "orders.csv"))
    o = ds.orders
    assert len(o) == 4 and ds.reports[0].rows_quarantined == 0
    assert isinstance(o["customer_id"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_datetime64_any_dtype(o["ordered_at"])
    assert o["quantity"].tolist() == [1.0, 2.0, 3.0, 1.0]
    assert not o[IS_RETURN].any()
    assert ds.sources[0].rows == 4 and len(ds.sources[0].sha256) == 64


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_folder_with_each_file_type(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"orders{suffix}"
    if suffix == ".parquet":
        GOOD.to_parquet(path)
    else:
        GOOD.to_csv(path, index=False, compression="gzip" if suffix.endswith("gz") else None)
    pd.DataFrame({"item_id": ["i1", "i2"], "category": ["tea", "mugs"]}).to_csv(
        tmp_path / "items.csv", index=False
    )
    ds = load_dataset(tmp_path)
    assert len(ds.orders) == 4
    assert ds.items is not None and len(ds.items) == 2
    assert rules(ds.reports[0] and _wrap(ds))["unknown_item"] == (1, "kept")


def _wrap(ds):  # type: ignore[no-untyped-def]
    class R:
        report = ds.reports[0]

    return R


def test_every_row_rule_is_counted_and_quarantined_with_reason() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["c1", None, "c2", "c3", "c4", "c5", "c6", "c7", "c1"],
            "order_id": ["o1", "o2", "o3", "o4", "o5", "o6", "o7", "C8", "o1"],
            "item_id": [
                "10001",
                "10001",
                "10001",
                "10001",
                "10001",
                "POST",
                "10002",
                "10001",
                "10001",
            ],
            "ordered_at": [
                "2024-01-01",
                "2024-01-01",
                "not a date",
                "2024-01-02",
                "2024-01-02",
                "2024-01-03",
                "2024-01-03",
                "2024-01-04",
                "2024-01-01",
            ],
            "quantity": ["1", "1", "1", "0", "1", "1", "-2", "-1", "1"],
            "unit_price": ["2", "2", "2", "2", "0", "2", "2", "2", "2"],
        }
    )
    result = validate_orders(raw, "test.csv", item_pattern=r"^\d{5}")
    got = rules(result)
    assert got["missing_customer"] == (1, "quarantined")
    assert got["unparseable_date"] == (1, "quarantined")
    assert got["zero_quantity"] == (1, "quarantined")
    assert got["non_positive_price"] == (1, "quarantined")
    assert got["non_product_code"] == (1, "quarantined")
    assert got["return"] == (2, "kept")
    assert got["duplicate_line"] == (1, "kept")
    rep = result.report
    assert rep.rows_in == rep.rows_kept + rep.rows_quarantined == 9
    assert sorted(result.quarantine["reason"]) == sorted(
        [
            "missing_customer",
            "unparseable_date",
            "zero_quantity",
            "non_positive_price",
            "non_product_code",
        ]
    )
    assert result.quarantine["source_row"].tolist() == [1, 2, 3, 4, 5]
    assert result.table[IS_RETURN].sum() == 2
    assert len(purchases(result.table)) == 2


def test_drop_duplicates_quarantines_them() -> None:
    raw = pd.concat([GOOD, GOOD.iloc[[0]]])
    result = validate_orders(raw, drop_duplicates=True)
    assert rules(result)["duplicate_line"] == (1, "quarantined")
    assert len(result.table) == 4


def test_drop_duplicates_from_the_mapping_file(tmp_path: Path) -> None:
    # the README offers drop_duplicates, but no command line, mapping or experiment reached it
    path = write_csv(pd.concat([GOOD, GOOD.iloc[[0, 0]]]), tmp_path / "orders.csv")
    mapping = tmp_path / "map.yaml"
    cols = "".join(f"  {c}: {c}\n" for c in GOOD.columns)
    mapping.write_text(f"columns:\n{cols}")
    kept = load_dataset(path, mapping=mapping)
    assert len(kept.orders) == 6
    by_rule = {r.rule: (r.rows, r.action) for r in kept.reports[0].rules}
    assert by_rule["duplicate_line"] == (2, "kept")
    mapping.write_text(f"columns:\n{cols}drop_duplicates: true\n")
    dropped = load_dataset(path, mapping=mapping)
    assert len(dropped.orders) == 4
    by_rule = {r.rule: (r.rows, r.action) for r in dropped.reports[0].rules}
    assert by_rule["duplicate_line"] == (2, "quarantined")
    assert len(dropped.quarantine["orders"]) == 2


def test_return_flag_from_order_prefix_via_mapping(tmp_path: Path) -> None:
    export = pd.DataFrame(
        {
            "Kunde": ["a", "a"],
            "Beleg": ["100", "R100"],
            "Artikel": ["x", "x"],
            "Datum": ["03.01.2024", "09.01.2024"],
            "Menge": ["2", "-1"],
            "Preis": ["1,5".replace(",", "."), "1.5"],
        }
    )
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "columns: {customer_id: Kunde, order_id: Beleg, item_id: Artikel, ordered_at: Datum,"
        " quantity: Menge, unit_price: Preis}\ndate_format: '%d.%m.%Y'\nreturn_order_prefix: R\n"
    )
    ds = load_dataset(write_csv(export, tmp_path / "export.csv"), mapping=mapping)
    assert ds.orders[IS_RETURN].tolist() == [False, True]
    assert ds.orders["ordered_at"].dt.day.tolist() == [3, 9]


def test_every_line_quarantined_is_one_clear_error(tmp_path: Path) -> None:
    """A mapping whose item_pattern matches no item quarantined everything; features then
    crashed with AttributeError on the empty table."""
    mapping = tmp_path / "map.yaml"
    columns = ", ".join(f"{c}: {c}" for c in GOOD.columns)
    mapping.write_text(f"columns: {{{columns}}}\nitem_pattern: '^[0-9]+$'\n")
    with pytest.raises(ContractError) as err:
        load_dataset(write_csv(GOOD, tmp_path / "orders.csv"), mapping=mapping)
    message = str(err.value)
    assert "orders.csv: every one of the 4 order lines was quarantined" in message
    assert "non_product_code: 4 rows" in message and "--mapping" in message
    assert "\n" not in message


def test_mapping_toml_and_bad_mapping_files(tmp_path: Path) -> None:
    good = tmp_path / "m.toml"
    good.write_text('[columns]\ncustomer_id = "cust"\n')
    assert load_mapping(good).columns == {"customer_id": "cust"}
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("columns: {customer: cust}\n")
    with pytest.raises(ContractError, match="unknown contract column"):
        load_mapping(bad_key)
    extra = tmp_path / "extra.yaml"
    extra.write_text("columns: {}\ncolour: red\n")
    with pytest.raises(ContractError) as err:
        load_mapping(extra)
    # one line naming the key, not pydantic's multi-line text
    assert (
        str(err.value) == f"{extra}: invalid mapping file: colour: Extra inputs are not permitted"
    )
    with pytest.raises(ContractError, match="not found"):
        load_mapping(tmp_path / "missing.yaml")


def test_mapping_names_column_absent_from_file(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns: {customer_id: Kunde}\n")
    with pytest.raises(ContractError, match=r"mapped column\(s\) \['Kunde'\]"):
        load_dataset(write_csv(GOOD, tmp_path / "o.csv"), mapping=mapping)


# ---- unusable files: a clear error naming file, column and example rows ----


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    path = write_csv(GOOD.drop(columns=["unit_price"]), tmp_path / "orders.csv")
    with pytest.raises(
        ContractError, match=r"orders\.csv: missing required column\(s\) \['unit_price'\]"
    ):
        load_dataset(path)


def test_wrong_type_column_names_examples(tmp_path: Path) -> None:
    bad = GOOD.assign(quantity=["one", "two", "three", "4"])
    with pytest.raises(ContractError, match=r"column 'quantity' should be float.*row 0: 'one'"):
        load_dataset(write_csv(bad, tmp_path / "orders.csv"))


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ContractError, match="empty"):
        load_dataset(empty)
    header = tmp_path / "header.csv"
    header.write_text(",".join(GOOD.columns) + "\n")
    with pytest.raises(ContractError, match="empty"):
        load_dataset(header)


def test_fake_gzip_and_garbage_parquet(tmp_path: Path) -> None:
    fake = tmp_path / "orders.csv.gz"
    fake.write_text("customer_id,order_id\n")
    with pytest.raises(ContractError, match=r"orders\.csv\.gz: cannot read"):
        read_file(fake)
    garbage = tmp_path / "orders.parquet"
    garbage.write_bytes(b"PAR1 not really")
    with pytest.raises(ContractError, match=r"orders\.parquet: cannot read"):
        read_file(garbage)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv.gz"
    payload = gzip.compress(GOOD.to_csv(index=False).encode() * 50)
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ContractError, match="cannot read"):
        read_file(path)


def test_unsupported_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "orders.xlsx").write_text("x")
    with pytest.raises(ContractError, match="unsupported file type"):
        load_dataset(tmp_path / "orders.xlsx")
    with pytest.raises(ContractError, match="no such file"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(ContractError, match=r"no orders\.parquet"):
        load_dataset(tmp_path)


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="unknown format"):
        load_dataset(write_csv(GOOD, tmp_path / "o.csv"), fmt="excel")


def test_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(GOOD.to_csv(index=False).replace("c1", "cé").encode("utf-16"))
    with pytest.raises(ContractError):
        load_dataset(path)


def test_mixed_date_formats_are_parsed_or_quarantined() -> None:
    raw = GOOD.assign(ordered_at=["2024-01-01", "2024/01/02", "01 Feb 2024", "31-31-2024"])
    result = validate_orders(raw)
    assert rules(result)["unparseable_date"] == (1, "quarantined")
    assert result.table["ordered_at"].dt.month.tolist() == [1, 1, 2]


def test_float_ids_become_clean_strings() -> None:
    raw = GOOD.assign(customer_id=[17850.0, 17850.0, 12345.0, np.nan])
    result = validate_orders(raw)
    assert list(result.table["customer_id"].astype(str)) == ["17850", "17850", "12345"]


def test_infinite_and_negative_values() -> None:
    raw = GOOD.assign(unit_price=["inf", "-1", "2", "2"])
    got = rules(validate_orders(raw))
    assert got["bad_price"] == (1, "quarantined")
    assert got["non_positive_price"] == (1, "quarantined")


def test_atomic_dir_keeps_old_output_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("new")
        raise RuntimeError("boom")
    assert (target / "keep.txt").read_text() == "old"
    assert not (target / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_category_from_name() -> None:
    names = pd.Series(["WHITE HANGING HEART T-LIGHT HOLDER", "SET OF 3 CAKE TINS", None])
    assert category_from_name(names).tolist() == ["HOLDER", "TINS", "OTHER"]


def test_contract_docs_list_every_required_column() -> None:
    text = contract_markdown()
    for col in ("customer_id", "order_id", "item_id", "ordered_at", "quantity", "unit_price"):
        assert f"| `{col}` |" in text


# ---- SQL sources: real PostgreSQL and MariaDB on loopback, each test its own database ----


def _server(url: str):  # type: ignore[no-untyped-def]
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except Exception as exc:  # any driver error means: no server here
        pytest.skip(f"no database server at {url}: {type(exc).__name__}")
    return engine


@pytest.mark.integration
@pytest.mark.parametrize(
    "admin_url,url_template",
    [
        (
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
            "postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        ),
        ("mysql+pymysql://root@127.0.0.1:3306/", "mysql+pymysql://root@127.0.0.1:3306/{db}"),
    ],
    ids=["postgresql", "mariadb"],
)
def test_sql_table_and_query(admin_url: str, url_template: str) -> None:
    import sqlalchemy as sa

    admin = _server(admin_url)
    db = f"shopml_test_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    try:
        url = url_template.format(db=db)
        frame = GOOD.assign(ordered_at=pd.to_datetime(GOOD["ordered_at"], format="mixed"))
        frame = frame.astype({"quantity": int, "unit_price": float})
        engine = sa.create_engine(url)
        frame.to_sql("orders", engine, index=False)
        engine.dispose()
        ds = load_dataset(url)
        assert len(ds.orders) == 4 and ds.reports[0].rows_quarantined == 0
        ds = load_dataset(url, sql_query="SELECT * FROM orders WHERE customer_id = 'c1'")
        assert len(ds.orders) == 2
        with pytest.raises(ContractError, match="cannot read"):
            load_dataset(url, sql_table="no_such_table")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))


@pytest.mark.integration
def test_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "shop.db"  # connecting created an empty file, then "no such table"
    with pytest.raises(ContractError, match=r"no such SQLite database file .*shop\.db"):
        load_dataset(f"sqlite:///{missing}", sql_table="orders")
    assert not missing.exists()
    raw = GOOD.copy()
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{missing}")
    raw.to_sql("orders", engine, index=False)
    engine.dispose()
    assert len(load_dataset(f"sqlite:///{missing}", sql_table="orders").orders) == 4


def test_sql_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(ContractError, match=r"127\.0\.0\.1:1/x: cannot read"):
        load_dataset("postgresql+psycopg://u:secret@127.0.0.1:1/x")


def test_sql_password_never_in_error() -> None:
    with pytest.raises(ContractError) as info:
        load_dataset("postgresql+psycopg://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(info.value)


# ---- real data: numbers verified by hand against the raw file ----


@pytest.mark.realdata
def test_online_retail_cleaned_counts(online_retail) -> None:  # type: ignore[no-untyped-def]
    rep = online_retail.reports[0]
    got = {r.rule: r.rows for r in rep.rules}
    assert rep.rows_in == 541_909
    assert got["missing_customer"] == 135_080
    assert got["non_product_code"] == 1_913
    assert got["non_positive_price"] == 40
    assert got["return"] == 8_539
    assert got["duplicate_line"] == 5_222
    assert rep.rows_kept + rep.rows_quarantined == rep.rows_in
    buys = purchases(online_retail.orders)
    assert len(buys) == 396_337
    assert buys["customer_id"].nunique() == 4_334
    assert buys["order_id"].nunique() == 18_402
    assert buys["item_id"].nunique() == 3_659
    before = buys[buys["ordered_at"] < "2011-09-01"]
    assert before["customer_id"].nunique() == 3_314


@pytest.mark.realdata
def test_cdnow_keeps_every_customer(cdnow_path: Path) -> None:
    ds = load_dataset(cdnow_path)
    assert ds.orders["customer_id"].nunique() == 23_570
    assert {r.rule: r.rows for r in ds.reports[0].rules}["free_item"] == 80


def test_readme_documents_the_contract_as_coded() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert contract_markdown().strip() in readme


def test_parquet_ids_become_categoricals_in_order_of_appearance(tmp_path: Path) -> None:
    """Dictionary row groups with their own dictionaries and plain-string ids read alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups = [(["c2", None, "c1"], ["o2", "o2", "o1"]), (["c3", "c1", "c3"], [" o3", "o1", "o4"])]
    path = tmp_path / "orders.parquet"
    schema = pa.schema(
        [("customer_id", pa.dictionary(pa.int32(), pa.string())), ("order_id", pa.string())]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for customers, orders in groups:
            cust = pa.array(customers).dictionary_encode()  # each row group: its own dictionary
            writer.write_table(pa.table({"customer_id": cust, "order_id": pa.array(orders)}))
    raw = read_file(path)
    assert raw["customer_id"].cat.categories.tolist() == ["c2", "c1", "c3"]
    assert raw["customer_id"].cat.codes.tolist() == [0, -1, 1, 2, 1, 2]
    assert raw["order_id"].cat.categories.tolist() == ["o2", "o1", " o3", "o4"]
    v = validate_orders(
        raw.assign(item_id="i", ordered_at="2024-01-01", quantity=1.0, unit_price=1.0)
    )
    # as for ids read from CSV: stripped, so " o3" is order "o3"
    assert v.table["order_id"].astype(str).tolist() == ["o2", "o1", "o3", "o1", "o4"]
    assert v.report.rows_quarantined == 1  # the missing customer


def test_whitespace_only_categorical_ids_are_missing() -> None:
    raw = GOOD.assign(customer_id=pd.Categorical(["c1", " c1 ", "  ", "c3"]))
    v = validate_orders(raw)
    assert v.table["customer_id"].cat.categories.tolist() == ["c1", "c3"]
    assert v.table["customer_id"].astype(str).tolist() == ["c1", "c1", "c3"]
    assert rules(v)["missing_customer"] == (1, "quarantined")


def test_duplicate_lines_within_and_across_order_layouts() -> None:
    """Repeats found by comparing rows of one order (contiguous orders) or by hashing (not)."""
    rows = [
        ("c1", "o1", "i1", "2024-01-01", "1", "2"),
        ("c1", "o1", "i2", "2024-01-01", "1", "2"),
        ("c1", "o1", "i1", "2024-01-01", "1", "2"),  # duplicate of row 0, two rows later
        ("c1", "o1", "i1", "2024-01-01", "3", "2"),  # same order and item, other quantity
        ("c2", "o2", "i1", "2024-01-02", "1", "2"),
    ]
    frame = pd.DataFrame(rows, columns=list(GOOD.columns))
    contiguous = validate_orders(frame)
    assert rules(contiguous)["duplicate_line"] == (1, "kept")
    assert contiguous.report.rules[-1].examples == [2]
    scattered = validate_orders(frame.iloc[[0, 4, 1, 2, 3]].reset_index(drop=True))
    assert rules(scattered)["duplicate_line"] == (1, "kept")
    assert scattered.report.rules[-1].examples == [3]


def test_dates_with_utc_offsets_across_daylight_saving_are_converted_to_utc(
    tmp_path: Path,
) -> None:
    # a shop export in local time with its offset: +01:00 in winter, +02:00 in summer (and one
    # line without offset); pandas refused the column as a whole ("Mixed timezones detected")
    raw = GOOD.assign(
        ordered_at=[
            "2024-01-01 10:00:00+01:00",
            "2024-01-01T10:00:00+0100",
            "2024-07-05 23:30:00+02:00",
            "2024-02-01 08:00:00",
        ]
    )
    result = validate_orders(raw)
    assert "unparseable_date" not in rules(result)
    assert result.table["ordered_at"].dt.tz is None
    assert [str(t) for t in result.table["ordered_at"]] == [
        "2024-01-01 09:00:00",
        "2024-01-01 09:00:00",
        "2024-07-05 21:30:00",
        "2024-02-01 08:00:00",
    ]
    # the same with the mapping's date_format, end to end from a CSV
    export = raw.rename(columns={"ordered_at": "Order Date"})
    export["Order Date"] = ["01/01/2024 10:00 +0100"] * 2 + ["05/07/2024 23:30 +0200"] * 2
    path = write_csv(export, tmp_path / "export.csv")
    mapping = tmp_path / "m.yaml"
    cols = {c: c for c in GOOD.columns if c != "ordered_at"} | {"ordered_at": "Order Date"}
    mapping.write_text(
        "columns:\n"
        + "".join(f"  {k}: {v}\n" for k, v in cols.items())
        + 'date_format: "%d/%m/%Y %H:%M %z"\n'
    )
    ds = load_dataset(path, mapping=mapping)
    assert ds.orders["ordered_at"].dt.hour.tolist() == [9, 9, 21, 21]


def test_atomic_dir_never_replaces_a_folder_holding_other_data(tmp_path: Path) -> None:
    # `shopml score --out data` (or features --out .) replaced the whole folder: data/demo and
    # everything else in it were deleted
    data = tmp_path / "data"
    (data / "demo").mkdir(parents=True)
    (data / "demo" / "orders.parquet").write_text("the shop's orders")
    (data / "notes.txt").write_text("mine")
    refused = r"data: not replaced: .*\(demo, notes.txt\)"
    with pytest.raises(FileExistsError, match=refused), atomic_dir(data) as tmp:
        (tmp / "customers.parquet").write_text("scores")
    assert (data / "demo" / "orders.parquet").read_text() == "the shop's orders"
    assert sorted(p.name for p in data.iterdir()) == ["demo", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary left
    # an earlier output of the same kind is replaced whole (a file it no longer writes goes)
    out = tmp_path / "scores"
    with atomic_dir(out) as tmp:
        for name in ("customers", "forecasts", "inventory", "labels"):
            (tmp / f"{name}.parquet").write_text("v1")
    with atomic_dir(out) as tmp:
        for name in ("customers", "forecasts", "inventory"):
            (tmp / f"{name}.parquet").write_text("v2")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "customers.parquet",
        "forecasts.parquet",
        "inventory.parquet",
    ]
    assert (out / "customers.parquet").read_text() == "v2"
    # ... but not once someone put a file of their own beside it
    (out / "report.xlsx").write_text("mine")
    with pytest.raises(FileExistsError, match=r"report.xlsx"), atomic_dir(out) as tmp:
        (tmp / "customers.parquet").write_text("v3")
    assert (out / "customers.parquet").read_text() == "v2"
    # nor an output of another kind (scores over a demo shop folder)
    shop = tmp_path / "shop"
    with atomic_dir(shop) as tmp:
        for name in ("orders.parquet", "items.parquet", "customers.parquet", "shop.json"):
            (tmp / name).write_text("shop")
    with pytest.raises(FileExistsError), atomic_dir(shop) as tmp:
        for name in ("customers", "forecasts", "inventory"):
            (tmp / f"{name}.parquet").write_text("scores")
    assert (shop / "orders.parquet").read_text() == "shop"
    # an empty folder, and a folder written before the marker existed that the new output
    # overwrites entirely, are fine; a file in the way is refused
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as tmp:
        (tmp / "a.parquet").write_text("a")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "a.parquet").write_text("old")
    with atomic_dir(legacy) as tmp:
        (tmp / "a.parquet").write_text("new")
    assert (legacy / "a.parquet").read_text() == "new"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"), atomic_dir(tmp_path / "file"):
        pass


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_semicolon_exports_with_decimal_commas(tmp_path: Path, suffix: str) -> None:
    # a spreadsheet export from much of Europe: ';' between fields, ',' as decimal mark; it was
    # read as one column and refused as "missing required column(s) [every one of them]"
    text = (
        "Kunde;Beleg;Artikel;Datum;Menge;Preis\n"
        "c1;o1;i1;2024-01-01 10:00;1,5;1.234,50\n"
        "c2;o2;i2;2024-01-02 11:00;2;9,99\n"
    )
    path = tmp_path / f"export{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    assert list(read_file(path).columns) == ["Kunde", "Beleg", "Artikel", "Datum", "Menge", "Preis"]
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "columns: {customer_id: Kunde, order_id: Beleg, item_id: Artikel, ordered_at: Datum,"
        " quantity: Menge, unit_price: Preis}\ndecimal: ','\n"
    )
    ds = load_dataset(path, mapping=mapping)
    assert ds.orders["quantity"].tolist() == [1.5, 2.0]
    assert ds.orders["unit_price"].tolist() == [1234.5, 9.99]
    # a contract-named ';' file needs no mapping; a comma file is read as before
    plain = tmp_path / "orders.csv"
    plain.write_text(GOOD.to_csv(index=False, sep=";"))
    assert len(load_dataset(plain).orders) == 4
    write_csv(GOOD, plain)
    assert len(load_dataset(plain).orders) == 4
