"""load_stream end to end: a fake Trackstar (and Salestrekker) behind httpx.MockTransport, an
in-memory Destination, and a FakeClock. Windowing, cursor state, repeat-nothing incremental reads,
all-or-nothing loads, and the Trackstar 501 skip."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import httpx
import pytest

from integrations_pipeline.engine.client import Connection, parse_connections
from integrations_pipeline.engine.errors import RequestRejectedError, RetriesExhaustedError
from integrations_pipeline.engine.read.extract import CONNECTION_COLUMN, Window
from integrations_pipeline.engine.read.load import load_stream, state_key
from integrations_pipeline_tests.clock import FakeClock

from .._support import SECRETS, FakeDestination, json_response, make_client


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def day(d: int) -> datetime:
    return datetime(2026, 10, d, tzinfo=UTC)


# -- fakes --------------------------------------------------------------------------------------------


class FakeTrackstar:
    """Trackstar's list contract: updated_date[gte|lt] filters, next_token/page_token paging,
    the API key on every call, one access token per connection, 501 where a WMS lacks an endpoint.
    It returns 2 records a page whatever ``limit`` says, so paging is exercised with few records."""

    PAGE = 2

    def __init__(self):
        self.records: dict[str, dict[str, list[dict]]] = {}  # token -> path -> records
        self.unsupported: set[tuple[str, str]] = set()
        self.fail_on: dict[int, httpx.Response] = {}  # request number (1-based) -> canned failure
        self.requests: list[httpx.Request] = []

    def add(self, token: str, path: str, *records: dict) -> None:
        bucket = self.records.setdefault(token, {}).setdefault(path, [])
        for r in records:
            bucket[:] = [x for x in bucket if x["id"] != r["id"]] + [r]

    def params(self) -> list[dict[str, str]]:
        return [dict(r.url.params) for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) in self.fail_on:
            return self.fail_on[len(self.requests)]
        assert request.headers["x-trackstar-api-key"] == SECRETS["trackstar"]["TRACKSTAR_API_KEY"]
        token, path, params = request.headers["x-trackstar-access-token"], request.url.path, request.url.params
        if (token, path) in self.unsupported:
            return json_response(501, {"error": "This endpoint is not supported by the WMS", "origin": "integration"})
        rows = sorted(self.records.get(token, {}).get(path, []), key=lambda r: (r["updated_date"], r["id"]))
        if "updated_date[gte]" in params:
            rows = [r for r in rows if ts(r["updated_date"]) >= ts(params["updated_date[gte]"])]
        if "updated_date[lt]" in params:
            rows = [r for r in rows if ts(r["updated_date"]) < ts(params["updated_date[lt]"])]
        start = int(params.get("page_token", "p0")[1:])
        page = rows[start : start + self.PAGE]
        more = start + self.PAGE < len(rows)
        return json_response(
            200,
            {
                "data": copy.deepcopy(page),
                "next_token": f"p{start + self.PAGE}" if more else None,
                "total_count": len(page),
            },
        )


def rec(id_: str, updated: str, **extra) -> dict:
    return {"id": id_, "updated_date": updated, "sku": f"SKU-{id_}", **extra}


def trackstar_client(vendor: FakeTrackstar, token_env: str | None = None):
    secrets = dict(SECRETS["trackstar"])
    if token_env is not None:
        secrets["TRACKSTAR_ACCESS_TOKEN"] = token_env
    client = make_client("trackstar", vendor, secrets=secrets, clock=FakeClock())
    return client, parse_connections(client.spec, client.credentials)


A_TOKEN, B_TOKEN = "SECRET-tok-aaaa", "SECRET-tok-bbbb"


# -- windowed reads (partitions and backfills) --------------------------------------------------------


def test_windowed_read_fetches_exactly_its_window_with_filters_on_every_page():
    vendor = FakeTrackstar()
    vendor.add(
        A_TOKEN,
        "/wms/inventory",
        rec("i0", "2026-10-01T23:59:59Z"),
        rec("i1", "2026-10-02T00:00:00Z"),
        rec("i2", "2026-10-02T08:30:00Z"),
        rec("i3", "2026-10-02T17:00:00Z"),
        rec("i4", "2026-10-02T23:59:59Z"),
        rec("i5", "2026-10-03T00:00:00Z"),
    )
    client, (conn_a,) = trackstar_client(vendor, f"conn_a={A_TOKEN}")
    dest = FakeDestination()
    progress: list[str] = []
    result = load_stream(client, "inventory", dest, [conn_a], window=Window(day(2), day(3)), progress=progress.append)

    assert sorted(r["id"] for r in dest.rows.values()) == ["i1", "i2", "i3", "i4"]
    assert all(r[CONNECTION_COLUMN] == "conn_a" for r in dest.rows.values())
    bounds = {"updated_date[gte]": "2026-10-02T00:00:00Z", "updated_date[lt]": "2026-10-03T00:00:00Z", "limit": "1000"}
    assert vendor.params() == [bounds, {**bounds, "page_token": "p2"}]
    (outcome,) = result.outcomes
    assert (outcome.connection_id, outcome.records, outcome.pages, outcome.inserted) == ("conn_a", 4, 2, 4)
    assert outcome.window == "[2026-10-02T00:00:00+00:00, 2026-10-03T00:00:00+00:00)"
    assert result.records == 4 and result.pages == 2 and result.skipped == []
    assert dest.state == {"trackstar.inventory.conn_a": {"cursor": "2026-10-02T23:59:59Z", "ids_at_cursor": ["i4"]}}
    assert [len(b) for b in dest.loads[0].batches] == [2, 2]  # one batch per page, written as read
    assert progress[-1] == "trackstar/inventory [conn_a] page 2: 4 records"


def test_each_connection_has_its_own_rows_and_state():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/orders", rec("o1", "2026-10-02T01:00:00Z"), rec("o2", "2026-10-02T02:00:00Z"))
    vendor.add(B_TOKEN, "/wms/orders", rec("o1", "2026-10-02T05:00:00Z"))
    client, conns = trackstar_client(vendor)
    dest = FakeDestination()
    result = load_stream(client, "orders", dest, conns, window=Window(day(2), day(3)))
    assert [(o.connection_id, o.records) for o in result.outcomes] == [("conn_a", 2), ("conn_b", 1)]
    assert set(dest.rows) == {("conn_a", "o1"), ("conn_a", "o2"), ("conn_b", "o1")}
    assert dest.state == {
        state_key("trackstar", "orders", conns[0]): {"cursor": "2026-10-02T02:00:00Z", "ids_at_cursor": ["o2"]},
        state_key("trackstar", "orders", conns[1]): {"cursor": "2026-10-02T05:00:00Z", "ids_at_cursor": ["o1"]},
    }
    tokens = [r.headers["x-trackstar-access-token"] for r in vendor.requests]
    assert tokens == [A_TOKEN, B_TOKEN]


def test_backfilling_an_older_window_never_moves_the_cursor_back():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/products", rec("p1", "2026-10-01T10:00:00Z"), rec("p9", "2026-10-05T10:00:00Z"))
    client, (conn_a, _) = trackstar_client(vendor)
    dest = FakeDestination()
    load_stream(client, "products", dest, [conn_a], window=Window(day(5), day(6)))
    after_latest = dest.read_state("trackstar.products.conn_a")
    assert after_latest == {"cursor": "2026-10-05T10:00:00Z", "ids_at_cursor": ["p9"]}
    result = load_stream(client, "products", dest, [conn_a], window=Window(day(1), day(2)))
    assert result.records == 1 and ("conn_a", "p1") in dest.rows
    assert dest.read_state("trackstar.products.conn_a") == after_latest


def test_rewriting_a_window_reports_unchanged_and_updated_rows():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/products", rec("p1", "2026-10-02T10:00:00Z"), rec("p2", "2026-10-02T11:00:00Z"))
    client, (conn_a, _) = trackstar_client(vendor)
    dest = FakeDestination()
    load_stream(client, "products", dest, [conn_a], window=Window(day(2), day(3)))
    vendor.add(A_TOKEN, "/wms/products", rec("p2", "2026-10-02T11:00:00Z", name="renamed"))
    (outcome,) = load_stream(client, "products", dest, [conn_a], window=Window(day(2), day(3))).outcomes
    assert (outcome.inserted, outcome.updated, outcome.unchanged) == (0, 1, 1)


# -- open-ended incremental reads -----------------------------------------------------------------------


def test_incremental_reads_repeat_nothing_and_lose_nothing_at_the_boundary():
    vendor = FakeTrackstar()
    path = "/wms/inventory"
    vendor.add(
        A_TOKEN,
        path,
        rec("r1", "2026-10-01T10:00:00Z"),
        rec("r2", "2026-10-02T12:00:00Z"),
        rec("r3", "2026-10-02T12:00:00Z"),
    )
    client, (conn_a, _) = trackstar_client(vendor)
    dest = FakeDestination()
    key = "trackstar.inventory.conn_a"

    # First read: from the spec's start_date up to now.
    first = load_stream(client, "inventory", dest, [conn_a], now=datetime(2026, 10, 3, 0, 0, 0, 999, tzinfo=UTC))
    assert first.records == 3
    assert first.outcomes[0].window == "[2026-10-01T00:00:00+00:00, 2026-10-03T00:00:00+00:00)"
    assert dest.state[key] == {"cursor": "2026-10-02T12:00:00Z", "ids_at_cursor": ["r2", "r3"]}
    assert vendor.params()[0]["updated_date[gte]"] == "2026-10-01T00:00:00Z"

    # Nothing changed: the boundary records come back from the vendor (gte) and are dropped.
    vendor.requests.clear()
    second = load_stream(client, "inventory", dest, [conn_a], now=day(4))
    assert second.records == 0
    assert vendor.params()[0]["updated_date[gte]"] == "2026-10-02T12:00:00Z"
    assert dest.loads[-1].batches == [] and dest.loads[-1].status == "committed"
    assert dest.state[key] == {"cursor": "2026-10-02T12:00:00Z", "ids_at_cursor": ["r2", "r3"]}

    # A new record sharing the boundary timestamp, a later one, and an update to r2: exactly those.
    vendor.add(
        A_TOKEN,
        path,
        rec("r4", "2026-10-02T12:00:00Z"),
        rec("r5", "2026-10-03T09:00:00Z"),
        rec("r2", "2026-10-03T09:00:00Z", sku="changed"),
    )
    third = load_stream(client, "inventory", dest, [conn_a], now=day(4))
    written = [r["id"] for load in dest.loads[-1:] for b in load.batches for r in b]
    assert sorted(written) == ["r2", "r4", "r5"] and third.records == 3
    assert dest.rows[("conn_a", "r2")]["sku"] == "changed"
    assert dest.state[key] == {"cursor": "2026-10-03T09:00:00Z", "ids_at_cursor": ["r2", "r5"]}

    # And again nothing.
    assert load_stream(client, "inventory", dest, [conn_a], now=day(5)).records == 0
    assert sorted(i for _, i in dest.rows) == ["r1", "r2", "r3", "r4", "r5"]


def test_incremental_with_sub_second_timestamps_repeats_nothing():
    vendor = FakeTrackstar()
    vendor.add(
        A_TOKEN,
        "/wms/orders",
        rec("o1", "2026-10-02T12:00:00.250Z"),
        rec("o2", "2026-10-02T12:00:00.750Z"),
    )
    client, (conn_a, _) = trackstar_client(vendor)
    dest = FakeDestination()
    assert load_stream(client, "orders", dest, [conn_a], now=day(3)).records == 2
    state = dest.read_state("trackstar.orders.conn_a")
    assert state == {"cursor": "2026-10-02T12:00:00.750000Z", "ids_at_cursor": ["o2"]}
    assert load_stream(client, "orders", dest, [conn_a], now=day(4)).records == 0
    vendor.add(A_TOKEN, "/wms/orders", rec("o3", "2026-10-02T12:00:00.900Z"))
    assert load_stream(client, "orders", dest, [conn_a], now=day(4)).records == 1


def test_a_cursor_ahead_of_now_never_inverts_the_window():
    vendor = FakeTrackstar()
    client, (conn_a, _) = trackstar_client(vendor)
    dest = FakeDestination()
    dest.state["trackstar.returns.conn_a"] = {"cursor": "2026-10-09T00:00:00Z", "ids_at_cursor": ["x"]}
    result = load_stream(client, "returns", dest, [conn_a], now=day(8))
    assert result.outcomes[0].window == "[2026-10-09T00:00:00+00:00, 2026-10-09T00:00:00+00:00)"
    assert result.records == 0
    assert dest.state["trackstar.returns.conn_a"] == {"cursor": "2026-10-09T00:00:00Z", "ids_at_cursor": ["x"]}


def test_records_without_a_cursor_value_are_kept_but_do_not_move_the_cursor():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/warehouses", rec("w1", "2026-10-02T01:00:00Z"))
    client, (conn_a, _) = trackstar_client(vendor)

    def handler(request):
        response = vendor(request)
        body = json.loads(response.content)
        body["data"].append({"id": "w2", "updated_date": None})
        return json_response(200, body)

    client = make_client("trackstar", handler, clock=FakeClock())
    dest = FakeDestination()
    result = load_stream(client, "warehouses", dest, [conn_a], window=Window(day(2), day(3)))
    assert result.records == 2
    assert dest.state["trackstar.warehouses.conn_a"]["cursor"] == "2026-10-02T01:00:00Z"


# -- failures: all or nothing ------------------------------------------------------------------------


def _seeded(vendor: FakeTrackstar):
    vendor.add(A_TOKEN, "/wms/inventory", rec("r1", "2026-10-01T10:00:00Z"), rec("r2", "2026-10-01T11:00:00Z"))
    client, (conn_a, conn_b) = trackstar_client(vendor)
    dest = FakeDestination()
    load_stream(client, "inventory", dest, [conn_a], now=day(2))
    vendor.add(
        A_TOKEN,
        "/wms/inventory",
        rec("r3", "2026-10-02T10:00:00Z"),
        rec("r4", "2026-10-02T11:00:00Z"),
        rec("r5", "2026-10-02T12:00:00Z"),
    )
    vendor.requests.clear()
    return client, conn_a, conn_b, dest


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (json_response(400, {"error": "Invalid page_token"}), RequestRejectedError),
        (json_response(503, {"error": "Service unavailable"}), RetriesExhaustedError),
    ],
    ids=["fatal-400", "503-until-exhausted"],
)
def test_a_failure_mid_stream_leaves_rows_and_state_as_they_were(failure, error):
    vendor = FakeTrackstar()
    client, conn_a, _, dest = _seeded(vendor)
    before = dest.snapshot()
    for n in range(2, 2 + client.spec.retry.max_attempts):  # page 1 succeeds; page 2 keeps failing
        vendor.fail_on[n] = failure
    with pytest.raises(error):
        load_stream(client, "inventory", dest, [conn_a], now=day(3))
    assert dest.loads[-1].status == "aborted" and dest.loads[-1].batches  # page 1 was staged, then dropped
    assert dest.snapshot() == before

    # The re-run is safe and loses nothing.
    vendor.fail_on.clear()
    result = load_stream(client, "inventory", dest, [conn_a], now=day(3))
    assert result.records == 3
    assert dest.state["trackstar.inventory.conn_a"] == {"cursor": "2026-10-02T12:00:00Z", "ids_at_cursor": ["r5"]}


def test_a_transient_failure_is_retried_inside_the_load():
    vendor = FakeTrackstar()
    client, conn_a, _, dest = _seeded(vendor)
    vendor.fail_on[2] = json_response(502, {"error": "bad gateway"})
    result = load_stream(client, "inventory", dest, [conn_a], now=day(3))
    assert result.records == 3 and dest.loads[-1].status == "committed"
    assert client.stats.retries == 1
    assert len(client.clock.sleeps) == 1 and 0.25 <= client.clock.sleeps[0] <= 0.5


def test_a_failing_connection_keeps_the_earlier_connections_commit():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/orders", rec("o1", "2026-10-02T01:00:00Z"))
    vendor.add(B_TOKEN, "/wms/orders", rec("o9", "2026-10-02T01:00:00Z"))
    client, conns = trackstar_client(vendor)
    vendor.fail_on[2] = json_response(401, {"error": "Access token revoked"})
    dest = FakeDestination()
    with pytest.raises(Exception, match="Access token revoked"):
        load_stream(client, "orders", dest, conns, window=Window(day(2), day(3)))
    assert [load.status for load in dest.loads] == ["committed", "aborted"]
    assert set(dest.rows) == {("conn_a", "o1")}
    assert list(dest.state) == ["trackstar.orders.conn_a"]


def test_an_error_inside_the_destination_aborts_too():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/orders", rec("o1", "2026-10-02T01:00:00Z"))
    client, (conn_a, _) = trackstar_client(vendor)
    dest = FakeDestination()

    def broken(records):
        raise OSError("disk full")

    original_open = dest.open_load

    def open_load(key):
        load = original_open(key)
        load.write_batch = broken  # type: ignore[method-assign]
        return load

    dest.open_load = open_load  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        load_stream(client, "orders", dest, [conn_a], window=Window(day(2), day(3)))
    assert dest.loads[-1].status == "aborted" and dest.state == {} and dest.rows == {}


# -- Trackstar 501: the WMS lacks the endpoint -----------------------------------------------------------


def test_501_skips_that_connection_reports_it_and_makes_one_call():
    vendor = FakeTrackstar()
    vendor.add(A_TOKEN, "/wms/returns", rec("ret1", "2026-10-02T03:00:00Z"))
    vendor.unsupported.add((B_TOKEN, "/wms/returns"))
    client, conns = trackstar_client(vendor)
    dest = FakeDestination()
    dest.state["trackstar.returns.conn_b"] = {"cursor": "2026-10-01T00:00:00Z", "ids_at_cursor": []}
    progress: list[str] = []
    result = load_stream(client, "returns", dest, conns, now=day(3), progress=progress.append)

    a, b = result.outcomes
    assert (a.connection_id, a.records, a.skipped_reason) == ("conn_a", 1, None)
    assert b.connection_id == "conn_b" and b.records == 0
    assert b.skipped_reason == "HTTP 501: This endpoint is not supported by the WMS (/wms/returns)"
    assert result.skipped == [b]
    b_calls = [r for r in vendor.requests if r.headers["x-trackstar-access-token"] == B_TOKEN]
    assert len(b_calls) == 1
    assert client.clock.sleeps == [] and client.stats.retries == 0
    assert [load.status for load in dest.loads] == ["committed", "aborted"]
    assert dest.state["trackstar.returns.conn_b"] == {"cursor": "2026-10-01T00:00:00Z", "ids_at_cursor": []}
    assert any("[conn_b] skipped: the connection lacks this endpoint" in m for m in progress)
    assert all(SECRETS["trackstar"]["TRACKSTAR_API_KEY"] not in m and B_TOKEN not in m for m in progress)


# -- GraphQL (Salestrekker) ------------------------------------------------------------------------------


class FakeSalestrekker:
    PAGE = 2

    def __init__(self, tickets: list[dict], workflows: list[dict]):
        self.tickets, self.workflows = tickets, workflows
        self.variables: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "authenticate" in body["query"]:
            return json_response(200, {"data": {"authenticate": {"token": "tok-1"}}})
        assert request.headers["authorization"] == "Bearer tok-1"
        if "workflows" in body["query"]:
            return json_response(200, {"data": {"workflows": self.workflows}})
        v = body["variables"]
        self.variables.append(v)
        rows = [
            t
            for t in sorted(self.tickets, key=lambda t: (t["updatedAt"], t["id"]))
            if ts(v["updatedFrom"]) <= ts(t["updatedAt"]) < ts(v["updatedTo"])
        ]
        start = int(v["after"] or 0)
        stop = start + self.PAGE
        info = {"endCursor": str(stop) if stop < len(rows) else None, "hasNextPage": stop < len(rows)}
        return json_response(200, {"data": {"tickets": {"items": rows[start:stop], "pageInfo": info}}})


def test_graphql_stream_windows_through_variables():
    tickets = [{"id": f"t{i}", "updatedAt": f"2026-10-02T0{i}:00:00Z", "name": f"Deal {i}"} for i in range(5)]
    tickets.append({"id": "late", "updatedAt": "2026-10-03T00:00:00Z"})
    vendor = FakeSalestrekker(tickets, [])
    client = make_client("salestrekker", vendor, clock=FakeClock())
    dest = FakeDestination()
    result = load_stream(client, "deals", dest, [Connection("default")], window=Window(day(2), day(3)))
    assert result.records == 5 and result.pages == 3
    assert set(dest.rows) == {(None, f"t{i}") for i in range(5)}  # no per-connection column here
    window_vars = {"updatedFrom": "2026-10-02T00:00:00Z", "updatedTo": "2026-10-03T00:00:00Z", "limit": 200}
    assert vendor.variables == [
        {**window_vars, "after": None},
        {**window_vars, "after": "2"},
        {**window_vars, "after": "4"},
    ]
    assert dest.state["salestrekker.deals.default"] == {"cursor": "2026-10-02T04:00:00Z", "ids_at_cursor": ["t4"]}
    assert client.stats.logins == 1


def test_a_stream_without_incremental_keeps_no_state():
    vendor = FakeSalestrekker([], [{"id": "w1", "name": "Home loans", "stages": []}])
    client = make_client("salestrekker", vendor, clock=FakeClock())
    dest = FakeDestination()
    result = load_stream(client, "workflows", dest, [Connection("default")])
    assert result.records == 1 and result.outcomes[0].window is None
    assert dest.loads[0].committed_state is None and dest.state == {}
