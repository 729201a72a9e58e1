"""Reverse-ETL bookkeeping in the warehouse: what was delivered to each sink, and what the sinks refused.

Internal tables beside ``_integrations.cursor_state``, in every backend:

- ``_integrations.delivered(sink, record_key, hash, delivered_at, response)``: one row per sink and key,
  the hash of the record as last sent (``engine.write.diff.record_hash``) and the fields the vendor answered
  with (``Outcome.response``). ``read_delivered`` feeds ``engine.write.diff.diff``; ``record_delivery``
  upserts, in one transaction, so a re-run of the same records sends nothing.
- ``_integrations.rejects(sink, record_key, reason, record, rejected_at)``: append-only, one row per
  refused record, for a person to look at (the key is NULL for a record that had none).
- ``_integrations.sync_plans(sink, run_id, action, record_key, reason, record, planned_at)``: append-only,
  what a dry run would have done (``create``/``update``/``delete``/``reject``/``in_doubt``), one row per
  record, so a person can review a sync before it calls the vendor;
- the delivery ledger of ``engine.write.ledger``: ``_integrations.intents(sink, call_id, run_id,
  created_at, items)`` (one row per vendor call between its send and its record: the keys, hashes and
  records it carries), ``_integrations.in_doubt(sink, record_key, hash, record, call_id, run_id,
  reason, since)`` (records a call may or may not have applied, until a person settles them) and
  ``_integrations.leases(name, token, run_id, host, pid, process_started, acquired_at, expires_at)``
  (one writer per sync). A call's outcome (delivered rows, rejects, records in doubt, the intent
  closed) is written in ONE transaction (``DeliveryWarehouse.close_intent``).

``DeliveryWarehouse`` implements the bookkeeping of ``Warehouse`` once: the checks, the transactions
and the ledger's SQL, which differs between dialects only in placeholders, type names and how an
``UPDATE`` reports its row count (the ``Warehouse`` dialect attributes and ``_affected_rows``). What
differs more is each backend's, in its own module, behind the abstract hooks below: the tables' DDL,
the upsert of delivered rows, the appends of rejects and plan rows, their reading order and the lease
upsert. PostgreSQL declares primary keys and upserts with ``ON CONFLICT`` from a ``COPY``-filled temp
table; DuckDB declares no key on the big tables, like the stream tables (``duckdb.py``).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from integrations_pipeline.engine.errors import LeaseLostError
from integrations_pipeline.engine.write.ledger import InDoubt, Intent, Lease

from .base import STATE_SCHEMA, Warehouse, encode_json, format_timestamp, qualified, storable, unstorable_json

DELIVERED_TABLE = "delivered"
REJECTS_TABLE = "rejects"
DELIVERED = qualified(STATE_SCHEMA, DELIVERED_TABLE)
REJECTS = qualified(STATE_SCHEMA, REJECTS_TABLE)
PLANS_TABLE = "sync_plans"
PLANS = qualified(STATE_SCHEMA, PLANS_TABLE)
PLAN_ACTIONS = ("create", "update", "delete", "reject", "in_doubt")
INTENTS_TABLE = "intents"
IN_DOUBT_TABLE = "in_doubt"
LEASES_TABLE = "leases"
INTENTS = qualified(STATE_SCHEMA, INTENTS_TABLE)
IN_DOUBT = qualified(STATE_SCHEMA, IN_DOUBT_TABLE)
LEASES = qualified(STATE_SCHEMA, LEASES_TABLE)
LEASE_COLUMNS = "name, token, run_id, host, pid, process_started, acquired_at, expires_at"

DeliveryRow = tuple[str, str, "dict[str, Any] | None"]
RejectRow = tuple["str | None", str, Any]
PlanRow = tuple[str, "str | None", "str | None", Any]  # (action, key, reason, record)


# ------------------------------------------------------------------------------- shared checks


def check_sink(sink: Any) -> str:
    if not isinstance(sink, str) or not sink:
        raise ValueError(f"sink must be a non-empty string like 'salesmanago.contacts', got {sink!r}")
    return sink


def delivery_columns(rows: Iterable[DeliveryRow]) -> tuple[list[str], list[str], list[Any]]:
    """Keys, hashes and responses (as the vendor answered, for the backend to encode), one per key (the
    last row for a key wins)."""
    latest: dict[str, tuple[str, Any]] = {}
    for row in rows:
        key, digest, response = row
        if type(key) is not str or type(digest) is not str:
            raise TypeError(f"delivery rows are (key: str, hash: str, response), got ({key!r}, {digest!r}, ...)")
        latest[key] = (digest, response)
    keys = list(latest)
    hashes = [v[0] for v in latest.values()]
    responses = [v[1] for v in latest.values()]
    return keys, hashes, responses


def _storable_json(value: Any) -> str:
    # A vendor's answer may hold U+0000 or a lone surrogate (a hostile or broken id): neither backend
    # stores them, and a record that fails after the vendor accepted would stop every later push.
    text = encode_json(value)
    return encode_json(storable(value)) if unstorable_json(text) else text


def response_texts(responses: Sequence[Any]) -> list[str | None]:
    """Each response as storable JSON text; None stays None (SQL NULL)."""
    return [None if r is None else _storable_json(r) for r in responses]


def responses_array(responses: Sequence[Any]) -> str:
    """All responses as one storable JSON array text (one encoder call: ~3x faster than one per row); a
    None becomes JSON null (the caller stores it as SQL NULL)."""
    return _storable_json(list(responses))


def _record_json(record: Any) -> str:
    # A refused record may hold what made it refused (NaN, a datetime, an object): keep it readable.
    try:
        text = encode_json(record)
    except (TypeError, ValueError):
        return encode_json({"unencodable_record": repr(record)[:10_000]})
    # Every backend stores these records alike: U+0000 as U+FFFD (PostgreSQL's jsonb cannot hold it).
    return encode_json(storable(record)) if unstorable_json(text) else text


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


# ------------------------------------------------------------------------------------ leases


def lease_values(lease: Lease) -> list[Any]:
    return [
        lease.name,
        lease.token,
        lease.run_id,
        lease.host,
        lease.pid,
        lease.process_started,
        lease.acquired_at,
        lease.expires_at,
    ]


def _lease_from(row: Sequence[Any]) -> Lease:
    name, token, run_id, host, pid, started, acquired, expires = row
    return Lease(
        name,
        token,
        run_id,
        host,
        int(pid),
        None if started is None else float(started),
        float(acquired),
        float(expires),
    )


# --------------------------------------------------------------------------- DeliveryWarehouse


class DeliveryWarehouse(Warehouse):
    """A ``Warehouse`` keeping the reverse-ETL bookkeeping (module docstring), on its dialect's hooks.

    Reads take ``_connection()``; every write is one ``_transaction()``. The ledger's operations
    (``_ledger``) first make sure the tables exist; ``_ledger_tables_stay`` lets a backend do that once
    per warehouse object.
    """

    #: True when ledger tables created through this object cannot vanish behind its back (one DuckDB
    #: file written only through this code): a push's calls then skip the DDL after the first.
    _ledger_tables_stay = False

    def __init__(self, url: str):
        super().__init__(url)
        self._ledger_ready = False

    # Dialect hooks: all called with an open connection, inside the caller's transaction for writes.
    @abstractmethod
    def _ensure_delivery_tables(self, conn: Any) -> None:
        """Create the bookkeeping tables (this module's docstring) where missing."""

    @abstractmethod
    def _upsert_delivered(
        self,
        conn: Any,
        sink: str,
        keys: list[str],
        hashes: list[str],
        responses: list[Any],
        *,
        new: bool = False,
    ) -> None:
        """Set the delivered hash and response (JSON text) of each key (the keys are distinct). ``new``:
        no key has a row yet (the ledger knows it, ``_close_intent``), so a backend without a key
        constraint may insert without looking for old rows."""

    @abstractmethod
    def _append_rejects(
        self, conn: Any, sink: str, keys: list[str | None], reasons: list[str], records: list[str]
    ) -> None:
        """Append one reject per position; ``records`` are JSON text."""

    @abstractmethod
    def _append_plan(
        self,
        conn: Any,
        sink: str,
        run_id: str,
        actions: list[str],
        keys: list[str | None],
        reasons: list[str | None],
        records: list[str | None],
    ) -> None:
        """Append one dry-run row per position; ``records`` are JSON text or None."""

    @abstractmethod
    def _select_rejects(self, conn: Any, sink: str) -> Sequence[Sequence[Any]]:
        """``(record_key, reason, record, rejected_at)`` of ``sink``'s rejects in the order recorded."""

    @abstractmethod
    def _select_plan(self, conn: Any, sink: str, run_id: str | None) -> Sequence[Sequence[Any]]:
        """``(run_id, action, record_key, reason, record, planned_at)`` of ``sink`` (one run, or all), in order."""

    @abstractmethod
    def _upsert_lease(self, conn: Any, lease: Lease) -> None:
        """Write ``lease``'s row, replacing any row of its name."""

    @abstractmethod
    def _affected_rows(self, cursor: Any) -> int:
        """How many rows the ``UPDATE`` just run on ``cursor`` changed."""

    # ------------------------------------------------------------- delivered state, rejects, plans

    def read_delivered(self, sink: str) -> dict[str, str]:
        with self._errors("read_delivered"), self._connection() as conn:
            sink = check_sink(sink)
            if not self._has_table(conn, STATE_SCHEMA, DELIVERED_TABLE):
                return {}
            rows = conn.execute(
                f"SELECT record_key, hash FROM {DELIVERED} WHERE sink = {self._placeholder}", [sink]
            ).fetchall()
            return dict(rows)

    def record_delivery(self, sink: str, rows: Sequence[DeliveryRow]) -> int:
        check_sink(sink)
        with self._errors("record_delivery"), self._transaction() as conn:
            return self._record_delivery(conn, sink, rows)

    def record_rejects(self, sink: str, rows: Sequence[RejectRow]) -> int:
        check_sink(sink)
        with self._errors("record_rejects"), self._transaction() as conn:
            return self._record_rejects(conn, sink, rows)

    def read_rejects(self, sink: str) -> list[dict]:
        with self._errors("read_rejects"), self._connection() as conn:
            sink = check_sink(sink)
            if not self._has_table(conn, STATE_SCHEMA, REJECTS_TABLE):
                return []
            return _reject_dicts(sink, self._select_rejects(conn, sink), json_as_text=self._json_as_text)

    def record_plan(self, sink: str, run_id: str, rows: Sequence[PlanRow]) -> int:
        check_sink(sink)
        with self._errors("record_plan"), self._transaction() as conn:
            actions, keys, reasons, records = plan_columns(rows)
            if not actions:
                return 0
            self._ensure_delivery_tables(conn)
            self._append_plan(conn, sink, run_id, actions, keys, reasons, records)
            return len(actions)

    def read_plan(self, sink: str, run_id: str | None = None) -> list[dict]:
        with self._errors("read_plan"), self._connection() as conn:
            sink = check_sink(sink)
            if not self._has_table(conn, STATE_SCHEMA, PLANS_TABLE):
                return []
            return _plan_dicts(sink, self._select_plan(conn, sink, run_id), json_as_text=self._json_as_text)

    def _record_delivery(
        self, conn: Any, sink: str, rows: Iterable[DeliveryRow], *, ensure: bool = True, new: bool = False
    ) -> int:
        """Upsert inside the caller's transaction; returns the keys written. ``ensure=False``: the
        caller made sure of the tables already (the ledger, once per operation); ``new``: see
        ``_upsert_delivered``."""
        keys, hashes, responses = delivery_columns(rows)
        if not keys:
            return 0
        if ensure:
            self._ensure_delivery_tables(conn)
        self._upsert_delivered(conn, sink, keys, hashes, responses, new=new)
        return len(keys)

    def _record_rejects(self, conn: Any, sink: str, rows: Iterable[RejectRow], *, ensure: bool = True) -> int:
        keys, reasons, records = reject_columns(rows)
        if not keys:
            return 0
        if ensure:
            self._ensure_delivery_tables(conn)
        self._append_rejects(conn, sink, keys, reasons, records)
        return len(keys)

    # ------------------------------------------------- the delivery ledger (engine.write.ledger)

    def _ledger(self, what: str, work: Callable[[Any], Any]) -> Any:
        """Run ``work(conn)`` in one write transaction with the ledger tables in place."""
        with self._errors(what), self._transaction() as conn:
            if not self._ledger_ready:
                self._ensure_delivery_tables(conn)
            result = work(conn)
        self._ledger_ready = self._ledger_tables_stay  # only once committed: the DDL is part of it
        return result

    def take_lease(self, lease: Lease, may_take: Callable[[Lease], bool]) -> Lease | None:
        return self._ledger("take_lease", lambda conn: self._take_lease(conn, lease, may_take))

    def release_lease(self, name: str, token: str) -> None:
        self._ledger("release_lease", lambda conn: self._release_lease(conn, name, token))

    def open_intent(self, sink: str, intent: Intent, lease: Lease) -> None:
        self._ledger("open_intent", lambda conn: self._open_intent(conn, check_sink(sink), intent, lease))

    def renew_lease(self, lease: Lease) -> None:
        self._ledger("renew_lease", lambda conn: self._renew_lease(conn, lease))

    def close_intent(
        self,
        sink: str,
        call_id: str,
        *,
        delivered: Sequence[DeliveryRow] = (),
        rejects: Sequence[RejectRow] = (),
        in_doubt: Sequence[InDoubt] = (),
        delivered_new: Sequence[DeliveryRow] = (),
        open_next: tuple[Intent, Lease] | None = None,
    ) -> None:
        def work(conn: Any) -> None:
            if open_next is None:
                self._record_only(conn)
            self._close_intent(conn, check_sink(sink), call_id, delivered, rejects, in_doubt, delivered_new)
            if open_next is not None:  # one commit for a call's record and the next call's intent
                self._open_intent(conn, sink, *open_next)

        self._ledger("close_intent", work)

    def read_intents(self, sink: str) -> list[Intent]:
        with self._errors("read_intents"), self._connection() as conn:
            if not self._has_table(conn, STATE_SCHEMA, INTENTS_TABLE):
                return []
            return self._read_intents(conn, check_sink(sink))

    def read_in_doubt(self, sink: str) -> list[InDoubt]:
        with self._errors("read_in_doubt"), self._connection() as conn:
            if not self._has_table(conn, STATE_SCHEMA, IN_DOUBT_TABLE):
                return []
            return self._read_in_doubt(conn, check_sink(sink))

    def resolve_in_doubt(self, sink: str, keys: Sequence[str] | None, *, mark_delivered: bool) -> list[InDoubt]:
        return self._ledger(
            "resolve_in_doubt",
            lambda conn: self._resolve_in_doubt(conn, check_sink(sink), keys, mark_delivered),
        )

    # The ledger's SQL, with the dialect's placeholder and type names; each runs inside a transaction
    # with the tables in place.

    def _read_lease(self, conn: Any, name: str) -> Lease | None:
        p = self._placeholder
        row = conn.execute(f"SELECT {LEASE_COLUMNS} FROM {LEASES} WHERE name = {p}", [name]).fetchone()
        return None if row is None else _lease_from(row)

    def _take_lease(self, conn: Any, lease: Lease, may_take: Callable[[Lease], bool]) -> Lease | None:
        """Take ``lease`` unless another stands (returned)."""
        held = self._read_lease(conn, lease.name)
        if held is not None and held.token != lease.token and not may_take(held):
            return held
        self._upsert_lease(conn, lease)
        return None

    def _release_lease(self, conn: Any, name: str, token: str) -> None:
        p = self._placeholder
        conn.execute(f"DELETE FROM {LEASES} WHERE name = {p} AND token = {p}", [name, token])

    def _record_only(self, conn: Any) -> None:
        """Called first in a transaction that records outcomes and writes no intent: a backend may let such
        a commit skip waiting for the disk (nothing is sent on its strength)."""

    def _renew_lease(self, conn: Any, lease: Lease) -> None:
        """Extend ``lease`` to its ``expires_at``; ``LeaseLostError`` if it is no longer this token's."""
        p = self._placeholder
        cur = conn.execute(
            f"UPDATE {LEASES} SET expires_at = {p} WHERE name = {p} AND token = {p}",
            [lease.expires_at, lease.name, lease.token],
        )
        if not self._affected_rows(cur):
            now_held = self._read_lease(conn, lease.name)
            by = now_held.describe() if now_held is not None else "nobody"
            raise LeaseLostError(
                f"sync {lease.name}: this run's lease is gone (held now by {by}); nothing more is sent by run {lease.run_id}"
            )

    def _open_intent(self, conn: Any, sink: str, intent: Intent, lease: Lease) -> None:
        """Renew ``lease`` and write ``intent``; ``LeaseLostError`` (nothing written) if the lease is gone."""
        p = self._placeholder
        self._renew_lease(conn, lease)
        # Kept as text, not a JSON type: written for every call, read only after a crash.
        conn.execute(
            f"INSERT INTO {INTENTS} (sink, call_id, run_id, created_at, items) VALUES ({p}, {p}, {p}, {p}, {p})",
            [sink, intent.call_id, intent.run_id, intent.created_at, intent.items_json()],
        )

    def _read_intents(self, conn: Any, sink: str) -> list[Intent]:
        rows = conn.execute(
            f"SELECT call_id, run_id, created_at, items FROM {INTENTS} WHERE sink = {self._placeholder} "
            "ORDER BY created_at, call_id",
            [sink],
        ).fetchall()
        return [Intent(c, r, float(t), tuple(tuple(item) for item in json.loads(items))) for c, r, t, items in rows]

    def _read_in_doubt(self, conn: Any, sink: str) -> list[InDoubt]:
        rows = conn.execute(
            f"SELECT record_key, hash, record::{self._column_types['string']}, call_id, run_id, reason, "
            f"extract(epoch FROM since) FROM {IN_DOUBT} WHERE sink = {self._placeholder} ORDER BY since, record_key",
            [sink],
        ).fetchall()
        return [
            InDoubt(k, h, None if rec is None else json.loads(rec), c, r, why, None if since is None else float(since))
            for k, h, rec, c, r, why, since in rows
        ]

    def _close_intent(
        self,
        conn: Any,
        sink: str,
        call_id: str,
        delivered: Sequence[DeliveryRow],
        rejects: Sequence[RejectRow],
        in_doubt: Sequence[InDoubt],
        delivered_new: Sequence[DeliveryRow] = (),
    ) -> None:
        """Record one call's outcome (``DeliveryLedger.close_intent``)."""
        p = self._placeholder
        # The intent goes first: gone already means another push settled this call (this one lost its
        # lease meanwhile and may have written rows for keys its plan saw undelivered): then no key is
        # taken as new.
        cur = conn.execute(f"DELETE FROM {INTENTS} WHERE sink = {p} AND call_id = {p}", [sink, call_id])
        if delivered_new and not self._affected_rows(cur):
            delivered, delivered_new = [*delivered, *delivered_new], ()
        if delivered:
            self._record_delivery(conn, sink, delivered, ensure=False)
        if delivered_new:
            self._record_delivery(conn, sink, delivered_new, ensure=False, new=True)
        # Settled keys leave the in-doubt table: delivered, refused, or about to be put back with a new reason.
        settled = (
            [row[0] for row in delivered]
            + [row[0] for row in delivered_new]
            + [row[0] for row in rejects if row[0] is not None]
            + [x.key for x in in_doubt]
        )
        # Most calls settle keys that were never in doubt: look before deleting (a probe, not a scan of keys).
        if settled and conn.execute(f"SELECT 1 FROM {IN_DOUBT} WHERE sink = {p} LIMIT 1", [sink]).fetchone():
            conn.execute(f"DELETE FROM {IN_DOUBT} WHERE sink = {p} AND record_key = ANY({p})", [sink, settled])
        if rejects:
            self._record_rejects(conn, sink, rejects, ensure=False)
        if in_doubt:
            # A key delivered meanwhile (a lease race, or a resend that went through) is not in doubt.
            text, json_type = self._column_types["string"], self._column_types["json"]
            columns = [[x.key for x in in_doubt], [x.hash for x in in_doubt], [_record_json(x.record) for x in in_doubt],
                       [x.call_id for x in in_doubt], [x.run_id for x in in_doubt], [x.reason for x in in_doubt]]  # fmt: skip
            unnested = ", ".join(f"unnest({p}::{text}[]) AS {name}" for name in ("k", "h", "r", "c", "u", "why"))
            conn.execute(
                f"INSERT INTO {IN_DOUBT} (sink, record_key, hash, record, call_id, run_id, reason, since) "
                f"SELECT {p}, k, h, r::{json_type}, c, u, why, now() FROM (SELECT {unnested}) AS t "
                f"WHERE NOT EXISTS (SELECT 1 FROM {DELIVERED} AS x WHERE x.sink = {p} AND x.record_key = t.k)",
                [sink, *columns, sink],
            )

    def _resolve_in_doubt(
        self, conn: Any, sink: str, keys: Sequence[str] | None, mark_delivered: bool
    ) -> list[InDoubt]:
        wanted = None if keys is None else set(keys)
        rows = [x for x in self._read_in_doubt(conn, sink) if wanted is None or x.key in wanted]
        if not rows:
            return []
        if mark_delivered:
            self._record_delivery(
                conn,
                sink,
                [(x.key, x.hash, {"marked_delivered": True, "call_id": x.call_id}) for x in rows],
                ensure=False,
            )
        conn.execute(
            f"DELETE FROM {IN_DOUBT} WHERE sink = {self._placeholder} AND record_key = ANY({self._placeholder})",
            [sink, [x.key for x in rows]],
        )
        return rows
