"""Reading a stream: build each page's request from the spec, follow the paginator, yield records.

``read_pages`` is a generator, so a caller that writes each page before asking for the next keeps
memory flat however many records a stream has. A time window ``[start, end)`` on the stream's cursor
field becomes the request inputs the spec names (``updated_date[gte]``/``updated_date[lt]`` for
Trackstar, ``updatedFrom``/``updatedTo`` variables for Salestrekker).

A child stream (``parent:`` in the spec) is read once per key of its parent: the parent's list is read
first, through the API in the same load, then the child path is called with each key in its ``{param}``
placeholder, and each child record gets the key as a column. Reading the parent's list here rather than
its warehouse table keeps the engine free of the warehouse and the child free of the parent asset's
freshness; it costs one list call per page of parents beside one child call per parent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..auth import dig
from ..client import Connection, VendorClient
from ..errors import AuthError, LimitExceededError, RequestRejectedError, ResponseFormatError
from ..spec import StreamSpec
from .pagination import PAGINATORS, Paginator

CONNECTION_COLUMN = "_connection_id"


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval ``[start, end)`` on a stream's cursor field."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware (UTC)")
        if self.end < self.start:
            raise ValueError(f"window ends before it starts: {self.start} > {self.end}")

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


@dataclass(frozen=True)
class Page:
    """One answered page. ``parent``: the parent key a child stream's page was read for; ``parent_gone``: the
    child endpoint answered one of ``parent.not_found_statuses`` for it (the parent was deleted after it was
    listed), so the page holds no records and was not a page of data."""

    number: int
    records: list[dict[str, Any]]
    parent: Any = None
    parent_gone: bool = False


def format_bound(value: datetime, fmt: str) -> str:
    return value.astimezone(UTC).strftime(fmt)


def window_inputs(stream: StreamSpec, window: Window | None) -> dict[str, Any]:
    if window is None or stream.incremental is None:
        return {}
    inc = stream.incremental
    return {
        inc.start_input: format_bound(window.start, inc.datetime_format),
        inc.end_input: format_bound(window.end, inc.datetime_format),
    }


def read_pages(
    client: VendorClient,
    stream_name: str,
    *,
    window: Window | None = None,
    connection: Connection | None = None,
) -> Iterator[Page]:
    """Yield every page of ``stream_name`` within ``window`` for one connection.

    A child stream (``parent:``) lists its parent first, then reads its own path once per parent key, each
    record carrying the key (and the parent fields the spec copies); see ``spec.ParentSpec`` for which side
    the window filters. Raises ``EndpointUnsupportedError`` on the first page (the parent's list, for a child)
    if the connection cannot read the endpoint.
    """
    stream = client.spec.streams[stream_name]
    if stream.parent is None:
        yield from _pages(client, stream_name, stream.path or "", window_inputs(stream, window), connection)
    else:
        yield from _children(client, stream_name, window, connection)


def _children(
    client: VendorClient, stream_name: str, window: Window | None, connection: Connection | None
) -> Iterator[Page]:
    """Each parent's pages in turn, in the order the parent's list named them."""
    stream = client.spec.streams[stream_name]
    parent = stream.parent
    assert parent is not None
    by_parent = parent.window == "parent"
    fixed = {} if by_parent else window_inputs(stream, window)
    parents = parent_keys(client, stream_name, window if by_parent else None, connection)
    placeholder = "{" + parent.param + "}"
    number = 0
    for key, copied in parents.values():
        # One path segment whatever the key holds: an id with '/' or '?' cannot reach another endpoint.
        path = (stream.path or "").replace(placeholder, quote(str(key), safe=""))
        try:
            for page in _pages(client, stream_name, path, fixed, connection, first=number + 1, parent=key):
                for record in page.records:
                    _attach(client, stream_name, record, key, copied)
                number = page.number
                yield page
        except RequestRejectedError as exc:
            if exc.status not in parent.not_found_statuses:
                raise
            yield Page(number, [], parent=key, parent_gone=True)


def parent_keys(
    client: VendorClient, stream_name: str, window: Window | None, connection: Connection | None
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The keys a child stream reads, from its parent's list (``window`` filters that list): key text →
    (key, the parent fields copied onto the children). A parent listed twice (its record changed while the
    list was paged) counts once, with the fields of its newest listing."""
    spec = client.spec
    parent = spec.streams[stream_name].parent
    assert parent is not None
    of = spec.streams[parent.stream]
    cursor = of.incremental.cursor_field if of.incremental else None
    found: dict[str, tuple[Any, dict[str, Any]]] = {}
    newest: dict[str, datetime | None] = {}
    for page in read_pages(client, parent.stream, window=window, connection=connection):
        for record in page.records:
            key = record.get(parent.field)
            if key is None or isinstance(key, bool | dict | list) or str(key).strip() in ("", ".", ".."):
                raise ResponseFormatError(
                    f"{spec.name} stream '{stream_name}': a '{parent.stream}' record has {parent.field} = "
                    f"{_shown(key)}, not a key to read its children by",
                    path=of.path,
                )
            text = str(key)
            at = _timestamp(record.get(cursor)) if cursor else None
            if text in found and not _later(at, newest[text]):
                continue
            found[text] = (key, {column: record.get(source) for source, column in parent.fields.items()})
            newest[text] = at
    return found


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value not in (None, "") else None
    except ValueError:
        return None


def _later(at: datetime | None, than: datetime | None) -> bool:
    """Whether a listing stamped ``at`` replaces one stamped ``than``: a later stamp, or either unknown (lists
    come oldest first, so the later listing is the newer record)."""
    if at is None or than is None:
        return True
    try:
        return at >= than
    except TypeError:  # one naive, one aware: no order to trust
        return True


def _attach(client: VendorClient, stream_name: str, record: dict[str, Any], key: Any, copied: dict[str, Any]) -> None:
    """Write the parent key (and copied parent fields) into a child record. A record that names another
    parent in the key column is refused: keeping either value would file it under the wrong parent."""
    parent = client.spec.streams[stream_name].parent
    assert parent is not None
    column = parent.key_column
    own = record.get(column)
    if own is not None and str(own) != str(key):
        raise ResponseFormatError(
            f"{client.spec.name} stream '{stream_name}': a record read for {parent.param} {_shown(key)} has "
            f"{column} = {_shown(own)}",
            path=client.spec.streams[stream_name].path,
        )
    record[column] = key
    record.update(copied)


def _pages(
    client: VendorClient,
    stream_name: str,
    path: str,
    fixed: dict[str, Any],
    connection: Connection | None,
    *,
    first: int = 1,
    parent: Any = None,
) -> Iterator[Page]:
    """The pages of one paged read: the stream's list, or a child's list for one parent."""
    spec = client.spec
    stream = spec.streams[stream_name]
    paginator: Paginator = PAGINATORS.build(stream.pagination)
    inputs = paginator.first()
    limit = spec.limits.max_pages
    where = path or spec.graphql_path
    context = (
        f"{spec.name} stream '{stream_name}'"
        + (f" (connection {connection.id})" if connection else "")
        + (f" for {stream.parent.param} {_shown(parent)}" if stream.parent is not None else "")
    )
    for count, number in enumerate(itertools.count(first), start=1):
        if count > limit:
            raise LimitExceededError(
                f"{context}: more than limits.max_pages ({limit}) pages in one window; the vendor keeps handing "
                "out page tokens",
                path=where,
            )
        try:
            body = _fetch(client, stream, path, {**fixed, **inputs}, connection)
        except (LimitExceededError, ResponseFormatError, AuthError) as exc:
            # The client knows the connector and the path; the stream, connection and parent are known here.
            raise type(exc)(
                f"{context}: {exc.message.removeprefix(spec.name + ': ')}", status=exc.status, path=exc.path
            ) from None
        records = dig(body, stream.records_path)
        if records is None:
            records = []
        if stream.single_record and isinstance(records, dict):
            records = [records]
        if not isinstance(records, list):
            raise ResponseFormatError(
                f"{spec.name} stream '{stream_name}': expected "
                f"{'a record' if stream.single_record else 'a list of records'} at '{stream.records_path}', "
                f"got {type(records).__name__}",
                path=where,
            )
        for position, record in enumerate(records):
            if not isinstance(record, dict):
                raise ResponseFormatError(
                    f"{spec.name} stream '{stream_name}': record {position} of page {number} at '{stream.records_path}' "
                    f"is {_json_type(record)} {_shown(record)}, expected an object",
                    path=where,
                )
        if spec.connections is not None and connection is not None:
            for record in records:
                record[CONNECTION_COLUMN] = connection.id
        yield Page(number, records, parent=parent)
        nxt = paginator.next(body, records)
        if nxt is None:
            return
        inputs = nxt


def _json_type(value: Any) -> str:
    return {"int": "a number", "float": "a number", "str": "a string", "list": "an array", "bool": "a boolean",
            "NoneType": "null"}.get(type(value).__name__, type(value).__name__)  # fmt: skip


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fetch(
    client: VendorClient, stream: StreamSpec, path: str, inputs: dict[str, Any], connection: Connection | None
) -> Any:
    if client.spec.protocol == "graphql":
        return client.graphql(stream.query or "", {**stream.variables, **inputs})
    params = {**stream.params, **{k: v for k, v in inputs.items() if v is not None}}
    if stream.method == "GET":
        return client.call("GET", path, params=params, connection=connection)
    return client.call("POST", path, json_body=params, connection=connection)
