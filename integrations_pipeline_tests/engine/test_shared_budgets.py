"""Rate budgets shared across processes: two real processes on one Trackstar token, and SALESmanago's
hourly budget surviving the process that spent it. Assertions are on request and 429 counts, never on
durations: the sandbox's own token bucket (10 req/s per token) says whether the vendor was overrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.ratelimit import BudgetStore, budget_key
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox
from integrations_pipeline_tests.clock import FakeClock
from integrations_pipeline_tests.conftest import service_missing
from integrations_pipeline_tests.engine._budget_child import run_readers

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PER_CHILD = 40  # 4 s of one token's 10 req/s each: two unshared children offer twice the limit


def _redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing(f"no Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def trackstar() -> Iterator[tuple[TrackstarSandbox, dict[str, str]]]:
    # A token of its own per test: budgets keyed by it never meet another test's in a shared store.
    sandbox = TrackstarSandbox(connections={"conn_a": f"tok-{uuid.uuid4().hex}"}, rate_limit_per_second=10)
    with serve({"trackstar": sandbox}) as servers:
        yield sandbox, sandbox.environment(servers.base_urls["trackstar"])


def _two_readers(env: dict[str, str], store: str) -> list[dict]:
    """Two processes reading with one token at once; their client stats."""
    _, ended = run_readers(store, PER_CHILD, env, timeout=300)
    results = []
    for code, out, err in ended:
        assert code == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    return results


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_two_processes_on_one_token_share_its_budget(trackstar, tmp_path, backend):
    sandbox, env = trackstar
    store = f"sqlite:///{tmp_path / 'budgets.sqlite'}" if backend == "sqlite" else _redis_or_skip()
    stats = _two_readers(env, store)
    assert [s["calls"] for s in stats] == [PER_CHILD, PER_CHILD]
    assert sandbox.counts["429"] == 0 and [s["rate_limited"] for s in stats] == [0, 0]
    assert sandbox.counts["GET /wms/warehouses"] == 2 * PER_CHILD


def test_without_a_shared_store_the_same_two_processes_overrun_the_token(trackstar):
    # The control: each process paces only itself, so together they offer twice what the token allows.
    # A child may even give up after its retries, all answered 429 (the failure the shared store prevents);
    # any other failure fails the test.
    sandbox, env = trackstar
    _, ended = run_readers("memory://", PER_CHILD, env, timeout=300)
    assert sandbox.counts["429"] > 0
    for code, _out, err in ended:
        assert code == 0 or "RetriesExhaustedError" in err and "HTTP 429" in err, err
    if all(code == 0 for code, _, _ in ended):
        stats = [json.loads(out.splitlines()[-1]) for _, out, _ in ended]
        assert sum(s["rate_limited"] for s in stats) == sandbox.counts["429"]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_salesmanagos_hourly_budget_outlives_the_process_that_spent_it(tmp_path, backend):
    store = f"sqlite:///{tmp_path / 'budgets.sqlite'}" if backend == "sqlite" else _redis_or_skip()
    sandbox = SalesmanagoSandbox(requests_per_hour=None, api_key=f"key-{uuid.uuid4().hex}")
    spec = load_connectors()["salesmanago"]
    with serve({"salesmanago": sandbox}) as servers:
        env = {**sandbox.environment(servers.base_urls["salesmanago"]), "SALESMANAGO_REQUESTS_PER_HOUR": "3"}
        spend = (
            "import os; from integrations_pipeline.connectors import load_connectors;"
            "from integrations_pipeline.engine.auth import Credentials, secret_env_vars;"
            "from integrations_pipeline.engine.client import ClientFactory;"
            "from integrations_pipeline.engine.ratelimit import BudgetStore;"
            "spec = load_connectors()['salesmanago'];"
            "c = ClientFactory(Credentials.from_environ('salesmanago', secret_env_vars(spec), os.environ),"
            " environ=os.environ, budgets=BudgetStore(os.environ['STORE'])).connector(spec);"
            "[c.pace('POST') for _ in range(3)]; print(c.stats.waited_seconds)"
        )
        done = subprocess.run([sys.executable, "-c", spend], env={**os.environ, **env, "STORE": store},
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert float(done.stdout) == 0.0  # three requests fit the hour's three
        # A new process (here, this one) with the same credentials: the hour is spent, it must wait for
        # the first of the three to leave the window, not start a fresh budget.
        clock = FakeClock(start=time.time())
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
        client = ClientFactory(credentials, environ=env, clock=clock, budgets=BudgetStore(store)).connector(spec)
        client.pace("POST")
        assert len(clock.sleeps) >= 1 and 3500 < sum(clock.sleeps) <= 3600 * 1.02 + 1


def test_budget_names_carry_no_secret(tmp_path):
    key = budget_key("trackstar", "http://h", "0", "connection", "the-secret-token")
    assert "the-secret-token" not in key and len(key) == 32
    store = BudgetStore(f"sqlite:///{tmp_path / 'b.sqlite'}")
    store.budget(key, 10, 1.0, FakeClock()).acquire()
    assert b"the-secret-token" not in (tmp_path / "b.sqlite").read_bytes()


def test_a_store_url_with_a_password_is_shown_without_it():
    with pytest.raises(ConfigError) as caught:
        BudgetStore("memcached://user:hunter2@host:11211")
    assert "hunter2" not in str(caught.value)
    store = BudgetStore("redis://user:hunter2@127.0.0.1:1/0")
    assert store.describe() == "redis://user:***@127.0.0.1:1/0"
    with pytest.raises(ConfigError) as caught:
        store.budget("k", 1, 1.0, FakeClock())
    assert "not reachable" in str(caught.value) and "hunter2" not in str(caught.value)
