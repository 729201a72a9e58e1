"""Reading a stream: build each page's request from the spec, follow the paginator, yield records.

``read_pages`` is a generator, so a caller that writes each page before asking for the next keeps
memory flat however many records a stream has. A time window ``[start, end)`` on the stream's cursor
field becomes the request inputs the spec names (``updated_date[gte]``/``updated_date[lt]`` for
Trackstar, ``updatedFrom``/``updatedTo`` variables for Salestrekker).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..auth import dig
from ..client import Connection, VendorClient
from ..errors import LimitExceededError, ResponseFormatError
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
    number: int
    records: list[dict[str, Any]]


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

    Raises ``EndpointUnsupportedError`` on the first page if the connection lacks the endpoint.
    """
    spec = client.spec
    stream = spec.streams[stream_name]
    paginator: Paginator = PAGINATORS.build(stream.pagination)
    fixed = window_inputs(stream, window)
    inputs = paginator.first()
    number = 0
    limit = spec.limits.max_pages
    where = stream.path or spec.graphql_path
    while True:
        number += 1
        if number > limit:
            raise LimitExceededError(
                f"{spec.name} stream '{stream_name}': more than limits.max_pages ({limit}) pages in one window"
                + (f" for connection {connection.id}" if connection else "")
                + "; the vendor keeps handing out page tokens",
                path=where,
            )
        try:
            body = _fetch(client, stream, {**fixed, **inputs}, connection)
        except (LimitExceededError, ResponseFormatError) as exc:
            # The client knows the connector and the path; the stream and connection are known here.
            context = f"{spec.name} stream '{stream_name}'" + (f" (connection {connection.id})" if connection else "")
            raise type(exc)(
                f"{context}: {exc.message.removeprefix(spec.name + ': ')}", status=exc.status, path=exc.path
            ) from None
        records = dig(body, stream.records_path)
        if records is None:
            records = []
        if not isinstance(records, list):
            raise ResponseFormatError(
                f"{spec.name} stream '{stream_name}': expected a list of records at '{stream.records_path}', "
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
        yield Page(number, records)
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


def _fetch(client: VendorClient, stream: StreamSpec, inputs: dict[str, Any], connection: Connection | None) -> Any:
    if client.spec.protocol == "graphql":
        return client.graphql(stream.query or "", {**stream.variables, **inputs})
    params = {**stream.params, **{k: v for k, v in inputs.items() if v is not None}}
    if stream.method == "GET":
        return client.call("GET", stream.path or "", params=params, connection=connection)
    return client.call("POST", stream.path or "", json_body=params, connection=connection)
