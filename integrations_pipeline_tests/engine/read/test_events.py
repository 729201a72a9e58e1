"""engine.read.events for events that name their object by id only (Salestrekker's ``{id, event}``), against the
Salestrekker sandbox in-process with a FakeClock: the plan groups events by object, ``read_by_id`` makes one
``ticket(id)`` call per distinct id and no list call, a null answer settles as gone, a transient failure leaves
the events waiting with ``RETRY`` and a later read applies them, a query the vendor refuses fails and stops."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml

from integrations_pipeline.connectors import SPEC_DIR, load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory, VendorClient
from integrations_pipeline.engine.read.events import RETRY, plan_events, read_by_id
from integrations_pipeline.engine.spec import ConnectorSpec, parse_spec
from integrations_pipeline.engine.webhooks import ReceivedEvent, receive
from integrations_pipeline.sandbox.salestrekker import SalestrekkerSandbox
from integrations_pipeline_tests.clock import FakeClock

SPEC = load_connectors()["salestrekker"]
AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
SMALL = {"deals": 60, "contacts": 40, "workflows": 3}


def _client(box: SalestrekkerSandbox, spec: ConnectorSpec = SPEC, transport=None) -> VendorClient:
    env = box.environment("http://salestrekker.sandbox")
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
    factory = ClientFactory(
        credentials, environ=env, transport=transport or box.transport(), clock=FakeClock(), rng=random.Random(0)
    )
    return factory.connector(spec)


def _received(box: SalestrekkerSandbox) -> list[ReceivedEvent]:
    """The sandbox's queued webhooks, read as the service reads them."""
    token = box.webhook_token
    return [receive(SPEC, token, m.body, {}, path_token=token) for m in box.webhooks.queue]


@pytest.fixture
def box() -> SalestrekkerSandbox:
    sandbox = SalestrekkerSandbox(seed=4, sizes=SMALL)
    sandbox.webhooks.subscribe("http://receiver.test/webhooks/salestrekker/token")
    return sandbox


def test_each_distinct_id_is_read_once_and_becomes_the_vendors_record(box):
    touched = box.touch("deals", 3, AT)
    box.change_deal(touched[0], AT + timedelta(hours=1))  # a second event for the same deal
    box.announce(touched[1], "DealUpdated")  # and the same notice again: its own event
    events = _received(box)
    assert len(events) == 5 and len({e.event_id for e in events}) == 5

    plan = plan_events(SPEC, events, None)
    assert plan.records == {} and plan.settled == {} and plan.waiting == {}
    assert {k: len(v) for k, v in plan.reads["deals"].items()} == {touched[0]: 2, touched[1]: 2, touched[2]: 1}

    summary = read_by_id(_client(box), plan)
    assert summary.calls == 3 and summary.reads == {"deals": 3} and summary.failure is summary.retry is None
    assert box.counts["graphql ticket"] == 3 and box.counts["graphql tickets"] == 0  # by id, never a list read
    assert all(box.counts[f"ticket {i}"] == 1 for i in touched)
    truth = {d["id"]: d for d in box.truth("deals")}
    assert sorted(plan.records["deals"], key=lambda r: r["id"]) == [truth[i] for i in sorted(touched)]
    assert sorted(plan.applies["deals"]) == sorted(e.event_id for e in events)
    assert plan.reads == {}


def test_a_deal_moved_to_its_last_stage_is_read_won():
    box = SalestrekkerSandbox(seed=4, sizes=SMALL)
    box.webhooks.subscribe("http://receiver.test/x")
    deal = next(d for d in box.truth("deals") if not d["isWon"] and not d["isLost"])
    stages = next(w for w in box.truth("workflows") if w["id"] == deal["idWorkflow"])["stages"]
    moves = len(stages) - 1 - [s["id"] for s in stages].index(deal["idStage"])
    for hour in range(moves):
        assert box.change_deal(deal["id"], AT + timedelta(hours=hour)) == "DealChangesStage"
    plan = plan_events(SPEC, _received(box), None)
    read_by_id(_client(box), plan)
    (record,) = plan.records["deals"]
    assert (record["idStage"], record["isWon"], record["isSettled"]) == (stages[-1]["id"], True, True)
    assert record["updatedAt"] == (AT + timedelta(hours=moves - 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert box.counts["graphql ticket"] == 1  # several notices, one read


def test_a_ticket_that_answers_null_settles_as_gone(box):
    box.announce("00000000-0000-4000-a000-999999999999", "DealDeleted")  # [unconfirmed] name; no such deal
    box.announce("00000000-0000-4000-a000-999999999999", "DealChangesStage")
    plan = plan_events(SPEC, _received(box), None)
    summary = read_by_id(_client(box), plan)
    assert summary.gone == 1 and summary.calls == 1 and plan.records == {} and plan.waiting == {}
    assert len(plan.settled) == 2
    assert all(
        o.startswith("gone: deals '00000000-0000-4000-a000-999999999999' answered null") for o in plan.settled.values()
    )


def test_an_event_without_an_id_is_rejected():
    event = receive(SPEC, "t", json.dumps({"event": "DealCreated"}).encode(), {}, path_token="t")
    plan = plan_events(SPEC, [event], None)
    assert plan.settled == {event.event_id: "rejected: the event names no object id"} and plan.reads == {}


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_a_transient_failure_leaves_the_events_waiting_and_a_later_read_applies_them(box, fault):
    touched = box.touch("deals", 2, AT)
    events = _received(box)
    client = _client(box)
    box.faults.inject(fault, times=SPEC.retry.max_attempts, path_prefix="/graphql")
    plan = plan_events(SPEC, events, None)
    summary = read_by_id(client, plan)
    # The first read gave up after the retry policy; the second was not tried (the vendor is unwell).
    assert summary.calls == 1 and summary.retry and summary.failure is None and plan.records == {}
    assert set(plan.waiting) == {e.event_id for e in events}
    assert all(reason.startswith(RETRY) for reason in plan.waiting.values())

    again = plan_events(SPEC, events, None)  # the next run: the same events, still pending
    assert read_by_id(client, again).calls == 2
    assert sorted(r["id"] for r in again.records["deals"]) == sorted(touched) and again.waiting == {}


def _with_query(query: str) -> ConnectorSpec:
    raw = yaml.safe_load((SPEC_DIR / "salestrekker.yaml").read_text())
    doc = copy.deepcopy(raw)
    doc["webhooks"]["fetch"]["deals"]["query"] = query
    return parse_spec(doc, "salestrekker.yaml")


def test_a_query_the_vendor_refuses_fails_and_stops_the_reads(box):
    box.touch("deals", 3, AT)
    spec = _with_query("query T($id: ID!) { ticket(id: $id) { id updatedAt nosuchfield } }")
    plan = plan_events(spec, _received(box), None)
    summary = read_by_id(_client(box, spec), plan)
    assert summary.calls == 1 and summary.retry is None
    assert summary.failure and "nosuchfield" in summary.failure
    assert len(plan.waiting) == 3 and not any(r.startswith(RETRY) for r in plan.waiting.values())
    assert plan.records == {} and plan.settled == {}


def test_a_graphql_error_that_leaves_the_ticket_null_settles_as_gone():
    box = SalestrekkerSandbox(seed=4, sizes=SMALL)
    box.webhooks.subscribe("http://receiver.test/x")
    box.announce("t-1", "DealDeleted")
    events = _received(box)

    def vendor(request: httpx.Request) -> httpx.Response:
        # [unconfirmed] how Salestrekker answers a deleted ticket; a GraphQL server may say it with a field error.
        if b"authenticate" in request.content:
            return httpx.Response(200, json={"data": {"authenticate": {"token": "tok"}}})
        return httpx.Response(
            200, json={"data": {"ticket": None}, "errors": [{"message": "Ticket not found", "path": ["ticket"]}]}
        )

    plan = plan_events(SPEC, events, None)
    summary = read_by_id(_client(box, transport=httpx.MockTransport(vendor)), plan)
    assert summary.gone == 1 and list(plan.settled.values())[0].startswith("gone: deals 't-1'")


def test_an_answer_without_the_record_path_fails_rather_than_settling():
    box = SalestrekkerSandbox(seed=4, sizes=SMALL)
    box.webhooks.subscribe("http://receiver.test/x")
    box.announce("t-1", "DealChangesStage")

    def vendor(request: httpx.Request) -> httpx.Response:
        if b"authenticate" in request.content:
            return httpx.Response(200, json={"data": {"authenticate": {"token": "tok"}}})
        return httpx.Response(200, json={"data": {"deal": {"id": "t-1"}}})  # a record_path that does not fit

    plan = plan_events(SPEC, _received(box), None)
    summary = read_by_id(_client(box, transport=httpx.MockTransport(vendor)), plan)
    assert summary.failure and "data.ticket" in summary.failure and plan.settled == {} and len(plan.waiting) == 1


def test_the_same_notice_twice_is_two_events():
    # A deal that moves stage twice posts the same body twice: a digest of the body as the id would drop the
    # second change, so each delivery is its own event (both pending: one read serves them).
    body = json.dumps({"id": "t-1", "event": "DealChangesStage"}).encode()
    first, second = (receive(SPEC, "t", body, {}, path_token="t") for _ in range(2))
    assert first.event_id != second.event_id and first.event_id.startswith("sha256:")
    plan = plan_events(SPEC, [first, second], None)
    assert plan.reads == {"deals": {"t-1": [first.event_id, second.event_id]}}
