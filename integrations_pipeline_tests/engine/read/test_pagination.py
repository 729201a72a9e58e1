"""Every registered paginator type, driven end to end through ``read_pages`` against a fake vendor.

``SCENARIOS`` holds one entry per type in ``PAGINATORS``; ``test_every_paginator_has_a_scenario``
fails when a new type is registered without one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from integrations_pipeline.engine.errors import PaginationLoopError
from integrations_pipeline.engine.read.extract import read_pages
from integrations_pipeline.engine.read.pagination import PAGINATORS

from .._support import Recorder, fake_spec, make_client, spec

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}
GQL_QUERY = "query Items($after: String, $first: Int) { items(after: $after, first: $first) { nodes { id } } }"

Serve = Callable[[list[dict], dict[str, Any]], Any]


@dataclass
class Scenario:
    """How one paginator type talks to a well-behaved vendor, and how that vendor can end or loop.

    ``serve(records, inputs)`` returns the body for a request with ``inputs`` (query parameters for REST,
    GraphQL variables for GraphQL). ``inputs_for_5`` is what the engine must send to read 5 records.
    ``stops`` are variants: (label, pagination overrides, record count, serve, expected request count).
    ``loop`` answers every request with the same token; ``None`` for types that carry no token.
    """

    pagination: dict[str, Any]
    serve: Serve
    inputs_for_5: list[dict[str, Any]]
    records_path: str = "items"
    protocol: str = "rest"
    stops: list[tuple[str, dict[str, Any], int, Serve, int]] = field(default_factory=list)
    loop: Serve | None = None


def _ids(n: int) -> list[dict]:
    return [{"id": i} for i in range(n)]


# -- single ---------------------------------------------------------------------------------------


def _serve_single(records, inputs):
    return {"items": records, "next_token": "ignored", "offset": 99}


# -- next_token (Trackstar: next_token in the body, sent back as page_token) ------------------------


def _serve_next_token(end_token: Any) -> Serve:
    def serve(records, inputs):
        size = int(inputs["limit"])
        start = int(inputs.get("page_token", "t0")[1:])
        stop = start + size
        return {"items": records[start:stop], "meta": {"next": f"t{stop}" if stop < len(records) else end_token}}

    return serve


def _serve_next_token_missing(records, inputs):
    body = _serve_next_token(None)(records, inputs)
    if body["meta"]["next"] is None:
        del body["meta"]["next"]
    return body


# -- offset ----------------------------------------------------------------------------------------


def _serve_offset(records, inputs):
    offset, limit = int(inputs["offset"]), int(inputs["limit"])
    return {"items": records[offset : offset + limit], "total": len(records)}


# -- page_number -----------------------------------------------------------------------------------


def _serve_page_number(records, inputs):
    page, size = int(inputs["page"]), int(inputs["page_size"])
    pages = -(-len(records) // size)
    return {"items": records[(page - 1) * size : page * size], "pages": pages}


# -- graphql_cursor (Relay-style pageInfo) ---------------------------------------------------------


def _serve_graphql(end_cursor: Any, *, has_next: bool = True) -> Serve:
    def serve(records, variables):
        start = int((variables["after"] or "c0")[1:])
        stop = start + variables["first"]
        more = stop < len(records)
        info: dict[str, Any] = {"endCursor": f"c{stop}" if more else end_cursor}
        if has_next:
            info["hasNextPage"] = more
        return {"data": {"items": {"nodes": records[start:stop], "pageInfo": info}}}

    return serve


def _serve_graphql_last_page_keeps_cursor(records, variables):
    body = _serve_graphql("unused", has_next=True)(records, variables)
    info = body["data"]["items"]["pageInfo"]
    if not info["hasNextPage"]:
        info["endCursor"] = f"c{len(records)}"  # a cursor is present, but hasNextPage says stop
    return body


SCENARIOS: dict[str, Scenario] = {
    "single": Scenario(
        pagination={"type": "single"},
        serve=_serve_single,
        inputs_for_5=[{}],
        stops=[("empty collection", {}, 0, _serve_single, 1)],
    ),
    "next_token": Scenario(
        pagination={
            "type": "next_token",
            "token_path": "meta.next",
            "token_param": "page_token",
            "page_size_param": "limit",
            "page_size": 2,
        },
        serve=_serve_next_token(None),
        inputs_for_5=[{"limit": "2"}, {"limit": "2", "page_token": "t2"}, {"limit": "2", "page_token": "t4"}],
        stops=[
            ("null token", {}, 4, _serve_next_token(None), 2),
            ("empty-string token", {}, 5, _serve_next_token(""), 3),
            ("token key absent", {}, 3, _serve_next_token_missing, 2),
            ("empty collection", {}, 0, _serve_next_token(None), 1),
        ],
        loop=lambda records, inputs: {"items": records[:2], "meta": {"next": "same-token"}},
    ),
    "offset": Scenario(
        pagination={"type": "offset", "limit": 2},
        serve=_serve_offset,
        inputs_for_5=[{"offset": "0", "limit": "2"}, {"offset": "2", "limit": "2"}, {"offset": "4", "limit": "2"}],
        stops=[
            ("short page", {}, 3, _serve_offset, 2),
            ("empty page after an exact multiple", {}, 4, _serve_offset, 3),
            ("total reached", {"total_path": "total"}, 4, _serve_offset, 2),
            ("empty collection", {}, 0, _serve_offset, 1),
        ],
        # A vendor that ignores the offset serves the first page forever.
        loop=lambda records, inputs: {"items": records[:2], "total": 99},
    ),
    "page_number": Scenario(
        pagination={"type": "page_number", "page_size": 2},
        serve=_serve_page_number,
        inputs_for_5=[{"page": str(n), "page_size": "2"} for n in (1, 2, 3)],
        stops=[
            ("short page", {}, 3, _serve_page_number, 2),
            ("empty page after an exact multiple", {}, 4, _serve_page_number, 3),
            ("total pages reached", {"total_pages_path": "pages"}, 4, _serve_page_number, 2),
            ("empty collection", {}, 0, _serve_page_number, 1),
        ],
        loop=lambda records, inputs: {"items": records[:2], "pages": 99},
    ),
    "graphql_cursor": Scenario(
        pagination={
            "type": "graphql_cursor",
            "cursor_variable": "after",
            "cursor_path": "data.items.pageInfo.endCursor",
            "has_next_path": "data.items.pageInfo.hasNextPage",
            "page_size_variable": "first",
            "page_size": 2,
        },
        protocol="graphql",
        records_path="data.items.nodes",
        serve=_serve_graphql(None),
        inputs_for_5=[{"after": None, "first": 2}, {"after": "c2", "first": 2}, {"after": "c4", "first": 2}],
        stops=[
            ("hasNextPage false despite a cursor", {}, 5, _serve_graphql_last_page_keeps_cursor, 3),
            ("null cursor, no has_next flag", {"has_next_path": None}, 5, _serve_graphql(None, has_next=False), 3),
            ("empty cursor, no has_next flag", {"has_next_path": None}, 4, _serve_graphql("", has_next=False), 2),
            ("empty collection", {}, 0, _serve_graphql(None), 1),
        ],
        loop=lambda records, variables: {
            "data": {"items": {"nodes": records[:2], "pageInfo": {"endCursor": "c-same", "hasNextPage": True}}}
        },
    ),
}


def test_every_paginator_has_a_scenario():
    assert set(SCENARIOS) == set(PAGINATORS.names()), "register a Scenario for every paginator type"


def _vendor(scenario: Scenario, records: list[dict], serve: Serve) -> Recorder:
    def handle(request: httpx.Request) -> httpx.Response:
        if scenario.protocol == "graphql":
            body = json.loads(request.content)
            assert body["query"] == GQL_QUERY
            inputs = body["variables"]
        else:
            inputs = dict(request.url.params)
        return httpx.Response(200, json=serve(records, inputs))

    return Recorder(handle)


def _client(scenario: Scenario, vendor: Recorder, overrides: dict[str, Any] | None = None):
    pagination = {**scenario.pagination, **(overrides or {})}
    stream: dict[str, Any] = {
        "description": "Items.",
        "records_path": scenario.records_path,
        "primary_key": ["id"],
        "pagination": pagination,
        "schema": SCHEMA,
    }
    if scenario.protocol == "graphql":
        stream["query"] = GQL_QUERY
    else:
        stream["path"] = "/items"
    return make_client(fake_spec(protocol=scenario.protocol, streams={"items": stream}), vendor)


def _inputs(scenario: Scenario, request: httpx.Request) -> dict[str, Any]:
    if scenario.protocol == "graphql":
        return json.loads(request.content)["variables"]
    return dict(request.url.params)


@pytest.mark.parametrize("kind", PAGINATORS.names())
def test_walks_every_page(kind):
    scenario = SCENARIOS[kind]
    records = _ids(5)
    vendor = _vendor(scenario, records, scenario.serve)
    pages = list(read_pages(_client(scenario, vendor), "items"))
    assert [r for p in pages for r in p.records] == records
    assert [p.number for p in pages] == list(range(1, len(pages) + 1))
    assert [_inputs(scenario, r) for r in vendor.requests] == scenario.inputs_for_5


@pytest.mark.parametrize(("kind", "label"), [(k, s[0]) for k in PAGINATORS.names() for s in SCENARIOS[k].stops])
def test_stops(kind, label):
    scenario = SCENARIOS[kind]
    _, overrides, n, serve, expected_calls = next(s for s in scenario.stops if s[0] == label)
    records = _ids(n)
    vendor = _vendor(scenario, records, serve)
    pages = list(read_pages(_client(scenario, vendor, overrides), "items"))
    assert [r for p in pages for r in p.records] == records
    assert vendor.calls == expected_calls


@pytest.mark.parametrize("kind", [k for k in PAGINATORS.names() if SCENARIOS[k].loop is not None])
def test_a_repeating_vendor_raises_loop_error(kind):
    scenario = SCENARIOS[kind]
    assert scenario.loop is not None
    vendor = _vendor(scenario, _ids(5), scenario.loop)
    pages = read_pages(_client(scenario, vendor), "items")
    with pytest.raises(PaginationLoopError, match="loop detected"):
        for _ in pages:
            pass
    assert vendor.calls == 2  # the token is followed once, then recognised


def test_every_multi_page_type_has_a_loop_case():
    """Every type that can ask for a second page must be checked for loops (only 'single' cannot)."""
    assert {k for k, s in SCENARIOS.items() if s.loop is not None} == set(PAGINATORS.names()) - {"single"}


def test_next_token_repeats_window_filters_on_every_page():
    """Trackstar: send next_token back as page_token and repeat every filter."""
    from datetime import UTC, datetime

    from integrations_pipeline.engine.client import Connection
    from integrations_pipeline.engine.read.extract import Window

    calls: list[dict] = []

    def handle(request):
        params = dict(request.url.params)
        calls.append(params)
        token = params.get("page_token")
        return httpx.Response(200, json={"data": [{"id": token or "first"}], "next_token": None if token else "tok-1"})

    client = make_client("trackstar", Recorder(handle))
    window = Window(datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC))
    list(read_pages(client, "inventory", window=window, connection=Connection("conn_a")))
    bounds = {"updated_date[gte]": "2026-10-02T00:00:00Z", "updated_date[lt]": "2026-10-03T00:00:00Z", "limit": "1000"}
    assert calls == [bounds, {**bounds, "page_token": "tok-1"}]


def test_builtin_specs_build_their_paginators():
    for name in ("trackstar", "salestrekker"):
        for stream in spec(name).streams.values():
            paginator = PAGINATORS.build(stream.pagination)
            assert isinstance(paginator, PAGINATORS.get(stream.pagination.type).runtime)
