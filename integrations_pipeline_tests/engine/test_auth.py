"""Every registered auth type: what it puts on the wire, and how graphql_login manages its token.

``WIRE_CHECKS`` holds one check per type in ``AUTH_TYPES``; ``test_every_auth_type_has_a_wire_check``
fails when a new type is registered without one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from integrations_pipeline.engine.auth import AUTH_TYPES, Credentials
from integrations_pipeline.engine.client import parse_connections
from integrations_pipeline.engine.errors import AuthError, MissingCredentialError
from integrations_pipeline_tests.clock import FakeClock

from ._support import SECRETS, Recorder, fake_spec, json_response, make_client, spec

BASE_HEADERS = {"host", "accept", "accept-encoding", "connection", "user-agent"}


def _ok(request: httpx.Request) -> httpx.Response:
    return json_response(200, {"ok": True, "success": True})


def _no_secret_anywhere(request: httpx.Request, *secrets: str) -> None:
    wire = request.content.decode() + json.dumps(dict(request.headers)) + str(request.url)
    for secret in secrets:
        assert secret not in wire


# -- one wire check per auth type ----------------------------------------------------------------


def check_none() -> None:
    vendor = Recorder(_ok)
    make_client(fake_spec({"type": "none"}), vendor, secrets={}).call("GET", "/ping")
    (request,) = vendor.requests
    assert set(request.headers) == BASE_HEADERS
    assert request.url.params == httpx.QueryParams()


def check_static_headers() -> None:
    secrets = SECRETS["trackstar"]
    vendor = Recorder(_ok)
    client = make_client("trackstar", vendor)
    conn_a, conn_b = parse_connections(client.spec, client.credentials)
    client.call("GET", "/wms/inventory", connection=conn_a)
    client.call("GET", "/wms/inventory", connection=conn_b)
    first, second = vendor.requests
    assert first.headers["x-trackstar-api-key"] == secrets["TRACKSTAR_API_KEY"]
    assert first.headers["x-trackstar-access-token"] == "SECRET-tok-aaaa"
    assert second.headers["x-trackstar-access-token"] == "SECRET-tok-bbbb"
    assert set(first.headers) == BASE_HEADERS | {"x-trackstar-api-key", "x-trackstar-access-token"}
    # Trakor's header, spelled as its spec spells it.
    vendor = Recorder(_ok)
    make_client("trakor", vendor).call("POST", "/products", json_body={"name": "Widget"})
    assert vendor.requests[0].headers["X-API-KEY"] == SECRETS["trakor"]["TRAKOR_API_KEY"]
    assert json.loads(vendor.requests[0].content) == {"name": "Widget"}


def _login_ok(token: str = "tok-1") -> dict:
    return {"data": {"authenticate": {"token": token}}}


def check_graphql_login() -> None:
    vendor = Recorder([json_response(200, _login_ok()), json_response(200, {"data": {"workflows": []}})])
    client = make_client("salestrekker", vendor)
    assert client.graphql("query { workflows { id } }", {}) == {"data": {"workflows": []}}
    login, query = vendor.requests
    method = client.spec.auth.methods[0]
    assert json.loads(login.content) == {
        "query": method.mutation,
        "variables": {"apiKey": SECRETS["salestrekker"]["SALESTREKKER_API_KEY"]},
    }
    assert login.url.path == "/graphql" and "authorization" not in login.headers
    assert query.headers["authorization"] == "Bearer tok-1"
    assert json.loads(query.content) == {"query": "query { workflows { id } }", "variables": {}}


def check_body_credentials() -> None:
    _check_body_credentials_with_digest()
    _check_body_credentials_plain()


def _check_body_credentials_with_digest() -> None:
    """SALESmanago's classic signed body: the secret is hashed, never sent."""
    s = SECRETS["salesmanago"]
    vendor = Recorder(_ok)
    before = int(time.time() * 1000)
    make_client("salesmanago", vendor).call(
        "POST", "/api/contact/upsert", json_body={"contact": {"email": "a@example.com"}, "tags": ["X"]}
    )
    after = int(time.time() * 1000)
    (request,) = vendor.requests
    body = json.loads(request.content)
    expected_sha = hashlib.sha1(
        (s["SALESMANAGO_API_KEY"] + s["SALESMANAGO_CLIENT_ID"] + s["SALESMANAGO_API_SECRET"]).encode()
    ).hexdigest()
    assert body["sha"] == expected_sha
    assert body["clientId"] == s["SALESMANAGO_CLIENT_ID"]
    assert body["apiKey"] == s["SALESMANAGO_API_KEY"]
    assert body["owner"] == s["SALESMANAGO_OWNER"]
    assert before <= body["requestTime"] <= after
    assert body["contact"] == {"email": "a@example.com"} and body["tags"] == ["X"]
    assert "apiSecret" not in body
    _no_secret_anywhere(request, s["SALESMANAGO_API_SECRET"])


def _check_body_credentials_plain() -> None:
    """SALESmanago's v3 body form: every credential travels as a field, no digest, no time."""
    auth = {
        "type": "body_credentials",
        "fields": {
            "apiKey": {"env": "SM_API_KEY"},
            "apiSecret": {"env": "SM_API_SECRET"},
            "owner": {"env": "SM_OWNER"},
        },
    }
    secrets = {"SM_API_KEY": "SECRET-v3-key", "SM_API_SECRET": "SECRET-v3-secret", "SM_OWNER": "owner@example.com"}
    vendor = Recorder(_ok)
    make_client(fake_spec(auth), vendor, secrets=secrets).call(
        "POST", "/api/v3/contact/upsert", json_body={"contacts": [{"email": "a@example.com"}]}
    )
    (request,) = vendor.requests
    assert json.loads(request.content) == {
        "contacts": [{"email": "a@example.com"}],
        "apiKey": "SECRET-v3-key",
        "apiSecret": "SECRET-v3-secret",
        "owner": "owner@example.com",
    }
    assert set(request.headers) == BASE_HEADERS | {"content-type", "content-length"}


def _sigv4_signature(request: httpx.Request, secret: str, region: str, service: str) -> str:
    """An independent Signature V4 computation over what was actually sent."""
    SAFE = "-_.~"
    auth = request.headers["authorization"]
    signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1).split(";")
    amz_date = request.headers["x-amz-date"]
    canonical = "\n".join(
        [
            request.method,
            quote(request.url.path, safe="/-_.~"),
            "&".join(
                sorted(f"{quote(k, safe=SAFE)}={quote(v, safe=SAFE)}" for k, v in request.url.params.multi_items())
            ),
            "".join(f"{h}:{request.headers[h].strip()}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def check_aws_sigv4() -> None:
    s = SECRETS["datatalks"]
    vendor = Recorder(_ok)
    client = make_client("datatalks", vendor)
    client.call("POST", "/contact/upsert", json_body={"data": {"email": "a@example.com"}, "group_key": "g1"})
    client.call("POST", "/contact/upsert", json_body={"data": {"email": "b@example.com"}, "group_key": "g1"})
    first, second = vendor.requests
    auth = first.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={s['DATATALKS_AWS_ACCESS_KEY_ID']}/")
    date = first.headers["x-amz-date"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", date)
    assert f"/{date[:8]}/eu-west-1/execute-api/aws4_request" in auth
    assert "host" in auth and "x-amz-date" in auth  # both are signed
    signature = re.search(r"Signature=([0-9a-f]{64})$", auth).group(1)
    assert signature == _sigv4_signature(first, s["DATATALKS_AWS_SECRET_ACCESS_KEY"], "eu-west-1", "execute-api")
    # The body is covered: a different body gives a different signature.
    assert second.headers["authorization"].rsplit("=", 1)[1] != signature
    _no_secret_anywhere(first, s["DATATALKS_AWS_SECRET_ACCESS_KEY"])


WIRE_CHECKS: dict[str, Callable[[], None]] = {
    "none": check_none,
    "static_headers": check_static_headers,
    "graphql_login": check_graphql_login,
    "body_credentials": check_body_credentials,
    "aws_sigv4": check_aws_sigv4,
}


def test_every_auth_type_has_a_wire_check():
    assert set(WIRE_CHECKS) == set(AUTH_TYPES.names()), "add a wire check for every auth type"


@pytest.mark.parametrize("kind", AUTH_TYPES.names())
def test_wire(kind):
    WIRE_CHECKS[kind]()


# -- graphql_login token life cycle -----------------------------------------------------------------


class FakeSalestrekker:
    """Logins hand out tok-1, tok-2, ...; queries succeed only with an accepted token."""

    def __init__(self, *, reject_tokens: set[str] = frozenset(), http_401: bool = False):
        self.issued = 0
        self.reject = set(reject_tokens)
        self.http_401 = http_401
        self.recorder = Recorder(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "authenticate" in body["query"]:
            self.issued += 1
            return json_response(200, _login_ok(f"tok-{self.issued}"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.reject:
            if self.http_401:
                return json_response(401, {"errors": [{"message": "jwt expired"}]})
            return json_response(
                200, {"data": None, "errors": [{"message": "Not logged in", "extensions": {"code": "UNAUTHENTICATED"}}]}
            )
        return json_response(200, {"data": {"token_seen": token}})

    def kinds(self) -> list[str]:
        return ["login" if "authenticate" in b["query"] else "query" for b in self.recorder.bodies()]


def test_graphql_login_caches_the_token_across_calls():
    vendor = FakeSalestrekker()
    client = make_client("salestrekker", vendor.recorder)
    for _ in range(3):
        assert client.graphql("query { x }", {}) == {"data": {"token_seen": "tok-1"}}
    assert vendor.kinds() == ["login", "query", "query", "query"]
    assert client.stats.logins == 1


def test_graphql_login_renews_after_ttl():
    clock = FakeClock()
    vendor = FakeSalestrekker()
    client = make_client("salestrekker", vendor.recorder, clock=clock)
    ttl = client.spec.auth.ttl_seconds
    assert ttl == 14 * 24 * 3600
    client.graphql("query { x }", {})
    clock.now += ttl - 1
    assert client.graphql("query { x }", {}) == {"data": {"token_seen": "tok-1"}}
    clock.now += 1
    assert client.graphql("query { x }", {}) == {"data": {"token_seen": "tok-2"}}
    assert vendor.kinds() == ["login", "query", "query", "login", "query"]


@pytest.mark.parametrize("http_401", [False, True], ids=["graphql-UNAUTHENTICATED", "http-401"])
def test_graphql_login_relogs_once_after_an_auth_error(http_401):
    vendor = FakeSalestrekker(reject_tokens={"tok-1"}, http_401=http_401)
    client = make_client("salestrekker", vendor.recorder)
    assert client.graphql("query { x }", {}) == {"data": {"token_seen": "tok-2"}}
    assert vendor.kinds() == ["login", "query", "login", "query"]
    assert client.stats.logins == 2


@pytest.mark.parametrize("http_401", [False, True], ids=["graphql-UNAUTHENTICATED", "http-401"])
def test_graphql_login_gives_up_after_one_relogin(http_401):
    vendor = FakeSalestrekker(reject_tokens={"tok-1", "tok-2", "tok-3"}, http_401=http_401)
    client = make_client("salestrekker", vendor.recorder)
    with pytest.raises(AuthError) as info:
        client.graphql("query { x }", {})
    assert vendor.kinds() == ["login", "query", "login", "query"]
    assert ("Not logged in" if not http_401 else "jwt expired") in str(info.value)


def test_graphql_login_uses_email_and_password_when_only_those_are_set():
    vendor = FakeSalestrekker()
    creds = {"SALESTREKKER_EMAIL": "user@example.com", "SALESTREKKER_PASSWORD": "SECRET-pass-word"}
    client = make_client("salestrekker", vendor.recorder, secrets=creds)
    client.graphql("query { x }", {})
    login = vendor.recorder.bodies()[0]
    assert login["query"] == client.spec.auth.methods[1].mutation
    assert login["variables"] == {"email": "user@example.com", "password": "SECRET-pass-word"}


def test_graphql_login_prefers_the_first_complete_method():
    vendor = FakeSalestrekker()
    creds = {
        "SALESTREKKER_API_KEY": "SECRET-st-apikey-1",
        "SALESTREKKER_EMAIL": "user@example.com",
        "SALESTREKKER_PASSWORD": "SECRET-pass-word",
    }
    client = make_client("salestrekker", vendor.recorder, secrets=creds)
    client.graphql("query { x }", {})
    assert vendor.recorder.bodies()[0]["variables"] == {"apiKey": "SECRET-st-apikey-1"}


@pytest.mark.parametrize(
    ("creds", "missing"),
    [
        ({}, "SALESTREKKER_API_KEY"),
        ({"SALESTREKKER_API_KEY": ""}, "SALESTREKKER_API_KEY"),
        # Half of the email/password method is set: the password is what the user forgot.
        ({"SALESTREKKER_EMAIL": "user@example.com"}, "SALESTREKKER_PASSWORD"),
    ],
    ids=["nothing", "empty-string", "incomplete-email-method"],
)
def test_graphql_login_without_credentials_names_the_variable(creds, missing):
    vendor = FakeSalestrekker()
    client = make_client("salestrekker", vendor.recorder, secrets=creds)
    with pytest.raises(MissingCredentialError) as info:
        client.graphql("query { x }", {})
    assert info.value.variable == missing
    assert missing in str(info.value) and "salestrekker" in str(info.value)
    assert vendor.recorder.calls == 0


def test_graphql_login_without_a_token_in_the_response_is_an_auth_error():
    vendor = Recorder(lambda r: json_response(200, {"data": {"authenticate": None}}))
    client = make_client("salestrekker", vendor)
    with pytest.raises(AuthError, match=r"login response has no token at 'data\.authenticate\.token'"):
        client.graphql("query { x }", {})
    assert vendor.calls == 1


def test_graphql_login_refused_is_not_retried_in_a_loop():
    refused = {"errors": [{"message": "Invalid API key", "extensions": {"code": "UNAUTHENTICATED"}}]}
    vendor = Recorder(lambda r: json_response(200, refused))
    client = make_client("salestrekker", vendor)
    with pytest.raises(AuthError, match="Invalid API key"):
        client.graphql("query { x }", {})
    assert vendor.calls == 1


# -- credentials -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector", "missing"),
    [
        ("trackstar", "TRACKSTAR_API_KEY"),
        ("trakor", "TRAKOR_API_KEY"),
        ("salesmanago", "SALESMANAGO_API_SECRET"),
    ],
)
def test_missing_credential_is_named_and_nothing_is_sent(connector, missing):
    secrets = {k: v for k, v in SECRETS[connector].items() if k != missing}
    vendor = Recorder(_ok)
    client = make_client(connector, vendor, secrets=secrets)
    with pytest.raises(MissingCredentialError) as info:
        client.call("POST", "/x", json_body={})
    assert info.value.variable == missing
    assert str(info.value).startswith(f"environment variable {missing} is not set (needed by connector '{connector}')")
    assert vendor.calls == 0


def test_aws_sigv4_missing_key_fails_when_the_client_is_built():
    with pytest.raises(MissingCredentialError) as info:
        make_client("datatalks", _ok, secrets={"DATATALKS_AWS_ACCESS_KEY_ID": "AKIDEXAMPLE0001"})
    assert info.value.variable == "DATATALKS_AWS_SECRET_ACCESS_KEY"


def test_credentials_repr_shows_names_never_values():
    for connector, secrets in SECRETS.items():
        creds = Credentials(connector, secrets)
        text = repr(creds) + str(creds)
        for value in secrets.values():
            assert value not in text
        for name in secrets:
            assert name in text


def test_credentials_from_environ_treats_empty_as_unset():
    creds = Credentials.from_environ("trakor", ["TRAKOR_API_KEY", "OTHER"], {"TRAKOR_API_KEY": "", "OTHER": "x"})
    assert not creds.has("TRAKOR_API_KEY") and creds.has("OTHER")
    with pytest.raises(MissingCredentialError):
        creds.get("TRAKOR_API_KEY")


def test_connections_parse_pairs_and_bare_token():
    client = make_client("trackstar", _ok)
    conns = parse_connections(client.spec, client.credentials)
    assert [c.id for c in conns] == ["conn_a", "conn_b"]
    assert [c.token.get_secret_value() for c in conns] == ["SECRET-tok-aaaa", "SECRET-tok-bbbb"]
    assert "SECRET" not in repr(conns)
    bare = Credentials("trackstar", {"TRACKSTAR_ACCESS_TOKEN": " SECRET-only-one "})
    (only,) = parse_connections(spec("trackstar"), bare)
    assert only.id == "default" and only.token.get_secret_value() == "SECRET-only-one"


def test_a_relogin_does_not_use_up_a_retry_attempt():
    """An expired token, then the vendor fails max_attempts - 1 times: the call still succeeds."""
    vendor = FakeSalestrekker(reject_tokens={"tok-1"})
    failures = {"left": 0}
    inner = vendor._handle

    def handle(request: httpx.Request) -> httpx.Response:
        if "tok-2" in request.headers.get("authorization", "") and failures["left"] > 0:
            failures["left"] -= 1
            return json_response(503, {"error": "busy"})
        return inner(request)

    vendor.recorder = Recorder(handle)
    client = make_client("salestrekker", vendor.recorder)
    failures["left"] = client.spec.retry.max_attempts - 1
    assert client.graphql("query { x }", {}) == {"data": {"token_seen": "tok-2"}}
    assert client.stats.logins == 2 and client.stats.retries == client.spec.retry.max_attempts - 1
