"""Shared helpers for the engine tests: real specs, known secrets, scripted fake vendors.

Nothing here touches the network or sleeps: every client gets an ``httpx.MockTransport`` and a
``FakeClock``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from types import SimpleNamespace
from typing import Any

import httpx

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.engine.auth import Credentials
from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.read.extract import CONNECTION_COLUMN
from integrations_pipeline.engine.spec import ConnectorSpec, load_spec, parse_spec
from integrations_pipeline_tests.clock import FakeClock

# Every secret value starts with "SECRET-" so a leak check can look for the prefix as well.
SECRETS: dict[str, dict[str, str]] = {
    "trackstar": {
        "TRACKSTAR_API_KEY": "SECRET-abc123-orgkey",
        "TRACKSTAR_ACCESS_TOKEN": "conn_a=SECRET-tok-aaaa,conn_b=SECRET-tok-bbbb",
    },
    "salestrekker": {"SALESTREKKER_API_KEY": "SECRET-st-apikey-1"},
    "salesmanago": {
        "SALESMANAGO_CLIENT_ID": "client-77",
        "SALESMANAGO_API_KEY": "SECRET-sm-apikey",
        "SALESMANAGO_API_SECRET": "SECRET-sm-apisecret",
        "SALESMANAGO_OWNER": "owner@example.com",
    },
    "datatalks": {
        "DATATALKS_AWS_ACCESS_KEY_ID": "AKIDEXAMPLE0001",
        "DATATALKS_AWS_SECRET_ACCESS_KEY": "SECRET-aws-secret-key",
    },
    "trakor": {"TRAKOR_API_KEY": "SECRET-trakor-key"},
}


@cache
def spec(name: str) -> ConnectorSpec:
    """A built-in connector spec, loaded from its real YAML file."""
    return load_spec(SPEC_DIR / f"{name}.yaml")


def fake_spec(auth: dict[str, Any] | None = None, *, protocol: str = "rest", **extra: Any) -> ConnectorSpec:
    """A minimal connector spec (no rate limits) built in Python for auth/pagination tests."""
    data = {
        "name": "fake",
        "title": "Fake",
        "description": "A test vendor.",
        "protocol": protocol,
        "base_url": {"env": "FAKE_BASE_URL", "default": "https://fake.test"},
        "auth": auth or {"type": "none"},
        **extra,
    }
    return parse_spec(data, "fake.yaml")


class Recorder:
    """A MockTransport handler that records every request and answers with ``respond``.

    ``respond`` is a function of the request, or a list of responses/exceptions consumed in order
    (the last one repeats).
    """

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response] | Iterable[Any]):
        self.requests: list[httpx.Request] = []
        if callable(respond):
            self._fn = respond
        else:
            script = list(respond)

            def scripted(request: httpx.Request) -> httpx.Response:
                item = script.pop(0) if len(script) > 1 else script[0]
                if isinstance(item, BaseException):
                    raise item
                return item

            self._fn = scripted

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._fn(request)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def make_client(
    connector: str | ConnectorSpec,
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    secrets: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
    clock: FakeClock | None = None,
    seed: int = 0,
) -> VendorClient:
    spec_ = spec(connector) if isinstance(connector, str) else connector
    values = SECRETS.get(spec_.name, {}) if secrets is None else secrets
    return VendorClient(
        spec_,
        Credentials(spec_.name, values),
        transport=httpx.MockTransport(handler),
        clock=clock or FakeClock(),
        environ=environ if environ is not None else {},
        rng=random.Random(seed),
    )


def json_response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


# -- an in-memory destination for stream loads ---------------------------------------------------------


@dataclass
class FakeLoad:
    destination: FakeDestination
    key: str
    batches: list[list[dict]] = field(default_factory=list)
    status: str = "open"
    committed_state: Any = "not committed"

    def write_batch(self, records: list[dict]) -> None:
        assert self.status == "open"
        self.batches.append(copy.deepcopy(records))

    def commit(self, state: dict | None, merge=None):
        assert self.status == "open"
        self.status = "committed"
        self.committed_state = state
        if merge is not None:  # what the warehouse does inside its commit transaction
            state = merge(self.destination.state.get(self.key), state)
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        for batch in self.batches:
            for r in batch:
                row_key = (r.get(CONNECTION_COLUMN), r["id"])
                old = self.destination.rows.get(row_key)
                counts["inserted" if old is None else "updated" if old != r else "unchanged"] += 1
                self.destination.rows[row_key] = r
        if state is not None:
            self.destination.state[self.key] = copy.deepcopy(state)
        return SimpleNamespace(**counts)

    def abort(self) -> None:
        assert self.status == "open"
        self.status = "aborted"


class FakeDestination:
    """One table in memory: rows by (connection, id), cursor state by key, every load kept."""

    def __init__(self):
        self.rows: dict[tuple[str | None, str], dict] = {}
        self.state: dict[str, dict] = {}
        self.loads: list[FakeLoad] = []

    def open_load(self, key: str) -> FakeLoad:
        load = FakeLoad(self, key)
        self.loads.append(load)
        return load

    def read_state(self, key: str) -> dict | None:
        return copy.deepcopy(self.state.get(key))

    def snapshot(self):
        return copy.deepcopy((self.rows, self.state))
