"""Proactive pacing with a FakeClock: the rolling-window guarantee, throughput, scopes, plan
overrides and per-method limits. No wall-clock time is measured anywhere."""

from __future__ import annotations

import httpx
import pytest

from integrations_pipeline.engine.client import parse_connections
from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.ratelimit import BudgetStore, SystemClock
from integrations_pipeline_tests.clock import FakeClock

from ._support import Recorder, fake_spec, json_response, make_client, spec


def _max_in_window(starts: list[float], window: float) -> int:
    """The most starts in any half-open interval ``[t, t + window)``."""
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize(
    ("requests", "per_seconds", "n"),
    [(10, 1.0, 103), (50, 1.0, 260), (3, 2.5, 40), (1, 0.2, 12), (1000, 3600.0, 3500)],
)
def test_rolling_window_guarantee_and_throughput(requests, per_seconds, n):
    clock = FakeClock()
    limiter = BudgetStore().budget("k", requests, per_seconds, clock)
    starts = []
    for _ in range(n):
        limiter.acquire()
        starts.append(clock.monotonic())
    window = per_seconds * 1.02
    # No window of per_seconds * (1 + margin) holds more than `requests` starts ...
    assert _max_in_window(starts, window) == min(requests, n)
    assert all(starts[i + requests] - starts[i] >= window for i in range(n - requests))
    # ... the first half-burst is not delayed, nor is the rest of the budget after half the window ...
    halves = requests >= 2 and per_seconds <= 60  # hourly budgets are spent whole (ratelimit.first_burst)
    half = -(-requests // 2) if halves else requests
    assert starts[:half] == [starts[0]] * half
    if halves and n >= requests:
        assert starts[requests - 1] - starts[0] == pytest.approx(window / 2, abs=0.002)
    # ... no half window holds more than half the budget (what keeps a vendor's token bucket from running dry) ...
    if halves:
        assert _max_in_window(starts, window / 2 - 0.002) <= half
    # ... and sustained throughput (starts before the last one, over the time they took) is at
    # least 97% of the limit.
    rate = sum(1 for t in starts if t < starts[-1]) / (starts[-1] - starts[0])
    assert rate >= 0.97 * requests / per_seconds
    assert rate <= requests / per_seconds
    assert sum(clock.sleeps) == pytest.approx(limiter.waited_seconds)
    assert all(s > 0 for s in clock.sleeps)


def test_no_wait_after_the_window_has_passed():
    clock = FakeClock()
    limiter = BudgetStore().budget("k", 4, 1.0, clock)
    assert [limiter.acquire() for _ in range(2)] == [0, 0]
    clock.now += 1.021
    assert [limiter.acquire() for _ in range(2)] == [0, 0]
    # pyrate-limiter's sliding window: the oldest start leaves it 1 ms after the window (half of it here).
    assert limiter.acquire() == pytest.approx(0.511)
    assert clock.sleeps == [pytest.approx(0.511)]


def test_margin_is_configurable():
    clock = FakeClock()
    limiter = BudgetStore().budget("k", 1, 10.0, clock, margin=0.0)
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(10.001)


def test_system_clock_never_sleeps_for_non_positive_delays():
    SystemClock().sleep(0)
    SystemClock().sleep(-5)  # returns at once instead of raising


# -- through the client -------------------------------------------------------------------------------


def _timed_vendor(clock: FakeClock) -> tuple[Recorder, list[tuple[float, str, str]]]:
    """Records (time, method, connection token) of every request as the server sees it."""
    seen: list[tuple[float, str, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((clock.monotonic(), request.method, request.headers.get("x-trackstar-access-token", "")))
        if b"authenticate" in request.content:  # Salestrekker login
            return json_response(200, {"data": {"authenticate": {"token": "tok"}}})
        return json_response(200, {"data": [], "next_token": None, "success": True})

    return Recorder(handle), seen


def test_trackstar_limits_each_connection_separately():
    clock = FakeClock()
    vendor, seen = _timed_vendor(clock)
    client = make_client("trackstar", vendor, clock=clock)
    conn_a, conn_b = parse_connections(client.spec, client.credentials)
    for _ in range(30):
        client.call("GET", "/wms/orders", connection=conn_a)
        client.call("GET", "/wms/orders", connection=conn_b)
    for token in ("SECRET-tok-aaaa", "SECRET-tok-bbbb"):
        starts = [t for t, _, tok in seen if tok == token]
        assert len(starts) == 30
        assert _max_in_window(starts, 1.02) == 10
    # Separate budgets: both connections send their first half-burst of 5 at once, 10 in the first instant.
    assert sum(1 for t, _, _ in seen if t == seen[0][0]) == 10
    assert client.stats.retries == 0 and client.stats.waited_seconds == pytest.approx(sum(clock.sleeps))


def test_connector_scope_shares_one_limiter_across_connections():
    trackstar = spec("trackstar")
    shared = trackstar.model_copy(
        update={"rate_limits": [rl.model_copy(update={"scope": "connector"}) for rl in trackstar.rate_limits]}
    )
    clock = FakeClock()
    vendor, seen = _timed_vendor(clock)
    client = make_client(shared, vendor, clock=clock)
    conn_a, conn_b = parse_connections(client.spec, client.credentials)
    for _ in range(15):
        client.call("GET", "/wms/orders", connection=conn_a)
        client.call("GET", "/wms/orders", connection=conn_b)
    assert _max_in_window([t for t, _, _ in seen], 1.02) == 10


@pytest.mark.parametrize("connector", ["trakor", "datatalks", "salestrekker"])
def test_builtin_connector_scoped_limits(connector):
    clock = FakeClock()
    vendor, seen = _timed_vendor(clock)
    client = make_client(connector, vendor, clock=clock)
    (limit,) = client.spec.rate_limits
    assert limit.scope == "connector"
    for _ in range(3 * limit.requests + 1):
        client.call("POST", "/x", json_body={})
    assert _max_in_window([t for t, _, _ in seen], limit.per_seconds * 1.02) == limit.requests


def test_requests_env_overrides_the_plan_limit():
    clock = FakeClock()
    vendor, seen = _timed_vendor(clock)
    client = make_client("salesmanago", vendor, clock=clock, environ={"SALESMANAGO_REQUESTS_PER_HOUR": "3"})
    for _ in range(4):
        client.call("POST", "/api/contact/upsert", json_body={})
    assert clock.sleeps == [pytest.approx(3600 * 1.02, abs=0.002)]
    assert [t - seen[0][0] for t, _, _ in seen] == [0, 0, 0, pytest.approx(3672, abs=0.002)]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_a_bad_requests_env_is_a_config_error(value):
    with pytest.raises(ConfigError) as info:
        make_client("salesmanago", lambda r: None, environ={"SALESMANAGO_REQUESTS_PER_HOUR": value})
    assert (
        str(info.value)
        == f"environment variable SALESMANAGO_REQUESTS_PER_HOUR must be a positive integer, got {value!r}"
    )


def test_without_override_the_spec_limit_applies():
    clock = FakeClock()
    vendor, _ = _timed_vendor(clock)
    client = make_client("salesmanago", vendor, clock=clock, environ={"UNRELATED": "1"})
    for _ in range(1000):
        client.call("POST", "/api/contact/upsert", json_body={})
    assert clock.sleeps == []
    client.call("POST", "/api/contact/upsert", json_body={})
    assert clock.sleeps == [pytest.approx(3672, abs=0.002)]


def test_a_limit_applies_only_to_the_methods_it_lists():
    clock = FakeClock()
    vendor, seen = _timed_vendor(clock)
    client = make_client("trackstar", vendor, clock=clock)
    conn = parse_connections(client.spec, client.credentials)[0]
    for _ in range(11):  # writes: 50/s, so 11 POSTs do not wait ...
        client.call("POST", "/wms/orders", json_body={}, connection=conn)
    assert clock.sleeps == []
    for _ in range(11):  # ... and do not use up the GET budget of 10/s (spent in half-bursts of 5)
        client.call("GET", "/wms/orders", connection=conn)
    assert len(clock.sleeps) == 2  # before the 6th GET (half the window) and the 11th (the whole window)
    gets = [t for t, m, _ in seen if m == "GET"]
    assert _max_in_window(gets, 1.02) == 10


def test_get_only_limit_never_paces_posts():
    limited = fake_spec(rate_limits=[{"requests": 1, "per_seconds": 5, "methods": ["GET"]}])
    clock = FakeClock()
    vendor, _ = _timed_vendor(clock)
    client = make_client(limited, vendor, clock=clock)
    for _ in range(5):
        client.call("POST", "/x", json_body={})
    assert clock.sleeps == []
    client.call("GET", "/x")
    client.call("GET", "/x")
    assert clock.sleeps == [pytest.approx(5.1, abs=0.002)]


def test_retries_are_paced_and_pacing_is_not_a_retry():
    """A retried request still passes the limiter; the back-off and the pacing are counted apart."""
    limited = fake_spec(rate_limits=[{"requests": 1, "per_seconds": 10}])
    clock = FakeClock()
    vendor = Recorder([json_response(503, {"error": "busy"}), json_response(200, {"ok": True})])
    client = make_client(limited, vendor, clock=clock)
    client.call("GET", "/x")
    backoff, pacing = clock.sleeps
    assert 0.25 <= backoff <= 0.5
    assert backoff + pacing == pytest.approx(10.2, abs=0.002)  # the second start waits out the window
    assert client.stats.retries == 1
    assert client.stats.backoff_seconds == pytest.approx(backoff)
    assert client.stats.waited_seconds == pytest.approx(pacing)
