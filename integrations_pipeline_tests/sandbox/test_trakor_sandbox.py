"""Trakor sandbox: idempotency by name, schema and length checks, 401/403, state read-back."""

from __future__ import annotations

import httpx
import pytest

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.engine.auth import Credentials, OutgoingRequest, StaticHeaders, StaticHeadersConfig
from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.errors import AuthError, RequestRejectedError
from integrations_pipeline.engine.spec import load_spec
from integrations_pipeline.sandbox.trakor import TrakorSandbox
from integrations_pipeline_tests.clock import FakeClock

BASE = "https://app.trakor.example/api/public/v1"


def api_key_headers(key: str = "sandbox-trakor-key") -> dict[str, str]:
    # Built through the engine's static_headers auth, as a sync would.
    auth = StaticHeaders(
        StaticHeadersConfig(type="static_headers", headers={"X-API-KEY": {"env": "TRAKOR_API_KEY"}}),
        credentials=Credentials("trakor", {"TRAKOR_API_KEY": key}),
    )
    out = OutgoingRequest(method="POST", url=BASE)
    auth.apply(out, login=None)
    return out.headers


@pytest.fixture
def sb() -> TrakorSandbox:
    return TrakorSandbox()


@pytest.fixture
def client(sb):
    with httpx.Client(transport=sb.transport(), base_url=BASE, headers=api_key_headers()) as c:
        yield c


def test_product_created_with_sequential_sku(sb, client):
    first = client.post("/products", json={"name": "Steel Rod 12mm", "description": "Rebar", "price": 450.0})
    second = client.post("/products", json={"name": "Steel Rod 16mm"})
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["sku"] == "PRD-00001" and second.json()["sku"] == "PRD-00002"
    assert first.json()["created"] is True and first.json()["name"] == "Steel Rod 12mm"
    assert sb.products["Steel Rod 12mm"]["price"] == 450.0
    assert sb.products["Steel Rod 16mm"]["price"] == 0  # default
    assert sb.products["Steel Rod 16mm"]["description"] is None


def test_same_name_returns_existing_and_updates_nothing(sb, client):
    first = client.post("/products", json={"name": "Rod", "description": "v1", "price": 1}).json()
    again = client.post("/products", json={"name": "Rod", "description": "v2", "price": 2})
    assert again.status_code == 200
    assert again.json() == {**first, "created": False}
    assert sb.products["Rod"]["description"] == "v1" and sb.products["Rod"]["price"] == 1
    assert len(sb.products) == 1 and sb.write_calls == 2


def test_names_match_exactly(sb, client):
    client.post("/products", json={"name": "Rod"})
    assert client.post("/products", json={"name": "rod"}).json()["created"] is True
    assert len(sb.products) == 2


def test_party_idempotent_by_name(sb, client):
    first = client.post("/parties", json={"name": "Acme Distributors", "contact_info": "+91 98765 43210"})
    again = client.post("/parties", json={"name": "Acme Distributors", "contact_info": "changed"})
    assert first.status_code == 201 and first.json()["created"] is True and "sku" not in first.json()
    assert again.status_code == 200 and again.json() == {**first.json(), "created": False}
    assert sb.parties["Acme Distributors"]["contact_info"] == "+91 98765 43210"


@pytest.mark.parametrize("path", ["/products", "/parties"])
def test_name_length_limit(sb, client, path):
    assert client.post(path, json={"name": "n" * 255}).status_code == 201
    over = client.post(path, json={"name": "n" * 256})
    assert over.status_code == 400 and "name" in over.json()["error"] and "255" in over.json()["error"]


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/products", {}, "name"),
        ("/products", {"name": ""}, "name"),
        ("/products", {"name": 42}, "name"),
        ("/products", {"name": "x", "price": "450"}, "price"),
        ("/products", {"name": "x", "price": True}, "price"),
        ("/products", {"name": "x", "description": 7}, "description"),
        ("/parties", {"contact_info": "c"}, "name"),
        ("/parties", {"name": "x", "contact_info": ["a"]}, "contact_info"),
    ],
)
def test_schema_errors_name_the_field(sb, client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 400 and field in response.json()["error"]
    assert sb.products == {} and sb.parties == {}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
def test_invalid_json_is_400(client, content):
    assert client.post("/products", content=content, headers={"content-type": "application/json"}).status_code == 400


@pytest.mark.parametrize("headers", [{}, api_key_headers("sk_live_wrong")])
def test_missing_or_invalid_key_is_401(sb, headers):
    with httpx.Client(transport=sb.transport(), base_url=BASE, headers=headers) as c:
        response = c.post("/products", json={"name": "Rod"})
    assert response.status_code == 401 and sb.products == {}


def test_frozen_organisation_is_403(sb, client):
    sb.frozen = True
    assert client.post("/products", json={"name": "Rod"}).status_code == 403
    assert client.post("/parties", json={"name": "Acme"}).status_code == 403
    sb.frozen = False
    assert client.post("/products", json={"name": "Rod"}).status_code == 201
    assert TrakorSandbox(frozen=True).frozen is True


def test_injected_500_then_retry_creates_once(sb, client):
    sb.faults.inject("500")
    assert client.post("/products", json={"name": "Rod"}).status_code == 500
    assert sb.products == {} and sb.write_calls == 0
    assert client.post("/products", json={"name": "Rod"}).json()["created"] is True


def test_engine_client_against_sandbox():
    spec = load_spec(SPEC_DIR / "trakor.yaml")
    sb = TrakorSandbox()
    env = sb.environment("http://sandbox.local")  # the names the connector spec reads
    assert env["TRAKOR_BASE_URL"] == "http://sandbox.local/api/public/v1"
    with VendorClient(spec, Credentials("trakor", env), transport=sb.transport(), clock=FakeClock(), environ=env) as vc:
        sb.faults.inject("500")  # retried by the client
        assert vc.call("POST", "/products", json_body={"name": "Rod"})["created"] is True
        assert vc.call("POST", "/products", json_body={"name": "Rod"})["created"] is False
        with pytest.raises(RequestRejectedError, match="name"):
            vc.call("POST", "/parties", json_body={"name": "p" * 256})
    with VendorClient(spec, Credentials("trakor", {"TRAKOR_API_KEY": "bad"}), base_url=BASE,
                      transport=sb.transport(), clock=FakeClock(), environ={}) as vc:  # fmt: skip
        with pytest.raises(AuthError):
            vc.call("POST", "/products", json_body={"name": "Other"})
    assert list(sb.products) == ["Rod"] and sb.counts["5xx"] == 1
