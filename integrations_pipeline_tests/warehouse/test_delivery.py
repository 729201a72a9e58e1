"""Delivered-state and rejects tables on both backends, and the plan → send → record → re-plan loop.

The end-to-end tests run without Dagster: ``push`` against the SALESmanago sandbox in-process, wired as
in ``connectors/test_sink_conformance.py``.
"""

from __future__ import annotations

import json
import random

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.write.push import push
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline.warehouse import connect_warehouse
from integrations_pipeline_tests.clock import FakeClock

SINK = "salesmanago.contacts_batch"
ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"


def test_nothing_recorded_reads_empty(warehouse):
    assert warehouse.read_delivered(SINK) == {}
    assert warehouse.read_rejects(SINK) == []


def test_delivery_round_trip_is_per_sink_and_last_row_wins(warehouse):
    assert (
        warehouse.record_delivery(
            SINK, [("a@x.test", "h1", None), ("b@x.test", "h2", {"contact_id": "7"}), ("a@x.test", "h3", None)]
        )
        == 2
    )
    warehouse.record_delivery("salesmanago.events", [("a@x.test", "other", None)])
    assert warehouse.read_delivered(SINK) == {"a@x.test": "h3", "b@x.test": "h2"}
    assert warehouse.read_delivered("salesmanago.events") == {"a@x.test": "other"}
    assert warehouse.read_delivered("nope") == {}


def test_re_recording_is_idempotent_and_updates_hashes(warehouse):
    rows = [(f"k{i}", f"h{i}", {"i": i}) for i in range(50)]
    warehouse.record_delivery(SINK, rows)
    warehouse.record_delivery(SINK, rows)
    warehouse.record_delivery(SINK, [("k3", "changed", None), ("k99", "new", None)])
    got = warehouse.read_delivered(SINK)
    assert len(got) == 51
    assert got["k3"] == "changed" and got["k4"] == "h4" and got["k99"] == "new"
    assert warehouse.record_delivery(SINK, []) == 0


def test_delivery_rows_are_checked_before_anything_is_written(warehouse):
    with pytest.raises(TypeError):
        warehouse.record_delivery(SINK, [("a", "h", None), (1, "h", None)])
    with pytest.raises(ValueError):
        warehouse.record_delivery("", [("a", "h", None)])
    assert warehouse.read_delivered(SINK) == {}


def test_response_is_stored_as_json(warehouse, warehouse_url):
    warehouse.record_delivery(SINK, [("a", "h", {"contact_id": "c-1", "created": True})])
    if warehouse.backend == "duckdb":
        import duckdb

        warehouse.close()
        with duckdb.connect(warehouse_url.partition("://")[2]) as conn:
            row = conn.execute('SELECT response::VARCHAR, delivered_at FROM "_integrations"."delivered"').fetchone()
        assert row[0] == '{"contact_id":"c-1","created":true}' and row[1] is not None
    else:
        with warehouse._connection() as conn:
            row = conn.execute('SELECT response, delivered_at FROM "_integrations"."delivered"').fetchone()
        assert row[0] == {"contact_id": "c-1", "created": True} and row[1] is not None


def test_hostile_responses_are_stored_each_with_its_key(warehouse, warehouse_url):
    """A vendor's answer with U+0000 or a lone surrogate (neither backend stores them) must not fail the
    record of a call the vendor accepted: such characters become U+FFFD; None stays NULL, and each
    response stays beside its key."""
    warehouse.record_delivery(
        SINK,
        [("a", "h", {"contactId": "x\x00y\ud800"}), ("b", "h", None), ("c", "h", "id-c"), ("d", "h", [1, {"k": None}])],
    )
    if warehouse.backend == "duckdb":
        import duckdb

        warehouse.close()
        with duckdb.connect(warehouse_url.partition("://")[2]) as conn:
            rows = conn.execute(
                'SELECT record_key, response::VARCHAR FROM "_integrations"."delivered" ORDER BY 1'
            ).fetchall()
        assert dict(rows)["b"] is None  # SQL NULL, not the JSON value null
        got = {k: None if v is None else json.loads(v) for k, v in rows}
    else:
        with warehouse._connection() as conn:
            got = dict(conn.execute('SELECT record_key, response FROM "_integrations"."delivered"').fetchall())
    assert got == {"a": {"contactId": "x\ufffdy\ufffd"}, "b": None, "c": "id-c", "d": [1, {"k": None}]}


def test_rejects_append_in_order(warehouse):
    warehouse.record_rejects(
        SINK, [("a@x.test", "contact.name: longer than 255 characters (300)", {"contact": {"email": "a@x.test"}})]
    )
    warehouse.record_rejects(
        SINK, [(None, "contact.email: required field is missing", {"contact": {}}), ("a@x.test", "again", [1, "x"])]
    )
    warehouse.record_rejects("other.sink", [("z", "elsewhere", {})])
    got = warehouse.read_rejects(SINK)
    assert [(r["record_key"], r["reason"], r["record"]) for r in got] == [
        ("a@x.test", "contact.name: longer than 255 characters (300)", {"contact": {"email": "a@x.test"}}),
        (None, "contact.email: required field is missing", {"contact": {}}),
        ("a@x.test", "again", [1, "x"]),
    ]
    import re

    assert all(r["sink"] == SINK and re.match(ISO_UTC, r["rejected_at"]) for r in got)
    assert len(warehouse.read_rejects("other.sink")) == 1


def test_a_reject_that_is_not_json_is_kept_readable(warehouse):
    warehouse.record_rejects(SINK, [("a", "price: expected a finite number, got nan", {"price": float("nan")})])
    (row,) = warehouse.read_rejects(SINK)
    assert "nan" in row["record"]["unencodable_record"]


def test_state_survives_reopening(warehouse_url):
    with connect_warehouse(warehouse_url) as wh:
        wh.record_delivery(SINK, [("a", "h", None)])
    with connect_warehouse(warehouse_url) as wh:
        assert wh.read_delivered(SINK) == {"a": "h"}


# -- end to end: plan → send (sandbox) → record → re-plan --------------------------------------------


def _run(warehouse, sandbox, records):
    """One reverse-ETL run through ``push``, with the state kept under ``SINK``."""
    spec = load_connectors()["salesmanago"]
    env = sandbox.environment("http://salesmanago.sandbox.test")
    transport = sandbox.transport()
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
    return push(
        records,
        spec=spec,
        sink_name="contacts_batch",
        ledger=warehouse,
        state_key=SINK,
        clients=ClientFactory(credentials, environ=env, transport=transport, clock=FakeClock(), rng=random.Random(0)),
    )


def contacts(n: int, changed: frozenset[int] = frozenset()) -> list[dict]:
    return [
        {"contact": {"email": f"c{i}@shop.test", "name": f"Name {i}" + (" v2" if i in changed else "")}}
        for i in range(n)
    ]


def test_a_rerun_sends_nothing_and_a_change_sends_exactly_it(warehouse):
    sandbox = SalesmanagoSandbox()
    records = contacts(1500)
    records.append({"contact": {"email": "bad@shop.test", "name": 12345}})  # name must be a string
    records.append({"contact": {"email": "not-an-email", "name": "N"}})  # only SALESmanago refuses this

    report = _run(warehouse, sandbox, records)
    assert report.created == 1500 and report.write_calls == 2  # 1,000 per call
    assert report.rejected == 2 and report.in_doubt == 0
    assert len(warehouse.read_delivered(SINK)) == 1500
    rejects = warehouse.read_rejects(SINK)
    assert [r["record_key"] for r in rejects] == ["bad@shop.test", "not-an-email"]
    assert rejects[1]["reason"] == "upsertDetails[500]: contact.email is not a valid email address: 'not-an-email'"
    assert len(sandbox.contacts) == 1500
    assert warehouse.read_intents(SINK) == []  # every call's intent was closed with its outcome

    # Same records again: only the rejected ones are offered again (they were never delivered).
    report = _run(warehouse, sandbox, contacts(1500))
    assert report.write_calls == 0 and report.unchanged == 1500 and report.deleted == 0

    # Three changed: exactly those three go, in one call, and the target holds the new names.
    report = _run(warehouse, sandbox, contacts(1500, changed=frozenset({3, 700, 1499})))
    assert report.updated == 3 and report.write_calls == 1
    assert sandbox.contacts["c700@shop.test"]["name"] == "Name 700 v2"

    report = _run(warehouse, sandbox, contacts(1500, changed=frozenset({3, 700, 1499})))
    assert report.write_calls == 0


# -- dry-run plans ---------------------------------------------------------------------------------


def test_plans_append_per_run_and_read_back_in_order(warehouse):
    assert warehouse.read_plan(SINK) == []
    warehouse.record_plan(
        SINK,
        "run-1",
        [
            ("create", "a@x.test", None, {"contact": {"email": "a@x.test"}}),
            ("reject", None, "contact.email: required field is missing", {"contact": {}}),
        ],
    )
    warehouse.record_plan(
        SINK,
        "run-2",
        [
            ("update", "a@x.test", None, {"contact": {"email": "a@x.test", "name": "A"}}),
            ("delete", "gone@x.test", None, None),
        ],
    )
    warehouse.record_plan("other.sink", "run-2", [("create", "z", None, {})])
    got = warehouse.read_plan(SINK, "run-2")
    assert [(r["run_id"], r["action"], r["record_key"], r["reason"], r["record"]) for r in got] == [
        ("run-2", "update", "a@x.test", None, {"contact": {"email": "a@x.test", "name": "A"}}),
        ("run-2", "delete", "gone@x.test", None, None),
    ]
    assert [r["action"] for r in warehouse.read_plan(SINK)] == ["create", "reject", "update", "delete"]
    import re

    assert all(re.match(ISO_UTC, r["planned_at"]) for r in got)
    with pytest.raises(ValueError, match="action must be one of"):
        warehouse.record_plan(SINK, "run-3", [("send", "a", None, None)])
    assert warehouse.read_plan(SINK, "run-3") == []


# -- push(): the IO manager's core, without Dagster ------------------------------------------------


def _push(warehouse, sandbox, records, *, dry_run=False, run_id="r"):
    spec = load_connectors()["salesmanago"]
    env = sandbox.environment("http://salesmanago.sandbox.test")
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
    built = []

    class Counting(ClientFactory):
        def _build(self, spec, sink):
            built.append(sink)
            return super()._build(spec, sink)

    clients = Counting(credentials, environ=env, transport=sandbox.transport(), clock=FakeClock(), rng=random.Random(0))

    report = push(
        records,
        spec=spec,
        sink_name="contacts_batch",
        ledger=warehouse,
        state_key="sync/contacts",
        clients=clients,
        dry_run=dry_run,
        run_id=run_id,
    )
    return report, len(built)


def test_push_dry_run_plans_everything_and_builds_no_client(warehouse):
    sandbox = SalesmanagoSandbox()
    records = [*contacts(5), {"contact": {"email": "bad@shop.test", "name": 7}}]
    report, clients = _push(warehouse, sandbox, records, dry_run=True, run_id="dry-1")
    assert clients == 0 and sandbox.write_calls == 0 and not sandbox.contacts
    assert (report.created, report.rejected, report.write_calls, report.dry_run) == (5, 1, 0, True)
    plan = warehouse.read_plan("sync/contacts", "dry-1")
    assert sorted(r["action"] for r in plan) == ["create"] * 5 + ["reject"]
    assert next(r for r in plan if r["action"] == "reject")["reason"] == "contact.name: expected string, got integer"
    assert warehouse.read_delivered("sync/contacts") == {}  # a plan delivers nothing

    report, clients = _push(warehouse, sandbox, records)
    assert clients == 1 and (report.created, report.rejected, report.write_calls) == (5, 1, 1)
    assert len(warehouse.read_rejects("sync/contacts")) == 1
    # Nothing changed: no client at all, no call. One contact changes, one disappears.
    report, clients = _push(warehouse, sandbox, contacts(5))
    assert clients == 0 and report.write_calls == 0 and report.unchanged == 5
    changed = contacts(4, changed=frozenset({2}))
    report, _ = _push(warehouse, sandbox, changed, dry_run=True, run_id="dry-2")
    assert [(r["action"], r["record_key"]) for r in warehouse.read_plan("sync/contacts", "dry-2")] == [
        ("update", "c2@shop.test"),
        ("delete", "c4@shop.test"),
    ]
    assert (report.updated, report.deleted, report.unchanged) == (1, 1, 3)
