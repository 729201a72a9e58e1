"""Reverse-ETL bookkeeping in the warehouse: what was delivered to each sink, and what the sinks refused.

Two internal tables beside ``_integrations.cursor_state``, in both backends:

- ``_integrations.delivered(sink, record_key, hash, delivered_at, response)``: one row per sink and key,
  the hash of the record as last sent (``engine.write.diff.record_hash``) and the fields the vendor answered
  with (``Outcome.response``). ``read_delivered`` feeds ``engine.write.diff.diff``; ``record_delivery``
  upserts, in one transaction, so a re-run of the same records sends nothing.
- ``_integrations.rejects(sink, record_key, reason, record, rejected_at)``: append-only, one row per
  refused record, for a person to look at (the key is NULL for a record that had none).
- ``_integrations.sync_plans(sink, run_id, action, record_key, reason, record, planned_at)``: append-only,
  what a dry run would have done (``create``/``update``/``delete``/``reject``), one row per record, so a
  person can review a sync before it calls the vendor.

PostgreSQL declares ``PRIMARY KEY (sink, record_key)`` and upserts with ``ON CONFLICT`` from a
``COPY``-filled temp table. DuckDB declares no key, like the stream tables (``duckdb.py``): its index
would stay pinned in memory, growing with the table. There the writers of a file are serialised
and an upsert deletes the keys it brings, then inserts them, from a registered DataFrame: a row-by-row
``executemany`` takes minutes at 100k rows.

The backends call the functions here with an open connection, inside their own locking and error
handling (``DuckDBWarehouse``/``PostgresWarehouse.record_delivery`` and friends).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from .base import STATE_SCHEMA, encode_json, format_timestamp, qualified, quote_ident

DELIVERED_TABLE = "delivered"
REJECTS_TABLE = "rejects"
DELIVERED = qualified(STATE_SCHEMA, DELIVERED_TABLE)
REJECTS = qualified(STATE_SCHEMA, REJECTS_TABLE)
PLANS_TABLE = "sync_plans"
PLANS = qualified(STATE_SCHEMA, PLANS_TABLE)
PLAN_ACTIONS = ("create", "update", "delete", "reject")

DeliveryRow = tuple[str, str, "dict[str, Any] | None"]
RejectRow = tuple["str | None", str, Any]
PlanRow = tuple[str, "str | None", "str | None", Any]  # (action, key, reason, record)


# ------------------------------------------------------------------------------- shared checks


def check_sink(sink: Any) -> str:
    if not isinstance(sink, str) or not sink:
        raise ValueError(f"sink must be a non-empty string like 'salesmanago.contacts', got {sink!r}")
    return sink


def delivery_columns(rows: Iterable[DeliveryRow]) -> tuple[list[str], list[str], list[str | None]]:
    """Keys, hashes and response JSON texts, one per key (the last row for a key wins)."""
    latest: dict[str, tuple[str, Any]] = {}
    for row in rows:
        key, digest, response = row
        if type(key) is not str or type(digest) is not str:
            raise TypeError(f"delivery rows are (key: str, hash: str, response), got ({key!r}, {digest!r}, ...)")
        latest[key] = (digest, response)
    keys = list(latest)
    hashes = [v[0] for v in latest.values()]
    responses = [None if v[1] is None else encode_json(v[1]) for v in latest.values()]
    return keys, hashes, responses


def _record_json(record: Any) -> str:
    # A refused record may hold what made it refused (NaN, a datetime, an object): keep it readable.
    try:
        return encode_json(record)
    except (TypeError, ValueError):
        return encode_json({"unencodable_record": repr(record)[:10_000]})


def reject_columns(rows: Iterable[RejectRow]) -> tuple[list[str | None], list[str], list[str]]:
    keys: list[str | None] = []
    reasons: list[str] = []
    records: list[str] = []
    for key, reason, record in rows:
        if key is not None and type(key) is not str:
            raise TypeError(f"a reject's key must be a string or None, got {key!r}")
        keys.append(key)
        reasons.append(str(reason))
        records.append(_record_json(record))
    return keys, reasons, records


def plan_columns(rows: Iterable[PlanRow]) -> tuple[list[str], list[str | None], list[str | None], list[str | None]]:
    actions: list[str] = []
    keys: list[str | None] = []
    reasons: list[str | None] = []
    records: list[str | None] = []
    for action, key, reason, record in rows:
        if action not in PLAN_ACTIONS:
            raise ValueError(f"a plan row's action must be one of {list(PLAN_ACTIONS)}, got {action!r}")
        if key is not None and type(key) is not str:
            raise TypeError(f"a plan row's key must be a string or None, got {key!r}")
        actions.append(action)
        keys.append(key)
        reasons.append(None if reason is None else str(reason))
        records.append(None if record is None else _record_json(record))
    return actions, keys, reasons, records


def _plan_dicts(sink: str, rows: Sequence[Sequence[Any]], *, json_as_text: bool) -> list[dict]:
    return [
        {
            "sink": sink,
            "run_id": run_id,
            "action": action,
            "record_key": key,
            "reason": reason,
            "record": json.loads(record) if json_as_text and record is not None else record,
            "planned_at": format_timestamp(at),
        }
        for run_id, action, key, reason, record, at in rows
    ]


def _reject_dicts(sink: str, rows: Sequence[Sequence[Any]], *, json_as_text: bool) -> list[dict]:
    return [
        {
            "sink": sink,
            "record_key": key,
            "reason": reason,
            "record": json.loads(record) if json_as_text and record is not None else record,
            "rejected_at": format_timestamp(at),
        }
        for key, reason, record, at in rows
    ]


# ------------------------------------------------------------------------------------- DuckDB


def duckdb_ensure(conn: Any) -> None:
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


def _duckdb_has(conn: Any, name: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema = ? AND table_name = ?",
            [STATE_SCHEMA, name],
        ).fetchone()[0]
    )


def _frame(columns: dict[str, list[Any]]) -> Any:
    import pandas

    # object dtype: DuckDB reads Python str/None as VARCHAR/NULL without a pyarrow round trip.
    return pandas.DataFrame({name: pandas.Series(values, dtype=object) for name, values in columns.items()})


def duckdb_read_delivered(conn: Any, sink: str) -> dict[str, str]:
    if not _duckdb_has(conn, DELIVERED_TABLE):
        return {}
    return dict(conn.execute(f"SELECT record_key, hash FROM {DELIVERED} WHERE sink = ?", [sink]).fetchall())


def duckdb_record_delivery(conn: Any, sink: str, rows: Iterable[DeliveryRow]) -> int:
    """Upsert; call inside a transaction holding the file's write lock. Returns the keys written."""
    keys, hashes, responses = delivery_columns(rows)
    if not keys:
        return 0
    duckdb_ensure(conn)
    frame = _frame({"record_key": keys, "hash": hashes, "response": responses})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DuckDB's pandas scan uses deprecated pandas API
        conn.register("__ip_delivery", frame)
        try:
            # No key constraint (see the module docstring): drop the old rows of these keys, then insert.
            conn.execute(
                f"DELETE FROM {DELIVERED} WHERE sink = ? AND record_key IN (SELECT record_key FROM __ip_delivery)",
                [sink],
            )
            conn.execute(
                f"INSERT INTO {DELIVERED} SELECT ?, record_key, hash, now(), response::JSON FROM __ip_delivery",
                [sink],
            )
        finally:
            conn.unregister("__ip_delivery")
    return len(keys)


def duckdb_record_rejects(conn: Any, sink: str, rows: Iterable[RejectRow]) -> int:
    keys, reasons, records = reject_columns(rows)
    if not keys:
        return 0
    duckdb_ensure(conn)
    frame = _frame({"record_key": keys, "reason": reasons, "record": records})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn.register("__ip_rejects", frame)
        try:
            conn.execute(
                f"INSERT INTO {REJECTS} SELECT ?, record_key, reason, record::JSON, now() FROM __ip_rejects", [sink]
            )
        finally:
            conn.unregister("__ip_rejects")
    return len(keys)


def duckdb_read_rejects(conn: Any, sink: str) -> list[dict]:
    if not _duckdb_has(conn, REJECTS_TABLE):
        return []
    rows = conn.execute(
        f"SELECT record_key, reason, record::VARCHAR, rejected_at FROM {REJECTS} WHERE sink = ? "
        "ORDER BY rejected_at, rowid",
        [sink],
    ).fetchall()
    return _reject_dicts(sink, rows, json_as_text=True)


def duckdb_record_plan(conn: Any, sink: str, run_id: str, rows: Iterable[PlanRow]) -> int:
    actions, keys, reasons, records = plan_columns(rows)
    if not actions:
        return 0
    duckdb_ensure(conn)
    frame = _frame({"action": actions, "record_key": keys, "reason": reasons, "record": records})
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
    return len(actions)


def duckdb_read_plan(conn: Any, sink: str, run_id: str | None) -> list[dict]:
    if not _duckdb_has(conn, PLANS_TABLE):
        return []
    where, params = ("sink = ?", [sink]) if run_id is None else ("sink = ? AND run_id = ?", [sink, run_id])
    rows = conn.execute(
        f"SELECT run_id, action, record_key, reason, record::VARCHAR, planned_at FROM {PLANS} WHERE {where} "
        "ORDER BY planned_at, rowid",
        params,
    ).fetchall()
    return _plan_dicts(sink, rows, json_as_text=True)


# --------------------------------------------------------------------------------- PostgreSQL


def postgres_ensure(conn: Any, ddl_lock_key: int) -> None:
    """Create the tables if missing; call inside a transaction (DDL under the warehouse's advisory lock)."""
    have = conn.execute("SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)", [DELIVERED, REJECTS, PLANS]).fetchone()
    if all(v is not None for v in have):
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [ddl_lock_key])
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {DELIVERED} (sink text NOT NULL, record_key text NOT NULL, "
        "hash text NOT NULL, delivered_at timestamptz NOT NULL DEFAULT now(), response jsonb, "
        "PRIMARY KEY (sink, record_key))"
    )
    # A serial id keeps the order rejects were recorded in (rows of one call share rejected_at).
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {REJECTS} (id bigserial PRIMARY KEY, sink text NOT NULL, record_key text, "
        "reason text NOT NULL, record jsonb, rejected_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(f"CREATE INDEX IF NOT EXISTS rejects_sink ON {REJECTS} (sink, id)")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {PLANS} (id bigserial PRIMARY KEY, sink text NOT NULL, run_id text NOT NULL, "
        "action text NOT NULL, record_key text, reason text, record jsonb, planned_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(f"CREATE INDEX IF NOT EXISTS sync_plans_sink ON {PLANS} (sink, run_id, id)")


def postgres_read_delivered(conn: Any, sink: str) -> dict[str, str]:
    if conn.execute("SELECT to_regclass(%s)", [DELIVERED]).fetchone()[0] is None:
        return {}
    with conn.cursor() as cur:
        cur.execute(f"SELECT record_key, hash FROM {DELIVERED} WHERE sink = %s", [sink])
        return dict(cur.fetchall())


def postgres_record_delivery(conn: Any, sink: str, rows: Iterable[DeliveryRow], ddl_lock_key: int) -> int:
    """Upsert; call inside a transaction. COPY into a temp table, then one INSERT ... ON CONFLICT."""
    keys, hashes, responses = delivery_columns(rows)
    if not keys:
        return 0
    postgres_ensure(conn, ddl_lock_key)
    conn.execute("CREATE TEMP TABLE ip_delivery (record_key text, hash text, response text) ON COMMIT DROP")
    with conn.cursor() as cur, cur.copy("COPY ip_delivery (record_key, hash, response) FROM STDIN") as copy:
        for row in zip(keys, hashes, responses, strict=True):
            copy.write_row(row)
    conn.execute(
        f"INSERT INTO {DELIVERED} (sink, record_key, hash, delivered_at, response) "
        "SELECT %s, record_key, hash, now(), response::jsonb FROM ip_delivery "
        "ON CONFLICT (sink, record_key) DO UPDATE SET hash = EXCLUDED.hash, "
        "delivered_at = EXCLUDED.delivered_at, response = EXCLUDED.response",
        [sink],
    )
    return len(keys)


def postgres_record_rejects(conn: Any, sink: str, rows: Iterable[RejectRow], ddl_lock_key: int) -> int:
    keys, reasons, records = reject_columns(rows)
    if not keys:
        return 0
    postgres_ensure(conn, ddl_lock_key)
    with conn.cursor() as cur, cur.copy(f"COPY {REJECTS} (sink, record_key, reason, record) FROM STDIN") as copy:
        for row in zip(keys, reasons, records, strict=True):
            copy.write_row((sink, *row))
    return len(keys)


def postgres_read_rejects(conn: Any, sink: str) -> list[dict]:
    if conn.execute("SELECT to_regclass(%s)", [REJECTS]).fetchone()[0] is None:
        return []
    rows = conn.execute(
        f"SELECT record_key, reason, record, rejected_at FROM {REJECTS} WHERE sink = %s ORDER BY id", [sink]
    ).fetchall()
    return _reject_dicts(sink, rows, json_as_text=False)


def postgres_record_plan(conn: Any, sink: str, run_id: str, rows: Iterable[PlanRow], ddl_lock_key: int) -> int:
    actions, keys, reasons, records = plan_columns(rows)
    if not actions:
        return 0
    postgres_ensure(conn, ddl_lock_key)
    with conn.cursor() as cur, cur.copy(
        f"COPY {PLANS} (sink, run_id, action, record_key, reason, record) FROM STDIN"
    ) as copy:
        for row in zip(actions, keys, reasons, records, strict=True):
            copy.write_row((sink, run_id, *row))
    return len(actions)


def postgres_read_plan(conn: Any, sink: str, run_id: str | None) -> list[dict]:
    if conn.execute("SELECT to_regclass(%s)", [PLANS]).fetchone()[0] is None:
        return []
    where, params = ("sink = %s", [sink]) if run_id is None else ("sink = %s AND run_id = %s", [sink, run_id])
    rows = conn.execute(
        f"SELECT run_id, action, record_key, reason, record, planned_at FROM {PLANS} WHERE {where} ORDER BY id", params
    ).fetchall()
    return _plan_dicts(sink, rows, json_as_text=False)
