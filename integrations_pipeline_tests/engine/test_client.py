"""VendorClient: retry classification, back-off, retry-after/x-ratelimit-reset, errors hidden in
HTTP-200 bodies, and secrets kept out of every error, log line and counter.

Every client runs on ``httpx.MockTransport`` and a ``FakeClock``: back-off is read from
``clock.sleeps``, never from wall time. ``rng=random.Random(0)`` makes jitter exact, so expected
sleeps are computed with a second ``Random(0)`` replaying the same draws.
"""

from __future__ import annotations

import json
import random

import httpx
import pytest

from integrations_pipeline.engine.client import parse_connections
from integrations_pipeline.engine.errors import (
    AuthError,
    EndpointUnsupportedError,
    FatalError,
    MissingCredentialError,
    RateLimitedError,
    RequestRejectedError,
    RetriableError,
    RetriesExhaustedError,
    ServerError,
    SyncError,
    TransportError,
)
from integrations_pipeline_tests.clock import FakeClock

from ._support import SECRETS, Recorder, fake_spec, json_response, make_client

OK = {"data": [{"id": "1"}], "next_token": None}
PATH = {"trackstar": "/wms/inventory", "salesmanago": "/api/contact/upsert", "trakor": "/products"}
METHOD = {"trackstar": "GET", "salesmanago": "POST", "trakor": "POST"}


def _call(client, connector: str):
    if METHOD[connector] == "GET":
        conn = parse_connections(client.spec, client.credentials)[0] if client.spec.connections else None
        return client.call("GET", PATH[connector], params={"limit": 10}, connection=conn)
    return client.call("POST", PATH[connector], json_body={"contact": {"email": "a@example.com"}})


def _first_backoff(initial: float = 0.5, seed: int = 0) -> float:
    """Equal jitter on attempt 1: half the step plus up to another half."""
    return initial / 2 + random.Random(seed).uniform(0, initial / 2)


# -- retried, then succeeding ----------------------------------------------------------------------

RETRIED = [
    ("500", "trackstar", json_response(500, {"error": "Internal error"}), ServerError),
    ("502-html-body", "trackstar", httpx.Response(502, text="<html>Bad Gateway</html>"), ServerError),
    ("503", "trackstar", json_response(503, {"error": "Unavailable"}), ServerError),
    ("504", "trackstar", httpx.Response(504), ServerError),
    ("503-salesmanago", "salesmanago", json_response(503, {"success": False, "message": ["busy"]}), ServerError),
    ("428-salesmanago", "salesmanago", json_response(428, {"success": False, "message": ["retry later"]}), ServerError),
    ("500-trakor", "trakor", json_response(500, {"detail": "oops"}), ServerError),
    ("429-no-headers", "trackstar", json_response(429, {"error": "Too many requests"}), RateLimitedError),
    ("read-timeout", "trackstar", httpx.ReadTimeout("read timed out"), TransportError),
    ("connect-timeout", "trackstar", httpx.ConnectTimeout("connect timed out"), TransportError),
    ("remote-protocol", "trackstar", httpx.RemoteProtocolError("peer closed connection"), TransportError),
    ("connect-error", "trackstar", httpx.ConnectError("connection reset"), TransportError),
    # Cut short: fewer bytes than its Content-Length announced (over a socket httpx itself raises).
    (
        "truncated-json-200",
        "trackstar",
        httpx.Response(200, content=b'{"data": [{"id": "1"}, {"id', headers={"content-length": "64"}),
        TransportError,
    ),
]


@pytest.mark.parametrize(("connector", "failure", "kind"), [r[1:] for r in RETRIED], ids=[r[0] for r in RETRIED])
def test_retried_then_succeeds(connector, failure, kind):
    clock = FakeClock()
    vendor = Recorder([failure, json_response(200, OK)])
    client = make_client(connector, vendor, clock=clock)
    logged: list[str] = []
    client.log = logged.append
    assert _call(client, connector) == OK
    assert vendor.calls == 2
    assert clock.sleeps == [pytest.approx(_first_backoff())]
    assert 0.25 <= clock.sleeps[0] <= 0.5
    assert client.stats.retries == 1 and client.stats.calls == 2
    assert client.stats.backoff_seconds == pytest.approx(clock.sleeps[0])
    assert len(logged) == 1 and "retry 1/5" in logged[0]
    counter = {RateLimitedError: "rate_limited", ServerError: "server_errors", TransportError: "transport_errors"}[kind]
    assert getattr(client.stats, counter) == 1


# -- fatal at once -----------------------------------------------------------------------------------

FATAL = [
    (
        "400",
        "trackstar",
        json_response(400, {"error": "Invalid filter 'updated[gte]'", "origin": "trackstar"}),
        RequestRejectedError,
        "HTTP 400: Invalid filter 'updated[gte]' (/wms/inventory)",
    ),
    (
        "404",
        "trackstar",
        json_response(404, {"error": "Not found", "origin": "integration"}),
        RequestRejectedError,
        "HTTP 404: Not found (/wms/inventory)",
    ),
    (
        "422-with-detail",
        "trackstar",
        json_response(422, {"error": "Validation error", "detail": {"ids[in]": "at most 100 values"}}),
        RequestRejectedError,
        'HTTP 422: Validation error; {"ids[in]": "at most 100 values"} (/wms/inventory)',
    ),
    (
        "422-no-body",
        "trackstar",
        httpx.Response(422),
        RequestRejectedError,
        "HTTP 422: Unprocessable Entity (/wms/inventory)",
    ),
    (
        "428-trackstar-not-listed",
        "trackstar",
        json_response(428, {"error": "Precondition required"}),
        RequestRejectedError,
        "HTTP 428: Precondition required (/wms/inventory)",
    ),
    (
        "401",
        "trackstar",
        json_response(401, {"error": "Invalid API key", "origin": "trackstar"}),
        AuthError,
        "HTTP 401: Invalid API key (/wms/inventory)",
    ),
    (
        "403",
        "trakor",
        json_response(403, {"detail": "Organisation is frozen"}),
        AuthError,
        "HTTP 403: Organisation is frozen (/products)",
    ),
    (
        "501-trackstar",
        "trackstar",
        json_response(501, {"error": "Endpoint not supported by this WMS", "origin": "integration"}),
        EndpointUnsupportedError,
        "HTTP 501: Endpoint not supported by this WMS (/wms/inventory)",
    ),
    (
        "501-elsewhere-is-fatal-not-retried",
        "trakor",
        httpx.Response(501),
        RequestRejectedError,
        "HTTP 501: Not Implemented (/products)",
    ),
    (
        "salesmanago-success-false",
        "salesmanago",
        json_response(200, {"success": False, "message": ["Contact with given email does not exist"]}),
        RequestRejectedError,
        "HTTP 200: success=false: Contact with given email does not exist (/api/contact/upsert)",
    ),
    (
        "salesmanago-v3-problems",
        "salesmanago",
        json_response(400, {"problems": [{"reasonCode": 12, "message": "Invalid email"}]}),
        RequestRejectedError,
        "HTTP 400: Invalid email (/api/contact/upsert)",
    ),
]


@pytest.mark.parametrize(
    ("connector", "response", "kind", "message"), [r[1:] for r in FATAL], ids=[r[0] for r in FATAL]
)
def test_fatal_without_retry(connector, response, kind, message):
    clock = FakeClock()
    vendor = Recorder([response])
    client = make_client(connector, vendor, clock=clock)
    with pytest.raises(kind) as info:
        _call(client, connector)
    assert isinstance(info.value, FatalError)
    assert str(info.value) == message
    assert info.value.status == response.status_code and info.value.path == PATH[connector]
    assert vendor.calls == 1
    assert clock.sleeps == []
    assert client.stats.retries == 0


def test_salesmanago_success_true_is_returned():
    body = {"success": True, "message": [], "contactId": "c-1"}
    client = make_client("salesmanago", Recorder([json_response(200, body)]))
    assert _call(client, "salesmanago") == body


# -- 429 and the server's own timing -----------------------------------------------------------------


def _rate_limited_once(headers: dict[str, str], connector: str = "trackstar"):
    clock = FakeClock()
    vendor = Recorder([json_response(429, {"error": "Too many requests"}, headers), json_response(200, OK)])
    client = make_client(connector, vendor, clock=clock)
    assert _call(client, connector) == OK
    assert vendor.calls == 2 and client.stats.rate_limited == 1
    (slept,) = clock.sleeps
    return clock, slept


def test_429_retry_after_is_slept_plus_small_jitter():
    _, slept = _rate_limited_once({"retry-after": "7", "x-ratelimit-limit": "10", "x-ratelimit-remaining": "0"})
    assert slept == pytest.approx(7 + random.Random(0).uniform(0, 0.1))
    assert 7 <= slept <= 7.1


def test_429_fractional_retry_after():
    _, slept = _rate_limited_once({"retry-after": "0.25"})
    assert 0.25 <= slept <= 0.35


def test_429_with_only_x_ratelimit_reset_sleeps_until_the_reset():
    start = FakeClock().time()
    _, slept = _rate_limited_once({"x-ratelimit-reset": str(int(start) + 12)})
    assert 12 <= slept <= 12.1


def test_429_retry_after_wins_over_reset():
    start = FakeClock().time()
    _, slept = _rate_limited_once({"retry-after": "3", "x-ratelimit-reset": str(int(start) + 50)})
    assert 3 <= slept <= 3.1


def test_429_http_date_retry_after_falls_back_to_reset():
    start = FakeClock().time()
    headers = {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT", "x-ratelimit-reset": str(int(start) + 5)}
    _, slept = _rate_limited_once(headers)
    assert 5 <= slept <= 5.1


def test_429_reset_in_the_past_retries_almost_at_once():
    start = FakeClock().time()
    _, slept = _rate_limited_once({"x-ratelimit-reset": str(int(start) - 30)})
    assert 0 <= slept <= 0.1


def test_429_retry_after_is_capped():
    _, slept = _rate_limited_once({"retry-after": "86400"})
    assert 120 <= slept <= 120.1


def test_503_retry_after_is_honoured_too():
    clock = FakeClock()
    vendor = Recorder([json_response(503, {"error": "maintenance"}, {"retry-after": "4"}), json_response(200, OK)])
    assert _call(make_client("trackstar", vendor, clock=clock), "trackstar") == OK
    assert 4 <= clock.sleeps[0] <= 4.1


# -- exhaustion and the back-off curve ----------------------------------------------------------------


def test_exhaustion_after_max_attempts_with_exact_backoff():
    clock = FakeClock()
    vendor = Recorder([json_response(503, {"error": "Service unavailable"})])
    client = make_client("trackstar", vendor, clock=clock)
    with pytest.raises(RetriesExhaustedError) as info:
        _call(client, "trackstar")
    policy = client.spec.retry
    assert vendor.calls == policy.max_attempts == 6
    assert info.value.attempts == 6 and isinstance(info.value.last, ServerError)
    assert str(info.value) == ("gave up after 6 attempts; last error: HTTP 503: Service unavailable (/wms/inventory)")
    replay = random.Random(0)
    expected = []
    for attempt in range(1, 6):
        step = min(30.0, 0.5 * 2 ** (attempt - 1))
        expected.append(step / 2 + replay.uniform(0, step / 2))
    assert clock.sleeps == pytest.approx(expected)
    assert client.stats.retries == 5 and client.stats.server_errors == 6


def test_backoff_grows_then_stays_under_the_cap():
    retry = {"max_attempts": 9, "initial_backoff_seconds": 1, "max_backoff_seconds": 10, "multiplier": 2}
    clock = FakeClock()
    vendor = Recorder([httpx.ReadTimeout("slow")])
    client = make_client(fake_spec(retry=retry), vendor, clock=clock, seed=1234)
    with pytest.raises(RetriesExhaustedError) as info:
        client.call("GET", "/x")
    assert isinstance(info.value.last, TransportError)
    assert vendor.calls == 9 and len(clock.sleeps) == 8
    for attempt, slept in enumerate(clock.sleeps, start=1):
        step = min(10.0, 1.0 * 2 ** (attempt - 1))
        assert step / 2 <= slept <= step
    assert max(clock.sleeps) <= 10


def test_truncated_body_exhaustion_reports_the_transport_fault():
    vendor = Recorder([httpx.Response(200, content=b'{"data": [', headers={"content-length": "100"})])
    client = make_client(fake_spec(retry={"max_attempts": 2}), vendor)
    with pytest.raises(RetriesExhaustedError, match=r"response body truncated \(10 of 100 bytes\)") as info:
        client.call("GET", "/x")
    assert isinstance(info.value.last, TransportError) and vendor.calls == 2


def test_single_attempt_policy_never_sleeps():
    clock = FakeClock()
    vendor = Recorder([json_response(500, {"error": "x"})])
    with pytest.raises(RetriesExhaustedError):
        make_client(fake_spec(retry={"max_attempts": 1}), vendor, clock=clock).call("GET", "/x")
    assert vendor.calls == 1 and clock.sleeps == []


def test_error_tree():
    assert issubclass(RateLimitedError, RetriableError) and issubclass(ServerError, RetriableError)
    assert issubclass(TransportError, RetriableError)
    for fatal in (AuthError, RequestRejectedError, EndpointUnsupportedError, RetriesExhaustedError):
        assert issubclass(fatal, FatalError) and not issubclass(fatal, RetriableError)
    assert issubclass(FatalError, SyncError) and issubclass(RetriableError, SyncError)


# -- GraphQL errors in HTTP 200 -----------------------------------------------------------------------

LOGIN = json_response(200, {"data": {"authenticate": {"token": "tok-1"}}})


def test_graphql_errors_in_200_are_rejected_with_the_message():
    errors = {"data": None, "errors": [{"message": 'Cannot query field "tickets" on type "Query".'}, "second"]}
    vendor = Recorder([LOGIN, json_response(200, errors)])
    client = make_client("salestrekker", vendor)
    with pytest.raises(RequestRejectedError) as info:
        client.graphql("query { tickets { id } }", {})
    assert str(info.value) == 'HTTP 200: GraphQL: Cannot query field "tickets" on type "Query".; second (/graphql)'
    assert vendor.calls == 2  # login + query, no retry


def test_graphql_unauthenticated_relogs_once_then_succeeds():
    unauth = json_response(200, {"errors": [{"message": "Token expired", "extensions": {"code": "UNAUTHENTICATED"}}]})
    vendor = Recorder([LOGIN, unauth, LOGIN, json_response(200, {"data": {"ok": 1}})])
    client = make_client("salestrekker", vendor)
    assert client.graphql("query { ok }", {}) == {"data": {"ok": 1}}
    assert vendor.calls == 4 and client.stats.logins == 2


def test_graphql_forbidden_code_after_relogin_is_an_auth_error():
    forbidden = json_response(200, {"errors": [{"message": "No access", "extensions": {"code": "FORBIDDEN"}}]})
    vendor = Recorder(lambda r: LOGIN if b"authenticate" in r.content else forbidden)
    client = make_client("salestrekker", vendor)
    with pytest.raises(AuthError, match=r"^HTTP 200: GraphQL: No access \(/graphql\)$"):
        client.graphql("query { ok }", {})
    assert vendor.calls == 4  # login, query, login, query


def test_graphql_errors_ignored_when_the_spec_does_not_ask():
    body = {"data": {"x": 1}, "errors": [{"message": "partial"}]}
    client = make_client(fake_spec(protocol="graphql"), Recorder([json_response(200, body)]))
    assert client.graphql("query { x }", {}) == body


# -- secrets never leak --------------------------------------------------------------------------------


def _all_secret_values(connector: str) -> list[str]:
    values = [v for v in SECRETS[connector].values() if "SECRET" in v]
    for v in list(values):  # connection tokens travel one by one
        values += [part.partition("=")[2] for part in v.split(",") if "=" in part]
    return values


def _echo(status: int, connector: str):
    """A vendor that echoes every credential it received back into its error message."""

    def handle(request: httpx.Request) -> httpx.Response:
        echoed = " ".join(request.headers.values()) + " " + request.content.decode()
        body = {"error": f"rejected: {echoed}", "message": [f"bad credentials {echoed}"], "success": False}
        return json_response(status, body)

    return handle


LEAK_CASES = [
    ("401-echo", "trackstar", _echo(401, "trackstar"), AuthError),
    ("403-echo", "trakor", _echo(403, "trakor"), AuthError),
    ("400-echo", "trackstar", _echo(400, "trackstar"), RequestRejectedError),
    ("501-echo", "trackstar", _echo(501, "trackstar"), EndpointUnsupportedError),
    ("503-echo-exhausted", "trackstar", _echo(503, "trackstar"), RetriesExhaustedError),
    ("429-echo-exhausted", "trakor", _echo(429, "trakor"), RetriesExhaustedError),
    ("success-false-echo", "salesmanago", _echo(200, "salesmanago"), RequestRejectedError),
    ("timeout", "trackstar", Recorder([httpx.ReadTimeout("timed out")]), RetriesExhaustedError),
    ("protocol-error", "salesmanago", Recorder([httpx.RemoteProtocolError("reset")]), RetriesExhaustedError),
    (
        "truncated",
        "trakor",
        Recorder([httpx.Response(200, content=b'{"id": 1', headers={"content-length": "40"})]),
        RetriesExhaustedError,
    ),
]


def _assert_no_leak(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret leaked into: {text[:200]}"


@pytest.mark.parametrize(("connector", "handler", "kind"), [c[1:] for c in LEAK_CASES], ids=[c[0] for c in LEAK_CASES])
def test_secrets_never_in_errors_logs_or_stats(connector, handler, kind):
    client = make_client(connector, handler)
    logged: list[str] = []
    client.log = logged.append
    with pytest.raises(kind) as info:
        _call(client, connector)
    exc = info.value
    chain = [exc, exc.__cause__, exc.__context__, getattr(exc, "last", None)]
    texts = [t for e in chain if e is not None for t in (str(e), repr(e))]
    texts += logged + [repr(client.stats), json.dumps(client.stats.as_dict()), repr(client.credentials)]
    _assert_no_leak(_all_secret_values(connector), *texts)
    if not isinstance(handler, Recorder):  # an echoing vendor: its text is kept, the credential masked
        assert "***" in str(exc)


def test_secrets_never_in_graphql_errors_even_when_the_token_is_echoed():
    def handle(request: httpx.Request) -> httpx.Response:
        if b"authenticate" in request.content:
            return json_response(200, {"data": {"authenticate": {"token": "SECRET-bearer-token-9"}}})
        message = f"token {request.headers['authorization']} rejected"
        return json_response(200, {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]})

    client = make_client("salestrekker", handle)
    with pytest.raises(AuthError) as info:
        client.graphql("query { x }", {})
    _assert_no_leak(["SECRET-bearer-token-9", "SECRET-st-apikey-1"], str(info.value), repr(info.value))
    # The whole Authorization header this client sent is masked, not only the token inside it.
    assert str(info.value) == "HTTP 200: GraphQL: token *** rejected (/graphql)"


def test_missing_credential_error_names_only_the_variable():
    with pytest.raises(MissingCredentialError) as info:
        client = make_client("trackstar", _echo(200, "trackstar"), secrets={"TRACKSTAR_ACCESS_TOKEN": "SECRET-x-tok"})
        _call(client, "trackstar")
    _assert_no_leak(["SECRET-x-tok"], str(info.value), repr(info.value))
    assert info.value.variable == "TRACKSTAR_API_KEY"


def test_short_credentials_are_not_masked_inside_ordinary_words():
    """A 1-character client id must not garble the vendor's message."""
    secrets = {**SECRETS["salesmanago"], "SALESMANAGO_CLIENT_ID": "1"}
    body = {"success": False, "message": ["limit is 1000"]}
    with pytest.raises(RequestRejectedError, match="limit is 1000"):
        _call(make_client("salesmanago", Recorder([json_response(200, body)]), secrets=secrets), "salesmanago")


def test_missing_base_url_is_a_config_error():
    spec_ = fake_spec().model_copy(update={"base_url": fake_spec().base_url.model_copy(update={"default": None})})
    with pytest.raises(MissingCredentialError, match="FAKE_BASE_URL"):
        make_client(spec_, Recorder([json_response(200, {})]))


def test_base_url_from_environment_overrides_the_default():
    vendor = Recorder([json_response(200, {})])
    client = make_client("trakor", vendor, environ={"TRAKOR_BASE_URL": "http://sandbox.local:8080/trakor/"})
    client.call("POST", "/products", json_body={"name": "A"})
    assert str(vendor.requests[0].url) == "http://sandbox.local:8080/trakor/products"
