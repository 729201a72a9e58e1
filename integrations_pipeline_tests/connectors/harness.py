"""Shared test harness: a connector wired to its sandbox in-process, and an in-memory destination.

``vendor_harness(name)`` gives the spec, the sandbox, the environment pointing at it and a client
factory; every conformance test builds on it, so a new connector (YAML + sandbox) is tested for free.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import Connection, VendorClient, parse_connections
from integrations_pipeline.engine.read.load import parse_ts
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.sandbox import VENDORS
from integrations_pipeline.sandbox.base import VendorSandbox
from integrations_pipeline_tests.clock import FakeClock

SPECS = load_connectors()
STREAMS = [(c.name, s) for c in SPECS.values() for s in c.streams]
INCREMENTAL = [(c, s) for c, s in STREAMS if SPECS[c].streams[s].incremental]
FULL_REFRESH = [(c, s) for c, s in STREAMS if not SPECS[c].streams[s].incremental]
ALL_TIME_END = datetime(2026, 11, 22, tzinfo=UTC)


@dataclass
class VendorHarness:
    spec: ConnectorSpec
    sandbox: VendorSandbox
    env: dict[str, str]
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def credentials(self) -> Credentials:
        return Credentials.from_environ(self.spec.name, secret_env_vars(self.spec), self.env)

    def client(self, **kwargs: Any) -> VendorClient:
        # A fake clock: pacing and back-off advance virtual time, so tests never sleep.
        return VendorClient(
            self.spec,
            self.credentials,
            transport=self.sandbox.transport(),
            environ=self.env,
            clock=kwargs.pop("clock", self.clock),
            **kwargs,
        )

    def connections(self) -> list[Connection]:
        return parse_connections(self.spec, self.credentials)

    def unsupported(self, connection: Connection, stream: str) -> bool:
        """Whether the sandbox answers 501 to this stream (or, for a child, to its parent's list)."""
        parent = self.spec.streams[stream].parent
        off = getattr(self.sandbox, "unsupported", {}).get(connection.id, ())
        return stream in off or (parent is not None and parent.stream in off)

    def truth(self, stream: str, connection: Connection) -> list[dict[str, Any]]:
        """Every record the stream should load, as the engine stores it (connection column; a child's parent
        key and copied parent fields)."""
        parent = self.spec.streams[stream].parent
        if parent is not None:
            return [r for group in self.truth_by_parent(stream, connection).values() for r in group]
        records = self.sandbox.truth(stream, connection.id if self.spec.connections else None)
        if self.spec.connections:
            records = [{**r, "_connection_id": connection.id} for r in records]
        return records

    def truth_by_parent(self, stream: str, connection: Connection) -> dict[str, list[dict[str, Any]]]:
        """A child stream's records per parent key, in the parent's id order (``sandbox.children``)."""
        parent = self.spec.streams[stream].parent
        assert parent is not None
        out: dict[str, list[dict[str, Any]]] = {}
        for p in self.truth(parent.stream, connection):
            key = p[parent.field]
            copied = {column: p.get(source) for source, column in parent.fields.items()}
            children = self.sandbox.children(stream, key, connection.id if self.spec.connections else None)
            out[key] = [
                {
                    **c,
                    parent.key_column: key,
                    **copied,
                    **({"_connection_id": connection.id} if self.spec.connections else {}),
                }
                for c in children
            ]
        return out


def build_sandbox(name: str, seed: int = 7, **kwargs: Any) -> VendorSandbox:
    module, cls = VENDORS[name]
    return getattr(importlib.import_module(module), cls)(seed=seed, **kwargs)


def vendor_harness(name: str, seed: int = 7, **sandbox_kwargs: Any) -> VendorHarness:
    sandbox = build_sandbox(name, seed, **sandbox_kwargs)
    env = sandbox.environment(f"http://{name}.sandbox.test")
    return VendorHarness(SPECS[name], sandbox, env)


#: Most parent records a child stream's conformance tests list. A child endpoint is called once per parent
#: (Trackstar: one packs call per order), so a few hundred keep the suite quick; what is under test, each
#: parent's own calls and paging, is the same for 300 parents as for 3,000.
CHILD_TEST_PARENTS = 300


def stream_harness(connector: str, stream: str, seed: int = 7) -> VendorHarness:
    """``vendor_harness`` for testing one stream: a child stream's sandbox holds at most ``CHILD_TEST_PARENTS``
    parents (a sandbox with child streams has ``sizes`` and takes them)."""
    h = vendor_harness(connector, seed)
    parent = SPECS[connector].streams[stream].parent
    if parent is None or getattr(h.sandbox, "sizes", {}).get(parent.stream, 0) <= CHILD_TEST_PARENTS:
        return h
    return vendor_harness(connector, seed, sizes={parent.stream: CHILD_TEST_PARENTS})


def pk_of(record: dict[str, Any], pk: list[str]) -> tuple:
    return tuple(record.get(k) for k in pk)


def sort_key(pk: list[str]):
    return lambda r: tuple(str(x) for x in pk_of(r, pk))


class MemoryLoad:
    def __init__(self, dest: MemoryDestination, key: str):
        self.dest, self.key, self.staged = dest, key, []

    def write_batch(self, records: list[dict]) -> None:
        self.staged.extend(dict(r) for r in records)

    def commit(self, state: dict | None, merge=None):
        if merge is not None:  # what the warehouse does inside its commit transaction
            state = merge(self.dest.states.get(self.key), state)
        for r in self.staged:
            k = pk_of(r, self.dest.pk)
            old = self.dest.rows.get(k)
            if old is None or self.dest.cursor is None or _ts(r, self.dest.cursor) >= _ts(old, self.dest.cursor):
                self.dest.rows[k] = r
        if state is not None:
            self.dest.states[self.key] = state
        self.dest.commits += 1
        return None

    def abort(self) -> None:
        self.staged = []
        self.dest.aborts += 1


class MemoryDestination:
    """Newest-by-cursor rows in a dict: what a correct warehouse holds, for engine-level tests."""

    def __init__(self, pk: list[str], cursor: str | None):
        self.pk = pk
        self.cursor = cursor
        self.rows: dict[tuple, dict] = {}
        self.states: dict[str, dict] = {}
        self.commits = 0
        self.aborts = 0

    def open_load(self, state_key: str) -> MemoryLoad:
        return MemoryLoad(self, state_key)

    def read_state(self, state_key: str) -> dict | None:
        return self.states.get(state_key)

    def records(self) -> list[dict]:
        return sorted(self.rows.values(), key=sort_key(self.pk))


def _ts(record: dict, field_name: str) -> datetime:
    return parse_ts(record.get(field_name)) or datetime.min.replace(tzinfo=UTC)


def destination_for(h: VendorHarness, stream: str) -> MemoryDestination:
    s = h.spec.streams[stream]
    pk = (["_connection_id"] if h.spec.connections else []) + list(s.primary_key)
    return MemoryDestination(pk, s.incremental.cursor_field if s.incremental else None)
