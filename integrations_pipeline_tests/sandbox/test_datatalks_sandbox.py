"""Datatalks sandbox: SigV4 verification, seed 002's required fields and length limits, both base paths, forwarding.

Requests are signed by ``httpx_auth.AWS4Auth`` exactly as the engine's ``aws_sigv4`` auth type signs
them, and posted in-process through the sandbox's transport.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import httpx_auth
import pytest

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.engine.auth import Credentials
from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.errors import AuthError, RequestRejectedError
from integrations_pipeline.engine.spec import load_spec
from integrations_pipeline.sandbox.datatalks import SIGNATURE_MISMATCH, DatatalksSandbox
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline_tests.clock import FakeClock

NEW_HOST = "https://api.datatalks.se"
OLD_HOST = "https://htpfdjhk3h.execute-api.eu-west-1.amazonaws.com"
# (host, base path): the new v1 API and the deprecated API Gateway stage.
BASES = [(NEW_HOST, "/v1"), (OLD_HOST, "/Production")]
KEY_ID, SECRET = "AKIASANDBOXDATATALKS", "sandbox-dt-secret"
GROUP = "sandbox-group"


def signer(key_id: str = KEY_ID, secret: str = SECRET, region: str = "eu-west-1", service: str = "execute-api"):
    return httpx_auth.AWS4Auth(access_id=key_id, secret_key=secret, region=region, service=service)


@pytest.fixture
def sb() -> DatatalksSandbox:
    return DatatalksSandbox()


@pytest.fixture(params=BASES, ids=["v1", "Production"])
def api(request, sb):
    host, base = request.param
    with httpx.Client(transport=sb.transport(), base_url=host + base, auth=signer()) as client:
        yield client


@pytest.fixture
def v1(sb):
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1", auth=signer()) as client:
        yield client


def envelope(data: Any, group_key: str = GROUP) -> dict[str, Any]:
    return {"data": data, "group_key": group_key}


def product(**overrides: Any) -> dict[str, Any]:
    base = {
        "id": "P1",
        "name": "Runner",
        "description": "A shoe",
        "category": "Shoes",
        "brand": "Acme",
        "url": "https://shop.x/p1",
        "image_url": "https://shop.x/p1.jpg",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# -- signature -------------------------------------------------------------------------------------


def test_signed_request_accepted_on_both_paths(sb, api):
    response = api.post("/contacts", json=envelope({"email": "ana@x.io", "name": "Ana", "city": "Malmö"}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["contactId"] == sb.contacts["ana@x.io"]["contactId"]
    assert sb.contacts["ana@x.io"]["address"] == {"city": "Malmö"}
    assert sb.write_calls == 1


def test_wrong_secret_is_403_signature_mismatch(sb):
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1", auth=signer(secret="wrong")) as client:
        response = client.post("/contacts", json=envelope({"email": "a@b.co"}))
    assert response.status_code == 403 and response.json() == {"message": SIGNATURE_MISMATCH}
    assert sb.contacts == {} and sb.write_calls == 0 and sb.counts["auth_failed"] == 1


def test_unknown_key_id_is_403(sb):
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1", auth=signer(key_id="AKIAOTHER")) as client:
        response = client.post("/contacts", json=envelope({"email": "a@b.co"}))
    assert response.status_code == 403 and "security token" in response.json()["message"]


def test_wrong_region_is_403(sb):
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1", auth=signer(region="us-east-1")) as client:
        response = client.post("/contacts", json=envelope({"email": "a@b.co"}))
    assert response.status_code == 403 and "region" in response.json()["message"]


def test_unsigned_request_is_403(sb):
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1") as client:
        response = client.post("/contacts", json=envelope({"email": "a@b.co"}))
    assert response.status_code == 403 and response.json() == {"message": "Missing Authentication Token"}


def test_body_changed_after_signing_is_403(sb):
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1") as client:
        original = client.build_request("POST", "/contacts", json=envelope({"email": "a@b.co"}))
        signed = next(signer().auth_flow(original))
        forged_body = b'{"data":{"email":"evil@b.co"},"group_key":"sandbox-group"}'
        headers = {k: v for k, v in signed.headers.items() if k != "content-length"}
        forged = httpx.Request("POST", signed.url, headers=headers, content=forged_body)
        response = client.send(forged)
    assert response.status_code == 403 and response.json()["message"] == SIGNATURE_MISMATCH
    assert sb.contacts == {}


@pytest.mark.parametrize(
    "offset, message",
    [(16 * 60, "Signature expired"), (-16 * 60, "Signature not yet current"), (14 * 60, None), (-14 * 60, None)],
)
def test_x_amz_date_must_be_within_15_minutes(offset, message):
    # The sandbox clock moves instead of the signer's (AWS4Auth always stamps the current time).
    sb = DatatalksSandbox(clock=lambda: time.time() + offset)
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1", auth=signer()) as client:
        response = client.post("/contacts", json=envelope({"email": "a@b.co"}))
    if message is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 403 and response.json()["message"].startswith(message)


def test_query_string_is_signed(sb, v1):
    v1.post("/contacts", json=envelope({"email": "ana@x.io"}))
    assert v1.get("/contact_by_email", params={"email": "ana@x.io"}).status_code == 200
    # Changing the query after signing breaks the signature.
    original = v1.build_request("GET", "/contact_by_email", params={"email": "ana@x.io"})
    signed = next(signer().auth_flow(original))
    forged = httpx.Request("GET", signed.url.copy_with(params={"email": "bob@x.io"}), headers=signed.headers)
    response = v1.send(forged, auth=None)
    assert response.status_code == 403 and response.json()["message"] == SIGNATURE_MISMATCH


# -- envelope and group key ------------------------------------------------------------------------


def test_unknown_group_key_is_403(sb, api):
    response = api.post("/contacts", json=envelope({"email": "a@b.co"}, group_key="someone-else"))
    assert response.status_code == 403 and "group_key" in response.json()["message"]
    assert sb.contacts == {}


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"data": {"email": "a@b.co"}}, "group_key is required"),
        ({"group_key": GROUP}, "data is required"),
        ({"data": [], "group_key": GROUP}, "data is required"),
        ({"data": {"name": "no email"}, "group_key": GROUP}, "data.email is required"),
        ({"data": {"email": "not-an-email"}, "group_key": GROUP}, "not a valid email"),
        ({"data": {"email": "a@b.co", "zipCode": 12345}, "group_key": GROUP}, "data.zipCode must be a string"),
    ],
)
def test_contact_body_validated(sb, v1, body, reason):
    response = v1.post("/contacts", json=body)
    assert response.status_code == 400 and reason in response.json()["message"]
    assert sb.contacts == {}


def test_invalid_json_is_400(v1):
    response = v1.post("/contacts", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


# -- contacts --------------------------------------------------------------------------------------


def test_contact_upsert_delete_and_lookups(sb, api):
    data = {
        "email": "Ana@X.io", "name": "Ana", "phone": "1", "fax": "2", "company": "Acme", "streetAddress": "Main 1",
        "zipCode": "111", "city": "Lund", "country": "SE", "loyalty": "gold",
    }  # fmt: skip
    created = api.post("/contacts", json=envelope(data)).json()
    contact = sb.contacts["ana@x.io"]
    assert contact["company"] == "Acme" and contact["address"]["streetAddress"] == "Main 1"
    assert contact["properties"] == {"loyalty": "gold"}  # fields beyond the seed's list become properties

    by_email = api.get("/contact_by_email", params={"email": "ana@x.io"})
    assert by_email.status_code == 200 and by_email.json()["data"]["name"] == "Ana"
    by_id = api.get(f"/contact/{created['contactId']}")
    assert by_id.status_code == 200 and by_id.json()["data"]["email"] == "ana@x.io"

    deleted = api.request("DELETE", "/contacts", json=envelope({"email": "ana@x.io"}))
    assert deleted.status_code == 200 and deleted.json()["existed"] is True
    assert sb.deleted == {"ana@x.io"} and sb.contacts == {}
    assert api.get("/contact_by_email", params={"email": "ana@x.io"}).status_code == 404
    missing = api.get(f"/contact/{created['contactId']}")
    assert missing.status_code == 404 and missing.json() == {"message": "Contact not found"}
    assert sb.write_calls == 2  # reads are not writes


# -- events ----------------------------------------------------------------------------------------

SEED_EVENT_TYPES = ["PURCHASE", "CART", "VISIT", "PHONE_CALL", "OTHER", "RESERVATION", "CANCELLED",
                    "ACTIVATION", "MEETING", "OFFER", "DOWNLOAD", "LOGIN", "TRANSACTION"]  # fmt: skip


@pytest.mark.parametrize("event_type", SEED_EVENT_TYPES)
def test_seed_event_types_accepted(sb, v1, event_type):
    response = v1.post("/events", json=envelope({"email": "a@b.co", "contactExtEventType": event_type, "value": 1.5}))
    assert response.status_code == 200, response.text
    assert sb.events[0]["contactExtEventType"] == event_type


def test_event_with_all_fields_and_twenty_details(sb, api):
    data = {"email": "a@b.co", "description": "d", "products": "P1,P2", "location": "web", "value": 10.0,
            "contactExtEventType": "PURCHASE", "externalId": "ord-9", "shopDomain": "shop.x",
            **{f"detail{i}": f"v{i}" for i in range(1, 21)}}  # fmt: skip
    response = api.post("/events", json=envelope(data))
    assert response.status_code == 200, response.text
    [stored] = sb.events
    assert stored["externalId"] == "ord-9" and stored["detail20"] == "v20" and stored["email"] == "a@b.co"
    assert "a@b.co" in sb.contacts  # the contact is created with the event


@pytest.mark.parametrize(
    "data, reason",
    [
        ({"contactExtEventType": "PURCHASE"}, "data.email is required"),
        ({"email": "a@b.co"}, "contactExtEventType is required"),
        ({"email": "a@b.co", "contactExtEventType": "CANCELLATION"}, "not a valid event type"),  # not in seed 002
        ({"email": "a@b.co", "contactExtEventType": "PURCHASE", "value": "$5"}, "value must be numeric"),
        ({"email": "a@b.co", "contactExtEventType": "PURCHASE", "detail21": "x"}, "detail21 is not allowed"),
        ({"email": "a@b.co", "contactExtEventType": "PURCHASE", "detail3": 7}, "data.detail3 must be a string"),
        ({"email": "a@b.co", "contactExtEventType": "PURCHASE", "externalId": 42}, "data.externalId must be a string"),
    ],
)
def test_event_validation(sb, v1, data, reason):
    response = v1.post("/events", json=envelope(data))
    assert response.status_code == 400 and reason in response.json()["message"]
    assert sb.events == []


# -- products --------------------------------------------------------------------------------------

# Seed 002's product table, restated here so the test checks the sandbox against the seed:
# (field, required, max length or None).
SEED_PRODUCT_STRINGS = [
    ("id", True, 32), ("name", True, 100), ("description", True, 1024), ("category", True, 255),
    ("sub_category", False, 512), ("brand", True, 512), ("detail1", False, 512), ("detail2", False, 512),
    ("detail3", False, 512), ("detail4", False, 512), ("detail5", False, 512), ("url", True, 512),
    ("image_url", True, 512), ("image2_url", False, 128), ("color", False, 40), ("season", False, 40),
]  # fmt: skip


@pytest.mark.parametrize("field", [f for f, required, _ in SEED_PRODUCT_STRINGS if required])
def test_product_required_fields(sb, v1, field):
    for bad in (product(**{field: None}), {**product(), field: ""}):  # absent, then empty
        response = v1.post("/products", json=envelope([bad]))
        assert response.status_code == 400
        assert response.json()["errors"] == [{"index": 0, "field": field, "reason": "required"}]
    assert sb.products == {}


@pytest.mark.parametrize("field, max_len", [(f, n) for f, _, n in SEED_PRODUCT_STRINGS])
def test_product_length_limits(sb, v1, field, max_len):
    at_limit = v1.post("/products", json=envelope([product(**{field: "x" * max_len})]))
    assert at_limit.status_code == 200, at_limit.text
    over = v1.post("/products", json=envelope([product(**{field: "y" * (max_len + 1)})]))
    assert over.status_code == 400
    [error] = over.json()["errors"]
    assert error["field"] == field and error["index"] == 0 and str(max_len) in error["reason"]


@pytest.mark.parametrize(
    "field, good, bad",
    [("sex", 1, "female"), ("stock_available", 12, 1.5), ("price", "19.99", "19,99 kr"), ("special_price", 9.5, True)],
)
def test_product_numeric_fields(v1, field, good, bad):
    assert v1.post("/products", json=envelope([product(**{field: good})])).status_code == 200
    response = v1.post("/products", json=envelope([product(**{field: bad})]))
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == field


def test_products_call_rejected_with_every_bad_item_listed(sb, api):
    response = api.post(
        "/products",
        json=envelope([product(id="ok"), product(id="x" * 33, brand=None), product(id="P3", color="c" * 41)]),
    )
    assert response.status_code == 400
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert errors == {(1, "id"), (1, "brand"), (2, "color")}
    assert sb.products == {}  # all or nothing: the valid product was not applied either


def test_products_accepted_with_any_extra_field(sb, api):
    response = api.post("/products", json=envelope([product(id="P1", price=10, warranty="2y"), product(id="P2")]))
    assert response.status_code == 200 and response.json()["productIds"] == ["P1", "P2"]
    assert sb.products[(GROUP, "P1")]["warranty"] == "2y"
    assert sb.products[(GROUP, "P1")]["productId"] == "P1"


def test_products_fail_batch_after(sb, v1):
    sb.fail_batch_after(1)
    response = v1.post("/products", json=envelope([product(id="P1"), product(id="P2")]))
    assert response.status_code == 500 and list(sb.products) == [(GROUP, "P1")]
    assert v1.post("/products", json=envelope([product(id="P1"), product(id="P2")])).status_code == 200
    assert len(sb.products) == 2


# -- forwarding --------------------------------------------------------------------------------------


def test_forward_to_applies_to_salesmanago_state():
    sm = SalesmanagoSandbox()
    sb = DatatalksSandbox(forward_to=sm)
    with httpx.Client(transport=sb.transport(), base_url=NEW_HOST + "/v1", auth=signer()) as client:
        assert client.post("/contacts", json=envelope({"email": "a@b.co", "name": "A"})).status_code == 200
        cart = {"email": "a@b.co", "contactExtEventType": "CART", "externalId": "c1"}
        assert client.post("/events", json=envelope(cart)).status_code == 200
        assert client.post("/products", json=envelope([product()])).status_code == 200
        assert client.request("DELETE", "/contacts", json=envelope({"email": "gone@b.co"})).status_code == 200
    assert sm.contacts["a@b.co"]["name"] == "A"
    assert [e["externalId"] for e in sm.events] == ["c1"]
    assert (GROUP, "P1") in sm.products and sm.deleted == {"gone@b.co"}
    assert sb.contacts is sm.contacts  # the proxy reads back through its target
    assert sb.write_calls == 4 and sm.write_calls == 4
    assert sm.counts["requests"] == 0  # forwarded in-process, not over SALESmanago's HTTP API


# -- through the engine's client -------------------------------------------------------------------


def test_engine_client_signs_and_sandbox_verifies():
    spec = load_spec(SPEC_DIR / "datatalks.yaml")
    sb = DatatalksSandbox()
    env = sb.environment("http://sandbox.local")  # the names the connector spec reads
    assert env["DATATALKS_BASE_URL"] == "http://sandbox.local/v1"
    good = Credentials("datatalks", env)
    opts = {"transport": sb.transport(), "environ": env}
    with VendorClient(spec, good, clock=FakeClock(), **opts) as vc:
        assert vc.call("POST", "/contacts", json_body=envelope({"email": "e@x.io"}))["success"] is True
        assert vc.call("GET", "/contact_by_email", params={"email": "e@x.io"})["data"]["email"] == "e@x.io"
        with pytest.raises(RequestRejectedError):
            vc.call("POST", "/products", json_body=envelope([product(id=None)]))
    bad = Credentials("datatalks", {"DATATALKS_AWS_ACCESS_KEY_ID": KEY_ID, "DATATALKS_AWS_SECRET_ACCESS_KEY": "nope"})
    with VendorClient(spec, bad, clock=FakeClock(), **opts) as vc:
        with pytest.raises(AuthError):
            vc.call("POST", "/contacts", json_body=envelope({"email": "f@x.io"}))
    assert set(sb.contacts) == {"e@x.io"}
