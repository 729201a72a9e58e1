"""Loading a stream into a destination, window by window, with cursor state committed atomically.

For each connection: open a staged load, stream every page into it, then commit the rows and the new
cursor state in one transaction. Any failure aborts the load, so a window that finally fails leaves
its rows and its cursor exactly as they were, and a re-run is always safe.

Cursor state per ``<connector>.<stream>.<connection>``: ``{"cursor": <max cursor seen>, "ids_at_cursor":
[...]}``, and ``"ranges"`` while a sliced range (``slice_by``: a backfill range read a day at a time, each
day committed with its rows) is unfinished: a failure on day 300 of 365 keeps days 1-299, and the next
read of that range starts at day 300. A windowed read (a Dagster partition or backfill range) fetches exactly its window and only
moves the cursor forward. An open-ended incremental read starts at the stored cursor and drops the
records it already delivered at exactly that cursor value (and any earlier ones a whole-second request
bound lets back in), so consecutive reads repeat nothing and lose nothing that shares the boundary
timestamp. The cursor keeps sub-second digits when the vendor's timestamps have them.

A connection the vendor cannot serve is skipped and reported, its rows and cursor untouched: one whose
``available_actions`` are known and lack the stream's ``action`` (or its parent's) without any call, and one
whose first page answers an unsupported status (Trackstar 501: the WMS lacks the endpoint; 403: the endpoint
is disabled for the connection). Refused credentials (401: a revoked token) are never a skip: they fail.

A child stream's outcome also counts the parents it was read for and those the child endpoint said were gone.

Pages are fetched ahead (``prefetched``): while the records of page k are filtered and staged, a worker
thread already waits for the rate-limit slot of page k+1, sends it and decodes the answer. At most
``PREFETCH_PAGES`` pages wait in between, so memory stays flat and a slow warehouse slows the reads down.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from ..client import Connection, VendorClient
from ..errors import EndpointUnsupportedError, ResponseFormatError
from ..spec import ConnectorSpec
from .extract import Window, read_pages

T = TypeVar("T")

#: The state's map of unfinished sliced ranges: ``"<start>|<end>"`` → the end of the last slice committed.
RANGES = "ranges"


def slices_of(window: Window, size: timedelta) -> list[Window]:
    """``window`` cut into consecutive slices of ``size`` (the last one shorter)."""
    out, start = [], window.start
    while start < window.end:
        end = min(start + size, window.end)
        out.append(Window(start, end))
        start = end
    return out or [window]


def range_id(window: Window) -> str:
    return f"{format_cursor(window.start)}|{format_cursor(window.end)}"


#: Pages fetched ahead of the one being staged: one keeps the vendor busy, two absorb a slow commit of a batch.
PREFETCH_PAGES = 2


def prefetched(items: Iterator[T], depth: int | None = None) -> Generator[T, None, None]:
    """``items``, produced on a worker thread up to ``depth`` ahead of the consumer (back-pressure: the
    worker waits while ``depth`` items are unread). The worker's exception is raised here, in order,
    after the items before it; when the consumer stops early (an exception, ``close()``) the worker
    stops after the item it is producing and is joined, so nothing uses the client after this returns."""
    depth = PREFETCH_PAGES if depth is None else depth  # read at call time: the benchmark's baseline sets 0
    if depth <= 0:
        yield from items
        return
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((False, item)):
                    return
            put((True, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((True, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="page-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            done, value = handoff.get()
            if done:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        worker.join()


class LoadLike(Protocol):
    def write_batch(self, records: list[dict]) -> None: ...
    def commit(
        self, state: dict | None, merge: Callable[[dict | None, dict | None], dict | None] | None = None
    ) -> Any: ...
    def abort(self) -> None: ...


class Destination(Protocol):
    """Where a stream's records go: the warehouse implements this for one table."""

    def open_load(self, state_key: str) -> LoadLike: ...
    def read_state(self, state_key: str) -> dict | None: ...


@dataclass
class ConnectionOutcome:
    connection_id: str
    records: int = 0
    pages: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    window: str | None = None
    skipped_reason: str | None = None
    parents: int = 0  # a child stream: the parent keys read
    parents_gone: int = 0  # ... and those the child endpoint answered "not found" for
    slices: int = 0  # windows committed (one, or each slice of a sliced range)
    resumed_after: str | None = None  # a sliced range read again: where its checkpoint let it resume


@dataclass
class StreamLoadResult:
    connector: str
    stream: str
    outcomes: list[ConnectionOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(o.records for o in self.outcomes)

    @property
    def pages(self) -> int:
        return sum(o.pages for o in self.outcomes)

    @property
    def skipped(self) -> list[ConnectionOutcome]:
        return [o for o in self.outcomes if o.skipped_reason]


def state_key(connector: str, stream: str, connection: Connection) -> str:
    return f"{connector}.{stream}.{connection.id}"


def required_actions(spec: ConnectorSpec, stream_name: str) -> list[str]:
    """The vendor actions a connection needs to read ``stream_name``: its own, and its parent's (a child
    is reached through its parent's list)."""
    stream = spec.streams[stream_name]
    actions = [stream.action]
    if stream.parent is not None:
        actions.append(spec.streams[stream.parent.stream].action)
    return [a for a in dict.fromkeys(actions) if a]


def format_cursor(value: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, keeping sub-second digits when there are any: a cursor rounded down
    to the second would no longer equal the records stored at it, and they would be read again."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_ts(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def merge_cursor_state(stored: dict | None, new: dict | None) -> dict | None:
    """The cursor state to keep when ``new`` is committed over ``stored``: the later cursor wins (equal
    cursors: the record ids at it united), so a load of an older window that commits after a newer
    one never moves the cursor back. Range checkpoints (``ranges``) are merged key by key, a ``None``
    removing one (its range is done). Runs inside the warehouse's commit transaction."""
    merged = _merge_cursors(stored, new)
    ranges = {**((stored or {}).get(RANGES) or {}), **((new or {}).get(RANGES) or {})}
    ranges = {k: v for k, v in ranges.items() if v is not None}
    if merged is None:
        return {RANGES: ranges} if ranges else None
    merged = {k: v for k, v in merged.items() if k != RANGES}
    return {**merged, RANGES: ranges} if ranges else merged


def _merge_cursors(stored: dict | None, new: dict | None) -> dict | None:
    if new is None or new.get("cursor") is None:
        return stored if stored is not None else new
    if stored is None or stored.get("cursor") is None:
        return new
    try:
        kept, incoming = parse_ts(stored["cursor"]), parse_ts(new["cursor"])
    except (TypeError, ValueError):
        return new  # a stored state this version cannot read: the new one replaces it
    if kept is None or (incoming is not None and incoming > kept):
        return new
    if incoming is not None and incoming < kept:
        return stored
    ids = sorted({*stored.get("ids_at_cursor", []), *new.get("ids_at_cursor", [])})
    return {**new, "ids_at_cursor": ids}


def cursor_of(record: dict, field: str, connector: str, stream: str, pk: list[str]) -> datetime | None:
    """The record's cursor value as a UTC datetime; a value that is not an ISO 8601 timestamp is a
    ``ResponseFormatError`` naming the connector, stream, record key, field and value (retrying cannot
    fix what the vendor stores)."""
    try:
        return parse_ts(record.get(field))
    except (TypeError, ValueError):
        shown = repr(record.get(field))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ResponseFormatError(
            f"{connector} stream '{stream}': record {_pk(record, pk)!r} has cursor field '{field}' = {shown}, "
            "not an ISO 8601 timestamp"
        ) from None


def load_stream(
    client: VendorClient,
    stream_name: str,
    destination: Destination,
    connections: list[Connection],
    *,
    window: Window | None = None,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    slice_by: timedelta | None = None,
) -> StreamLoadResult:
    """Read ``stream_name`` for every connection into ``destination``; see the module docstring.

    ``slice_by``: an incremental stream's ``window`` is read and committed slice by slice (a day of a
    year-long backfill range); a failure keeps the slices before it, and a read of the same window
    later starts after the last slice committed (the state's ``ranges`` checkpoint)."""
    spec = client.spec
    stream = spec.streams[stream_name]
    inc = stream.incremental
    pk = stream.primary_key
    say = progress or (lambda message: None)
    result = StreamLoadResult(spec.name, stream_name)
    started = time.perf_counter()
    needs = required_actions(spec, stream_name)
    for connection in connections:
        key = state_key(spec.name, stream_name, connection)
        outcome = ConnectionOutcome(connection.id)
        result.outcomes.append(outcome)
        lacking = [a for a in needs if connection.lacks(a)]
        if lacking:
            # The vendor said so when the connection was linked or listed: asking would only fetch a 501.
            outcome.skipped_reason = f"the connection's available_actions lack {', '.join(lacking)}, so it is not read"
            say(f"{spec.name}/{stream_name} [{connection.id}] skipped: {outcome.skipped_reason} (no call made)")
            continue
        old_state = destination.read_state(key) if inc else None
        old_cursor = parse_ts((old_state or {}).get("cursor"))
        seen_at_old = set((old_state or {}).get("ids_at_cursor", []))
        this_window = window
        if inc and this_window is None:
            start = old_cursor or datetime.fromisoformat(inc.start_date).replace(tzinfo=UTC)
            end = (now or datetime.now(UTC)).replace(microsecond=0)
            # The cursor can be later than "now" if the vendor's clock runs ahead: never invert.
            this_window = Window(start, max(end, start))
        outcome.window = str(this_window) if this_window else None
        max_cursor, ids_at_max = old_cursor, set(seen_at_old)
        parts: list[Window | None] = [this_window]
        checkpoint: str | None = None
        if inc is not None and window is not None and slice_by is not None:
            sliced = slices_of(window, slice_by)
            if len(sliced) > 1:
                checkpoint = range_id(window)
                done = parse_ts(((old_state or {}).get(RANGES) or {}).get(checkpoint))
                if done is not None:
                    sliced = [w for w in sliced if w.end > done]
                    outcome.resumed_after = format_cursor(done)
                    say(f"{spec.name}/{stream_name} [{connection.id}] resumes the range after {outcome.resumed_after}")
            parts = list(sliced)
        seen_parents: set[str] = set()
        for number, part in enumerate(parts, start=1):
            load = destination.open_load(key)
            try:
                # Closed on the way out, whatever ends the loop: the worker is stopped and joined before the
                # load is committed or aborted and before the next connection uses the client.
                pages = closing(prefetched(read_pages(client, stream_name, window=part, connection=connection)))
                with pages as fetched:
                    for page in fetched:
                        if page.parent is not None and str(page.parent) not in seen_parents:
                            seen_parents.add(str(page.parent))
                            outcome.parents += 1
                        if page.parent_gone:
                            outcome.parents_gone += 1
                            say(
                                f"{spec.name}/{stream_name} [{connection.id}] parent {page.parent!r} is gone: its children skipped"
                            )
                            continue
                        records = page.records
                        if inc is not None:
                            if window is None and old_cursor is not None:
                                # Open-ended read: drop what the previous read delivered at its last cursor,
                                # and anything before the cursor that a whole-second request bound let in.
                                records = [
                                    r
                                    for r in records
                                    if not _delivered(r, inc.cursor_field, old_cursor, seen_at_old, pk)
                                ]
                            for r in records:
                                ts = cursor_of(r, inc.cursor_field, spec.name, stream_name, pk)
                                if ts is None:
                                    continue
                                if max_cursor is None or ts > max_cursor:
                                    max_cursor, ids_at_max = ts, {_pk(r, pk)}
                                elif ts == max_cursor:
                                    ids_at_max.add(_pk(r, pk))
                        if records:
                            load.write_batch(records)
                        outcome.pages += 1
                        outcome.records += len(records)
                        say(
                            f"{spec.name}/{stream_name} [{connection.id}] page {page.number}: {outcome.records} records"
                        )
                new_state: dict | None = None
                if inc is not None and max_cursor is not None:
                    new_state = {
                        "cursor": format_cursor(max_cursor),
                        "ids_at_cursor": sorted(ids_at_max),
                    }
                elif inc is not None:
                    new_state = old_state
                if checkpoint is not None and part is not None:
                    # Committed with the slice's rows: the range resumes after it; the last slice closes it.
                    mark = None if number == len(parts) else format_cursor(part.end)
                    new_state = {**(new_state or {}), RANGES: {checkpoint: mark}}
                merged = load.commit(new_state, merge_cursor_state)
            except EndpointUnsupportedError as exc:
                load.abort()
                outcome.skipped_reason = str(exc)
                say(
                    f"{spec.name}/{stream_name} [{connection.id}] skipped: the connection lacks this endpoint or has it disabled ({exc})"
                )
                break
            except BaseException:
                load.abort()
                raise
            outcome.slices += 1
            for attr in ("inserted", "updated", "unchanged"):
                setattr(outcome, attr, getattr(outcome, attr) + getattr(merged, attr, 0))
    result.seconds = time.perf_counter() - started
    return result


def _delivered(record: dict, cursor_field: str, old_cursor: datetime, seen: set[str], pk: list[str]) -> bool:
    try:
        ts = parse_ts(record.get(cursor_field))
    except (TypeError, ValueError):
        return False  # judged (and refused with a clear error) where the cursor is read next
    if ts is None:
        return False
    return ts < old_cursor or (ts == old_cursor and _pk(record, pk) in seen)


def _pk(record: dict, pk: list[str]) -> str:
    return "|".join(str(record.get(k)) for k in pk)
