"""The loopback server: real HTTP round trips, keep-alive, socket-level faults, env vars, the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from integrations_pipeline.connectors import SPEC_DIR, load_connectors
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.salestrekker import SalestrekkerSandbox
from integrations_pipeline.sandbox.server import SandboxServers, serve
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox

TRACKSTAR_HEADERS = {"x-trackstar-api-key": "sandbox-trackstar-key", "x-trackstar-access-token": "sandbox-token-a"}


@pytest.fixture
def servers() -> Iterator[SandboxServers]:
    sandboxes = {
        "trackstar": TrackstarSandbox(sizes={"inventory": 3000, "orders": 200}),
        "salestrekker": SalestrekkerSandbox(sizes={"deals": 120, "contacts": 150}),
    }
    with serve(sandboxes, timeout_stall_seconds=1.0) as running:
        yield running


def test_trackstar_round_trip_with_keep_alive(servers: SandboxServers) -> None:
    url = servers.base_urls["trackstar"]
    assert url.startswith("http://127.0.0.1:")
    sandbox = servers.sandboxes["trackstar"]
    with httpx.Client(base_url=url, headers=TRACKSTAR_HEADERS) as c:
        ids: list[str] = []
        token = None
        ports = set()
        while True:
            response = c.get(
                "/wms/inventory",
                params={
                    "limit": 1000,
                    "updated_date[gte]": "2026-10-01T00:00:00Z",
                    **({"page_token": token} if token else {}),
                },
            )
            assert response.status_code == 200 and response.http_version == "HTTP/1.1"
            ports.add(response.extensions["network_stream"].get_extra_info("client_addr"))
            body = response.json()
            ids.extend(r["id"] for r in body["data"])
            token = body["next_token"]
            if token is None:
                break
        assert ids == [r["id"] for r in sandbox.truth("inventory")]
        assert len(ports) == 1  # one connection reused for every page
        assert c.get("/wms/inventory", headers={"x-trackstar-api-key": "bad"}).status_code == 401
        assert c.post("/link/exchange", data={"auth_code": "code_conn_a"}).json()["access_token"] == "sandbox-token-a"


def test_salestrekker_round_trip(servers: SandboxServers) -> None:
    spec = load_connectors()["salestrekker"]
    with httpx.Client(base_url=servers.base_urls["salestrekker"]) as c:
        login = c.post(
            "/graphql", json={"query": spec.auth.methods[0].mutation, "variables": {"apiKey": "sandbox-st-key"}}
        ).json()
        token = login["data"]["authenticate"]["token"]
        body = c.post(
            "/graphql",
            json={"query": spec.streams["deals"].query, "variables": {"limit": 500}},
            headers={"authorization": f"Bearer {token}"},
        ).json()
        assert len(body["data"]["tickets"]["items"]) == 120 and body["data"]["tickets"]["pageInfo"] == {
            "endCursor": None,
            "hasNextPage": False,
        }


def test_status_faults_and_headers_pass_through(servers: SandboxServers) -> None:
    sandbox = servers.sandboxes["trackstar"]
    sandbox.faults.inject("429")
    sandbox.faults.inject("503")
    with httpx.Client(base_url=servers.base_urls["trackstar"], headers=TRACKSTAR_HEADERS) as c:
        limited = c.get("/wms/warehouses")
        assert (
            limited.status_code == 429
            and limited.headers["retry-after"] == "0"
            and "x-ratelimit-limit" in limited.headers
        )
        assert c.get("/wms/warehouses").status_code == 503
        assert c.get("/wms/warehouses").status_code == 200
        assert c.get("/nowhere").status_code == 404


def test_timeout_fault_stalls_the_socket(servers: SandboxServers) -> None:
    servers.sandboxes["trackstar"].faults.inject("timeout")
    with httpx.Client(base_url=servers.base_urls["trackstar"], headers=TRACKSTAR_HEADERS, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get("/wms/warehouses")
    # A fresh connection works (a client of its own: a loaded machine may take longer than 0.3 s to answer).
    with httpx.Client(base_url=servers.base_urls["trackstar"], headers=TRACKSTAR_HEADERS, timeout=60) as c:
        assert c.get("/wms/warehouses").status_code == 200


def test_reset_fault_drops_the_connection(servers: SandboxServers) -> None:
    servers.sandboxes["trackstar"].faults.inject("reset")
    with httpx.Client(base_url=servers.base_urls["trackstar"], headers=TRACKSTAR_HEADERS) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.get("/wms/warehouses")
        assert c.get("/wms/warehouses").status_code == 200


def test_truncated_fault_cuts_the_body(servers: SandboxServers) -> None:
    servers.sandboxes["trackstar"].faults.inject("truncated")
    with httpx.Client(base_url=servers.base_urls["trackstar"], headers=TRACKSTAR_HEADERS) as c:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete|complete message body"):
            c.get("/wms/orders")
        assert c.get("/wms/orders").json()["total_count"] == 200


def test_close_does_not_wait_for_a_stalled_request() -> None:
    sandbox = TrackstarSandbox(sizes={"inventory": 10})
    running = serve({"trackstar": sandbox}, timeout_stall_seconds=3600)  # a handler stalled for an hour
    sandbox.faults.inject("timeout")
    with httpx.Client(base_url=running.base_urls["trackstar"], headers=TRACKSTAR_HEADERS, timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get("/wms/inventory")
    closer = threading.Thread(target=running.close)
    closer.start()
    closer.join(timeout=600)  # a hang guard: close must return while the handler still stalls
    assert not closer.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.base_urls['trackstar']}/wms/inventory", headers=TRACKSTAR_HEADERS, timeout=1)


def test_sandbox_environment_points_connectors_at_the_servers() -> None:
    sandboxes = default_sandboxes(sizes={"inventory": 50, "deals": 10})
    assert {"trackstar", "salestrekker"} <= set(sandboxes)
    env = sandbox_environment({"trackstar": "http://127.0.0.1:1", "salestrekker": "http://127.0.0.1:2/"}, sandboxes)
    assert env["TRACKSTAR_BASE_URL"] == "http://127.0.0.1:1"
    assert env["TRACKSTAR_API_KEY"] == "sandbox-trackstar-key"
    assert env["TRACKSTAR_ACCESS_TOKEN"] == "conn_a=sandbox-token-a,conn_b=sandbox-token-b"
    assert env["SALESTREKKER_GRAPHQL_URL"] == "http://127.0.0.1:2"
    assert env["SALESTREKKER_API_KEY"] == "sandbox-st-key"
    assert env["SALESTREKKER_EMAIL"] == "ops@sandbox.example" and env["SALESTREKKER_PASSWORD"] == "sandbox-pass"
    # Every env var the two specs read is provided.
    for name in ("trackstar", "salestrekker"):
        text = (SPEC_DIR / f"{name}.yaml").read_text()
        assert set(re.findall(r"env:\s*([A-Z0-9_]+)", text)) <= set(env), name
    with pytest.raises(ValueError, match="unknown streams"):
        default_sandboxes(sizes={"nope": 1})


def test_cli_prints_exports_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "integrations_pipeline.sandbox.server", "--size", "inventory=100", "--size", "deals=10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        env: dict[str, str] = {}
        assert proc.stdout is not None
        while "SALESTREKKER_PASSWORD" not in env:
            line = proc.stdout.readline()
            assert line, "server exited before printing its exports"
            if line.startswith("export "):
                var, _, value = line[len("export ") :].strip().partition("=")
                env[var] = value.strip('"')
        response = httpx.get(
            f"{env['TRACKSTAR_BASE_URL']}/wms/inventory",
            headers={"x-trackstar-api-key": env["TRACKSTAR_API_KEY"], "x-trackstar-access-token": "sandbox-token-b"},
            timeout=5,
        )
        assert response.json()["total_count"] == 100
    finally:
        proc.terminate()
        proc.wait(timeout=10)
