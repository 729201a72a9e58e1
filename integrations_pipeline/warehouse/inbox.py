"""What arrives from outside a run: customers' connections and the vendors' webhooks, in the warehouse.

Two small tables beside the delivery bookkeeping, in every backend:

- ``_integrations.connections(connector, connection_id, integration_name, customer_id, available_actions,
  status, token_sealed, created_at, updated_at)``: one row per connection the link flow stored or reconciling
  found. ``token_sealed`` is the access token encrypted by ``engine.connections.TokenVault`` (Fernet): the
  clear token is never written. ``status`` is ``active``, ``deleted`` (the vendor no longer lists it) or
  ``revoked`` (its token was refused: 401).
- ``_integrations.webhook_events(connector, event_id, event_type, connection_id, stream, object_id, payload,
  received_at, applied_at, outcome)``: one row per verified webhook, keyed by the vendor's delivery id, so a
  delivery retried by the vendor is stored once. ``applied_at`` is set once the event needs nothing more (its
  change is in its stream's table, or it changes none: ``outcome`` says which); an event that cannot be applied
  yet (an unknown connection, an object to read by id) keeps ``applied_at`` NULL and says why in ``outcome``.

The SQL is the same in both dialects (``INSERT ... ON CONFLICT``, the backend's placeholder and text type);
timestamps are ISO 8601 UTC text, which sorts as time does. The tables are tiny next to the stream tables,
so both declare primary keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from integrations_pipeline.engine.connections import LinkedConnection
from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.webhooks import ReceivedEvent

from .base import STATE_SCHEMA, format_timestamp, qualified
from .delivery import DeliveryWarehouse
from .registry import connect_warehouse

CONNECTIONS_TABLE = "connections"
EVENTS_TABLE = "webhook_events"
CONNECTIONS = qualified(STATE_SCHEMA, CONNECTIONS_TABLE)
EVENTS = qualified(STATE_SCHEMA, EVENTS_TABLE)
CONNECTION_STATUSES = ("active", "deleted", "revoked")
_CONNECTION_COLUMNS = (
    "connection_id, integration_name, customer_id, available_actions, status, token_sealed, created_at, updated_at"
)
_EVENT_COLUMNS = "event_id, event_type, connection_id, stream, object_id, payload, received_at, applied_at, outcome"


@dataclass(frozen=True)
class StoredConnection:
    """A row of ``_integrations.connections``; the token stays sealed until a run opens it with the vault."""

    connector: str
    connection_id: str
    integration_name: str | None
    customer_id: str | None
    available_actions: tuple[str, ...]
    status: str
    token_sealed: str | None
    created_at: str
    updated_at: str

    def __repr__(self) -> str:  # the sealed token is not a secret in clear, but there is no reason to show it
        return f"StoredConnection({self.connector!r}, {self.connection_id!r}, status={self.status!r})"


@dataclass(frozen=True)
class StoredEvent(ReceivedEvent):
    """A row of ``_integrations.webhook_events``: the event as received, and what became of it."""

    received_at: str
    applied_at: str | None
    outcome: str | None


class InboxWarehouse(DeliveryWarehouse):
    """The connection registry and the webhook inbox (module docstring), written once for every backend."""

    def _ensure_inbox_tables(self, conn: Any) -> None:
        text = self._column_types["string"]
        # Every inbox write runs these: _create_if_missing tolerates another session creating them at once.
        self._create_if_missing(conn, f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}")
        self._create_if_missing(
            conn,
            f"CREATE TABLE IF NOT EXISTS {CONNECTIONS} (connector {text} NOT NULL, connection_id {text} NOT NULL, "
            f"integration_name {text}, customer_id {text}, available_actions {text} NOT NULL, status {text} NOT NULL, "
            f"token_sealed {text}, created_at {text} NOT NULL, updated_at {text} NOT NULL, "
            "PRIMARY KEY (connector, connection_id))",
        )
        self._create_if_missing(
            conn,
            f"CREATE TABLE IF NOT EXISTS {EVENTS} (connector {text} NOT NULL, event_id {text} NOT NULL, "
            f"event_type {text} NOT NULL, connection_id {text}, stream {text}, object_id {text}, "
            f"payload {text} NOT NULL, received_at {text} NOT NULL, applied_at {text}, outcome {text}, "
            "PRIMARY KEY (connector, event_id))",
        )

    def _inbox(self, what: str, work: Any) -> Any:
        """A write: ``work(conn)`` in one transaction, the tables in place."""
        with self._errors(what), self._transaction() as conn:
            self._ensure_inbox_tables(conn)
            return work(conn)

    def _inbox_read(self, what: str, table: str, work: Any, empty: Any) -> Any:
        """A read on a plain connection, like the ledger's reads: no DDL and no write lock (the events sensor
        polls every 30 s); ``empty`` when nothing was ever stored."""
        with self._errors(what), self._connection() as conn:
            if not self._has_table(conn, STATE_SCHEMA, table):
                return empty
            return work(conn)

    # -- connections ---------------------------------------------------------------------------

    def store_connection(
        self, connector: str, connection: LinkedConnection, token_sealed: str | None, *, now: datetime
    ) -> None:
        """Add or refresh a connection, active. ``token_sealed=None`` keeps the token stored before (a list
        call never carries one)."""
        p = self._placeholder
        at = format_timestamp(now)
        values = [
            connector,
            connection.connection_id,
            connection.integration_name,
            connection.customer_id,
            json.dumps(list(connection.available_actions)),
            "active",
            token_sealed,
            at,
            at,
        ]

        def work(conn: Any) -> None:
            conn.execute(
                f"INSERT INTO {CONNECTIONS} (connector, {_CONNECTION_COLUMNS}) "
                f"VALUES ({', '.join([p] * 9)}) ON CONFLICT (connector, connection_id) DO UPDATE SET "
                "integration_name = COALESCE(excluded.integration_name, "
                f"{CONNECTIONS_TABLE}.integration_name), "
                f"customer_id = COALESCE(excluded.customer_id, {CONNECTIONS_TABLE}.customer_id), "
                # An event or a list without actions keeps those known (a connection.created carries none).
                f"available_actions = CASE WHEN excluded.available_actions = '[]' THEN {CONNECTIONS_TABLE}.available_actions "
                "ELSE excluded.available_actions END, status = excluded.status, "
                f"token_sealed = COALESCE(excluded.token_sealed, {CONNECTIONS_TABLE}.token_sealed), "
                "updated_at = excluded.updated_at",
                values,
            )

        self._inbox("store_connection", work)

    def set_connection_status(
        self, connector: str, connection_ids: Sequence[str], status: str, *, now: datetime
    ) -> int:
        if status not in CONNECTION_STATUSES:
            raise ValueError(f"got connection status {status!r}, expected one of {list(CONNECTION_STATUSES)}")
        p = self._placeholder

        def work(conn: Any) -> int:
            changed = 0
            for connection_id in connection_ids:
                cur = conn.execute(
                    f"UPDATE {CONNECTIONS} SET status = {p}, updated_at = {p} "
                    f"WHERE connector = {p} AND connection_id = {p} AND status <> {p}",
                    [status, format_timestamp(now), connector, connection_id, status],
                )
                changed += self._affected_rows(cur)
            return changed

        return int(self._inbox("set_connection_status", work))

    def read_connections(self, connector: str) -> list[StoredConnection]:
        def work(conn: Any) -> list[StoredConnection]:
            rows = conn.execute(
                f"SELECT {_CONNECTION_COLUMNS} FROM {CONNECTIONS} WHERE connector = {self._placeholder} "
                "ORDER BY connection_id",
                [connector],
            ).fetchall()
            return [
                StoredConnection(connector, r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6], r[7])
                for r in rows
            ]

        return list(self._inbox_read("read_connections", CONNECTIONS_TABLE, work, []))

    # -- webhook events ------------------------------------------------------------------------

    def store_event(self, event: ReceivedEvent, *, received_at: datetime) -> bool:
        """Store a verified webhook; False when its delivery id was stored before (a vendor's retry)."""
        p = self._placeholder
        values = [
            event.connector,
            event.event_id,
            event.event_type,
            event.connection_id,
            event.stream,
            event.object_id,
            json.dumps(event.payload, separators=(",", ":")),
            format_timestamp(received_at),
        ]

        def work(conn: Any) -> bool:
            cur = conn.execute(
                f"INSERT INTO {EVENTS} (connector, event_id, event_type, connection_id, stream, object_id, payload, "
                f"received_at) VALUES ({', '.join([p] * 8)}) ON CONFLICT (connector, event_id) DO NOTHING",
                values,
            )
            return bool(self._affected_rows(cur))

        return bool(self._inbox("store_event", work))

    def read_events(
        self,
        connector: str,
        *,
        pending_only: bool = False,
        event_types: Sequence[str] | None = None,
        received_after: str | None = None,
    ) -> list[StoredEvent]:
        """Events of ``connector`` in the order received (ties by id): only pending ones, only of
        ``event_types``, only received after ``received_after`` (an ISO timestamp), as asked."""
        p = self._placeholder
        where, params = [f"connector = {p}"], [connector]
        if pending_only:
            where.append("applied_at IS NULL")
        if event_types is not None:
            if not event_types:
                return []
            where.append(f"event_type IN ({', '.join([p] * len(event_types))})")
            params += list(event_types)
        if received_after is not None:
            where.append(f"received_at > {p}")
            params.append(received_after)

        def work(conn: Any) -> list[StoredEvent]:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM {EVENTS} WHERE {' AND '.join(where)} ORDER BY received_at, event_id",
                params,
            ).fetchall()
            return [
                StoredEvent(connector, r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8]) for r in rows
            ]

        return list(self._inbox_read("read_events", EVENTS_TABLE, work, []))

    def mark_events(
        self, connector: str, settled: Mapping[str, str], waiting: Mapping[str, str], *, now: datetime
    ) -> int:
        """In one transaction: ``settled`` events (id → outcome) get ``applied_at``; ``waiting`` ones only their
        reason (they stay pending). Returns how many events were settled now."""
        p = self._placeholder
        at = format_timestamp(now)

        def work(conn: Any) -> int:
            changed = 0
            for event_id, outcome in settled.items():
                cur = conn.execute(
                    f"UPDATE {EVENTS} SET applied_at = {p}, outcome = {p} WHERE connector = {p} AND event_id = {p} "
                    "AND applied_at IS NULL",
                    [at, outcome, connector, event_id],
                )
                changed += self._affected_rows(cur)
            for event_id, reason in waiting.items():
                conn.execute(
                    f"UPDATE {EVENTS} SET outcome = {p} WHERE connector = {p} AND event_id = {p} AND applied_at IS NULL",
                    [reason, connector, event_id],
                )
            return changed

        return int(self._inbox("mark_events", work))

    def events_since(self, received_after: str | None) -> tuple[int, str | None]:
        """How many events of any connector arrived after ``received_after`` (None: ever), and the latest
        ``received_at``: what the events sensor's cursor compares."""
        p = self._placeholder

        def work(conn: Any) -> tuple[int, str | None]:
            where, params = ("", []) if received_after is None else (f" WHERE received_at > {p}", [received_after])
            count, latest = conn.execute(f"SELECT count(*), max(received_at) FROM {EVENTS}{where}", params).fetchone()
            return int(count), latest

        count, latest = self._inbox_read("events_since", EVENTS_TABLE, work, (0, None))
        return int(count), latest

    def pending_streams(
        self, *, received_after: str | None = None, outcome_prefix: str | None = None
    ) -> set[tuple[str, str | None]]:
        """``(connector, stream)`` of the pending events received after ``received_after`` (None: ever) whose
        outcome begins ``outcome_prefix`` (None: any); stream None for an event that changes no stream (a
        connection's). The events sensor runs those vendors' events assets and exactly the syncs reading those
        streams."""
        p = self._placeholder
        where, params = ["applied_at IS NULL"], []
        if received_after is not None:
            where.append(f"received_at > {p}")
            params.append(received_after)
        if outcome_prefix is not None:
            where.append(f"substr(outcome, 1, {len(outcome_prefix)}) = {p}")
            params.append(outcome_prefix)

        def work(conn: Any) -> set[tuple[str, str | None]]:
            sql = f"SELECT DISTINCT connector, stream FROM {EVENTS} WHERE {' AND '.join(where)}"
            return {(str(r[0]), None if r[1] is None else str(r[1])) for r in conn.execute(sql, params).fetchall()}

        return set(self._inbox_read("pending_streams", EVENTS_TABLE, work, set()))


def open_inbox(url: str | None) -> InboxWarehouse:
    """The warehouse at ``url`` (None: the embedded default), which must keep connections and webhooks."""
    warehouse = connect_warehouse(url)
    if not isinstance(warehouse, InboxWarehouse):
        warehouse.close()
        raise ConfigError(f"the {warehouse.backend} warehouse keeps no connections or webhooks")
    return warehouse
