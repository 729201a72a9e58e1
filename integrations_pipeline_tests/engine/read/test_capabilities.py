"""What a connection can read, against the Trackstar sandbox in-process: a connection whose known
``available_actions`` lack a stream's action (or its parent's) is skipped with no call at all; an endpoint
disabled for the connection (403) is skipped like one its WMS lacks (501), named in the reason; a revoked
access token (401) is never a skip: the load fails, naming the connection."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from integrations_pipeline.engine.client import Connection, VendorClient
from integrations_pipeline.engine.connections import LinkFlow, TokenVault, usable_connections
from integrations_pipeline.engine.errors import AuthError
from integrations_pipeline.engine.read.extract import Window
from integrations_pipeline.engine.read.load import load_stream, required_actions
from integrations_pipeline_tests.connectors.harness import VendorHarness, destination_for, vendor_harness

WINDOW = Window(datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC))
TOKENS = {"conn_a": "sandbox-token-a", "conn_b": "sandbox-token-b"}


class Counting(httpx.BaseTransport):
    """The sandbox's transport, counting requests per access token."""

    def __init__(self, h: VendorHarness):
        self.inner = h.sandbox.transport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def calls(self, connection_id: str) -> int:
        return sum(r.headers.get("x-trackstar-access-token") == TOKENS[connection_id] for r in self.requests)


def client(h: VendorHarness, transport: httpx.BaseTransport) -> VendorClient:
    return VendorClient(h.spec, h.credentials, transport=transport, environ=h.env, clock=h.clock)


def connection(connection_id: str, actions: set[str] | None) -> Connection:
    return Connection(connection_id, SecretStr(TOKENS[connection_id]), None if actions is None else frozenset(actions))


def test_required_actions_are_the_streams_and_its_parents():
    spec = vendor_harness("trackstar").spec
    assert required_actions(spec, "bills") == ["get_bills"]
    assert required_actions(spec, "warehouse_locations") == ["get_warehouse_locations", "get_warehouses"]
    assert required_actions(spec, "order_packs") == ["get_orders"]  # packs have no action name of their own
    assert required_actions(spec, "labor_activities") == []  # no name in openapi.json: always asked


@pytest.mark.parametrize(
    ("stream", "actions", "missing"),
    [
        ("bills", {"get_orders", "get_inventory"}, "get_bills"),
        ("order_packs", {"get_inventory"}, "get_orders"),  # the parent's list is out of reach
        ("warehouse_locations", {"get_warehouses"}, "get_warehouse_locations"),
        ("warehouse_locations", set(), "get_warehouse_locations, get_warehouses"),
    ],
)
def test_a_connection_lacking_the_action_is_skipped_without_any_call(stream, actions, missing):
    h = vendor_harness("trackstar", sizes={"orders": 40})
    counting = Counting(h)
    dest = destination_for(h, stream)
    dest.states[f"trackstar.{stream}.conn_a"] = {"cursor": "2026-10-01T00:00:00Z", "ids_at_cursor": []}
    progress: list[str] = []
    conns = [connection("conn_a", actions), connection("conn_b", None)]  # conn_b's actions unknown: read
    with client(h, counting) as c:
        result = load_stream(c, stream, dest, conns, window=WINDOW, progress=progress.append)
    a, b = result.outcomes
    assert a.skipped_reason == f"the connection's available_actions lack {missing}, so it is not read"
    assert (a.records, a.pages, a.window) == (0, 0, None)
    assert counting.calls("conn_a") == 0
    assert dest.states[f"trackstar.{stream}.conn_a"] == {"cursor": "2026-10-01T00:00:00Z", "ids_at_cursor": []}
    assert b.skipped_reason is None and counting.calls("conn_b") > 0
    assert any(
        "[conn_a] skipped: the connection's available_actions lack" in m and "no call made" in m for m in progress
    )


def test_known_actions_that_include_the_stream_read_it_and_streams_without_one_are_always_read():
    h = vendor_harness("trackstar")
    counting = Counting(h)
    conns = [connection("conn_a", {"get_bills"}), connection("conn_b", {"get_orders"})]
    with client(h, counting) as c:
        bills = load_stream(c, "bills", destination_for(h, "bills"), conns[:1], window=WINDOW)
        labor = load_stream(c, "labor_activities", destination_for(h, "labor_activities"), conns[1:], window=WINDOW)
    assert bills.skipped == [] and bills.records > 0
    assert labor.skipped == [] and labor.records > 0  # no action declared: the vendor's answer decides


def test_a_stored_connection_carries_the_actions_the_vendor_lists():
    """End to end through the registry's rows: conn_b's WMS lacks returns, so GET /connections omits
    get_returns, and reading returns for it costs nothing."""
    h = vendor_harness("trackstar")
    counting = Counting(h)
    vault = TokenVault([Fernet.generate_key().decode()])
    with client(h, counting) as c:
        listed = LinkFlow(c).listed()
        stored = [
            (x.connection_id, "active", vault.seal(SecretStr(TOKENS[x.connection_id])), x.available_actions)
            for x in listed
        ]
        conns = usable_connections(h.spec, h.credentials, stored, vault)
        assert [x.available_actions is not None and "get_returns" in x.available_actions for x in conns] == [
            True,
            False,
        ]
        before = counting.calls("conn_b")
        result = load_stream(c, "returns", destination_for(h, "returns"), conns, window=WINDOW)
    a, b = result.outcomes
    assert a.skipped_reason is None and a.records > 0
    assert b.skipped_reason == "the connection's available_actions lack get_returns, so it is not read"
    assert counting.calls("conn_b") == before  # not even the 501 was asked for


def test_an_endpoint_disabled_for_a_connection_is_skipped_like_a_missing_one():
    h = vendor_harness("trackstar", disabled={"conn_b": ["bills"]})
    counting = Counting(h)
    dest = destination_for(h, "bills")
    progress: list[str] = []
    with client(h, counting) as c:
        result = load_stream(c, "bills", dest, h.connections(), window=WINDOW, progress=progress.append)
    a, b = result.outcomes
    assert a.skipped_reason is None and a.records > 0
    assert b.skipped_reason == "HTTP 403: get_bills is disabled for this connection (/wms/billing)"
    assert counting.calls("conn_b") == 1 and c.stats.retries == 0  # never retried
    assert not any(k[0] == "conn_b" for k in dest.rows) and "trackstar.bills.conn_b" not in dest.states
    assert any("[conn_b] skipped" in m and "HTTP 403" in m for m in progress)


def test_a_disabled_child_endpoint_is_skipped_after_its_parent_list():
    h = vendor_harness("trackstar", disabled={"conn_a": ["warehouse_locations"]})
    with client(h, Counting(h)) as c:
        result = load_stream(c, "warehouse_locations", destination_for(h, "warehouse_locations"), h.connections())
    a, b = result.outcomes
    assert a.skipped_reason is not None and a.skipped_reason.startswith("HTTP 403: get_warehouse_locations is disabled")
    assert b.skipped_reason is None and b.records > 0


def test_a_revoked_token_fails_the_load_naming_the_connection_and_is_never_a_skip():
    # conn_b's endpoint is disabled too: a revoked token answers 401 before anything else is judged.
    h = vendor_harness("trackstar", disabled={"conn_b": ["bills"]})
    h.sandbox.revoke("conn_b")
    counting = Counting(h)
    dest = destination_for(h, "bills")
    with client(h, counting) as c, pytest.raises(AuthError) as info:
        load_stream(c, "bills", dest, h.connections(), window=WINDOW)
    assert info.value.status == 401
    assert "(connection conn_b)" in str(info.value) and "HTTP 401" in str(info.value)
    assert "sandbox-token-b" not in str(info.value)
    # conn_a's load committed before; conn_b's was aborted, its rows and cursor untouched.
    assert {k[0] for k in dest.rows} == {"conn_a"} and "trackstar.bills.conn_b" not in dest.states
    assert counting.calls("conn_b") == 1  # refused credentials are not retried either


def test_a_revoked_token_fails_a_child_stream_at_its_parent_list():
    h = vendor_harness("trackstar")
    h.sandbox.revoke("conn_a")
    with client(h, Counting(h)) as c, pytest.raises(AuthError, match=r"connection conn_a"):
        load_stream(c, "order_packs", destination_for(h, "order_packs"), h.connections(), window=WINDOW)
