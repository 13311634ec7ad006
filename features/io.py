"""The only module of :mod:`features` that reads or writes files and databases."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.adapters import ADAPTERS, Adapted, apply_mapping, detect_format, load_mapping
from features.arrays import categorical
from features.memory import map_large_arrays, release_unused_memory
from features.schema import CUSTOMER_ID, CUSTOMERS, ITEM_ID, ITEMS, ORDER_ID, ContractError
from features.threads import ThreadsSettingError, parallel_map
from features.validation import ValidationReport, validate_entities, validate_orders

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".csv.gz", ".csv")
ID_COLUMNS = (CUSTOMER_ID, ORDER_ID, ITEM_ID)
SQL_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite", "mssql", "oracle")


@dataclass
class SourceFile:
    """Where a table came from: path or URL, content hash, row count."""

    table: str
    path: str
    sha256: str
    rows: int


@dataclass
class Dataset:
    """Validated contract tables with their reports, quarantined rows and sources."""

    orders: pd.DataFrame
    items: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    reports: list[ValidationReport] = field(default_factory=list)
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: list[SourceFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: sources, validation reports, notes."""
        return {
            "sources": [s.__dict__ for s in self.sources],
            "validation": [r.to_dict() for r in self.reports],
            "notes": self.notes,
        }


def is_sql_url(data: str) -> bool:
    """True for a SQLAlchemy URL such as ``postgresql://user@host/db``."""
    scheme = data.split("://", 1)[0].split("+", 1)[0] if "://" in data else ""
    return scheme in SQL_SCHEMES


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_file(path: Path) -> pd.DataFrame:
    """Read a CSV (plain or gzip) or Parquet file (or a folder of Parquet parts) as raw text/types.

    Raises :class:`ContractError` naming the file when it cannot be read at all.
    """
    name = path.name.lower()
    try:
        if path.is_dir() or name.endswith(".parquet"):
            return read_parquet(path)
        if name.endswith(".csv.gz") or name.endswith(".csv"):
            if name.endswith(".gz"):
                with gzip.open(path, "rb") as fh:  # fail early and clearly on a fake .gz
                    fh.peek(1)
            return pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], sep=csv_separator(path)
            )
    except FileNotFoundError as exc:
        raise ContractError(f"{path}: file not found") from exc
    except ThreadsSettingError:
        raise  # a bad setting, not a bad file
    except (OSError, EOFError, ValueError, pa.ArrowException, UnicodeDecodeError) as exc:
        if isinstance(exc, pd.errors.EmptyDataError):
            raise ContractError(f"{path}: the file is empty") from exc
        raise ContractError(f"{path}: cannot read the file: {exc}") from exc
    raise ContractError(f"{path}: unsupported file type; use .csv, .csv.gz or .parquet")


#: Field separators a CSV export may use: spreadsheet exports in much of Europe use ``;``.
CSV_SEPARATORS = (",", ";", "\t", "|")


def csv_separator(path: Path) -> str:
    """The separator of a CSV file: the candidate of :data:`CSV_SEPARATORS` found most often in
    its header line (``,`` when none is). A ``;`` export was read as one column and refused as
    missing every required column."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        header = fh.readline(1 << 16).decode("utf-8", errors="replace")
    counts = {sep: header.count(sep) for sep in CSV_SEPARATORS}
    best = max(CSV_SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] > 0 else ","


def read_parquet(path: Path) -> pd.DataFrame:
    """Read Parquet (a file or a folder of parts); dictionary columns become one categorical.

    The contract's id columns (``customer_id``, ``order_id``, ``item_id``) stored as plain
    strings are dictionary-encoded by Arrow as well, so millions of ids never become Python
    strings. Columns are read one at a time per thread (:func:`~features.threads.parallel_map`),
    which keeps the Arrow copies small.
    """
    dataset = pq.ParquetDataset(path)
    names = [n for n in dataset.schema.names if not n.startswith("__index_level_")]

    def column_of(name: str) -> pd.Categorical | pd.Series:
        column = dataset.read([name]).column(0)
        if pa.types.is_dictionary(column.type) or (name in ID_COLUMNS and _is_text(column.type)):
            out: pd.Categorical | pd.Series = _categorical(column)
        else:
            out = column.to_pandas()
        del column
        pa.default_memory_pool().release_unused()
        return out

    columns = dict(zip(names, parallel_map(column_of, names), strict=True))
    return pd.DataFrame(columns, copy=False)


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _categorical(column: pa.ChunkedArray) -> pd.Categorical:
    """One categorical from a string or dictionary column (missing values get code -1).

    A single dictionary chunk keeps its dictionary's order. Otherwise the categories are the
    distinct values in order of first appearance (what ``dictionary_encode`` of the decoded values
    gives), computed without decoding: each distinct chunk dictionary is encoded once (the chunks
    of one row group share theirs) and the chunk indices are mapped through it.
    """
    if pa.types.is_dictionary(column.type) and column.num_chunks == 1:
        encoded = column.chunk(0)  # a dictionary from the file: check it has no repeats
        return _from_codes(_indices(encoded), encoded.dictionary, distinct=False)
    if not pa.types.is_dictionary(column.type):
        return _from_codes(*_encode_runs(column))
    which = []  # per chunk: the number of its distinct dictionary
    dictionaries: list[pa.Array] = []
    for chunk in column.chunks:
        d = chunk.dictionary
        if not dictionaries or not (
            _same_buffers(d, dictionaries[-1]) or d.equals(dictionaries[-1])
        ):
            dictionaries.append(d)
        which.append(len(dictionaries) - 1)
    unified = pc.dictionary_encode(pa.chunked_array(dictionaries).combine_chunks())
    remap = _indices(unified)
    starts = np.cumsum([0] + [len(d) for d in dictionaries])
    codes = np.concatenate(
        [_mapped(_indices(c), remap, starts[w]) for c, w in zip(column.chunks, which, strict=True)]
    )
    seen = pd.unique(codes[codes >= 0])  # unified codes in order of first appearance
    recode = np.full(len(unified.dictionary) + 1, -1, dtype=np.int64)
    recode[seen] = np.arange(len(seen))
    return _from_codes(recode[codes], unified.dictionary.take(pa.array(seen)))


def _encode_runs(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Codes (first-appearance order) and distinct values of a plain column, hashing run heads.

    Lines of one order (or one customer's lines in a sorted export) sit next to each other: only
    the first value of each run of equal values is hashed, and when those are strictly increasing
    (ids exported in order) nothing is hashed at all.
    """
    values = column.combine_chunks()
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), values
    change = pc.fill_null(pc.not_equal(values[1:], values[:-1]), True)
    new_run = np.r_[True, change.to_numpy(zero_copy_only=False)]
    heads = values.filter(pa.array(new_run))
    run = np.cumsum(new_run) - 1
    increasing = heads.null_count == 0 and (
        len(heads) < 2 or pc.all(pc.less(heads[:-1], heads[1:])).as_py()
    )
    if increasing:
        return run, heads
    encoded = pc.dictionary_encode(heads)
    return _indices(encoded)[run], encoded.dictionary


def _same_buffers(a: pa.Array, b: pa.Array) -> bool:
    """True when two arrays are views of the same memory (chunks of one row group)."""
    key = [(x.address, x.size) if x is not None else None for x in a.buffers()]
    return (
        a.offset == b.offset
        and len(a) == len(b)
        and key == [(x.address, x.size) if x is not None else None for x in b.buffers()]
    )


def _indices(chunk: pa.DictionaryArray) -> np.ndarray:
    """The chunk's dictionary indices as int64, -1 where the value is missing."""
    idx = chunk.indices
    if idx.null_count:
        idx = pc.fill_null(idx, -1)
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)


def _mapped(indices: np.ndarray, remap: np.ndarray, start: int) -> np.ndarray:
    if indices.min(initial=0) >= 0:  # no missing values
        return remap[indices + start]
    return np.where(indices >= 0, remap[np.maximum(indices, 0) + start], -1)


def _from_codes(codes: np.ndarray, dictionary: pa.Array, distinct: bool = True) -> pd.Categorical:
    """A categorical from codes into an Arrow dictionary (``distinct``: no repeated values)."""
    categories = pd.Index(dictionary.to_pandas())
    if pd.api.types.is_string_dtype(categories.dtype) or categories.dtype == object:
        categories = categories.astype("str")
    if distinct:
        return categorical(codes, categories)
    return pd.Categorical.from_codes(codes, categories=categories, validate=False)


def read_sql(url: str, table: str | None = None, query: str | None = None) -> pd.DataFrame:
    """Read an orders table or query through a SQLAlchemy URL."""
    import sqlalchemy as sa

    if (table is None) == (query is None):
        raise ContractError("give exactly one of a table name or a query for a SQL source")
    parsed = sa.engine.make_url(url)
    safe = parsed.render_as_string(hide_password=True)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).is_file()
    ):  # connecting would create an empty database file where the shop's data was expected
        raise ContractError(f"{safe}: no such SQLite database file {database}")
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ContractError(f"{safe}: cannot use this database URL: {exc}") from exc
    try:
        with engine.connect() as conn:
            stmt = (
                sa.text(query)
                if query
                else sa.select(sa.text("*")).select_from(sa.table(table or ""))
            )
            return pd.read_sql(stmt, conn)
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        reason = str(getattr(cause, "orig", None) or cause or exc).splitlines()[0]
        raise ContractError(f"{safe}: cannot read {table or 'query'}: {reason}") from exc
    finally:
        engine.dispose()


def find_table(folder: Path, name: str) -> Path | None:
    """``folder/name.parquet`` (file or folder of parts), ``.csv.gz`` or ``.csv``, if present."""
    for suffix in SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def load_dataset(
    data: str | Path,
    *,
    fmt: str = "auto",
    mapping: str | Path | None = None,
    sql_table: str | None = None,
    sql_query: str | None = None,
    drop_duplicates: bool = False,
) -> Dataset:
    """Read, adapt and validate a data folder, a single orders file or a SQL source.

    ``fmt`` is ``auto`` (detected from the column names), ``contract``, ``online-retail`` or
    ``cdnow``; ``mapping`` is a column-mapping file for a shop's own export. Memory freed by the
    read and validation is handed back to the system (:mod:`features.memory`).
    """
    map_large_arrays()
    data = str(data)
    sources: list[SourceFile] = []
    items_raw = customers_raw = None
    if is_sql_url(data):
        raw = read_sql(data, sql_table or (None if sql_query else "orders"), sql_query)
        import sqlalchemy as sa

        safe = sa.engine.make_url(data).render_as_string(hide_password=True)
        what = sql_query or sql_table or "orders"
        sources.append(
            SourceFile("orders", safe, hashlib.sha256(what.encode()).hexdigest(), len(raw))
        )
        orders_src = safe
    else:
        path = Path(data)
        if not path.exists():
            raise ContractError(f"{path}: no such file or folder")
        orders_path = find_table(path, "orders") if path.is_dir() else path
        if orders_path is None:
            if path.is_dir() and any(path.glob("*.parquet")):
                orders_path = path  # a folder of Parquet parts is the orders table itself
            else:
                raise ContractError(
                    f"{path}: no orders.parquet, orders.csv.gz or orders.csv in this folder"
                )
        raw = read_file(orders_path)
        orders_src = str(orders_path)
        sources.append(SourceFile("orders", orders_src, _hash(orders_path), len(raw)))
        if path.is_dir() and orders_path != path:
            for name in ("items", "customers"):
                found = find_table(path, name)
                if found is not None:
                    table = read_file(found)
                    sources.append(SourceFile(name, str(found), _hash(found), len(table)))
                    if name == "items":
                        items_raw = table
                    else:
                        customers_raw = table
    if mapping is not None:
        adapted = apply_mapping(raw, load_mapping(mapping), orders_src)
    else:
        chosen = detect_format(raw.columns) if fmt == "auto" else fmt
        if chosen == "contract":
            adapted = Adapted(raw)
        elif chosen in ADAPTERS:
            adapted = ADAPTERS[chosen](raw, orders_src)
        else:
            raise ContractError(
                f"unknown format {fmt!r}; use auto, contract, {', '.join(ADAPTERS)}"
            )
    dataset = validate_tables(
        adapted,
        orders_src,
        items_raw if items_raw is not None else adapted.items,
        customers_raw if customers_raw is not None else adapted.customers,
        sources,
        drop_duplicates=drop_duplicates or adapted.drop_duplicates,
    )
    del raw, adapted, items_raw, customers_raw  # the raw tables: freed, then handed back
    release_unused_memory()
    return dataset


def data_fingerprint(sources: list[SourceFile]) -> str:
    """One hash for a dataset's source files (changes when any of them changes)."""
    joined = "|".join(f"{s.table}:{s.sha256}" for s in sorted(sources, key=lambda s: s.table))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def folder_fingerprint(data: str | Path) -> str | None:
    """:func:`data_fingerprint` of a data folder or file without loading it (None for SQL)."""
    if is_sql_url(str(data)):
        return None
    path = Path(data)
    if not path.exists():
        return None
    tables = (
        {"orders": path}
        if not path.is_dir() or find_table(path, "orders") is None
        else {n: find_table(path, n) for n in ("orders", "items", "customers")}
    )
    sources = [SourceFile(n, str(p), _hash(p), 0) for n, p in tables.items() if p is not None]
    return data_fingerprint(sources)


def _hash(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for part in sorted(path.rglob("*.parquet")):
            digest.update(file_sha256(part).encode())
        return digest.hexdigest()
    return file_sha256(path)


def validate_tables(
    adapted: Adapted,
    source: str,
    items_raw: pd.DataFrame | None,
    customers_raw: pd.DataFrame | None,
    sources: list[SourceFile],
    *,
    drop_duplicates: bool = False,
) -> Dataset:
    """Validate adapted tables; orders are checked against the item catalogue when there is one."""
    reports, quarantine = [], {}
    items = customers = None
    where = {s.table: s.path for s in sources}
    if items_raw is not None:
        v = validate_entities(items_raw, ITEMS, where.get("items", f"{source} (items)"))
        items, quarantine["items"] = v.table, v.quarantine
        reports.append(v.report)
    if customers_raw is not None:
        v = validate_entities(
            customers_raw, CUSTOMERS, where.get("customers", f"{source} (customers)")
        )
        customers, quarantine["customers"] = v.table, v.quarantine
        reports.append(v.report)
    known = pd.Index(items[ITEM_ID].astype(str)) if items is not None else None
    v = validate_orders(
        adapted.orders,
        source,
        date_format=adapted.date_format,
        item_pattern=adapted.item_pattern,
        known_items=known,
        drop_duplicates=drop_duplicates,
        zero_price_ok=adapted.zero_price_ok,
    )
    if v.report.rows_in and not v.report.rows_kept:
        raise ContractError(nothing_left(v.report))
    reports.insert(0, v.report)
    quarantine["orders"] = v.quarantine
    return Dataset(v.table, items, customers, reports, quarantine, sources, list(adapted.notes))


def nothing_left(report: ValidationReport) -> str:
    """The one-line error for an orders table whose every row was quarantined (the rules that
    took the most rows first): features and models would have nothing to read."""
    rules = sorted(report.rules, key=lambda r: -r.rows)[:3]
    why = "; ".join(f"{r.rule}: {r.rows:,} rows, {r.detail} (rows {r.examples[:3]})" for r in rules)
    return (
        f"{report.source}: every one of the {report.rows_in:,} order lines was quarantined "
        f"({why}); check the column mapping (--mapping) or --format"
    )


#: Written into every folder :func:`atomic_dir` produces: the names it wrote there.
OUTPUT_MARKER = ".shopml-output.json"


def _replaceable(target: Path, new: set[str]) -> str | None:
    """Why the existing folder ``target`` must not be replaced by an output with the entries
    ``new``, or ``None`` when it may be.

    It may when it is empty or holds only an earlier output of the same kind: every entry was
    written by :func:`atomic_dir` (its marker lists them) and at least half of the entries of the
    old and new outputs share their names (features over features, scores over scores; not
    scores over a data folder), or, for a folder written before the marker existed, when the new
    output overwrites every entry. Anything else is somebody's data: ``--out data`` must not
    delete ``data/demo``.
    """
    if not target.is_dir():
        return "it is a file, not a folder"
    existing = {p.name for p in target.iterdir()} - {OUTPUT_MARKER}
    if not existing:
        return None
    marker = target / OUTPUT_MARKER
    owned: set[str] = set()
    if marker.is_file():
        try:
            owned = set(json.loads(marker.read_text()).get("files", []))
        except (ValueError, AttributeError, OSError):
            owned = set()
        same_kind = 2 * len(owned & new) >= len(owned | new)
        foreign = sorted(existing - owned) if same_kind else sorted(existing)
    else:
        foreign = sorted(existing - new)
    if not foreign:
        return None
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return f"it holds files this command did not write ({shown})"


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Write into a temporary sibling folder and move it into place only when all went well.

    A failure leaves an existing ``target`` untouched; success replaces it whole, but only when
    it is empty or an earlier output of the same kind (:func:`_replaceable`); a folder holding
    anything else raises :class:`FileExistsError` naming it and is left untouched. The output
    carries a small marker file (:data:`OUTPUT_MARKER`) listing what was written.
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: not replaced: it is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the result should not be
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir() if p.name != OUTPUT_MARKER)
        (tmp / OUTPUT_MARKER).write_text(json.dumps({"files": written}) + "\n")
        if target.exists():
            why = _replaceable(target, set(written))
            if why is not None:
                raise FileExistsError(
                    f"{target}: not replaced: {why}; choose a new or empty folder"
                )
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a frame to Parquet (no index)."""
    df.to_parquet(path, index=False)


def write_json(obj: Any, path: Path) -> None:
    """Write JSON with stable key order and readable indentation."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
