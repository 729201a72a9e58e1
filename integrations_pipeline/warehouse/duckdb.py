"""DuckDB warehouse: one embedded database file, shared by concurrent runs.

DuckDB lets one process at a time open a file, and Dagster may run several runs at once. So no
connection is held: each operation opens the file, works, and closes it, retrying the open with
jittered back-off (``lock_timeout``, 60 s by default) while another process holds the lock. Within
one process, writes to one file are serialised by a lock, so two threads never merge at once.

Staging needs no database at all: ``write_batch`` appends each page as NDJSON to part files beside
the database (``<db>.staging/``), so Python's memory stays flat however many pages a load has. Only
``commit`` takes the lock. In ONE transaction it merges the parts one after the other: ``read_json``
into a temporary table with typed columns, dedup (greatest cursor, ties: the later record), then
an ``UPDATE ... FROM`` of changed rows that are not newer in the table and an ``INSERT`` of new keys,
and finally the state upsert. Each step holds one part (≤ 100k records / 128 MB), and DuckDB's
buffer memory is capped (``memory_limit``, 256MB by default; written data is evicted to the file),
so a commit's memory does not grow with the load either.

Tables have no PRIMARY KEY constraint: DuckDB pins such an index in memory, growing with the table,
and checks it on every insert. One row per key is guaranteed by the merge and the serialised writers.

If a value does not fit its column's type (e.g. ``"n/a"`` in an integer column), that part is re-read
through a slower path that checks each value's JSON type: misfits are stored as NULL and kept
verbatim in ``_extra``, so ``read_records`` still returns them. The fast path relies on DuckDB's JSON
casts, which accept a few lossy coercions silently: ``"12"`` or ``12.7`` into an integer column
(→ 12, 13), a number or boolean into a string column (→ its text). Records that follow their JSON
Schema are stored exactly.

The reverse-ETL bookkeeping tables (``delivery.py``) are DuckDB's own here too: no key on the big
ones, an upsert of delivered rows deletes the keys it brings and inserts them again.

URLs: ``duckdb:///abs/path.duckdb`` (relative paths resolve against the cwd) or ``duckdb:///:memory:``;
options ``?lock_timeout=60&memory_limit=256MB``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.processes import process_alive, process_started
from integrations_pipeline.engine.write.ledger import Lease

from .base import (
    STATE_SCHEMA,
    STATE_TABLE,
    Load,
    LoadResult,
    WarehouseError,
    check_records,
    encode_json,
    first_row,
    one,
    qualified,
    quote_ident,
    storable,
    unstorable_json,
)
from .delivery import (
    DELIVERED,
    IN_DOUBT,
    INTENTS,
    LEASE_COLUMNS,
    LEASES,
    PLANS,
    REJECTS,
    lease_values,
    responses_array,
)
from .inbox import InboxWarehouse
from .tables import EXTRA_COLUMN, SYNCED_AT_COLUMN, Column, TableSpec

if TYPE_CHECKING:
    import pandas

SQL_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "json": "JSON",
}
# information_schema.columns.data_type spelling of the above
INFO_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "json": "JSON",
}
#: Integer types (as the catalogue spells them) a column may widen from when the spec makes it a number.
WIDENS_TO_DOUBLE = frozenset({"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT"})
ISO_TIMESTAMP = r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?"
STAGE = "__ip_stage"
STAGE_DEDUP = "__ip_stage_dedup"
KEYS = "__ip_keys"
#: A staging part ends after this many records or bytes (pages are never split): one merge step
#: holds one part in DuckDB's memory.
PART_RECORDS = 100_000
PART_BYTES = 128 * 1024 * 1024
#: DuckDB's buffer memory for the warehouse file. Written data is evicted to the file beyond it, so
#: the memory of a commit does not grow with the size of the load (DuckDB's own default is 80% of RAM).
DEFAULT_MEMORY_LIMIT = "256MB"
STALE_STAGING_SECONDS = 24 * 3600
#: Longest pause between two attempts to open a file another process holds (short: a session lets go
#: for the waiter, which must then come in before the session wants the file back).
MAX_LOCK_POLL_SECONDS = 0.1
#: A session (``DuckDBWarehouse.session``) lets the file go after this long without an operation.
SESSION_IDLE_SECONDS = 0.5

URL_FORMS = ("duckdb:///<absolute path>.duckdb", "duckdb:///:memory:")
URL_OPTIONS = ("lock_timeout", "memory_limit")

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(key: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "could not set lock" in text or "conflicting lock" in text


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _struct_literal(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in columns.items()) + "}"


def _mark_waiting(directory: Path | None) -> Path | None:
    """A marker saying this process waits for the file: ``<db>.waiting/<pid>-<thread>``."""
    if directory is None:
        return None
    try:
        directory.mkdir(exist_ok=True)
        marker = directory / f"{os.getpid()}-{threading.get_ident()}"
        marker.touch()
        return marker
    except OSError:
        return None


def _someone_waits(directory: Path | None) -> bool:
    """Whether a live process (not this one) has a waiting marker; stale ones are removed."""
    if directory is None:
        return False
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return False
    for entry in entries:
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)  # its waiter died waiting
            continue
        except PermissionError:
            pass
        return True
    return False


class _Anchor:
    """The extra connection of a ``DuckDBWarehouse.session``: held while operations come quickly.

    One watcher thread per stretch of activity lets the file go once no operation came for
    ``idle_seconds``: an operation only moves the deadline (a timer per operation cost a thread start,
    ~0.5 ms, on every intent and record of a push)."""

    def __init__(self, warehouse: DuckDBWarehouse, idle_seconds: float):
        self.warehouse = warehouse
        self.idle_seconds = idle_seconds
        self.conn: duckdb.DuckDBPyConnection | None = None
        self.lock = threading.Lock()
        self.deadline = 0.0
        self.watcher: threading.Thread | None = None
        self.closed = threading.Event()

    def touch(self) -> None:
        """Before an operation: hold the file unless another process waits; let go after idling."""
        with self.lock:
            if self.closed.is_set():
                return  # the session ended: operations open their own connections again
            if _someone_waits(self.warehouse.waiters_dir):
                self._drop()  # the operation opens its own connection and waits its turn, like anyone
                return
            if self.conn is None:
                try:
                    self.conn = duckdb.connect(self.warehouse.path)
                except duckdb.Error:
                    return  # locked by another process: this operation waits in _open as usual
            self.deadline = time.monotonic() + self.idle_seconds
            if self.watcher is None:
                self.watcher = threading.Thread(target=self._watch, name="duckdb-session-idle", daemon=True)
                self.watcher.start()

    def _watch(self) -> None:
        while True:
            with self.lock:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0 or self.closed.is_set():
                    self._drop()
                    self.watcher = None
                    return
            if self.closed.wait(remaining):
                with self.lock:
                    self.watcher = None
                return

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.closed.set()
        with self.lock:
            self._drop()


def _rollback(conn: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(Exception):
        conn.execute("ROLLBACK")


def parse_duckdb_url(url: str) -> tuple[str, dict[str, str]]:
    """The file path (or ``:memory:``) of a ``duckdb://`` URL, and its query options.

    Relative paths resolve against the cwd. Options: ``?lock_timeout=<seconds>&memory_limit=<size>``.
    """
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key not in URL_OPTIONS:
            raise ConfigError(f"warehouse URL '{url}': unknown option '{key}'; DuckDB URLs accept {list(URL_OPTIONS)}")
        options[key] = value
    if rest in ("/:memory:", ":memory:", "//:memory:"):
        return ":memory:", options
    if not rest or rest == "/":
        raise ConfigError(f"warehouse URL '{url}' names no DuckDB file; expected one of {list(URL_FORMS)}")
    if rest.startswith("//"):
        rest = "/" + rest.lstrip("/")  # duckdb:////abs/path (SQLAlchemy style) is the same file
    return str(Path(rest).expanduser().absolute()), options


class DuckDBWarehouse(InboxWarehouse):
    """A DuckDB file (``duckdb:///abs/path.duckdb``) or an in-process database (``duckdb:///:memory:``)."""

    backend = "duckdb"
    url_forms = URL_FORMS
    _column_types = SQL_TYPES
    _catalog_types = INFO_TYPES
    _widens_to_number = WIDENS_TO_DOUBLE
    _ledger_tables_stay = True  # one file, written only through this code

    def __init__(self, url: str, *, lock_timeout: float | None = None, memory_limit: str | None = DEFAULT_MEMORY_LIMIT):
        super().__init__(url)
        self.path, options = parse_duckdb_url(url)
        try:
            self.lock_timeout = float(options.get("lock_timeout", lock_timeout if lock_timeout is not None else 60.0))
        except ValueError:
            raise ConfigError(f"warehouse URL '{url}': lock_timeout must be a number of seconds") from None
        limit = options.get("memory_limit", memory_limit)
        if self.path == ":memory:":
            # An in-memory database cannot evict its data to a file: keep DuckDB's own limit unless asked.
            limit = options.get("memory_limit")
        if limit and not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?)?B", limit, flags=re.IGNORECASE):
            raise ConfigError(f"warehouse URL '{url}': memory_limit must look like 256MB or 2GB, got '{limit}'")
        self.memory_limit = limit or None
        self._memory: duckdb.DuckDBPyConnection | None = None
        self._memory_guard = threading.Lock()
        if self.path == ":memory:":
            # An in-memory database lives as long as this connection: keep it, hand out cursors.
            self._memory = duckdb.connect(":memory:")
            self._lock_key = f"memory:{id(self)}"
            self.staging_dir = Path(tempfile.gettempdir()) / "integrations_pipeline_staging"
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_key = os.path.realpath(self.path)  # one lock per file, however it is named
            self.staging_dir = Path(self.path + ".staging")
        self.waiters_dir = Path(self.path + ".waiting") if self.path != ":memory:" else None
        self._anchor: _Anchor | None = None

    # ---------------------------------------------------------------------------- connections

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying with jittered back-off while another process holds its lock."""
        if self.path == ":memory:":
            with self._memory_guard:  # the parent connection is not thread-safe; its cursors are
                if self._memory is None:
                    raise WarehouseError(f"warehouse {self.url} is closed")
                conn = self._memory.cursor()
        else:
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.01
            marker: Path | None = None
            try:
                while True:
                    try:
                        conn = duckdb.connect(self.path)
                        break
                    except duckdb.IOException as exc:
                        if not _is_lock_conflict(exc):
                            raise WarehouseError(f"cannot open DuckDB file {self.path}: {exc}") from exc
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise WarehouseError(
                                f"DuckDB file {self.path} stayed locked by another process for "
                                f"{self.lock_timeout:g} s: {exc}"
                            ) from exc
                        if marker is None:
                            # Say we wait, so a push that keeps the file open between its calls lets go.
                            marker = _mark_waiting(self.waiters_dir)
                        time.sleep(min(delay * (0.5 + random.random()), remaining))
                        delay = min(delay * 2, MAX_LOCK_POLL_SECONDS)
            finally:
                if marker is not None:
                    with contextlib.suppress(OSError):
                        marker.unlink()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            if self.memory_limit:
                conn.execute(f"SET memory_limit = {_sql_string(self.memory_limit)}")
        except Exception:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def session(self, idle_seconds: float = SESSION_IDLE_SECONDS) -> Iterator[None]:
        """Keep the file open between operations while they come quickly (a push's calls).

        Opening a DuckDB file costs ~20 ms (the database instance starts), twice per vendor call for a
        push's intent and record. In a session an extra connection keeps the instance alive, so each
        operation's own connection opens in microseconds. The file is let go when operations pause for
        ``idle_seconds`` (a rate-limit wait, a slow vendor) and whenever another process waits for it
        (its marker in ``<db>.waiting/``); the session only reopens it once nobody waits.
        """
        if self.path == ":memory:":
            yield
            return
        anchor = _Anchor(self, idle_seconds)
        self._anchor = anchor
        try:
            yield
        finally:
            self._anchor = None
            anchor.close()

    @contextlib.contextmanager
    def _connection(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; ``write`` also serialises writers of this file within the process."""
        self._require_open()
        anchor = self._anchor  # read once: a session may end on another thread meanwhile
        if anchor is not None:
            anchor.touch()
        lock = _process_lock(self._lock_key) if write else None
        if lock is not None and not lock.acquire(timeout=self.lock_timeout):
            raise WarehouseError(f"another thread kept writing to {self.path} for {self.lock_timeout:g} s")
        try:
            conn = self._open()
            try:
                yield conn
            finally:
                conn.close()
        finally:
            if lock is not None:
                lock.release()

    def close(self) -> None:
        with self._memory_guard:
            if self._memory is not None:
                with contextlib.suppress(Exception):
                    self._memory.close()
                self._memory = None
        super().close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection (writers of this file serialised) inside BEGIN ... COMMIT."""
        with self._connection(write=True) as conn:
            conn.execute("BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB {what} failed on {self.path}: {exc}") from exc

    # ------------------------------------------------------------------------------- catalogue

    # Every load's commit asks the catalogue first: DuckDB's own functions (duckdb_columns, duckdb_tables)
    # answer faster than information_schema (~2.5 ms against ~3.4 ms, more with many tables), spell the
    # types as it does (INFO_TYPES) and, filtered by database, never see a temp table of the same name.
    @staticmethod
    def _existing_columns(conn: duckdb.DuckDBPyConnection, schema: str, name: str) -> dict[str, str]:
        rows = conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ? ORDER BY column_index",
            [schema, name],
        )
        return {r[0]: r[1] for r in rows.fetchall()}

    @staticmethod
    def _has_table(conn: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
        return bool(
            one(
                conn.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = ? AND table_name = ?",
                    [schema, name],
                ).fetchone()
            )
        )

    def _lock_ddl(self, conn: duckdb.DuckDBPyConnection) -> bool:
        return False  # writers of a file are serialised already (file lock + process lock)

    def _table_constraints(self, table: TableSpec) -> list[str]:
        # No PRIMARY KEY constraint: DuckDB keeps its index pinned in memory, growing with the table,
        # and checks it on every insert. One row per key is the merge's job (dedup, then
        # update-or-insert), and writers of a file are serialised (file lock + process lock).
        return []

    @staticmethod
    def _ensure_state_table(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {qualified(STATE_SCHEMA, STATE_TABLE)} "
            "(state_key VARCHAR PRIMARY KEY, state JSON, updated_at TIMESTAMPTZ NOT NULL)"
        )

    # ----------------------------------------------------------------------------------- API

    def open_load(self, table: TableSpec, state_key: str) -> DuckDBLoad:
        self._require_open()
        self._purge_stale_staging()
        return DuckDBLoad(self, table, state_key)

    def _fetch_frame(
        self, conn: duckdb.DuckDBPyConnection, sql: str, names: list[str], existing: dict[str, str]
    ) -> pandas.DataFrame:
        result = conn.execute(sql)
        with warnings.catch_warnings():  # DuckDB's own pandas conversion uses deprecated pandas API
            warnings.filterwarnings("ignore", message=".*inplace keyword.*")
            return result.df()

    # -------------------------------------------------- reverse-ETL bookkeeping (delivery.py)
    # No key on the big tables, like the stream tables: a delivery upsert deletes the keys it brings,
    # then inserts them, and appends go in from a registered DataFrame (a row-by-row ``executemany``
    # takes minutes at 100k rows). Writers of the file are serialised, so no key is needed.

    def _ensure_delivery_tables(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DELIVERED} (sink VARCHAR NOT NULL, record_key VARCHAR NOT NULL, "
            "hash VARCHAR NOT NULL, delivered_at TIMESTAMPTZ NOT NULL, response JSON)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {REJECTS} (sink VARCHAR NOT NULL, record_key VARCHAR, "
            "reason VARCHAR NOT NULL, record JSON, rejected_at TIMESTAMPTZ NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {PLANS} (sink VARCHAR NOT NULL, run_id VARCHAR NOT NULL, action VARCHAR NOT NULL, "
            "record_key VARCHAR, reason VARCHAR, record JSON, planned_at TIMESTAMPTZ NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {INTENTS} (sink VARCHAR NOT NULL, call_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
            "created_at DOUBLE NOT NULL, items VARCHAR NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {IN_DOUBT} (sink VARCHAR NOT NULL, record_key VARCHAR NOT NULL, hash VARCHAR NOT NULL, "
            "record JSON, call_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, reason VARCHAR NOT NULL, since TIMESTAMPTZ NOT NULL)"
        )
        # Tiny (one row per sync): a primary key costs nothing here and makes the upsert one statement.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {LEASES} (name VARCHAR PRIMARY KEY, token VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
            "host VARCHAR NOT NULL, pid BIGINT NOT NULL, process_started DOUBLE, acquired_at DOUBLE NOT NULL, "
            "expires_at DOUBLE NOT NULL)"
        )

    def _upsert_delivered(
        self,
        conn: duckdb.DuckDBPyConnection,
        sink: str,
        keys: list[str],
        hashes: list[str],
        responses: list[Any],
        *,
        new: bool = False,
    ) -> None:
        # The columns travel as two list parameters and one JSON array, unnested in SQL: no DataFrame to
        # build and register (a push records every call: 1,000 rows in ~6 ms this way, ~23 ms through
        # pandas), and the responses encoded in one call, not one per row.
        # No key constraint: drop the old rows of these keys, then insert. Finding them scans the sink's
        # rows (~3 ms a call at 100,000 delivered): skipped for keys the ledger knows are ``new``.
        if not new:
            conn.execute(f"DELETE FROM {DELIVERED} WHERE sink = ? AND record_key = ANY(?)", [sink, keys])
        conn.execute(
            # json_extract yields a None as the JSON value null: stored as SQL NULL, as PostgreSQL stores it.
            f"INSERT INTO {DELIVERED} SELECT ?, k, h, now(), nullif(r, 'null'::JSON) FROM (SELECT "
            "unnest(?::VARCHAR[]) AS k, unnest(?::VARCHAR[]) AS h, unnest(json_extract(?::JSON, '$[*]')) AS r)",
            [sink, keys, hashes, responses_array(responses)],
        )

    def _append_rejects(
        self,
        conn: duckdb.DuckDBPyConnection,
        sink: str,
        keys: list[str | None],
        reasons: list[str],
        records: list[str],
    ) -> None:
        frame = _object_frame({"record_key": keys, "reason": reasons, "record": records})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conn.register("__ip_rejects", frame)
            try:
                conn.execute(
                    f"INSERT INTO {REJECTS} SELECT ?, record_key, reason, record::JSON, now() FROM __ip_rejects", [sink]
                )
            finally:
                conn.unregister("__ip_rejects")

    def _append_plan(
        self,
        conn: duckdb.DuckDBPyConnection,
        sink: str,
        run_id: str,
        actions: list[str],
        keys: list[str | None],
        reasons: list[str | None],
        records: list[str | None],
    ) -> None:
        frame = _object_frame({"action": actions, "record_key": keys, "reason": reasons, "record": records})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conn.register("__ip_plan", frame)
            try:
                conn.execute(
                    f"INSERT INTO {PLANS} SELECT ?, ?, action, record_key, reason, record::JSON, now() FROM __ip_plan",
                    [sink, run_id],
                )
            finally:
                conn.unregister("__ip_plan")

    def _select_rejects(self, conn: duckdb.DuckDBPyConnection, sink: str) -> list[tuple[Any, ...]]:
        return conn.execute(
            f"SELECT record_key, reason, record::VARCHAR, rejected_at FROM {REJECTS} WHERE sink = ? "
            "ORDER BY rejected_at, rowid",
            [sink],
        ).fetchall()

    def _select_plan(self, conn: duckdb.DuckDBPyConnection, sink: str, run_id: str | None) -> list[tuple[Any, ...]]:
        where, params = ("sink = ?", [sink]) if run_id is None else ("sink = ? AND run_id = ?", [sink, run_id])
        return conn.execute(
            f"SELECT run_id, action, record_key, reason, record::VARCHAR, planned_at FROM {PLANS} WHERE {where} "
            "ORDER BY planned_at, rowid",
            params,
        ).fetchall()

    def _upsert_lease(self, conn: duckdb.DuckDBPyConnection, lease: Lease) -> None:
        values = ", ".join(["?"] * 8)
        conn.execute(f"INSERT OR REPLACE INTO {LEASES} ({LEASE_COLUMNS}) VALUES ({values})", lease_values(lease))

    def _affected_rows(self, cursor: duckdb.DuckDBPyConnection) -> int:
        return int(one(cursor.fetchone()))  # DuckDB answers an UPDATE with its row count

    # ------------------------------------------------------------------------------- staging

    def _purge_stale_staging(self) -> None:
        """Remove staging files a killed load left behind: at once when the process that wrote them is
        gone (their name holds its pid and start time), else once untouched for a day (another host's
        process on a shared disk, or a name without an owner)."""
        try:
            entries = list(os.scandir(self.staging_dir))
        except OSError:
            return
        cutoff = time.time() - STALE_STAGING_SECONDS
        for entry in entries:
            if not entry.name.endswith(".ndjson"):
                continue
            with contextlib.suppress(OSError):
                if _writer_gone(entry.name) or entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)


def _owner_token() -> str:
    """``p<pid>s<start ticks>-<random>``: whose staging file this is, for the next load to judge."""
    started = process_started(os.getpid())
    return f"p{os.getpid()}s{int(started) if started is not None else 0}-{uuid.uuid4().hex[:8]}"


_OWNER = re.compile(r"\.p(\d+)s(\d+)-[0-9a-f]+\.\d{5}\.ndjson$")


def _writer_gone(name: str) -> bool:
    """Whether the process named in a staging file's name has exited (this host: the disk is local)."""
    match = _OWNER.search(name)
    if match is None:
        return False
    pid, started = int(match.group(1)), int(match.group(2))
    return pid != os.getpid() and not process_alive(pid, float(started) if started else None)


def _remove_staging(paths: list[str], directory: str) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # only succeeds when no other load is staging there


class _TypedReadFailed(Exception):
    """A part has a value its column type cannot hold: redo the commit reading that part checked."""

    def __init__(self, part: int):
        super().__init__(part)
        self.part = part


class DuckDBLoad(Load):
    """Stages pages as NDJSON parts in ``<db>.staging/``; ``commit`` merges them under the file lock.

    A part holds about ``part_records`` records (pages are never split). ``commit`` merges the parts
    one after the other inside ONE transaction, so DuckDB's memory follows the part size, not the
    size of the load. Merging part by part gives the same rows as merging everything at once: the
    newer cursor wins wherever it sits, and on a tie the later part is the later write.
    """

    part_records = PART_RECORDS

    def __init__(self, warehouse: DuckDBWarehouse, table: TableSpec, state_key: str):
        super().__init__(table, state_key)
        self._wh = warehouse
        self._columns = frozenset(table.column_names)
        self._token = _owner_token()
        self._parts: list[str] = []  # staging files, in write order (shared with the finalizer)
        self._part_size = self._part_bytes = 0  # records and characters in the last part
        self._fh: Any = None

    # ------------------------------------------------------------------------------- staging

    def _encode(self, records: list[dict]) -> str:
        """One NDJSON line per record; fields outside the schema move into ``_extra``."""
        check_records(records)
        text = self._lines(records)
        if unstorable_json(text):
            # A lone surrogate makes DuckDB's read_json refuse the whole part, and U+0000 is stored as
            # PostgreSQL must store it: both as U+FFFD. One odd value never fails a window.
            text = self._lines([storable(r) for r in records])
        return text

    def _lines(self, records: list[dict]) -> str:
        columns = self._columns
        if all(map(columns.issuperset, records)):  # the usual page: every loop runs in C
            return "\n".join(map(encode_json, records)) + "\n"
        lines: list[str] = []
        for record in records:
            if columns.issuperset(record):
                lines.append(encode_json(record))
            else:
                known: dict[str, Any] = {}
                extra: dict[str, Any] = {}
                for key, value in record.items():
                    (known if key in columns else extra)[key] = value
                known[EXTRA_COLUMN] = extra
                lines.append(encode_json(known))
        lines.append("")
        return "\n".join(lines)

    def _open_part(self, new: bool) -> None:
        if not new:  # a failed commit closed the last part; more pages may follow
            self._fh = open(self._parts[-1], "a", encoding="utf-8", newline="\n")
            return
        directory = self._wh.staging_dir
        path = directory / f"{self.table.schema}.{self.table.name}.{self._token}.{len(self._parts):05d}.ndjson"
        for attempt in range(5):
            directory.mkdir(parents=True, exist_ok=True)
            try:
                self._fh = open(path, "x", encoding="utf-8", newline="\n")
                break
            except FileNotFoundError:  # another load removed the empty directory meanwhile
                if attempt == 4:
                    raise
        self._parts.append(str(path))
        self._part_size = self._part_bytes = 0
        if self._finalizer is None:
            self._finalizer = weakref.finalize(self, _remove_staging, self._parts, str(directory))

    def _write(self, records: list[dict]) -> None:
        data = self._encode(records)  # a bad record fails here, before anything is staged
        with self._staging_step():
            full = self._part_size > 0 and (
                self._part_size + len(records) > self.part_records or self._part_bytes + len(data) > PART_BYTES
            )
            if full or not self._parts:
                self._release()
                self._open_part(new=True)
            elif self._fh is None:
                self._open_part(new=False)
            self._fh.write(data)
            self._part_size += len(records)
            self._part_bytes += len(data)

    def _release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -------------------------------------------------------------------------------- commit

    def _commit(self, state_json: str | None, resolve=None) -> LoadResult:
        self._release()  # flush the staging; reopened in append mode if commit fails and pages follow
        wh, table = self._wh, self.table
        parts = list(self._parts) if self.written else []
        checked: set[int] = set()  # parts to read value by value (a typed read failed on them)
        with wh._errors(f"commit of {table.full_name}"), wh._connection(write=True) as conn:
            while True:
                conn.execute("BEGIN")
                try:
                    wh._ensure(conn, table)
                    wh._ensure_state_table(conn)
                    result = self._merge_parts(conn, parts, checked)
                    keep = state_json
                    if resolve is not None:
                        # Writers of this file are serialised: the state read here is the one replaced.
                        row = conn.execute(
                            f"SELECT state FROM {qualified(STATE_SCHEMA, STATE_TABLE)} WHERE state_key = ?",
                            [self.state_key],
                        ).fetchone()
                        keep = resolve(None if row is None or row[0] is None else json.loads(row[0]))
                    conn.execute(
                        f"INSERT INTO {qualified(STATE_SCHEMA, STATE_TABLE)} (state_key, state, updated_at) "
                        "VALUES (?, ?, now()) ON CONFLICT (state_key) DO UPDATE "
                        "SET state = excluded.state, updated_at = excluded.updated_at",
                        [self.state_key, keep],
                    )
                    conn.execute("COMMIT")
                    return result
                except _TypedReadFailed as failed:
                    # DuckDB aborts a transaction on any error: start again, reading that part checked.
                    _rollback(conn)
                    checked.add(failed.part)
                except BaseException:
                    _rollback(conn)
                    raise

    def _merge_parts(self, conn: duckdb.DuckDBPyConnection, parts: list[str], checked: set[int]) -> LoadResult:
        """Merge every part in order; count each key once (by what the table held before the load)."""
        table = self.table
        pk = ", ".join(quote_ident(k) for k in table.primary_key)
        inserted = updated = staged = 0
        for i, path in enumerate(parts):
            source, count = self._stage_part(conn, i, path, checked=i in checked)
            if i == 0:
                first_updates = None  # nothing in the table was written by this load yet
            else:
                # Rows this load already wrote carry _synced_at = now() (the transaction's start):
                # updating them again is not another update of what the table held before.
                first_updates = self._count_updates(conn, source, only_untouched=True)
            part_updated, part_inserted = self._merge(conn, source)
            updated += part_updated if first_updates is None else first_updates
            inserted += part_inserted
            staged = count
            if len(parts) > 1:
                if i == 0:
                    conn.execute(f"CREATE OR REPLACE TEMP TABLE {KEYS} AS SELECT {pk} FROM {source}")
                else:
                    conn.execute(f"INSERT INTO {KEYS} SELECT {pk} FROM {source}")
        if len(parts) > 1:
            staged = one(conn.execute(f"SELECT count(DISTINCT ({pk})) FROM {KEYS}").fetchone())
            conn.execute(f"DROP TABLE IF EXISTS {KEYS}")
        return LoadResult(int(staged), inserted, updated, int(staged) - inserted - updated)

    def _stage_part(self, conn: duckdb.DuckDBPyConnection, index: int, path: str, *, checked: bool) -> tuple[str, int]:
        """Read one part into a temp table (deduped); return its name and row count."""
        table = self.table
        source = f"read_json({_sql_string(path)}, format = 'newline_delimited'"  # records up to 16 MB
        if not checked:
            typed = {c.name: SQL_TYPES[c.type] for c in table.columns}
            typed[EXTRA_COLUMN] = "JSON"
            try:
                conn.execute(
                    f"CREATE OR REPLACE TEMP TABLE {STAGE} AS SELECT * FROM {source}, columns = {_struct_literal(typed)})"
                )
            except (duckdb.InvalidInputException, duckdb.ConversionException):
                raise _TypedReadFailed(index) from None
        else:
            raw = {c.name: "JSON" for c in table.columns}
            raw[EXTRA_COLUMN] = "JSON"
            conn.execute(
                f"CREATE OR REPLACE TEMP TABLE {STAGE} AS {_checked_select(table)} "
                f"FROM (SELECT *, {_mismatch_list(table)} AS __ip_mismatch "
                f"FROM {source}, columns = {_struct_literal(raw)}))"
            )
        pk = [quote_ident(k) for k in table.primary_key]
        total, distinct, null_keys = first_row(
            conn.execute(
                f"SELECT count(*), count(DISTINCT ({', '.join(pk)})), "
                f"count(*) FILTER (WHERE {' OR '.join(k + ' IS NULL' for k in pk)}) FROM {STAGE}"
            ).fetchone()
        )
        if null_keys:
            raise WarehouseError(
                f"{null_keys} staged records for {table.full_name} have no value (or a value of "
                f"the wrong type) for primary key {list(table.primary_key)}"
            )
        if total == distinct:
            return STAGE, int(total)
        order = f"{quote_ident(table.cursor_field)} DESC NULLS LAST, " if table.cursor_field else ""
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE {STAGE_DEDUP} AS SELECT * FROM {STAGE} "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(pk)} ORDER BY {order}rowid DESC) = 1"
        )
        return STAGE_DEDUP, int(distinct)

    def _conditions(self) -> tuple[str, str, str, list[str]]:
        """SQL for (key match, incoming is newer-or-equal, content identical) and the value columns."""
        table = self.table
        on = " AND ".join(f"t.{k} = s.{k}" for k in (quote_ident(k) for k in table.primary_key))
        values = [quote_ident(c.name) for c in table.columns if c.name not in table.primary_key]
        values.append(quote_ident(EXTRA_COLUMN))
        newer = "TRUE"
        if table.cursor_field:
            cur = quote_ident(table.cursor_field)
            newer = f"(t.{cur} IS NULL OR (s.{cur} IS NOT NULL AND s.{cur} >= t.{cur}))"
        same = " AND ".join(f"t.{v} IS NOT DISTINCT FROM s.{v}" for v in values)
        return on, newer, same, values

    def _count_updates(self, conn: duckdb.DuckDBPyConnection, source: str, *, only_untouched: bool) -> int:
        on, newer, same, _ = self._conditions()
        untouched = f" AND t.{quote_ident(SYNCED_AT_COLUMN)} IS DISTINCT FROM now()" if only_untouched else ""
        target = qualified(self.table.schema, self.table.name)
        return int(
            one(
                conn.execute(
                    f"SELECT count(*) FROM {source} AS s JOIN {target} AS t ON {on} WHERE {newer} AND NOT ({same}){untouched}"
                ).fetchone()
            )
        )

    def _merge(self, conn: duckdb.DuckDBPyConnection, source: str) -> tuple[int, int]:
        """Update changed rows that are not newer in the table, insert new keys: (updated, inserted)."""
        table = self.table
        target = qualified(table.schema, table.name)
        on, newer, same, values = self._conditions()
        assignments = ", ".join(f"{v} = s.{v}" for v in values)
        updated = one(
            conn.execute(
                f"UPDATE {target} AS t SET {assignments}, {quote_ident(SYNCED_AT_COLUMN)} = now() "
                f"FROM {source} AS s WHERE {on} AND {newer} AND NOT ({same})"
            ).fetchone()
        )
        all_columns = [quote_ident(c.name) for c in table.columns] + [quote_ident(EXTRA_COLUMN)]
        inserted = one(
            conn.execute(
                f"INSERT INTO {target} ({', '.join(all_columns)}, {quote_ident(SYNCED_AT_COLUMN)}) "
                f"SELECT {', '.join('s.' + c for c in all_columns)}, now() FROM {source} AS s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {on})"
            ).fetchone()
        )
        return int(updated), int(inserted)


# ------------------------------------------------------------------ the checked (slow) staging path


def _checks(col: Column) -> tuple[str, str]:
    """(value fits the column, converted value) for a column read as raw JSON."""
    v = quote_ident(col.name)
    kind = col.type
    if kind == "string":
        return f"json_type({v}) = 'VARCHAR'", f"({v} ->> '$')"
    if kind == "integer":
        conv = f"TRY_CAST({v}::VARCHAR AS BIGINT)"
        return f"(json_type({v}) IN ('BIGINT', 'UBIGINT') AND {conv} IS NOT NULL)", conv
    if kind == "number":
        conv = f"TRY_CAST({v}::VARCHAR AS DOUBLE)"
        return f"(json_type({v}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') AND {conv} IS NOT NULL)", conv
    if kind == "boolean":
        return f"json_type({v}) = 'BOOLEAN'", f"({v}::VARCHAR = 'true')"
    if kind == "timestamp":
        conv = f"TRY_CAST({v} ->> '$' AS TIMESTAMPTZ)"
        return (
            f"(json_type({v}) = 'VARCHAR' AND regexp_full_match({v} ->> '$', {_sql_string(ISO_TIMESTAMP)}) "
            f"AND {conv} IS NOT NULL)",
            conv,
        )
    return "TRUE", v  # json


def _mismatch_list(table: TableSpec) -> str:
    """SQL text: the ``"key":value`` members of values that do not fit their column, comma-joined."""
    parts = []
    for col in table.columns:
        if col.type == "json":
            continue
        ok, _ = _checks(col)
        key = _sql_string(json.dumps(col.name) + ":")
        v = quote_ident(col.name)
        parts.append(f"CASE WHEN {v} IS NOT NULL AND NOT coalesce({ok}, FALSE) THEN {key} || {v}::VARCHAR END")
    return f"concat_ws(',', {', '.join(parts)})" if parts else "''"


def _checked_select(table: TableSpec) -> str:
    exprs = []
    for col in table.columns:
        ok, conv = _checks(col)
        exprs.append(
            f"{quote_ident(col.name)}::JSON AS {quote_ident(col.name)}"
            if col.type == "json"
            else f"CASE WHEN {ok} THEN {conv} END AS {quote_ident(col.name)}"
        )
    extra = quote_ident(EXTRA_COLUMN)
    inner = f"NULLIF(substr({extra}::VARCHAR, 2, length({extra}::VARCHAR) - 2), '')"
    exprs.append(
        f"CASE WHEN __ip_mismatch = '' THEN {extra} "
        f"ELSE ('{{' || concat_ws(',', {inner}, __ip_mismatch) || '}}')::JSON END AS {extra}"
    )
    return "SELECT " + ", ".join(exprs)


def _object_frame(columns: dict[str, list[Any]]) -> Any:
    import pandas  # only appends of rejects and plan rows pay for importing it

    # object dtype: DuckDB reads Python str/None as VARCHAR/NULL without a pyarrow round trip.
    return pandas.DataFrame({name: pandas.Series(values, dtype=object) for name, values in columns.items()})
