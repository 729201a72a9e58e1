"""Child streams (``parent:``) read against the Trackstar sandbox in-process: the parent's list first, then
one child call per parent key, each child row carrying the key; which side a window filters; a parent gone
after it was listed; a parent listed twice; keys that are not plain path segments; child answers that name
another parent."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from integrations_pipeline.engine.client import VendorClient, parse_connections
from integrations_pipeline.engine.errors import RequestRejectedError, ResponseFormatError
from integrations_pipeline.engine.read.extract import Window, read_pages
from integrations_pipeline.engine.read.load import load_stream
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.sandbox.base import json_response
from integrations_pipeline_tests.connectors.harness import VendorHarness, destination_for, sort_key, vendor_harness

from .._support import json_response as fake_json
from .._support import make_client

WINDOW = Window(datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC))
LOCATIONS = "/wms/warehouses/{}/locations"


class Recording(httpx.BaseTransport):
    """The sandbox's transport, every request kept; ``answer`` may replace the sandbox's answer to some."""

    def __init__(self, h: VendorHarness, answer: Callable[[httpx.Request], httpx.Response | None] | None = None):
        self.inner = h.sandbox.transport()
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replaced = self.answer(request) if self.answer else None
        return replaced if replaced is not None else self.inner.handle_request(request)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def client(h: VendorHarness, transport: httpx.BaseTransport) -> VendorClient:
    return VendorClient(h.spec, h.credentials, transport=transport, environ=h.env, clock=h.clock)


def in_window(records: list[dict], field: str) -> list[dict]:
    low, high = WINDOW.start.strftime("%Y-%m-%dT%H:%M:%SZ"), WINDOW.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [r for r in records if low <= r[field] < high]


def test_child_rows_carry_their_parent_key_and_the_window_filters_the_child_calls():
    h = vendor_harness("trackstar")
    rec = Recording(h)
    dest = destination_for(h, "warehouse_locations")
    with client(h, rec) as c:
        result = load_stream(c, "warehouse_locations", dest, h.connections(), window=WINDOW)

    truth = [r for conn in h.connections() for r in h.truth("warehouse_locations", conn)]
    want = in_window(truth, "updated_date")
    assert 0 < len(want) < len(truth)
    assert dest.records() == sorted(want, key=sort_key(dest.pk))
    assert all(r["warehouse_id"].startswith(f"wh_{r['_connection_id'][-1]}_") for r in dest.records())
    # Per connection: the whole warehouse list (window: child), then one locations call per warehouse with the window.
    warehouses = [w["id"] for w in h.truth("warehouses", h.connections()[0])]
    a_calls = [r for r in rec.requests if r.headers["x-trackstar-access-token"] == "sandbox-token-a"]
    assert [r.url.path for r in a_calls] == ["/wms/warehouses", *(LOCATIONS.format(w) for w in warehouses)]
    assert "updated_date[gte]" not in a_calls[0].url.params
    for call in a_calls[1:]:
        assert call.url.params["updated_date[gte]"] == "2026-10-20T00:00:00Z"
        assert call.url.params["updated_date[lt]"] == "2026-10-27T00:00:00Z"
    assert [(o.parents, o.parents_gone) for o in result.outcomes] == [(len(warehouses), 0)] * 2


def test_window_parent_reads_the_children_of_the_parents_changed_in_it():
    h = vendor_harness("trackstar", sizes={"orders": 200})
    rec = Recording(h)
    dest = destination_for(h, "order_packs")
    conn_a = h.connections()[0]
    with client(h, rec) as c:
        result = load_stream(c, "order_packs", dest, [conn_a], window=WINDOW)

    orders = in_window(h.truth("orders", conn_a), "updated_date")
    assert orders
    # The window reaches the orders list; each packs call carries nothing (the endpoint takes no parameter).
    lists = [r for r in rec.requests if r.url.path == "/wms/orders"]
    assert [r.url.params["updated_date[gte]"] for r in lists] == ["2026-10-20T00:00:00Z"]
    packs = [r for r in rec.requests if r.url.path.endswith("/packs")]
    assert sorted(r.url.path for r in packs) == sorted(f"/wms/orders/{o['id']}/packs" for o in orders)
    assert all(not r.url.params for r in packs)
    # One row per order (a single object per call), filed under it, its cursor the order's.
    rows = dest.records()
    assert [r["order_id"] for r in rows] == sorted(o["id"] for o in orders)
    assert {r["order_id"]: r["order_updated_date"] for r in rows} == {o["id"]: o["updated_date"] for o in orders}
    assert rows == sorted(in_window(h.truth("order_packs", conn_a), "order_updated_date"), key=sort_key(dest.pk))
    (outcome,) = result.outcomes
    assert outcome.records == outcome.parents == outcome.pages == len(orders)
    last = max(orders, key=lambda o: (o["updated_date"], o["id"]))
    assert dest.states["trackstar.order_packs.conn_a"]["cursor"] == last["updated_date"]


def test_an_open_ended_read_of_a_child_starts_where_the_last_ended():
    h = vendor_harness("trackstar", sizes={"orders": 60})
    dest = destination_for(h, "order_packs")
    conn_a = h.connections()[0]
    end = datetime(2026, 11, 22, tzinfo=UTC)
    rec = Recording(h)
    with client(h, rec) as c:
        first = load_stream(c, "order_packs", dest, [conn_a], now=end)
        touched = h.sandbox.touch("order_packs", 2, datetime(2026, 11, 21, 12, tzinfo=UTC), "conn_a")
        calls = len(rec.requests)
        second = load_stream(c, "order_packs", dest, [conn_a], now=end)
    assert first.records == 60
    # Packs change through their orders: only the two changed orders' packs are asked again, and those of the
    # order at the previous cursor (the window includes its instant; its packs are then dropped as delivered).
    boundary = max(h.truth("orders", conn_a), key=lambda o: o["updated_date"] if o["id"] not in touched else "")
    asked = {r.url.path for r in rec.requests[calls:] if r.url.path.endswith("/packs")}
    assert asked == {f"/wms/orders/{o}/packs" for o in [*touched, boundary["id"]]}
    assert second.records == 2
    assert dest.records() == sorted(h.truth("order_packs", conn_a), key=sort_key(dest.pk))


def test_a_parent_gone_after_it_was_listed_is_passed_over_and_counted():
    h = vendor_harness("trackstar")
    conn_a = h.connections()[0]
    gone = h.truth("warehouses", conn_a)[1]["id"]

    def deleted(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == LOCATIONS.format(gone):
            return json_response(404, {"error": f"warehouses '{gone}' not found", "origin": "trackstar", "id": gone})
        return None

    dest = destination_for(h, "warehouse_locations")
    progress: list[str] = []
    with client(h, Recording(h, deleted)) as c:
        result = load_stream(c, "warehouse_locations", dest, [conn_a], window=WINDOW, progress=progress.append)
    (outcome,) = result.outcomes
    assert (outcome.parents, outcome.parents_gone, outcome.skipped_reason) == (5, 1, None)
    want = [r for r in in_window(h.truth("warehouse_locations", conn_a), "updated_date") if r["warehouse_id"] != gone]
    assert dest.records() == sorted(want, key=sort_key(dest.pk)) and dest.commits == 1
    assert any(f"parent '{gone}' is gone: its children skipped" in m for m in progress)


def test_a_404_of_the_parent_list_itself_is_not_a_gone_parent():
    h = vendor_harness("trackstar")

    def broken(request: httpx.Request) -> httpx.Response | None:
        return (
            json_response(404, {"error": "no route", "origin": "trackstar"})
            if request.url.path == "/wms/warehouses"
            else None
        )

    dest = destination_for(h, "warehouse_locations")
    with client(h, Recording(h, broken)) as c, pytest.raises(RequestRejectedError, match="HTTP 404"):
        load_stream(c, "warehouse_locations", dest, h.connections()[:1], window=WINDOW)
    assert dest.rows == {} and dest.aborts == 1


def test_a_parent_listed_twice_is_read_once():
    h = vendor_harness("trackstar")
    # The warehouses page repeats its first records at its end, as when data shifts while paging.
    h.sandbox.faults.inject("duplicate", path_prefix="/wms/warehouses")
    rec = Recording(h)
    conn_a = h.connections()[0]
    with client(h, rec) as c:
        pages = list(read_pages(c, "warehouse_locations", window=None, connection=conn_a))
    child_calls = [p for p in rec.paths() if p.endswith("/locations")]
    assert len(child_calls) == len(set(child_calls)) == 5
    assert [p.parent for p in pages] == [w["id"] for w in h.truth("warehouses", conn_a)]


def test_a_child_record_naming_another_parent_is_refused():
    h = vendor_harness("trackstar")
    conn_a = h.connections()[0]
    first, second = (w["id"] for w in h.truth("warehouses", conn_a)[:2])
    stray = {**h.truth("warehouse_locations", conn_a)[0], "warehouse_id": second}

    def misfiled(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == LOCATIONS.format(first):
            return json_response(200, {"data": [stray], "next_token": None, "total_count": 1})
        return None

    dest = destination_for(h, "warehouse_locations")
    with client(h, Recording(h, misfiled)) as c, pytest.raises(ResponseFormatError) as info:
        load_stream(c, "warehouse_locations", dest, [conn_a], window=WINDOW)
    assert f"a record read for warehouse_id '{first}' has warehouse_id = '{second}'" in str(info.value)
    assert dest.rows == {} and dest.aborts == 1


class ParentsWithOddKeys:
    """Warehouses whose ids are not plain path segments; every locations call answers one location."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.raw_path.decode().split("?")[0])
        stamp = "2026-10-02T00:00:00Z"
        if request.url.path == "/wms/warehouses":
            data = [{"id": i, "updated_date": stamp} for i in self.ids]
        else:
            data = [{"id": "loc1", "updated_date": stamp}]
        return fake_json(200, {"data": data, "next_token": None})


def test_a_parent_key_is_one_escaped_path_segment():
    vendor = ParentsWithOddKeys(["a/b?c#d", "ünï code", "7"])
    c = make_client("trackstar", vendor)
    (conn_a, _) = parse_connections(c.spec, c.credentials)
    records = [r for p in read_pages(c, "warehouse_locations", connection=conn_a) for r in p.records]
    assert vendor.paths == [
        "/wms/warehouses",
        "/wms/warehouses/a%2Fb%3Fc%23d/locations",
        "/wms/warehouses/%C3%BCn%C3%AF%20code/locations",
        "/wms/warehouses/7/locations",
    ]
    assert [r["warehouse_id"] for r in records] == ["a/b?c#d", "ünï code", "7"]  # the key as listed, unescaped


@pytest.mark.parametrize("key", ["..", ".", "", None, ["x"]])
def test_a_parent_key_that_cannot_name_a_path_segment_is_refused(key):
    vendor = ParentsWithOddKeys([key])  # type: ignore[list-item]
    c = make_client("trackstar", vendor)
    (conn_a, _) = parse_connections(c.spec, c.credentials)
    with pytest.raises(ResponseFormatError, match="not a key to read its children by"):
        list(read_pages(c, "warehouse_locations", connection=conn_a))
    assert vendor.paths == ["/wms/warehouses"]  # no child call was made


def test_child_pages_are_counted_per_parent():
    """Each parent pages on its own: with 2 locations a page, a warehouse of 5 takes 3 calls."""
    h = vendor_harness("trackstar", sizes={"warehouse_locations": 25})
    conn_a = h.connections()[0]
    doc = h.spec.model_dump(by_alias=True)
    doc["streams"]["warehouse_locations"]["pagination"]["page_size"] = 2
    small = ConnectorSpec.model_validate(doc)
    rec = Recording(h)
    with VendorClient(small, h.credentials, transport=rec, environ=h.env, clock=h.clock) as c:
        pages = list(read_pages(c, "warehouse_locations", connection=conn_a))
    groups = h.truth_by_parent("warehouse_locations", conn_a)
    assert len(pages) == sum(max(1, math.ceil(len(g) / 2)) for g in groups.values())
    assert all(r.url.params.get("limit") == "2" for r in rec.requests[1:])
    tokens = [r for r in rec.requests if "page_token" in r.url.params]
    assert tokens and all(r.url.path.endswith("/locations") for r in tokens)
