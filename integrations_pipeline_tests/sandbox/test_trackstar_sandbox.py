"""TrackstarSandbox in-process: envelope, paging, filters, validation, auth, 501, rate limits, faults,
touch/add, determinism and conformance of every record with the trackstar.yaml schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.sandbox.data import parse_iso, schema_errors
from integrations_pipeline.sandbox.trackstar import STREAMS, TrackstarSandbox

KEY = "sandbox-trackstar-key"
TOKEN_A = "sandbox-token-a"
TOKEN_B = "sandbox-token-b"
SMALL = {"inventory": 230, "products": 120, "orders": 150, "warehouses": 5, "inbound_shipments": 40, "returns": 30}
START, END = "2026-10-01T00:00:00Z", "2026-11-21T00:00:00Z"


def client(sandbox: TrackstarSandbox, token: str | None = TOKEN_A, key: str | None = KEY) -> httpx.Client:
    headers = {}
    if key is not None:
        headers["x-trackstar-api-key"] = key
    if token is not None:
        headers["x-trackstar-access-token"] = token
    return httpx.Client(transport=sandbox.transport(), base_url="http://trackstar.test", headers=headers)


def fetch_all(c: httpx.Client, path: str, params: dict[str, str | int]) -> list[dict]:
    """Page to the end the way the spec says: repeat every filter with page_token."""
    records: list[dict] = []
    token = None
    for _ in range(10_000):
        response = c.get(path, params={**params, **({"page_token": token} if token else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total_count"] == len(body["data"])
        records.extend(body["data"])
        token = body["next_token"]
        if token is None:
            return records
    raise AssertionError("paging did not end")


def in_window(records: list[dict], low: str, high: str) -> list[str]:
    return sorted(r["id"] for r in records if low <= r["updated_date"] < high)


@pytest.fixture
def sandbox() -> TrackstarSandbox:
    return TrackstarSandbox(sizes=SMALL)


def test_envelope_and_paging_to_the_end(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    first = c.get("/wms/inventory", params={"limit": 100})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    body = first.json()
    assert set(body) == {"data", "next_token", "total_count"}
    assert body["total_count"] == 100 and isinstance(body["next_token"], str)

    records = fetch_all(c, "/wms/inventory", {"limit": 100})
    assert len(records) == SMALL["inventory"] == len({r["id"] for r in records})
    keys = [(r["updated_date"], r["id"]) for r in records]
    assert keys == sorted(keys)
    assert sorted(r["id"] for r in records) == [r["id"] for r in sandbox.truth("inventory")]
    assert records[0]["id"] == "inv_a_000001"
    # Default limit is 1000: one page here.
    whole = c.get("/wms/inventory").json()
    assert whole["total_count"] == SMALL["inventory"] and whole["next_token"] is None


@pytest.mark.parametrize("stream", list(STREAMS))
def test_every_resource_pages_completely(sandbox: TrackstarSandbox, stream: str) -> None:
    records = fetch_all(
        client(sandbox),
        f"/wms/{STREAMS[stream][0]}",
        {"limit": 37, "updated_date[gte]": START, "updated_date[lt]": END},
    )
    assert [r["id"] for r in sorted(records, key=lambda r: r["id"])] == [r["id"] for r in sandbox.truth(stream)]


def test_window_filters_match_truth(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    truth = sandbox.truth("orders")
    low, high = "2026-10-20T00:00:00Z", "2026-10-27T12:00:00Z"
    got = fetch_all(c, "/wms/orders", {"limit": 10, "updated_date[gte]": low, "updated_date[lt]": high})
    assert sorted(r["id"] for r in got) == in_window(truth, low, high) != []

    # Boundaries are exact: gt excludes, lte includes, on whole seconds.
    edge = got[0]["updated_date"]
    after_edge = fetch_all(c, "/wms/orders", {"updated_date[gt]": edge, "updated_date[lte]": high})
    assert got[0]["id"] not in {r["id"] for r in after_edge}
    upto_edge = fetch_all(c, "/wms/orders", {"updated_date[gte]": low, "updated_date[lte]": edge})
    assert upto_edge[-1]["id"] == got[0]["id"]
    assert fetch_all(c, "/wms/orders", {"updated_date[eq]": edge})[0]["id"] == got[0]["id"]

    # created_date and scalar fields filter too.
    created = fetch_all(c, "/wms/orders", {"created_date[gte]": "2026-11-01T00:00:00Z"})
    assert sorted(r["id"] for r in created) == sorted(
        r["id"] for r in truth if r["created_date"] >= "2026-11-01T00:00:00Z"
    )
    cancelled = fetch_all(c, "/wms/orders", {"status[in]": "cancelled,backordered"})
    assert sorted(r["id"] for r in cancelled) == sorted(
        r["id"] for r in truth if r["status"] in ("cancelled", "backordered")
    )


def test_page_token_must_repeat_the_filters(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    params = {"limit": 10, "updated_date[gte]": START, "updated_date[lt]": END}
    token = c.get("/wms/products", params=params).json()["next_token"]
    assert c.get("/wms/products", params={**params, "page_token": token}).status_code == 200
    assert (
        c.get("/wms/products", params={**params, "limit": 50, "page_token": token}).status_code == 200
    )  # limit may change
    for bad in (
        {"limit": 10, "page_token": token},
        {**params, "updated_date[lt]": "2026-11-20T00:00:00Z", "page_token": token},
    ):
        response = c.get("/wms/products", params=bad)
        assert response.status_code == 422
        assert "page_token" in response.json()["detail"]["query"]
    assert c.get("/wms/inventory", params={**params, "page_token": token}).status_code == 422  # other resource
    assert c.get("/wms/products", params={**params, "page_token": "garbage!"}).status_code == 422


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"updated_date[gte]": "2026-10-01"}, "updated_date[gte]"),
        ({"updated_date[gte]": "2026-10-01T00:00:00.000Z"}, "updated_date[gte]"),
        ({"updated_date[gte]": "2026-10-01T00:00:00+00:00"}, "updated_date[gte]"),
        ({"updated_date[between]": START}, "updated_date[between]"),
        ({"colour[eq]": "red"}, "colour[eq]"),
        ({"ids[in]": ",".join(f"inv_a_{i:06d}" for i in range(1, 102))}, "ids[in]"),
    ],
)
def test_validation_errors_are_422(sandbox: TrackstarSandbox, params: dict, field: str) -> None:
    response = client(sandbox).get("/wms/inventory", params=params)
    assert response.status_code == 422
    body = response.json()
    assert isinstance(body["error"], str) and field in body["detail"]["query"]


def test_limit_bounds_are_accepted(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    assert c.get("/wms/inventory", params={"limit": 1}).json()["total_count"] == 1
    assert c.get("/wms/inventory", params={"limit": 1000}).status_code == 200


def test_auth_errors_are_401(sandbox: TrackstarSandbox) -> None:
    for c in (
        client(sandbox, key=None),
        client(sandbox, key="wrong"),
        client(sandbox, token=None),
        client(sandbox, token="nope"),
    ):
        response = c.get("/wms/inventory")
        assert response.status_code == 401
        assert response.json()["origin"] == "trackstar" and response.json()["error"]


def test_connections_have_their_own_data_and_capabilities(sandbox: TrackstarSandbox) -> None:
    a, b = client(sandbox, TOKEN_A), client(sandbox, TOKEN_B)
    ids_b = [r["id"] for r in fetch_all(b, "/wms/inventory", {"limit": 1000})]
    assert ids_b[0] == "inv_b_000001" and len(ids_b) == SMALL["inventory"]
    names = {cid: [r["name"] for r in sandbox.truth("inventory", cid)] for cid in ("conn_a", "conn_b")}
    assert names["conn_a"] != names["conn_b"]  # separate WMSs, separate data
    response = b.get("/wms/returns")
    assert response.status_code == 501
    assert response.json()["origin"] == "integration"
    assert response.json()["error"].startswith("Endpoint get_returns is not implemented for")
    assert a.get("/wms/returns").status_code == 200
    assert sandbox.truth("returns", "conn_b") == []


def test_single_item_and_ids_in(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    record = c.get("/wms/orders/ord_a_000007").json()["data"]
    assert record == next(r for r in sandbox.truth("orders") if r["id"] == "ord_a_000007")
    assert c.get("/wms/orders/ord_a_999999").status_code == 404
    assert c.get("/wms/orders/ord_b_000007").status_code == 404  # another connection's record
    body = c.get(
        "/wms/orders",
        params={"ids[in]": "ord_a_000009,ord_a_000003,ord_zz", "updated_date[gte]": "2030-01-01T00:00:00Z"},
    ).json()
    assert sorted(r["id"] for r in body["data"]) == ["ord_a_000003", "ord_a_000009"] and body["next_token"] is None


def test_rate_limit_answers_429_with_headers() -> None:
    sandbox = TrackstarSandbox(sizes=SMALL, rate_limit_per_second=0.5)
    c = client(sandbox)
    ok = c.get("/wms/warehouses")
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit"] == "0.5"
    limited = c.get("/wms/warehouses")
    assert limited.status_code == 429
    assert 0 < float(limited.headers["retry-after"]) <= 2
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) >= int(datetime.now(UTC).timestamp())
    assert sandbox.counts["429"] == 1
    # Buckets are per access token: conn_b still has its own.
    assert client(sandbox, TOKEN_B).get("/wms/warehouses").status_code == 200


@pytest.mark.parametrize("kind", ["429", "500", "502", "503"])
def test_injected_status_faults(sandbox: TrackstarSandbox, kind: str) -> None:
    sandbox.faults.inject(kind, times=2)
    c = client(sandbox)
    assert [c.get("/wms/warehouses").status_code for _ in range(3)] == [int(kind), int(kind), 200]


def test_injected_transport_faults(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    sandbox.faults.inject("timeout")
    with pytest.raises(httpx.ReadTimeout):
        c.get("/wms/warehouses")
    sandbox.faults.inject("reset")
    with pytest.raises(httpx.RemoteProtocolError):
        c.get("/wms/warehouses")
    sandbox.faults.inject("truncated", path_prefix="/wms/orders")
    assert c.get("/wms/warehouses").status_code == 200  # the fault waits for its path
    truncated = c.get("/wms/orders")
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    assert c.get("/wms/orders").json()["total_count"] == SMALL["orders"]
    assert sandbox.faults.pending() == 0


def test_duplicate_fault_overlaps_pages_without_losing_progress(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    params = {"limit": 50, "updated_date[gte]": START, "updated_date[lt]": END}
    first = c.get("/wms/inventory", params=params).json()
    sandbox.faults.inject("duplicate", path_prefix="/wms/inventory")
    second = c.get("/wms/inventory", params={**params, "page_token": first["next_token"]}).json()
    assert second["total_count"] == 53 == len(second["data"])
    assert [r["id"] for r in second["data"][:3]] == [r["id"] for r in first["data"][:3]]
    rest = (
        fetch_all(c, "/wms/inventory", {**params, "page_token": second["next_token"]}) if second["next_token"] else []
    )
    ids = [r["id"] for r in first["data"] + second["data"] + rest]
    assert len(ids) == SMALL["inventory"] + 3 and len(set(ids)) == SMALL["inventory"]
    assert sandbox.counts["duplicate"] == 1


def test_duplicate_fault_on_a_first_page_repeats_its_own_records(sandbox: TrackstarSandbox) -> None:
    sandbox.faults.inject("duplicate")
    body = client(sandbox).get("/wms/warehouses").json()
    ids = [r["id"] for r in body["data"]]
    assert len(ids) == 8 and len(set(ids)) == 5 and body["next_token"] is None


def test_touch_and_add_show_up_in_the_next_window(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox)
    before = {r["id"]: r for r in sandbox.truth("inventory")}
    first_sync = fetch_all(c, "/wms/inventory", {"updated_date[gte]": START, "updated_date[lt]": END})
    assert len(first_sync) == SMALL["inventory"]

    at = datetime(2026, 11, 21, 1, 30, tzinfo=UTC)
    touched = sandbox.touch("inventory", 5, at)
    added = sandbox.add("inventory", 3, at + timedelta(minutes=5))
    assert len(set(touched)) == 5 and added == [
        f"inv_a_{i:06d}" for i in range(SMALL["inventory"] + 1, SMALL["inventory"] + 4)
    ]

    window = fetch_all(
        c, "/wms/inventory", {"updated_date[gte]": END, "updated_date[lt]": "2026-11-22T00:00:00Z", "limit": 3}
    )
    assert sorted(r["id"] for r in window) == sorted(touched + added)
    assert [r["id"] for r in window][-3:] == added
    for record in window[:5]:
        assert record["updated_date"] == "2026-11-21T01:30:00Z"
        assert record["onhand"] > before[record["id"]]["onhand"]  # a visible change
        assert record["created_date"] == before[record["id"]]["created_date"]
    # The touched records left the old window; the totals stay consistent.
    old_window = fetch_all(c, "/wms/inventory", {"updated_date[gte]": START, "updated_date[lt]": END})
    assert len(old_window) == SMALL["inventory"] - 5 and not set(touched) & {r["id"] for r in old_window}
    truth = sandbox.truth("inventory")
    assert len(truth) == SMALL["inventory"] + 3
    assert {r["id"]: r for r in truth}[touched[0]] == next(r for r in window if r["id"] == touched[0])
    # Touching again moves a record again, without duplicating it.
    sandbox.touch("inventory", len(truth), at + timedelta(hours=1))
    assert len(fetch_all(c, "/wms/inventory", {"limit": 1000})) == len(truth)


@pytest.mark.parametrize("stream", [s for s in STREAMS if s != "inventory"])
def test_touch_changes_a_visible_field(sandbox: TrackstarSandbox, stream: str) -> None:
    before = {r["id"]: r for r in sandbox.truth(stream)}
    at = datetime(2026, 11, 25, tzinfo=UTC)
    for rid in sandbox.touch(stream, 3, at):
        after = next(r for r in sandbox.truth(stream) if r["id"] == rid)
        assert after["updated_date"] == "2026-11-25T00:00:00Z"
        changed = {k for k in after if after[k] != before[rid][k]} - {"updated_date"}
        assert changed, f"{rid}: nothing visible changed"


def test_same_seed_same_data_other_seed_other_data() -> None:
    one, two, other = (
        TrackstarSandbox(sizes=SMALL),
        TrackstarSandbox(sizes=SMALL),
        TrackstarSandbox(seed=1, sizes=SMALL),
    )
    for stream in STREAMS:
        dump = json.dumps(one.truth(stream, "conn_a"))
        assert dump == json.dumps(two.truth(stream, "conn_a"))
        if stream != "warehouses":
            assert dump != json.dumps(other.truth(stream, "conn_a"))
    at = datetime(2026, 11, 22, tzinfo=UTC)
    assert one.touch("orders", 4, at) == two.touch("orders", 4, at)
    assert one.truth("orders") == two.truth("orders")
    body_one = client(one).get("/wms/orders", params={"limit": 7}).content
    assert body_one == client(two).get("/wms/orders", params={"limit": 7}).content


@pytest.mark.parametrize("stream", list(STREAMS))
def test_records_conform_to_the_yaml_schema(sandbox: TrackstarSandbox, stream: str) -> None:
    schema = load_connectors()["trackstar"].streams[stream].json_schema
    for record in sandbox.truth(stream):
        assert schema_errors(record, schema) == [], record["id"]
        assert record["created_date"] <= record["updated_date"]
        assert START <= record["updated_date"] < END


def test_records_are_realistic_and_cross_referenced(sandbox: TrackstarSandbox) -> None:
    products = {r["id"]: r for r in sandbox.truth("products")}
    inventory = {r["id"]: r for r in sandbox.truth("inventory")}
    warehouses = {r["id"] for r in sandbox.truth("warehouses")}
    orders = sandbox.truth("orders")
    for order in orders:
        assert order["line_items"] and order["invoice_currency_code"] in ("USD", "CAD")
        assert "@" in order["ship_to_address"]["email_address"]
        assert order["warehouse_id"] in warehouses
        for li in order["line_items"]:
            assert set(li) >= {"product_id", "sku", "quantity", "unit_price"}
            assert products[li["product_id"]]["sku"] == li["sku"]
            assert products[li["product_id"]]["unit_price"] == li["unit_price"]
        net = sum(li["quantity"] * li["unit_price"] for li in order["line_items"]) - order["total_discount"]
        assert order["total_price"] == pytest.approx(net + order["total_shipping"] + order["total_tax"], abs=0.011)
    for item in inventory.values():
        assert item["onhand"] == sum(w["onhand"] for w in item["inventory_by_warehouse_id"].values())
        assert set(item["inventory_by_warehouse_id"]) <= warehouses
        assert item["fulfillable"] == item["onhand"] - item["committed"] - item["unfulfillable"]
    for product in products.values():
        for inv in product["inventory_items"]:
            assert inv["inventory_item_id"] in inventory
    order_ids = {o["id"] for o in orders}
    assert all(r["order_id"] in order_ids for r in sandbox.truth("returns"))


def test_a_million_records_are_served_lazily() -> None:
    sandbox = TrackstarSandbox(sizes={"inventory": 1_000_000})
    c = client(sandbox)
    store = sandbox.tenants["conn_a"].stores["inventory"]
    low = "2026-11-10T00:00:00Z"
    params = {"limit": 1000, "updated_date[gte]": low, "updated_date[lt]": "2026-11-10T06:00:00Z"}
    page = c.get("/wms/inventory", params=params).json()
    assert page["total_count"] == 1000 and page["data"][0]["updated_date"] >= low
    assert store.timeline.ts(int(page["data"][0]["id"].rsplit("_", 1)[1]) - 2) < parse_iso(
        low
    )  # the previous record is outside
    second = c.get("/wms/inventory", params={**params, "page_token": page["next_token"]}).json()
    assert second["data"][0]["id"] > page["data"][-1]["id"]
    assert store.overrides == {}  # nothing materialised
    last = c.get("/wms/inventory/inv_a_1000000").json()["data"]
    assert last["updated_date"] < END


def test_link_flow_and_connections(sandbox: TrackstarSandbox) -> None:
    c = client(sandbox, token=None)
    assert client(sandbox, token=None, key="bad").post("/link/token").status_code == 401
    assert c.post("/link/token").json()["link_token"]
    exchanged = c.post("/link/exchange", json={"auth_code": "code_conn_b", "customer_id": "cust-42"}).json()
    assert exchanged["access_token"] == TOKEN_B and exchanged["connection_id"] == "conn_b"
    assert exchanged["customer_id"] == "cust-42" and "get_returns" not in exchanged["available_actions"]
    form = c.post("/link/exchange", data={"auth_code": "code_conn_a"}).json()  # the guide posts form data
    assert form["access_token"] == TOKEN_A and "get_inventory" in form["available_actions"]
    assert c.post("/link/exchange", json={"auth_code": "code_unknown"}).status_code == 422
    assert c.post("/link/exchange", json={}).status_code == 422
    connections = c.get("/connections").json()
    assert [x["connection_id"] for x in connections["data"]] == ["conn_a", "conn_b"] and connections["total_count"] == 2
    assert c.get("/connections/conn_a").json()["data"]["integration_name"] == form["integration_name"]
    assert c.get("/connections/nope").status_code == 404


def test_unknown_sizes_and_streams_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown streams"):
        TrackstarSandbox(sizes={"invetory": 3})
    with pytest.raises(KeyError):
        TrackstarSandbox(sizes=SMALL).truth("nope")
