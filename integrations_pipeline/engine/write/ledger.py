"""The delivery ledger: what a push writes down before and after each vendor call, and who may push.

A push never trusts its memory across a vendor call. The ledger (the warehouse implements it, in the
same database as the delivered state, so a call's outcome is recorded in ONE transaction) holds:

- **delivered state**: per sync (``state_key``) and key, the hash of the record as last delivered;
- **intents**: before each call, the keys and hashes it carries, with the records where recovery uses
  them (an append sink's, an upsert read back; a write-ahead row); the row is removed in the
  transaction that records the call's outcome. An intent still there when the next
  push starts is a call whose outcome nobody recorded (the process was killed, the disk was full);
- **in doubt**: records a call may or may not have applied, for a sink where sending twice is not
  harmless (events). They are never sent again on their own; a person settles them
  (``integrations-pipeline in-doubt resend|mark-delivered``);
- **rejects** and dry-run **plans**, for people to read;
- **leases**: one writer per sync. A lease names its holder (run, host, process) and expires; a holder
  whose process is gone (same host) or whose lease expired loses it to the next push, so a run killed
  with ``kill -9`` needs no manual clean-up. Each intent renews the lease and fails if it was lost,
  so a holder that waited too long (SALESmanago's hourly budget) sends nothing more.

This module holds the protocol and the lease rules; ``warehouse/duckdb.py`` and ``warehouse/postgres.py``
hold the SQL (PostgreSQL also takes a session advisory lock, released by the server when the holder's
connection dies).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from ..processes import process_alive, process_started

DeliveredRow = tuple[str, str, "dict[str, Any] | None"]  # (key, hash, kept response fields)
RejectRow = tuple["str | None", str, Any]  # (key, reason, record)
PlanRow = tuple[str, "str | None", "str | None", Any]  # (action, key, reason, record)


@dataclass(frozen=True)
class Lease:
    """Who holds the right to push one sync, until when. Times are epoch seconds."""

    name: str
    token: str
    run_id: str
    host: str
    pid: int
    process_started: float | None
    acquired_at: float
    expires_at: float

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"run {self.run_id} (pid {self.pid} on {self.host}; lease until {until})"


@dataclass(frozen=True)
class Intent:
    """One vendor call about to be made: its id, run, and the (key, hash, record) of each item."""

    call_id: str
    run_id: str
    created_at: float
    items: tuple[tuple[str, str, Any], ...]
    #: Each record's JSON when the caller has it already (the plan's canonical JSON): not encoded again.
    encoded: tuple[str | None, ...] = field(default=(), compare=False, repr=False)

    def items_json(self) -> str:
        """The items as JSON text ``[[key, hash, record], ...]``, what the intent row keeps."""
        if not any(self.encoded):
            # One encoder call for the whole list: ~10x faster than one per item (a push writes this per call).
            return json.dumps(self.items, default=str)  # tuples encode as arrays: no list copies
        parts = []
        for position, (key, digest, record) in enumerate(self.items):
            text = self.encoded[position] if position < len(self.encoded) else None
            head = json.dumps([key, digest])[:-1]  # '["key", "hash"' : the record follows
            parts.append(f"{head},{text if text is not None else json.dumps(record, default=str)}]")
        return "[" + ",".join(parts) + "]"


@dataclass(frozen=True)
class InDoubt:
    """A record whose delivery is unknown: kept with the call that carried it and why."""

    key: str
    hash: str
    record: Any
    call_id: str
    run_id: str
    reason: str
    since: float | None = None


class DeliveryLedger(Protocol):
    """What a push needs from the warehouse; every write is one transaction."""

    #: A lease is also a database session's lock (PostgreSQL): lost with that session, before it expires.
    session_bound_leases: bool

    def session(self) -> AbstractContextManager[None]:
        """The stretch of a push's calls: the ledger may keep its database open between operations
        (DuckDB: opening the file costs more than a call's intent and record together)."""
        ...

    def take_lease(self, lease: Lease, may_take: Callable[[Lease], bool]) -> Lease | None:
        """Hold ``lease`` if nobody does, if its holder is ``lease.token`` or if ``may_take(held)``; return
        None when taken, else the lease that stands."""
        ...

    def release_lease(self, name: str, token: str) -> None: ...

    def read_delivered(self, sink: str) -> dict[str, str]: ...

    def read_in_doubt(self, sink: str) -> list[InDoubt]: ...

    def read_intents(self, sink: str) -> list[Intent]: ...

    def open_intent(self, sink: str, intent: Intent, lease: Lease) -> None:
        """Write ``intent`` and extend ``lease`` to its ``expires_at``; raise ``LeaseLostError`` (writing
        nothing) when the lease is no longer ``lease.token``'s."""
        ...

    def renew_lease(self, lease: Lease) -> None:
        """Extend ``lease`` to its ``expires_at``; ``LeaseLostError`` when it is no longer ``lease.token``'s."""
        ...

    def close_intent(
        self,
        sink: str,
        call_id: str,
        *,
        delivered: Sequence[DeliveredRow] = (),
        rejects: Sequence[RejectRow] = (),
        in_doubt: Sequence[InDoubt] = (),
        delivered_new: Sequence[DeliveredRow] = (),
        open_next: tuple[Intent, Lease] | None = None,
    ) -> None:
        """In one transaction: upsert ``delivered``, append ``rejects``, put ``in_doubt`` in doubt (keys
        already delivered excepted), take the delivered and rejected keys out of doubt, drop the intent;
        then write ``open_next``'s intent as ``open_intent`` does (its ``LeaseLostError`` undoes all).

        ``delivered_new`` are delivered rows of keys the push's plan found never delivered, under its
        lease: while the intent still stands, nobody else can have recorded them, so the warehouse may
        insert them without looking for an old row (DuckDB's delivered table has no key to look them up
        by: that look is a scan). Once the intent is gone they are upserted like ``delivered``."""
        ...

    def resolve_in_doubt(self, sink: str, keys: Sequence[str] | None, *, mark_delivered: bool) -> list[InDoubt]:
        """Take ``keys`` (None: all) out of doubt, recording them as delivered when ``mark_delivered``;
        return the rows taken."""
        ...

    def record_rejects(self, sink: str, rows: Sequence[RejectRow]) -> int: ...

    def record_plan(self, sink: str, run_id: str, rows: Sequence[PlanRow]) -> int: ...


# -- lease holders ---------------------------------------------------------------------------------


def holder_alive(lease: Lease, host: str | None = None) -> bool:
    """Whether the process holding ``lease`` still runs. On another host nobody can tell: True (the
    lease's expiry decides there)."""
    if lease.host != (host or socket.gethostname()):
        return True
    return process_alive(lease.pid, lease.process_started)


def new_lease(name: str, run_id: str, now: float, ttl: float) -> Lease:
    """A lease for this process, to be taken with ``DeliveryLedger.take_lease``."""
    pid = os.getpid()
    return Lease(
        name=name,
        token=uuid.uuid4().hex,
        run_id=run_id,
        host=socket.gethostname(),
        pid=pid,
        process_started=process_started(pid),
        acquired_at=now,
        expires_at=now + ttl,
    )


def renewed(lease: Lease, now: float, ttl: float) -> Lease:
    return replace(lease, expires_at=now + ttl)


def may_take_from(now: float) -> Callable[[Lease], bool]:
    """The rule for taking a held lease: it expired, or its holder's process is gone."""
    return lambda held: held.expires_at <= now or not holder_alive(held)


__all__ = [
    "DeliveryLedger",
    "InDoubt",
    "Intent",
    "Lease",
    "holder_alive",
    "may_take_from",
    "new_lease",
    "renewed",
]
