"""The warehouse interface every backend implements, and what is written once for all of them.

A ``Warehouse`` stores each stream in one table ``<schema>.<name>`` (see ``tables.py``) with exactly
one row per primary key: the newest version by the stream's cursor field, whatever order windows
are committed in. Data arrives through a ``Load``: one time window's pages are staged outside the
table (``write_batch``, page by page, constant memory), then ``commit`` merges them and records the
stream's cursor state in ONE transaction. A load that is aborted, or never committed, changes
nothing.

Row semantics of ``commit`` (every backend):

- within a load, duplicate keys keep the greatest cursor (ties: the last written);
- against the table, the incoming row wins when its cursor is newer or equal (idempotent re-runs);
  a null cursor counts as the oldest; without a cursor field the latest write wins;
- ``LoadResult`` counts keys after dedup: ``inserted`` (new key), ``updated`` (content changed),
  ``unchanged`` (identical content, or an older version than the table's).

Written once here, on dialect hooks each backend sets (type spellings, placeholder, catalogue
query, DDL lock, transactions): schema evolution (``_ensure``), ``ensure_table``, ``read_records``,
``read_frame``, ``row_count`` and ``read_state``. The staging and the merge of a ``Load`` are each
backend's own. This module imports no backend: ``registry.py`` maps URL schemes to backend classes.
``Warehouse.url`` never shows a password.
"""

from __future__ import annotations

import contextlib
import json
import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from integrations_pipeline.engine.errors import IntegrationsError
from integrations_pipeline.engine.redact import redact_url

from .tables import EXTRA_COLUMN, SYNCED_AT_COLUMN, Column, TableSpec

if TYPE_CHECKING:
    import pandas

#: ``merge(stored_state, new_state) -> state_to_keep``, run inside a load's commit transaction.
StateMerge = Callable[["dict | None", "dict | None"], "dict | None"]
#: The cursor-state table, in every backend: ``_integrations.cursor_state(state_key, state, updated_at)``.
STATE_SCHEMA = "_integrations"
STATE_TABLE = "cursor_state"


def _json_default(value: Any) -> Any:
    """Values a decoded API body never holds but callers might pass: datetimes, dates, decimals, UUIDs."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        return (
            int(value)
            if isinstance(exponent, int) and exponent >= 0 and value == value.to_integral_value()
            else float(value)
        )
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One encoder for staging and state: compact, NaN/Infinity refused (they are not JSON), and no
# circular-reference bookkeeping (decoded API bodies cannot be circular; saves ~10% of the time).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False, default=_json_default)
encode_json = _ENCODER.encode


# In JSON text (ASCII-escaped): U+0000, or a surrogate that is not half of a pair.
UNSTORABLE_JSON = re.compile(
    r"\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}",
    re.IGNORECASE,
)
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def unstorable_json(text: str) -> bool:
    """Whether JSON text (ASCII-escaped) holds U+0000 or a lone surrogate (``UNSTORABLE_JSON``). Substring
    tests first: on a 1,000-record page they take ~1 ms where the pattern, with its look-behind, takes
    ~25 ms; most pages have neither escape and never reach it."""
    if "\\u0000" not in text and "\\ud" not in text and "\\uD" not in text:
        return False
    return UNSTORABLE_JSON.search(text) is not None


def storable(value: Any) -> Any:
    """``value`` with every U+0000 and every lone surrogate in its strings (keys too) replaced by U+FFFD
    (the replacement character), on both backends: PostgreSQL text and jsonb hold neither, DuckDB's JSON
    reader refuses a lone surrogate, and one such value must never fail a window."""
    if isinstance(value, str):
        return _UNSTORABLE_CHARS.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


class WarehouseError(IntegrationsError):
    """A warehouse operation failed (lock timeout, bad rows, schema conflict, unreachable server)."""


@dataclass(frozen=True)
class LoadResult:
    """What a commit did, counted by primary key after dedup: ``staged == inserted + updated + unchanged``."""

    staged: int
    inserted: int
    updated: int
    unchanged: int


# ------------------------------------------------------------------------------------ SQL helpers


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (standard SQL: DuckDB and PostgreSQL alike)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def format_timestamp(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC; fractions only when present (milliseconds when they suffice)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    us = value.microsecond
    if us:
        text += f".{us // 1000:03d}" if us % 1000 == 0 else f".{us:06d}"
    return text + "Z"


def _timestamp_out(value: Any) -> Any:
    return format_timestamp(value) if isinstance(value, datetime) else value


def _float_out(value: Any) -> Any:
    return float(value) if value is not None and not isinstance(value, float) else value


def rows_to_records(
    table: TableSpec, names: Sequence[str], rows: Sequence[Sequence[Any]], *, json_as_text: bool
) -> list[dict]:
    """Turn selected rows (data columns in ``names`` order, then ``_extra``) back into API-shaped dicts.

    Timestamps become ISO strings in UTC, JSON is parsed (when the driver returns it as text),
    numbers stay int/float as declared, and ``_extra``'s keys are merged back in. Columns of the
    spec missing from ``names`` read as None.
    """
    load_json = json.loads if json_as_text else None
    converters: list[Callable[[Any], Any] | None] = []
    for name in names:
        kind = table.column(name).type
        converters.append(
            _timestamp_out
            if kind == "timestamp"
            else load_json
            if kind == "json"
            else _float_out
            if kind == "number"
            else None
        )
    selected = set(names)
    absent = [c.name for c in table.columns if c.name not in selected]
    width = len(names)
    out: list[dict] = []
    for row in rows:
        record: dict[str, Any] = {}
        for i in range(width):
            value = row[i]
            conv = converters[i]
            record[names[i]] = conv(value) if conv is not None and value is not None else value
        for name in absent:
            record[name] = None
        extra = row[width]
        if extra is not None:
            if json_as_text:
                extra = json.loads(extra)
            if isinstance(extra, dict):
                record.update(extra)
        out.append(record)
    if absent:  # keep schema order
        order = table.column_names
        out = [{**{k: r[k] for k in order}, **{k: v for k, v in r.items() if k not in order}} for r in out]
    return out


def check_records(records: Sequence[Any]) -> None:
    """Raise TypeError unless every record is a dict (checked in C for plain dicts)."""
    if set(map(type, records)) <= {dict}:
        return
    for record in records:
        if not isinstance(record, dict):
            raise TypeError(f"a record must be a dict, got {type(record).__name__}")


# ------------------------------------------------------------------------------------------- Load


class Load(ABC):
    """One window's staged write to one table; use as a context manager.

    ``write_batch`` stages a page (nothing touches the table yet); ``commit(state)`` merges everything
    staged and upserts the cursor state for ``state_key`` in one transaction. Leaving the ``with``
    block without a successful commit (normally or by an exception) aborts: the staging is
    discarded and the table and state stay as they were. A failed ``commit`` keeps the staging, so
    it may be retried (or aborted).
    """

    def __init__(self, table: TableSpec, state_key: str):
        if not isinstance(state_key, str) or not state_key:
            raise ValueError(f"state_key must be a non-empty string, got {state_key!r}")
        self.table = table
        self.state_key = state_key
        self.written = 0  # records passed to write_batch (before dedup)
        self.result: LoadResult | None = None
        self._status = "open"
        self._broken: str | None = None  # set when staging failed half-way: the load can only be aborted
        # Discards the staging if the Load is garbage-collected (or the process exits) uncommitted.
        self._finalizer: weakref.finalize | None = None

    @property
    def status(self) -> str:
        """``open``, ``committed`` or ``aborted``."""
        return self._status

    def write_batch(self, records: list[dict]) -> None:
        """Stage one page of raw API records (plus ``_connection_id`` for per-connection streams)."""
        self._require_open("write_batch")
        if not records:
            return
        try:
            self._write(records)
        except (TypeError, ValueError) as exc:
            raise WarehouseError(f"cannot stage records for {self.table.full_name}: {exc}") from exc
        self.written += len(records)

    def commit(self, state: dict | None = None, merge: StateMerge | None = None) -> LoadResult:
        """Merge the staged rows into the table and set this key's cursor state, atomically.

        ``merge(stored, state)`` (the engine's ``merge_cursor_state``) decides the state to keep, inside the
        commit's transaction: two loads of one key committing out of order can then never move the
        cursor back (a load of an older window commits after a newer one)."""
        self._require_open("commit")
        try:
            state_json = None if state is None else encode_json(state)
        except (TypeError, ValueError) as exc:
            raise WarehouseError(f"cursor state for '{self.state_key}' is not JSON-serialisable: {exc}") from exc
        if merge is not None:
            stated = state

            def resolve(stored: dict | None) -> str | None:
                merged = merge(stored, stated)
                return None if merged is None else encode_json(merged)

            result = self._commit(state_json, resolve)
        else:
            result = self._commit(state_json, None)
        self._status = "committed"
        self.result = result
        self._discard()
        return result

    def abort(self) -> None:
        """Discard the staging; the table and the state are left untouched. Idempotent."""
        if self._status != "open":
            return
        self._status = "aborted"
        self._discard()

    def __enter__(self) -> Load:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()  # no-op after a successful commit

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.table.full_name} key={self.state_key!r} {self._status} written={self.written}>"

    def _require_open(self, what: str) -> None:
        if self._status != "open":
            raise WarehouseError(f"{what}() on a load of {self.table.full_name} that is already {self._status}")
        if self._broken is not None:
            raise WarehouseError(
                f"{what}() on a load of {self.table.full_name} whose staging failed ({self._broken}); "
                "abort it and load the window again"
            )

    @contextlib.contextmanager
    def _staging_step(self) -> Iterator[None]:
        """Wrap a step that may leave the staging half-written: any failure breaks the load."""
        try:
            yield
        except BaseException as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            raise

    def _discard(self) -> None:
        try:
            self._release()
        except Exception:  # cleanup is best effort; the outcome is already decided
            pass
        if self._finalizer is not None:
            try:
                self._finalizer()
            except Exception:  # cleanup is best effort; the outcome is already decided
                pass

    def _release(self) -> None:  # noqa: B027  (a hook: a backend whose staging holds nothing open has none)
        """Close what the staging holds open (files, connections); the finalizer then removes it."""

    @abstractmethod
    def _write(self, records: list[dict]) -> None: ...

    @abstractmethod
    def _commit(self, state_json: str | None, resolve: Callable[[dict | None], str | None] | None) -> LoadResult: ...


# -------------------------------------------------------------------------------------- Warehouse


class Warehouse(ABC):
    """A place to store streams: DuckDB (one file, embedded), PostgreSQL, or another backend.

    A backend implements the abstract methods (connections, transactions, the catalogue, loads) and
    sets the dialect attributes below; schema evolution and the readers are written once, here.
    """

    backend: str = "abstract"
    url: str  # as given, with any password replaced by ***
    url_forms: tuple[str, ...] = ()  # the URL forms it opens, for messages (its line in registry.py names them too)

    # Dialect hooks of the shared code below.
    #: Column type (``tables.ColumnType``) → its SQL type in DDL; ``string``'s also serves for casts to text.
    _column_types: Mapping[str, str]
    #: Column type → the type as ``_existing_columns`` reports it (the catalogue's spelling).
    _catalog_types: Mapping[str, str]
    #: Catalogue types of integer columns that may widen in place when the spec makes them ``number``.
    _widens_to_number: frozenset[str] = frozenset()
    _add_column = "ADD COLUMN"  # the ALTER TABLE clause adding a column
    _placeholder = "?"  # query parameter marker
    _order_collation = ""  # appended to text keys in ORDER BY
    _json_as_text = True  # JSON columns come back as text to decode

    def __init__(self, url: str):
        self.url = redact_url(url)
        self._closed = False

    @abstractmethod
    def open_load(self, table: TableSpec, state_key: str) -> Load:
        """Start staging one window of ``table``; commit it together with ``state_key``'s state."""

    # Backend plumbing the shared code below relies on.
    @abstractmethod
    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Turn the driver's errors into ``WarehouseError`` naming ``what``."""

    @abstractmethod
    def _connection(self) -> contextlib.AbstractContextManager[Any]:
        """A short-lived connection for one operation (reads)."""

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A connection inside one write transaction: committed when the block ends, rolled back on an exception."""

    @staticmethod
    @abstractmethod
    def _existing_columns(conn: Any, schema: str, name: str) -> dict[str, str]:
        """Column name → catalogue type of an existing table; empty if the table does not exist."""

    @staticmethod
    @abstractmethod
    def _has_table(conn: Any, schema: str, name: str) -> bool:
        """Whether the table ``schema.name`` exists."""

    @abstractmethod
    def _lock_ddl(self, conn: Any) -> bool:
        """Serialise this transaction's DDL against other writers; True when it waited on a lock (the
        catalogue is then read again), False when the backend's writers are serialised already."""

    @abstractmethod
    def _fetch_frame(self, conn: Any, sql: str, names: list[str], existing: dict[str, str]) -> pandas.DataFrame:
        """Run ``read_frame``'s query (columns ``names``; ``existing``: their catalogue types) into a DataFrame."""

    # ------------------------------------------------------------------------- schema evolution

    def ensure_table(self, table: TableSpec) -> None:
        """Create the schema and table if missing; add columns the spec gained (never drops any)."""
        with self._errors(f"ensure_table({table.full_name})"), self._transaction() as conn:
            self._ensure(conn, table)

    def _create_if_missing(self, conn: Any, sql: str) -> None:
        """Run one ``CREATE ... IF NOT EXISTS`` inside the caller's transaction (PostgreSQL: see its override)."""
        conn.execute(sql)

    def _meta_columns(self) -> tuple[tuple[str, str], ...]:
        """The columns the warehouse maintains itself, with their DDL types."""
        return ((EXTRA_COLUMN, self._column_types["json"]), (SYNCED_AT_COLUMN, self._column_types["timestamp"]))

    def _table_constraints(self, table: TableSpec) -> list[str]:
        """Constraints closing ``CREATE TABLE`` (PostgreSQL: the primary key); none by default."""
        return []

    def _ensure(self, conn: Any, table: TableSpec) -> None:
        """Create or extend ``table``; call inside a write transaction (a load's commit runs it too)."""
        existing = self._existing_columns(conn, table.schema, table.name)
        if existing and self._up_to_date(table, existing):
            return
        if self._lock_ddl(conn):  # another writer may have created or extended it while this one waited
            existing = self._existing_columns(conn, table.schema, table.name)
        target = qualified(table.schema, table.name)
        if not existing:
            self._create_if_missing(conn, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
            defs = [f"{quote_ident(c.name)} {self._column_types[c.type]}" for c in table.columns]
            defs += [f"{quote_ident(n)} {t}" for n, t in self._meta_columns()]
            defs += self._table_constraints(table)
            self._create_if_missing(conn, f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(defs)})")
            return
        for col in table.columns:
            have = existing.get(col.name)
            if have is None:
                conn.execute(
                    f"ALTER TABLE {target} {self._add_column} {quote_ident(col.name)} {self._column_types[col.type]}"
                )
            elif have != self._catalog_types[col.type]:
                self._retype(conn, table, col, have)
        for name, sql_type in self._meta_columns():
            if name not in existing:
                conn.execute(f"ALTER TABLE {target} {self._add_column} {quote_ident(name)} {sql_type}")

    def _up_to_date(self, table: TableSpec, existing: dict[str, str]) -> bool:
        return all(existing.get(c.name) == self._catalog_types[c.type] for c in table.columns) and all(
            n in existing for n, _ in self._meta_columns()
        )

    def _retype(self, conn: Any, table: TableSpec, col: Column, have: str) -> None:
        """Widen an integer column the spec now calls a number; refuse any other change of type."""
        if col.type == "number" and have in self._widens_to_number:
            conn.execute(
                f"ALTER TABLE {qualified(table.schema, table.name)} "
                f"ALTER COLUMN {quote_ident(col.name)} TYPE {self._column_types['number']}"
            )
            return
        raise WarehouseError(
            f"column {table.full_name}.{col.name} is stored as {have} but the spec now says {col.type} "
            f"({self._catalog_types[col.type]}); migrate or drop the column by hand"
        )

    # ---------------------------------------------------------------------------------- readers

    def read_state(self, state_key: str) -> dict | None:
        """The cursor state committed with the last load for ``state_key`` (None if never)."""
        with self._errors("read_state"), self._connection() as conn:
            if not self._has_table(conn, STATE_SCHEMA, STATE_TABLE):
                return None
            row = conn.execute(
                f"SELECT state FROM {qualified(STATE_SCHEMA, STATE_TABLE)} WHERE state_key = {self._placeholder}",
                [state_key],
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return json.loads(row[0]) if self._json_as_text else row[0]

    def read_records(self, table: TableSpec, where_connection: str | None = None) -> list[dict]:
        """Rows back in API shape (timestamps as ISO strings, JSON decoded, ``_extra`` merged), by PK."""
        where, params = "", []
        if where_connection is not None:
            if not table.per_connection:
                raise ValueError(f"table {table.full_name} has no _connection_id column to filter on")
            where, params = f' WHERE "_connection_id" = {self._placeholder}', [where_connection]
        with self._errors(f"read_records({table.full_name})"), self._connection() as conn:
            existing = self._existing_columns(conn, table.schema, table.name)
            if not existing:
                return []
            names = select_names(table, existing)
            select = [quote_ident(n) for n in names]
            select.append(quote_ident(EXTRA_COLUMN) if EXTRA_COLUMN in existing else "NULL")
            rows = conn.execute(
                f"SELECT {', '.join(select)} FROM {qualified(table.schema, table.name)}{where} "
                f"ORDER BY {order_by_pk(table, self._order_collation)}",
                params,
            ).fetchall()
        return rows_to_records(table, names, rows, json_as_text=self._json_as_text)

    def read_frame(self, table: TableSpec) -> pandas.DataFrame:
        """The stored table as a DataFrame: data columns, ``_extra`` (JSON text) and ``_synced_at``, by key."""
        import pandas  # only a reader of frames pays for importing it

        with self._errors(f"read_frame({table.full_name})"), self._connection() as conn:
            existing = self._existing_columns(conn, table.schema, table.name)
            if not existing:
                return pandas.DataFrame(columns=[*table.column_names, EXTRA_COLUMN, SYNCED_AT_COLUMN])
            names = [*select_names(table, existing), *(n for n, _ in self._meta_columns() if n in existing)]
            as_text = f"::{self._column_types['string']}"
            select = ", ".join(
                f"{quote_ident(n)}{as_text} AS {quote_ident(n)}"
                if existing[n] == self._catalog_types["json"]
                else quote_ident(n)
                for n in names
            )
            sql = (
                f"SELECT {select} FROM {qualified(table.schema, table.name)} "
                f"ORDER BY {order_by_pk(table, self._order_collation)}"
            )
            return self._fetch_frame(conn, sql, names, existing)

    def row_count(self, table: TableSpec) -> int:
        """Rows in the table (0 when it does not exist yet)."""
        with self._errors(f"row_count({table.full_name})"), self._connection() as conn:
            if not self._has_table(conn, table.schema, table.name):
                return 0
            return int(one(conn.execute(f"SELECT count(*) FROM {qualified(table.schema, table.name)}").fetchone()))

    def partition_stats(
        self, table: TableSpec, start: datetime, end: datetime, *, by: str | None = None
    ) -> list[PartitionStats]:
        """Per day of the cursor in ``[start, end)`` (and per value of column ``by``, the connection), the rows and
        the first and last cursor values: each daily partition's own figures for its materialization. Days are
        UTC (every backend's session runs in UTC). [] for a table without a cursor or not created yet."""
        cursor = table.cursor_field
        if cursor is None:
            return []
        kind = next((c.type for c in table.columns if c.name == cursor), "string")
        col = quote_ident(cursor)
        bounds: list[Any]
        if kind == "timestamp":
            day, bounds = f"CAST({col} AS DATE)", [start, end]
        else:  # ISO text: its first ten characters are the day, and it sorts as time does
            day, bounds = f"substr({col}, 1, 10)", [start.date().isoformat(), end.date().isoformat()]
        group = quote_ident(by) if by else "NULL"
        p = self._placeholder
        where = f"{col} >= {p} AND {col} < {p}" if kind == "timestamp" else f"{day} >= {p} AND {day} < {p}"
        sql = (
            f"SELECT {group}, {day}, count(*), min({col}), max({col}) FROM {qualified(table.schema, table.name)} "
            f"WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2"
        )
        with self._errors(f"partition_stats({table.full_name})"), self._connection() as conn:
            if not self._has_table(conn, table.schema, table.name):
                return []
            rows = conn.execute(sql, bounds).fetchall()
        return [
            PartitionStats(None if g is None else str(g), str(d)[:10], int(n), _iso(first), _iso(last))
            for g, d, n, first, last in rows
        ]

    # Reverse-ETL bookkeeping, written once in ``delivery.DeliveryWarehouse`` on dialect hooks; not abstract
    # here, so a backend without it stays a valid Warehouse.
    def read_delivered(self, sink: str) -> dict[str, str]:
        """Key → hash of every record delivered to ``sink`` (e.g. ``salesmanago.contacts``); {} if none."""
        raise NotImplementedError(f"{type(self).__name__} does not track deliveries")

    def record_delivery(self, sink: str, rows: Sequence[tuple[str, str, dict | None]]) -> int:
        """Upsert ``(key, hash, response)`` rows for ``sink`` in one transaction (last row per key wins);
        returns the number of keys written."""
        raise NotImplementedError(f"{type(self).__name__} does not track deliveries")

    def record_rejects(self, sink: str, rows: Sequence[tuple[str | None, str, Any]]) -> int:
        """Append ``(key, reason, record)`` rows for ``sink``; returns how many."""
        raise NotImplementedError(f"{type(self).__name__} does not track rejects")

    def read_rejects(self, sink: str) -> list[dict]:
        """Rejects of ``sink`` in the order recorded: ``sink, record_key, reason, record, rejected_at`` (ISO)."""
        raise NotImplementedError(f"{type(self).__name__} does not track rejects")

    def record_plan(self, sink: str, run_id: str, rows: Sequence[tuple[str, str | None, str | None, Any]]) -> int:
        """Append a dry run's ``(action, key, reason, record)`` rows for ``sink`` under ``run_id``; returns how many."""
        raise NotImplementedError(f"{type(self).__name__} does not record sync plans")

    def read_plan(self, sink: str, run_id: str | None = None) -> list[dict]:
        """Dry-run rows of ``sink`` (of one run, or all) in the order recorded: ``sink, run_id, action,
        record_key, reason, record, planned_at`` (ISO)."""
        raise NotImplementedError(f"{type(self).__name__} does not record sync plans")

    # The delivery ledger (``engine.write.ledger.DeliveryLedger``: intents, records in doubt, leases),
    # also in ``delivery.DeliveryWarehouse``; documented on the protocol.
    def session(self) -> contextlib.AbstractContextManager[None]:
        """A stretch of quick operations (a push's calls); a backend may keep its connection for it."""
        return contextlib.nullcontext()

    def take_lease(self, lease: Any, may_take: Callable[[Any], bool]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def release_lease(self, name: str, token: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def open_intent(self, sink: str, intent: Any, lease: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    #: See ``DeliveryLedger.session_bound_leases``.
    session_bound_leases = False

    def renew_lease(self, lease: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def close_intent(
        self,
        sink: str,
        call_id: str,
        *,
        delivered: Sequence[Any] = (),
        rejects: Sequence[Any] = (),
        in_doubt: Sequence[Any] = (),
        delivered_new: Sequence[Any] = (),
        open_next: Any = None,
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def read_intents(self, sink: str) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def read_in_doubt(self, sink: str) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def resolve_in_doubt(self, sink: str, keys: Sequence[str] | None, *, mark_delivered: bool) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} keeps no delivery ledger")

    def ping(self) -> None:
        """Connect and run ``SELECT 1``: a ``WarehouseError`` naming the cause when the warehouse cannot be
        reached (the CLI's preflight asks before it starts anything)."""
        with self._errors("connect"), self._connection() as conn:
            conn.execute("SELECT 1").fetchall()

    def close(self) -> None:
        """Release connections. Idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _require_open(self) -> None:
        if self._closed:
            raise WarehouseError(f"warehouse {self.url} is closed")

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class PartitionStats:
    """One day (and connection) of a table: its rows and first/last cursor values (``Warehouse.partition_stats``)."""

    group: str | None
    day: str
    rows: int
    first: str
    last: str


def _iso(value: Any) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)


def one(row: Sequence[Any] | None) -> Any:
    """The first value of a row an aggregate or ``to_regclass`` query always returns."""
    if row is None:
        raise WarehouseError("a query that always returns a row returned none")
    return row[0]


def first_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """A row an aggregate query always returns (typed as optional by the drivers)."""
    if row is None:
        raise WarehouseError("a query that always returns a row returned none")
    return row


def select_names(table: TableSpec, existing: Collection[str]) -> list[str]:
    """The spec's data columns that exist in the stored table (in spec order)."""
    have = set(existing)
    return [c.name for c in table.columns if c.name in have]


def order_by_pk(table: TableSpec, collate: str = "") -> str:
    """``ORDER BY`` list of the primary key; ``collate`` (e.g. ' COLLATE "C"') applies to string keys."""
    parts = []
    for key in table.primary_key:
        suffix = collate if collate and table.column(key).type == "string" else ""
        parts.append(quote_ident(key) + suffix)
    return ", ".join(parts)


__all__ = [
    "first_row",
    "one",
    "EXTRA_COLUMN",
    "Load",
    "LoadResult",
    "Warehouse",
    "WarehouseError",
    "format_timestamp",
    "redact_url",
]
