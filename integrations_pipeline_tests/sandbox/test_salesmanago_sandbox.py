"""SALESmanago sandbox: both credential forms, documented limits, hourly budget, state read-back, crash mid-batch.

Requests are built the way the engine builds them: bodies go through the real auth classes from
``engine.auth`` before being posted in-process through the sandbox's transport.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.engine.auth import (
    BodyCredentials,
    BodyCredentialsConfig,
    Credentials,
    OutgoingRequest,
)
from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.errors import RequestRejectedError
from integrations_pipeline.engine.spec import load_spec
from integrations_pipeline.sandbox.salesmanago import EVENT_TYPES, SalesmanagoSandbox
from integrations_pipeline_tests.clock import FakeClock

CLASSIC = "https://app.salesmanago.com"
V3 = "https://api.salesmanago.com"
SECRETS = {
    "SM_CLIENT": "sandbox-client",
    "SM_KEY": "sandbox-sm-key",
    "SM_SECRET": "sandbox-sm-secret",
    "SM_OWNER": "owner@sandbox.example",
}


def signed_auth(secrets: dict[str, str] = SECRETS) -> BodyCredentials:
    """The classic signed body, configured as the packaged spec configures it."""
    config = BodyCredentialsConfig(
        type="body_credentials",
        fields={"clientId": {"env": "SM_CLIENT"}, "apiKey": {"env": "SM_KEY"}, "owner": {"env": "SM_OWNER"}},
        digest={
            "field": "sha",
            "algorithm": "sha1",
            "of": [{"env": "SM_KEY"}, {"env": "SM_CLIENT"}, {"env": "SM_SECRET"}],
        },
        timestamp_ms="requestTime",
    )
    return BodyCredentials(config, credentials=Credentials("salesmanago", secrets))


def v3_body_auth(secrets: dict[str, str] = SECRETS) -> BodyCredentials:
    config = BodyCredentialsConfig(
        type="body_credentials",
        fields={"apiKey": {"env": "SM_KEY"}, "apiSecret": {"env": "SM_SECRET"}, "owner": {"env": "SM_OWNER"}},
    )
    return BodyCredentials(config, credentials=Credentials("salesmanago", secrets))


def authed(body: dict[str, Any], auth=None) -> dict[str, Any]:
    out = OutgoingRequest(method="POST", url=CLASSIC, json=body)
    (auth or signed_auth()).apply(out, login=None)
    return out.json


@pytest.fixture
def sb() -> SalesmanagoSandbox:
    return SalesmanagoSandbox()


@pytest.fixture
def client(sb):
    with httpx.Client(transport=sb.transport(), base_url=CLASSIC) as c:
        yield c


@pytest.fixture
def v3(sb):
    with httpx.Client(transport=sb.transport(), base_url=V3, headers={"API-KEY": "sandbox-sm-v3-key"}) as c:
        yield c


def post(client: httpx.Client, path: str, body: dict[str, Any], auth=None) -> dict[str, Any]:
    response = client.post(path, json=authed(body, auth))
    assert response.status_code == 200, response.text
    return response.json()


def event(type_: str = "PURCHASE", **extra: Any) -> dict[str, Any]:
    return {"date": 1_767_225_600_000, "contactExtEventType": type_, "value": 99.5, "externalId": "ord-1", **extra}


# -- credentials -----------------------------------------------------------------------------------


def test_signed_credentials_accepted_and_contact_stored(sb, client):
    body = post(
        client,
        "/api/contact/upsert",
        {
            "contact": {
                "email": "Ana@Example.com",
                "name": "Ana",
                "phone": "+48 600",
                "address": {"streetAddress": "Main 1", "zipCode": "00-001", "city": "Warsaw", "country": "PL"},
            },
            "tags": ["vip"],
            "properties": {"tier": "gold"},
        },
    )
    assert body["success"] is True and body["message"] == []
    contact = sb.contacts["ana@example.com"]
    assert body["contactId"] == contact["contactId"]
    assert contact["name"] == "Ana" and contact["address"]["city"] == "Warsaw"
    assert contact["tags"] == ["vip"] and contact["properties"] == {"tier": "gold"}
    assert sb.write_calls == 1 and sb.counts["POST /api/contact/upsert"] == 1


def test_signed_body_never_carries_the_secret():
    body = authed({"contact": {"email": "a@b.co"}})
    assert "apiSecret" not in body
    assert body["sha"] == hashlib.sha1(b"sandbox-sm-key" + b"sandbox-client" + b"sandbox-sm-secret").hexdigest()


@pytest.mark.parametrize("path", ["/api/v3/contact/upsert", "/api/contact/upsert"])
def test_seed_v3_body_credentials_accepted(sb, client, path):
    body = post(client, path, {"contact": {"email": "dev@example.com"}}, auth=v3_body_auth())
    assert body["success"] is True
    assert "dev@example.com" in sb.contacts


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda b: b.update(sha="0" * 40), "invalid sha"),
        (lambda b: b.update(apiKey="other-key"), "unknown clientId or apiKey"),
        (lambda b: b.update(owner="intruder@example.com"), "owner"),
        (lambda b: b.update(apiSecret="sandbox-sm-secret"), "apiSecret must not be sent"),
        (lambda b: b.pop("requestTime"), "requestTime"),
    ],
)
def test_bad_signed_credentials_rejected_with_success_false(sb, client, tamper, reason):
    body = authed({"contact": {"email": "a@b.co"}})
    tamper(body)
    response = client.post("/api/contact/upsert", json=body)
    assert response.status_code == 200  # SALESmanago reports failures in the body
    assert response.json()["success"] is False
    assert reason in response.json()["message"][0]
    assert sb.contacts == {}
    assert sb.write_calls == 1  # an attempted write still counts


def test_wrong_secret_signs_a_wrong_sha(sb, client):
    wrong = signed_auth({**SECRETS, "SM_SECRET": "nope"})
    body = post(client, "/api/contact/upsert", {"contact": {"email": "a@b.co"}}, auth=wrong)
    assert body == {"success": False, "message": ["Not authenticated: invalid sha"]}


def test_wrong_v3_body_secret_rejected(sb, client):
    wrong = v3_body_auth({**SECRETS, "SM_SECRET": "x"})
    body = post(client, "/api/v3/contact/upsert", {"contact": {"email": "a@b.co"}}, auth=wrong)
    assert body["success"] is False and sb.contacts == {}


def test_missing_credentials_rejected(client):
    response = client.post("/api/contact/upsert", json={"contact": {"email": "a@b.co"}})
    assert response.json()["success"] is False


# -- contacts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "contact, reason",
    [
        ({}, "email is required"),
        ({"email": "not-an-email"}, "not a valid email"),
        ({"email": "a b@c.de"}, "not a valid email"),
    ],
)
def test_contact_email_validated(sb, client, contact, reason):
    body = post(client, "/api/contact/upsert", {"contact": contact})
    assert body["success"] is False and reason in body["message"][0]
    assert sb.contacts == {}


def test_upsert_merges_fields_and_tags(sb, client):
    post(client, "/api/contact/upsert", {"contact": {"email": "a@b.co", "name": "A", "phone": "1"}, "tags": ["x"]})
    first_id = sb.contacts["a@b.co"]["contactId"]
    post(client, "/api/contact/upsert", {"contact": {"email": "A@B.CO", "name": "A2"}, "tags": ["y"]})
    contact = sb.contacts["a@b.co"]
    assert len(sb.contacts) == 1 and contact["contactId"] == first_id
    assert contact["name"] == "A2" and contact["phone"] == "1" and contact["tags"] == ["x", "y"]


def test_batchupsert_answers_with_the_contact_ids_it_applied(sb, client):
    """As the public C# client models it (ContactIdsResponse.cs): no per-item array; a refused item is
    missing from contactIds and named in message."""
    body = post(
        client,
        "/api/contact/batchupsert",
        {
            "upsertDetails": [
                {"contact": {"email": "a@b.co"}},
                {"contact": {"email": "broken"}},
                {"contact": {"email": "c@d.co"}, "tags": ["t"]},
            ]
        },
    )
    assert set(body) == {"success", "message", "contactIds"} and body["success"] is True
    assert "upsertDetails[1]" in body["message"][0] and len(body["message"]) == 1
    assert body["contactIds"] == {
        "a@b.co": sb.contacts["a@b.co"]["contactId"],
        "c@d.co": sb.contacts["c@d.co"]["contactId"],
    }
    assert set(sb.contacts) == {"a@b.co", "c@d.co"} and sb.write_calls == 1


def test_delete_and_basic_lookup(sb, client):
    post(client, "/api/contact/upsert", {"contact": {"email": "a@b.co", "name": "A"}})
    post(client, "/api/contact/upsert", {"contact": {"email": "c@d.co"}})
    found = post(client, "/api/contact/basic", {"email": ["a@b.co", "missing@x.io"]})
    assert [c["email"] for c in found["contacts"]] == ["a@b.co"]
    assert post(client, "/api/contact/delete", {"email": "a@b.co"}) == {"success": True, "message": []}
    assert "a@b.co" not in sb.contacts and sb.deleted == {"a@b.co"}
    # Deleting again (a re-run) is not an error.
    assert post(client, "/api/contact/delete", {"email": "a@b.co"})["success"] is True
    # Re-creating the contact takes it off the deleted set.
    post(client, "/api/contact/upsert", {"contact": {"email": "a@b.co"}})
    assert sb.deleted == set()
    assert sb.write_calls == 5  # basic is a read


def test_basic_lookup_limited_to_50_emails(client):
    body = post(client, "/api/contact/basic", {"email": [f"u{i}@x.io" for i in range(51)]})
    assert body["success"] is False and "50" in body["message"][0]
    assert post(client, "/api/contact/basic", {"email": [f"u{i}@x.io" for i in range(50)]})["success"] is True


# -- events ----------------------------------------------------------------------------------------


def test_event_accepted_and_contact_created(sb, client):
    body = post(
        client,
        "/api/v2/contact/addContactExtEvent",
        {
            "email": "buyer@x.io",
            "contactEvent": event(description="order", detail1="a", detail20="z", shopDomain="shop.x"),
        },
    )
    assert body["success"] is True
    assert "buyer@x.io" in sb.contacts
    [stored] = sb.events
    assert stored["externalId"] == "ord-1" and stored["detail20"] == "z" and stored["eventId"] == body["eventId"]
    assert stored["contactId"] == sb.contacts["buyer@x.io"]["contactId"]


def test_every_listed_event_type_accepted(sb, client):
    for type_ in ("PURCHASE", "CART", "VISIT", "CANCELLATION", "RETURN", "SURVEY"):
        assert type_ in EVENT_TYPES
    body = post(
        client,
        "/api/contact/batchAddContactExtEvent",
        {"events": [{"email": "a@b.co", "contactEvent": event(t, externalId=t)} for t in sorted(EVENT_TYPES)]},
    )
    assert (body["createdAmount"], body["failedAmount"], body["failedContacts"]) == (len(EVENT_TYPES), 0, [])
    assert len(sb.events) == len(EVENT_TYPES)


@pytest.mark.parametrize(
    "contact_event, reason",
    [
        (event("BOUGHT"), "not a valid event type"),
        (event("purchase"), "not a valid event type"),
        ({"value": 1}, "contactExtEventType is required"),
        (event(value="$12.50"), "value must be numeric"),
        (event(value="12,50 PLN"), "value must be numeric"),
        (event(value=True), "value must be numeric"),
        (event(date=1_767_225_600), "looks like seconds"),
        (event(date="2026-01-01"), "milliseconds"),
        (event(detail21="x"), "detail21 is not allowed"),
    ],
)
def test_event_validation(sb, client, contact_event, reason):
    body = post(client, "/api/v2/contact/addContactExtEvent", {"email": "a@b.co", "contactEvent": contact_event})
    assert body["success"] is False and reason in body["message"][0]
    assert sb.events == []


def test_event_value_may_be_a_numeric_string(sb, client):
    body = post(client, "/api/v2/contact/addContactExtEvent", {"email": "a@b.co", "contactEvent": event(value="12.50")})
    assert body["success"] is True


def test_event_requires_valid_email(client):
    body = post(client, "/api/v2/contact/addContactExtEvent", {"email": "nope", "contactEvent": event()})
    assert body["success"] is False and "email" in body["message"][0]


def test_seed_v3_event_shape_accepted(sb, client):
    body = post(
        client,
        "/api/v2/contact/addContactExtEvent",
        {
            "contact": {"email": "customer@example.com"},
            "event": {"type": "LOCATION_ENTRY", "details": "Downtown Flagship Store", "parameters": {"lat": 52.2}},
        },
        auth=v3_body_auth(),
    )
    assert body["success"] is True
    [stored] = sb.events
    assert stored["contactExtEventType"] == "LOCATION_ENTRY" and stored["description"] == "Downtown Flagship Store"
    assert stored["parameters"] == {"lat": 52.2}


def test_batch_events_limited_to_1000(sb, client):
    def events(n: int) -> list[dict[str, Any]]:
        return [{"email": f"u{i % 7}@x.io", "contactEvent": event(externalId=f"e{i}")} for i in range(n)]

    too_many = post(client, "/api/contact/batchAddContactExtEvent", {"events": events(1001)})
    assert too_many["success"] is False and "1001 > 1000" in too_many["message"][0]
    assert sb.events == []  # the whole call is rejected
    ok = post(client, "/api/contact/batchAddContactExtEvent", {"events": events(1000)})
    assert ok["success"] is True and len(sb.events) == 1000
    assert sb.write_calls == 2


def test_batch_events_answer_counts_and_failed_emails(sb, client):
    """As the public C# client models it (BatchAddContactExtEventResponse.cs): createdAmount, failedAmount
    and failedContacts (emails), no per-item array; each event is judged on its own."""
    body = post(
        client,
        "/api/contact/batchAddContactExtEvent",
        {
            "events": [
                {"email": "a@b.co", "contactEvent": event(externalId="e1")},
                {"email": "A@b.co", "contactEvent": event("NOPE", externalId="e2")},
                {"email": "bad", "contactEvent": event(externalId="e3")},
                {"email": "c@d.co", "contactEvent": event(externalId="e4")},
            ]
        },
    )
    assert set(body) == {"success", "message", "createdAmount", "failedAmount", "failedContacts"}
    assert (body["createdAmount"], body["failedAmount"]) == (2, 2)
    assert body["failedContacts"] == ["a@b.co", "bad"]  # a@b.co also had an event created
    assert [e["externalId"] for e in sb.events] == ["e1", "e4"]


# -- hourly budget ---------------------------------------------------------------------------------


def test_hourly_budget_answers_429_then_recovers():
    clock = FakeClock(start=1_000_000.0)
    sb = SalesmanagoSandbox(requests_per_hour=3, clock=clock.time)
    with httpx.Client(transport=sb.transport(), base_url=CLASSIC) as client:
        for i in range(3):
            post(client, "/api/contact/upsert", {"contact": {"email": f"u{i}@x.io"}})
            clock.now += 600  # t = 0, 600, 1200
        assert sb.budget_remaining() == 0
        refused = client.post("/api/contact/upsert", json=authed({"contact": {"email": "late@x.io"}}))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1800"  # the first slot frees at t = 3600
        assert refused.json()["success"] is False
        assert "late@x.io" not in sb.contacts and sb.counts["429"] == 1
        assert sb.write_calls == 3  # refused before the server looked at it
        clock.now = 1_000_000.0 + 3600
        assert post(client, "/api/contact/upsert", {"contact": {"email": "late@x.io"}})["success"] is True


def test_over_budget_status_knob_gives_503():
    clock = FakeClock()
    sb = SalesmanagoSandbox(requests_per_hour=1, clock=clock.time)
    sb.over_budget_status = 503
    with httpx.Client(transport=sb.transport(), base_url=CLASSIC) as client:
        post(client, "/api/contact/upsert", {"contact": {"email": "a@b.co"}})
        refused = client.post("/api/contact/upsert", json=authed({"contact": {"email": "b@b.co"}}))
    assert refused.status_code == 503 and float(refused.headers["retry-after"]) == 3600
    assert sb.counts["over_budget"] == 1


def test_budget_counts_both_hosts_and_can_be_disabled():
    clock = FakeClock()
    sb = SalesmanagoSandbox(requests_per_hour=2, clock=clock.time)
    with httpx.Client(transport=sb.transport(), base_url=V3, headers={"API-KEY": "sandbox-sm-v3-key"}) as v3:
        assert v3.post("/v3/product/catalogList").status_code == 200
        assert v3.post("/v3/product/catalogList").status_code == 200
        refused = v3.post("/v3/product/catalogList")
    assert refused.status_code == 429 and "messages" in refused.json()
    unlimited = SalesmanagoSandbox(requests_per_hour=None)
    assert unlimited.budget_remaining() is None


# -- faults ----------------------------------------------------------------------------------------


def test_fail_batch_after_applies_prefix_then_500_and_rerun_is_idempotent(sb, client):
    details = {"upsertDetails": [{"contact": {"email": f"u{i}@x.io", "name": f"U{i}"}} for i in range(5)]}
    sb.fail_batch_after(2)
    crashed = client.post("/api/contact/batchupsert", json=authed(details))
    assert crashed.status_code == 500
    assert set(sb.contacts) == {"u0@x.io", "u1@x.io"}
    rerun = post(client, "/api/contact/batchupsert", details)
    assert rerun["success"] is True
    assert set(sb.contacts) == {f"u{i}@x.io" for i in range(5)}
    assert sb.write_calls == 2 and sb.counts["5xx"] == 1


def test_fail_batch_after_on_events_shows_replayed_events(sb, client):
    payload = {"events": [{"email": "a@b.co", "contactEvent": event(externalId=f"e{i}")} for i in range(4)]}
    sb.fail_batch_after(3)
    assert client.post("/api/contact/batchAddContactExtEvent", json=authed(payload)).status_code == 500
    assert [e["externalId"] for e in sb.events] == ["e0", "e1", "e2"]
    # A naive re-run re-sends all four: the sandbox keeps every event so the test sees the replay.
    post(client, "/api/contact/batchAddContactExtEvent", payload)
    dupes = {k: len(v) for k, v in sb.events_by_external_id().items() if len(v) > 1}
    assert dupes == {"e0": 2, "e1": 2, "e2": 2}


def test_fail_batch_after_zero_applies_nothing(sb, client):
    sb.fail_batch_after(0)
    payload = {"upsertDetails": [{"contact": {"email": "a@b.co"}}]}
    assert client.post("/api/contact/batchupsert", json=authed(payload)).status_code == 500
    assert sb.contacts == {}
    assert post(client, "/api/contact/batchupsert", payload)["success"] is True  # one-shot


def test_injected_faults_leave_state_alone(sb, client):
    sb.faults.inject("500")
    sb.faults.inject("429")
    body = authed({"contact": {"email": "a@b.co"}})
    assert client.post("/api/contact/upsert", json=body).status_code == 500
    limited = client.post("/api/contact/upsert", json=body)
    assert limited.status_code == 429 and limited.json()["success"] is False
    assert sb.contacts == {} and sb.write_calls == 0
    sb.faults.inject("timeout")
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/contact/upsert", json=body)


# -- v3 product catalog ----------------------------------------------------------------------------


def product(pid: str = "P1", **extra: Any) -> dict[str, Any]:
    return {
        "productId": pid,
        "name": f"Product {pid}",
        "mainCategory": "Shoes",
        "productUrl": f"https://shop.x/{pid}",
        "available": True,
        "active": True,
        "quantity": 3,
        "price": 10.5,
        **extra,
    }


def test_v3_product_upsert_and_catalog_list(sb, v3):
    response = v3.post("/v3/product/upsert", json={"catalogId": "cat-1", "products": [product("P1"), product("P2")]})
    assert response.status_code == 200 and response.json()["productIds"] == ["P1", "P2"]
    assert sb.products[("cat-1", "P1")]["name"] == "Product P1"
    renamed = {"productId": "P1", "name": "Renamed", "price": 12}
    v3.post("/v3/product/upsert", json={"catalogId": "cat-1", "products": [renamed]})
    assert sb.products[("cat-1", "P1")]["name"] == "Renamed" and sb.products[("cat-1", "P1")]["quantity"] == 3
    catalogs = v3.post("/v3/product/catalogList").json()["catalogs"]
    assert [c["catalogId"] for c in catalogs] == ["cat-1"]
    assert sb.write_calls == 2


def test_v3_wrong_api_key_is_401(sb):
    with httpx.Client(transport=sb.transport(), base_url=V3, headers={"API-KEY": "wrong"}) as v3:
        response = v3.post("/v3/product/upsert", json={"catalogId": "c", "products": [product()]})
    assert response.status_code == 401
    assert set(response.json()) == {"messages", "reasonCode"}
    assert sb.products == {}


def test_v3_product_validation_lists_every_problem(sb, v3):
    response = v3.post(
        "/v3/product/upsert",
        json={
            "catalogId": "c",
            "products": [product("ok"), {"name": "no id"}, product("P3", price="ten", quantity=1.5)],
        },
    )
    assert response.status_code == 400
    messages = [p["message"] for p in response.json()["problems"]]
    assert any("products[1].productId" in m for m in messages)
    assert any("products[2].price" in m for m in messages) and any("products[2].quantity" in m for m in messages)
    assert sb.products == {}  # all or nothing


def test_v3_product_upsert_limited_to_100(sb, v3):
    def upsert(n: int) -> httpx.Response:
        return v3.post("/v3/product/upsert", json={"catalogId": "c", "products": [product(f"P{i}") for i in range(n)]})

    response = upsert(101)
    assert response.status_code == 400 and "101 > 100" in response.json()["problems"][0]["message"]
    assert upsert(100).status_code == 200


def test_v3_strict_catalogs():
    sb = SalesmanagoSandbox(catalogs=["main"])
    with httpx.Client(transport=sb.transport(), base_url=V3, headers={"API-KEY": "sandbox-sm-v3-key"}) as c:
        assert c.post("/v3/product/upsert", json={"catalogId": "other", "products": [product()]}).status_code == 400
        assert c.post("/v3/product/upsert", json={"catalogId": "main", "products": [product()]}).status_code == 200


def test_v3_fail_batch_after(sb, v3):
    sb.fail_batch_after(1)
    response = v3.post("/v3/product/upsert", json={"catalogId": "c", "products": [product("P1"), product("P2")]})
    assert response.status_code == 500
    assert list(sb.products) == [("c", "P1")]


# -- through the engine's client -------------------------------------------------------------------


def test_engine_client_against_sandbox():
    spec = load_spec(SPEC_DIR / "salesmanago.yaml")
    sb = SalesmanagoSandbox()
    env = sb.environment("http://sandbox.local/")  # the names the connector spec reads
    assert env["SALESMANAGO_BASE_URL"] == "http://sandbox.local" and env["SALESMANAGO_REQUESTS_PER_HOUR"] == "1000"
    creds = Credentials("salesmanago", env)
    with VendorClient(spec, creds, transport=sb.transport(), clock=FakeClock(), environ=env) as vc:
        assert vc.call("POST", "/api/contact/upsert", json_body={"contact": {"email": "e@x.io"}})["success"] is True
        with pytest.raises(RequestRejectedError, match="not a valid email"):
            vc.call("POST", "/api/contact/upsert", json_body={"contact": {"email": "nope"}})
    assert "e@x.io" in sb.contacts
