"""Trackstar's lists beyond the first six, against the sandbox in-process, with small pages: a window reads
exactly the records updated in it, every page repeats the window's filters with its page token, and a
window the vendor has nothing in answers one empty page. The spec says every one of them pages and
filters like the lists (openapi.json lists page_token, limit and updated_date[...] for each path)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import httpx
import pytest

from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.read.extract import Window
from integrations_pipeline.engine.read.load import load_stream
from integrations_pipeline.engine.spec import ConnectorSpec

from .harness import destination_for, sort_key, vendor_harness

NEW_LISTS = [
    "bills",
    "inventory_ledger",
    "shipping_methods",
    "warehouse_customers",
    "labor_activities",
    "order_channels",
    "inbound_shipment_suppliers",
]
PAGE = 25
WINDOW = Window(datetime(2026, 10, 10, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))
LOW, HIGH = "2026-10-10T00:00:00Z", "2026-11-05T00:00:00Z"
PATHS = {
    "bills": "/wms/billing",
    "inventory_ledger": "/wms/inventory/ledger",
    "shipping_methods": "/wms/shipping-methods",
    "warehouse_customers": "/wms/warehouse-customers",
    "labor_activities": "/wms/labor-activities",
    "order_channels": "/wms/orders/channels",
    "inbound_shipment_suppliers": "/wms/inbound-shipments/suppliers",
}


def small_pages(spec: ConnectorSpec) -> ConnectorSpec:
    doc = spec.model_dump(by_alias=True)
    for stream in doc["streams"].values():
        if stream["pagination"]["type"] == "next_token":
            stream["pagination"]["page_size"] = PAGE
    return ConnectorSpec.model_validate(doc)


class Recording(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.requests = inner, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)


def test_every_trackstar_list_is_covered():
    spec = vendor_harness("trackstar").spec
    assert {s.path for s in spec.streams.values()} >= set(PATHS.values())
    assert all(spec.streams[s].incremental and spec.streams[s].pagination.type == "next_token" for s in NEW_LISTS)


@pytest.mark.parametrize("stream", NEW_LISTS)
def test_a_window_pages_through_exactly_its_records(stream):
    small = ("shipping_methods", "warehouse_customers", "order_channels", "inbound_shipment_suppliers")
    h = vendor_harness("trackstar", sizes=dict.fromkeys(small, 80))
    spec = small_pages(h.spec)
    conn_a = h.connections()[0]
    rec = Recording(h.sandbox.transport())
    dest = destination_for(h, stream)
    with VendorClient(spec, h.credentials, transport=rec, environ=h.env, clock=h.clock) as c:
        result = load_stream(c, stream, dest, [conn_a], window=WINDOW)

    want = [r for r in h.truth(stream, conn_a) if LOW <= r["updated_date"] < HIGH]
    assert len(want) > PAGE  # several pages
    assert dest.records() == sorted(want, key=sort_key(dest.pk))
    assert result.pages == len(rec.requests) in (math.ceil(len(want) / PAGE), math.ceil(len(want) / PAGE) + 1)
    for n, request in enumerate(rec.requests):
        assert request.url.path == PATHS[stream]
        params = dict(request.url.params)
        token = params.pop("page_token", None)
        assert (token is None) == (n == 0)  # the first page has none, every later one the token handed out
        assert params == {"updated_date[gte]": LOW, "updated_date[lt]": HIGH, "limit": str(PAGE)}
    newest = max(want, key=lambda r: (r["updated_date"], r["id"]))
    assert dest.states[f"trackstar.{stream}.conn_a"]["cursor"] == newest["updated_date"]


@pytest.mark.parametrize("stream", NEW_LISTS)
def test_a_window_with_nothing_in_it_is_one_empty_page(stream):
    h = vendor_harness("trackstar")
    rec = Recording(h.sandbox.transport())
    dest = destination_for(h, stream)
    empty = Window(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC))
    with VendorClient(h.spec, h.credentials, transport=rec, environ=h.env, clock=h.clock) as c:
        result = load_stream(c, stream, dest, h.connections()[:1], window=empty)
    assert result.records == 0 and result.pages == len(rec.requests) == 1 and dest.rows == {}
