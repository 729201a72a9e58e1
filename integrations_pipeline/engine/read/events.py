"""Stored webhook events → records of their streams (the forward-ETL side of webhooks).

Two kinds of event, told apart by the vendor's ``webhooks`` block:

- **the event carries the object** (Trackstar: ``data``): the object is the record, with no API call;
- **the event names the object by id only** (Salestrekker: ``{id, event}``): the stream's ``webhooks.fetch``
  query reads the object, once per distinct id however many pending events name it (``read_by_id``).

Either way the record is merged into its stream's table by the same newest-by-cursor rule as a scheduled
load, so events that arrive out of order or more than once, or an older version read while a load stored a
newer one, leave the table equal to the vendor's truth: an older version never overwrites a newer row. The
scheduled load stays the reconciliation.

``plan_events`` sorts each event into one of four outcomes, and ``read_by_id`` resolves the reads:

- **records**: the object, with ``_connection_id`` for a per-connection stream, to merge into its stream;
- **reads**: an object to read by id first; the read turns its events into records, or settles them
  (``gone: ...``: the vendor answers null, the object was deleted or is out of sight), or leaves them waiting
  (a failure: ``retry: ...`` when waiting may help, see ``RETRY``);
- **settled**: nothing more to do (``kept: ...`` an event type that changes no stream, ``rejected: ...`` an
  object without its key or cursor): the event is stored and reported, never applied;
- **waiting**: it cannot be applied yet (an unknown connection, which may be linked later; a truncated object
  of a stream that has no ``fetch`` query): it stays pending.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..auth import dig
from ..client import VendorClient
from ..errors import LimitExceededError, RequestRejectedError, RetriableError, RetriesExhaustedError, SyncError
from ..spec import ConnectorSpec, StreamSpec, WebhookFetchSpec

CONNECTION_COLUMN = "_connection_id"

#: How the outcome of an event that waits on a transient failure begins (the vendor down, slow or rate
#: limiting past the retry policy): the events sensor runs the job again for such events even when nothing
#: new arrived, so they are applied once the vendor answers, not when the next webhook happens to come.
RETRY = "retry: "
APPLIED_BY_READ = "applied: read by id"


class EventLike(Protocol):
    """A stored webhook event (``warehouse.inbox.StoredEvent`` or ``engine.webhooks.ReceivedEvent``)."""

    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def connection_id(self) -> str | None: ...
    @property
    def stream(self) -> str | None: ...
    @property
    def object_id(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...


@dataclass
class EventPlan:
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stream → records to merge
    applies: dict[str, list[str]] = field(default_factory=dict)  # stream → the event ids its records come from
    settled: dict[str, str] = field(default_factory=dict)  # event id → outcome
    waiting: dict[str, str] = field(default_factory=dict)  # event id → why it is not applied yet
    reads: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # stream → object id → its event ids

    def add(self, stream: str, record: dict[str, Any], event_ids: Iterable[str]) -> None:
        self.records.setdefault(stream, []).append(record)
        self.applies.setdefault(stream, []).extend(event_ids)


def plan_events(spec: ConnectorSpec, events: Iterable[EventLike], connections: Collection[str] | None) -> EventPlan:
    """Sort ``events`` of ``spec``'s vendor (see the module docstring). ``connections``: the connection ids a run
    reads (None: the vendor has no connections)."""
    hooks = spec.webhooks
    plan = EventPlan()
    for event in events:
        if hooks is None or event.stream is None or event.stream not in spec.streams:
            plan.settled[event.event_id] = f"kept: event type '{event.event_type}' changes no stream"
            continue
        stream = spec.streams[event.stream]
        data = event.payload.get(hooks.data_field) if hooks.data_field else None
        truncated = bool(event.payload.get("data_truncated")) or (isinstance(data, dict) and data.get("data_truncated"))
        if not isinstance(data, dict) or truncated:
            if event.stream in hooks.fetch:
                if event.object_id is None:
                    plan.settled[event.event_id] = "rejected: the event names no object id"
                else:
                    plan.reads.setdefault(event.stream, {}).setdefault(event.object_id, []).append(event.event_id)
                continue
            # [unconfirmed] Trackstar marks oversized objects data_truncated and sends only data.id.
            plan.waiting[event.event_id] = f"needs a read of {event.stream} '{event.object_id}' by id"
            continue
        missing = _missing(stream, data)
        if missing:
            plan.settled[event.event_id] = f"rejected: the object has no {', '.join(missing)}"
            continue
        record = dict(data)
        if spec.connections is not None:
            if event.connection_id is None:
                plan.settled[event.event_id] = "rejected: the event names no connection"
                continue
            if connections is not None and event.connection_id not in connections:
                plan.waiting[event.event_id] = f"unknown connection '{event.connection_id}'"
                continue
            record[CONNECTION_COLUMN] = event.connection_id
        plan.add(event.stream, record, [event.event_id])
    return plan


@dataclass
class ReadSummary:
    """What ``read_by_id`` did: ``reads`` made per stream; ``gone`` objects the vendor no longer has; ``retry``: a
    transient failure that stopped the reads (its events wait with an outcome starting ``RETRY``); ``failure``:
    an error no wait will fix (refused credentials, a query the vendor rejects, an answer without
    ``record_path``). Its events wait too; the caller applies the rest, then fails the run so someone looks."""

    reads: dict[str, int] = field(default_factory=dict)
    gone: int = 0
    retry: str | None = None
    failure: str | None = None

    @property
    def calls(self) -> int:
        return sum(self.reads.values())


def read_by_id(client: VendorClient, plan: EventPlan) -> ReadSummary:
    """Read every object of ``plan.reads`` once, with its stream's ``webhooks.fetch`` query, and move its events
    to ``plan.records`` (with ``applies``), ``plan.settled`` or ``plan.waiting``.

    The first transient failure (retries exhausted, a limit such as the deadline) or fatal one stops the reads:
    the vendor is unwell or the spec is wrong, and every further read would fail the same way. The events not
    read wait with the reason; nothing is lost, and a later run reads them."""
    spec = client.spec
    hooks = spec.webhooks
    summary = ReadSummary()
    if hooks is None:
        return summary
    stop: str | None = None
    for stream_name, ids in plan.reads.items():
        fetch = hooks.fetch[stream_name]
        stream = spec.streams[stream_name]
        for object_id, event_ids in ids.items():
            if stop is not None:
                plan.waiting.update(dict.fromkeys(event_ids, stop))
                continue
            summary.reads[stream_name] = summary.reads.get(stream_name, 0) + 1
            what = f"{stream_name} '{object_id}'"
            try:
                found, record = _read(client, fetch, object_id)
            except (RetriableError, RetriesExhaustedError, LimitExceededError) as exc:
                stop = summary.retry = f"{RETRY}the read of {what} failed ({exc}); read again by a later run"
                plan.waiting.update(dict.fromkeys(event_ids, stop))
                continue
            except SyncError as exc:
                stop = summary.failure = f"the read of {what} failed: {exc}"
                plan.waiting.update(dict.fromkeys(event_ids, stop))
                continue
            if not found:
                stop = summary.failure = (
                    f"the answer to the read of {what} has no '{fetch.record_path}' "
                    f"(webhooks.fetch.{stream_name}.record_path)"
                )
                plan.waiting.update(dict.fromkeys(event_ids, stop))
                continue
            if record is None:
                summary.gone += 1
                gone = f"gone: {what} answered null: deleted, or out of these credentials' sight; its row is kept"
                plan.settled.update(dict.fromkeys(event_ids, gone))
                continue
            if not isinstance(record, dict):
                plan.settled.update(dict.fromkeys(event_ids, f"rejected: the read of {what} is not an object"))
                continue
            missing = _missing(stream, record)
            if missing:
                plan.settled.update(dict.fromkeys(event_ids, f"rejected: the object has no {', '.join(missing)}"))
                continue
            plan.add(stream_name, record, event_ids)
    plan.reads = {}
    return summary


def _read(client: VendorClient, fetch: WebhookFetchSpec, object_id: str) -> tuple[bool, Any]:
    """(whether the answer has ``record_path``, the value there). A GraphQL error that leaves ``null`` at
    ``record_path`` is the vendor saying the object is not there (a field error on it), read like a plain
    ``null``; any other GraphQL error (a query it refuses) propagates."""
    try:
        body = client.graphql(fetch.query, {**fetch.variables, fetch.id_variable: object_id})
    except RequestRejectedError as exc:
        found, value = _at(exc.body, fetch.record_path)
        if found and value is None:
            return True, None
        raise
    return _at(body, fetch.record_path)


def _at(body: Any, path: str) -> tuple[bool, Any]:
    """``dig`` that tells a ``null`` answered at ``path`` from a ``path`` the answer does not have."""
    parent_path, _, last = path.rpartition(".")
    parent = dig(body, parent_path)
    if not isinstance(parent, dict) or last not in parent:
        return False, None
    return True, parent[last]


def _missing(stream: StreamSpec, record: dict[str, Any]) -> list[str]:
    """The key and cursor fields the record lacks: without them it cannot be merged."""
    needed = [*stream.primary_key, *([stream.incremental.cursor_field] if stream.incremental else [])]
    return [k for k in needed if k != CONNECTION_COLUMN and dig(record, k) in (None, "")]
