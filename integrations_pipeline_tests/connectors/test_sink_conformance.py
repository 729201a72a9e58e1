"""Sink conformance: every sink of every connector, against its real sandbox in-process.

Modelled on the Meltano target tests: duplicate records in one batch, updates to the same key, a record
missing its key, a record over a length limit, an empty batch; plus the target holding exactly the
records sent, ⌈n / batch_size⌉ calls, and a crash in the middle of a batch followed by a re-send.

What "the same key again" means depends on the sink's declared ``mode``: upsert replaces, insert_once
keeps the first version (Trakor), append adds another event, delete removes again. Each sink gets a
``Target`` below: how to make its records and how to read back what the sandbox holds for a key.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.errors import AuthError, RetriesExhaustedError
from integrations_pipeline.engine.spec import ConnectorSpec, SinkSpec
from integrations_pipeline.engine.write.push import send_unrecorded
from integrations_pipeline.engine.write.sinks import SinkWriter, WriteReport
from integrations_pipeline.sandbox.base import VendorSandbox, json_response
from integrations_pipeline.sandbox.datatalks import DatatalksSandbox
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline.sandbox.trakor import TrakorSandbox
from integrations_pipeline_tests.clock import FakeClock

from .harness import SPECS

SINKS = [(c.name, s) for c in SPECS.values() for s in c.sinks]
BATCH_SINKS = [(c, s) for c, s in SINKS if SPECS[c].sinks[s].batch_size > 1]
CATALOG = "catalog-1"
GROUP = "sandbox-group"
EVENT_DATE_MS = 1_790_000_000_000


# -- per-sink knowledge: records and read-back ---------------------------------------------------


def _email(i: int) -> str:
    return f"c{i}@shop.test"


@dataclass
class Target:
    """``make(i, version)`` builds record i; ``stored(sandbox)`` maps key → what the target holds;
    ``expect(record)`` is what that stored entry must show (dotted path → value)."""

    make: Callable[[int, str], dict[str, Any]]
    stored: Callable[[Any], dict[str, Any]]
    expect: Callable[[dict[str, Any]], dict[str, Any]]


def events_by_external_id(sandbox) -> dict[str, list[dict]]:
    """Every stored event grouped by externalId: more than one means the event was added twice."""
    grouped: dict[str, list[dict]] = {}
    for event in sandbox.events:  # both sandboxes keep events in order, never de-duplicated
        grouped.setdefault(str(event.get("externalId")), []).append(event)
    return grouped


def _latest_events(sandbox) -> dict[str, dict]:
    return {ext: evs[-1] for ext, evs in events_by_external_id(sandbox).items()}


def _deleted(sandbox) -> dict[str, dict]:
    return {e: {"deleted": True, "present": e in sandbox.contacts} for e in sandbox.deleted}


_DELETE = Target(lambda i, v: {"email": _email(i)}, _deleted, lambda r: {"deleted": True, "present": False})

TARGETS: dict[tuple[str, str], Target] = {
    **{
        ("salesmanago", s): Target(
            lambda i, v: {"contact": {"email": _email(i), "name": f"Name {i}{v}", "address": {"city": "Oslo"}}},
            lambda sb: sb.contacts,
            lambda r: {"name": r["contact"]["name"], "address.city": "Oslo"},
        )
        for s in ("contacts", "contacts_batch")
    },
    ("salesmanago", "contact_delete"): _DELETE,
    **{
        ("salesmanago", s): Target(
            lambda i, v: {
                "email": _email(i),
                "contactEvent": {
                    "contactExtEventType": "PURCHASE",
                    "externalId": f"order-{i}",
                    "value": 10.5 + i,
                    "date": EVENT_DATE_MS,
                    "description": f"order {i}{v}",
                },
            },
            _latest_events,
            lambda r: {
                "email": r["email"],
                "value": r["contactEvent"]["value"],
                "description": r["contactEvent"]["description"],
            },
        )
        for s in ("events", "events_batch")
    },
    ("salesmanago", "products"): Target(
        lambda i, v: {"productId": f"p{i}", "name": f"Product {i}{v}", "price": 9.5, "available": True},
        lambda sb: {pid: p for (cat, pid), p in sb.products.items() if cat == CATALOG},
        lambda r: {"name": r["name"], "price": 9.5, "available": True},
    ),
    ("datatalks", "contacts"): Target(
        lambda i, v: {"email": _email(i), "name": f"Name {i}{v}", "city": "Oslo", "segment": "vip"},
        lambda sb: sb.contacts,
        lambda r: {"name": r["name"], "address.city": "Oslo", "properties.segment": "vip"},
    ),
    ("datatalks", "contact_delete"): _DELETE,
    ("datatalks", "events"): Target(
        lambda i, v: {
            "email": _email(i),
            "contactExtEventType": "OFFER",
            "externalId": f"deal-{i}",
            "value": 100.0 + i,
            "description": f"deal {i}{v}",
        },
        _latest_events,
        lambda r: {
            "email": r["email"],
            "value": r["value"],
            "description": r["description"],
            "contactExtEventType": "OFFER",
        },
    ),
    ("datatalks", "products"): Target(
        lambda i, v: {
            "id": f"p{i}",
            "name": f"Product {i}{v}",
            "description": "A product",
            "category": "Shoes",
            "brand": "Acme",
            "url": f"https://shop.test/p{i}",
            "image_url": f"https://shop.test/p{i}.jpg",
            "price": 19.9,
        },
        lambda sb: {pid: p for (group, pid), p in sb.products.items() if group == GROUP},
        lambda r: {"name": r["name"], "brand": "Acme", "price": 19.9},
    ),
    ("trakor", "products"): Target(
        lambda i, v: {"name": f"Product {i}", "description": f"about {i}{v}", "price": 2.5 + i},
        lambda sb: sb.products,
        lambda r: {"description": r["description"], "price": r["price"]},
    ),
    ("trakor", "parties"): Target(
        lambda i, v: {"name": f"Party {i}", "contact_info": f"party{i}{v}@shop.test"},
        lambda sb: sb.parties,
        lambda r: {"contact_info": r["contact_info"]},
    ),
}


def test_every_sink_has_a_target():
    assert set(TARGETS) == set(SINKS)


# -- wiring --------------------------------------------------------------------------------------


@dataclass
class Rig:
    connector: str
    sink_name: str
    sandbox: VendorSandbox
    env: dict[str, str]

    @property
    def spec(self) -> ConnectorSpec:
        return SPECS[self.connector]

    @property
    def sink(self) -> SinkSpec:
        return self.spec.sinks[self.sink_name]

    @property
    def target(self) -> Target:
        return TARGETS[(self.connector, self.sink_name)]

    def writer(self, transport: httpx.BaseTransport | None = None, spec: ConnectorSpec | None = None) -> SinkWriter:
        spec = spec or self.spec
        transport = transport or self.sandbox.transport()
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), self.env)
        # A fake clock: pacing and back-off advance virtual time, so tests never sleep.
        clients = ClientFactory(
            credentials, transport=transport, environ=self.env, clock=FakeClock(), rng=random.Random(0)
        )
        return SinkWriter(clients.sink(spec, self.sink_name), spec, self.sink_name)

    def write(self, records: list[dict], **kwargs: Any) -> WriteReport:
        with self.writer(**kwargs) as w:
            return send_unrecorded(w, records)

    def records(self, n: int, version: str = "", start: int = 0) -> list[dict]:
        return [self.target.make(i, version) for i in range(start, start + n)]

    def stored(self) -> dict[str, Any]:
        return self.target.stored(self.sandbox)

    def key(self, record: dict) -> str:
        value: Any = record
        for part in self.sink.key.split("."):
            value = value[part]
        return str(value).lower() if "@" in str(value) else str(value)

    def prepare(self, records: list[dict]) -> None:
        """Delete sinks need contacts to delete; everything else starts empty."""
        if self.sink.mode == "delete":
            store = getattr(self.sandbox, "_store", self.sandbox)
            for r in records:
                store.upsert_contact({"email": r["email"]})

    def assert_holds(self, records: list[dict]) -> None:
        """The target holds exactly these records (by key), each as sent."""
        stored = self.stored()
        assert set(stored) == {self.key(r) for r in records}
        for r in records:
            entry = stored[self.key(r)]
            for path, value in self.target.expect(r).items():
                got: Any = entry
                for part in path.split("."):
                    got = got.get(part) if isinstance(got, dict) else None
                assert got == value, (self.key(r), path, got, value)


def make_rig(connector: str, sink: str) -> Rig:
    if connector == "salesmanago":
        sandbox: VendorSandbox = SalesmanagoSandbox()
    elif connector == "datatalks":
        sandbox = DatatalksSandbox()
    else:
        sandbox = TrakorSandbox()
    base = f"http://{connector}.sandbox.test"
    env = sandbox.environment(base)
    # Variables the sinks introduce; the sandboxes' environment() predates them.
    env |= {
        "salesmanago": {
            "SALESMANAGO_V3_BASE_URL": base,
            "SALESMANAGO_V3_API_KEY": getattr(sandbox, "v3_api_key", ""),
            "SALESMANAGO_CATALOG_ID": CATALOG,
        },
        "datatalks": {"DATATALKS_GROUP_KEY": GROUP},
        "trakor": {},
    }[connector]
    return Rig(connector, sink, sandbox, env)


@pytest.fixture(params=SINKS, ids=lambda cs: f"{cs[0]}.{cs[1]}")
def rig(request) -> Rig:
    return make_rig(*request.param)


def expected_calls(sink: SinkSpec, n: int) -> int:
    return math.ceil(n / sink.batch_size)


# -- the conformance cases -----------------------------------------------------------------------


def test_the_target_holds_exactly_the_records_sent_in_the_fewest_calls(rig: Rig):
    n = 2 * rig.sink.batch_size + 1 if rig.sink.batch_size > 1 else 3
    records = rig.records(n)
    rig.prepare(records)
    report = rig.write(records)
    assert [o.status for o in report.outcomes] == ["sent"] * n
    assert report.calls == expected_calls(rig.sink, n) == rig.sandbox.write_calls
    assert report.retries == 0
    rig.assert_holds(records)
    if rig.sink.mode == "append":
        assert all(len(evs) == 1 for evs in events_by_external_id(rig.sandbox).values())


def test_duplicate_records_in_one_batch_send_the_last(rig: Rig):
    records = [rig.target.make(0, "-first"), rig.target.make(1, ""), rig.target.make(0, "-last")]
    rig.prepare(records)
    report = rig.write(records)
    assert report.superseded == 1
    assert [(o.index, o.status) for o in report.outcomes] == [(1, "sent"), (2, "sent")]
    assert report.calls == expected_calls(rig.sink, 2) == rig.sandbox.write_calls
    rig.assert_holds(records[1:])
    if rig.sink.mode == "append":
        assert all(len(evs) == 1 for evs in events_by_external_id(rig.sandbox).values())


def test_updates_to_the_same_key(rig: Rig):
    first, second = rig.target.make(0, "-v1"), rig.target.make(0, "-v2")
    rig.prepare([first])
    one, two = rig.write([first]), rig.write([second])
    assert one.outcomes[0].status == two.outcomes[0].status == "sent"
    mode = rig.sink.mode
    if mode == "insert_once":
        # Trakor returns the existing entity and changes nothing: the first version stays.
        rig.assert_holds([first])
        assert one.outcomes[0].response["created"] is True and two.outcomes[0].response["created"] is False
        assert one.outcomes[0].response["id"] == two.outcomes[0].response["id"]
    elif mode == "append":
        rig.assert_holds([second])  # the latest event shows the update...
        assert len(events_by_external_id(rig.sandbox)[rig.key(first)]) == 2  # ...appended, not replaced
    else:
        rig.assert_holds([second])
    assert rig.sandbox.write_calls == 2


def test_a_record_missing_its_key_is_rejected_and_the_rest_go(rig: Rig):
    records = rig.records(3)
    keyless = rig.target.make(9, "")
    *parents, last = rig.sink.key.split(".")
    node = keyless
    for part in parents:
        node = node[part]
    del node[last]
    rig.prepare(records)
    report = rig.write([records[0], keyless, *records[1:]])
    rejected = report.rejected
    assert [(o.index, o.key, o.reason, o.stage) for o in rejected] == [
        (1, None, f"{rig.sink.key}: required field is missing", "validation")
    ]
    assert len(report.sent) == 3
    assert rig.sandbox.write_calls == expected_calls(rig.sink, 3)
    rig.assert_holds(records)


LIMITED = [(c, s) for c, s in SINKS if any(r.max_length for r in SPECS[c].sinks[s].fields.values())]


def test_the_sinks_with_length_limits_are_the_documented_ones():
    # SALESmanago and the Datatalks contact/event endpoints document no lengths; the seeds give them
    # for Datatalks products (seed 002) and Trakor names (seed 004).
    assert LIMITED == [("datatalks", "products"), ("trakor", "products"), ("trakor", "parties")]


@pytest.mark.parametrize("connector,sink", LIMITED, ids=lambda x: x)
def test_a_record_over_a_length_limit_is_rejected_and_the_rest_go(connector, sink):
    rig = make_rig(connector, sink)
    path, rule = next((p, r) for p, r in rig.sink.fields.items() if r.max_length)
    records = rig.records(3)
    too_long = rig.target.make(7, "")
    too_long[path] = "x" * (rule.max_length + 1)
    report = rig.write([too_long, *records])
    (rejected,) = report.rejected
    assert rejected.index == 0 and rejected.stage == "validation"
    assert rejected.reason == f"{path}: longer than {rule.max_length} characters ({rule.max_length + 1})"
    rig.assert_holds(records)


def test_an_empty_batch_makes_no_call(rig: Rig):
    report = rig.write([])
    assert (report.calls, report.outcomes, rig.sandbox.write_calls, rig.sandbox.counts["requests"]) == (0, [], 0, 0)


# -- crashes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("connector,sink", BATCH_SINKS, ids=lambda x: x)
def test_a_vendor_that_applies_part_of_a_batch_then_answers_500(connector, sink):
    """Idempotent sinks retry the call and end exact; an append sink (events) never retries it: the call's
    records are in doubt, and the events the vendor did apply stay single."""
    rig = make_rig(connector, sink)
    records = rig.records(5)
    rig.sandbox.fail_batch_after(2)  # applies 2 items, then answers 500
    report = rig.write(records)
    assert report.calls == 1
    if rig.sink.idempotent:
        assert len(report.sent) == 5 and report.retries == 1
        rig.assert_holds(records)
    else:
        assert [o.status for o in report.outcomes] == ["in_doubt"] * 5 and report.retries == 0
        assert all(o.reason.startswith("outcome unknown: HTTP 500") for o in report.outcomes)
        assert sorted(len(v) for v in events_by_external_id(rig.sandbox).values()) == [1, 1]


class CrashingTransport(httpx.BaseTransport):
    """Forwards ``ok_calls`` requests to the sandbox; the next one reaches the sandbox armed to crash
    after ``applied`` items (batch endpoints); every later request gets a 500, so retries run out."""

    def __init__(self, sandbox: VendorSandbox, ok_calls: int, applied: int | None):
        self.sandbox, self.ok_calls, self.applied, self.calls = sandbox, ok_calls, applied, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        request.read()
        if self.calls <= self.ok_calls:
            return self.sandbox.handle(request)
        if self.calls == self.ok_calls + 1 and self.applied is not None:
            self.sandbox.fail_batch_after(self.applied)
            return self.sandbox.handle(request)
        return json_response(500, {"error": "server down", "message": "server down"})


def test_a_crash_mid_batch_then_resend_leaves_the_target_correct(rig: Rig):
    """The vendor fails in the second call (2 items into it, for batches) and stays down. Idempotent
    sinks: retries run out, the error carries what the first call delivered, and a re-send of the
    rest leaves the target exact. Append sinks (events): the second call is in doubt at once (never
    retried) and nothing after it is attempted; re-sending only what was never attempted leaves every
    event once, and the records in doubt are the ones a person must settle, no event doubled."""
    batch = rig.sink.batch_size
    n = batch + 4 if batch > 1 else 4
    records = rig.records(n)
    rig.prepare(records)
    # Crash in the second call: after one full call, and (for batches) 2 items into the second.
    crash = CrashingTransport(rig.sandbox, ok_calls=1, applied=2 if batch > 1 else None)
    first_call = batch if batch > 1 else 1
    if rig.sink.idempotent:
        with pytest.raises(RetriesExhaustedError) as info:
            rig.write(records, transport=crash)
        partial: WriteReport = info.value.partial_report
        assert len(partial.sent) == first_call  # the first call's records, no more
        settled = {o.index for o in partial.sent}
    else:
        partial = rig.write(records, transport=crash)
        second_call = batch if batch > 1 else 1
        assert [o.status for o in partial.outcomes] == ["sent"] * first_call + ["in_doubt"] * min(
            second_call, n - first_call
        )
        assert crash.calls == 2  # the in-doubt call was not retried, and nothing after it was attempted
        settled = {o.index for o in partial.outcomes}
    report = rig.write([r for i, r in enumerate(records) if i not in settled])
    assert [o.status for o in report.outcomes] == ["sent"] * (n - len(settled))
    if rig.sink.idempotent:
        rig.assert_holds(records)
    else:
        counts = events_by_external_id(rig.sandbox)
        assert all(len(v) == 1 for v in counts.values())  # never doubled
        in_doubt = {rig.key(records[o.index]) for o in partial.in_doubt}
        # Every event is delivered once, or in doubt (applied or not: the vendor answered 500 either way).
        assert {rig.key(r) for r in records} - set(counts) <= in_doubt


SM_BAD_CONTACT = {"contact": {"email": "not-an-email"}}
# Per sink: a record only the vendor refuses, and the rule to loosen so it gets past validation
# (None: our rules never check it, e.g. email syntax and SALESmanago's seconds-vs-milliseconds dates).
VENDOR_ONLY: dict[tuple[str, str], tuple[Callable[[Rig], dict], tuple[str, dict] | None]] = {
    ("salesmanago", "contacts"): (lambda rig: SM_BAD_CONTACT, None),
    ("salesmanago", "contacts_batch"): (lambda rig: SM_BAD_CONTACT, None),
    ("salesmanago", "events"): (
        lambda rig: {
            "email": "x@shop.test",
            "contactEvent": {"contactExtEventType": "CART", "externalId": "e-x", "date": 5},
        },
        None,
    ),
    ("salesmanago", "events_batch"): (
        lambda rig: {
            "email": "x@shop.test",
            "contactEvent": {"contactExtEventType": "CART", "externalId": "e-x", "date": 5},
        },
        None,
    ),
    ("salesmanago", "products"): (
        lambda rig: {"productId": "px", "name": "X", "quantity": 1.5},
        ("quantity", {"type": "number"}),
    ),
    ("datatalks", "contacts"): (lambda rig: {"email": "not-an-email"}, None),
    ("datatalks", "events"): (
        lambda rig: {"email": "not-an-email", "contactExtEventType": "CART", "externalId": "e-x"},
        None,
    ),
    ("datatalks", "products"): (
        lambda rig: {**rig.target.make(8, ""), "name": "n" * 101},
        ("name", {"max_length": None}),
    ),
    ("trakor", "products"): (lambda rig: {"name": "   "}, None),
    ("trakor", "parties"): (lambda rig: {"name": "n" * 256}, ("name", {"max_length": None})),
}


# Deletes take only an email, which the rules fully check: no vendor-only rejection exists for them.
REJECTABLE = [(c, s) for c, s in SINKS if SPECS[c].sinks[s].mode != "delete"]


def test_every_rejectable_sink_has_a_vendor_only_case():
    assert set(REJECTABLE) == set(VENDOR_ONLY)


@pytest.mark.parametrize(("connector", "sink_name"), REJECTABLE, ids=[f"{c}.{s}" for c, s in REJECTABLE])
def test_a_vendor_rejection_the_rules_did_not_catch_is_itemised(connector: str, sink_name: str):
    """Each vendor's own per-item verdict: that record is rejected, the others are delivered."""
    rig = make_rig(connector, sink_name)
    make_bad, loosen = VENDOR_ONLY[(rig.connector, rig.sink_name)]
    spec = rig.spec
    if loosen is not None:
        path, update = loosen
        fields = {**rig.sink.fields, path: rig.sink.fields[path].model_copy(update=update)}
        relaxed = rig.sink.model_copy(update={"fields": fields})
        spec = spec.model_copy(update={"sinks": {**spec.sinks, rig.sink_name: relaxed}})
    records = rig.records(2)
    report = rig.write([records[0], make_bad(rig), records[1]], spec=spec)
    assert [(o.index, o.status) for o in report.outcomes] == [(0, "sent"), (1, "rejected"), (2, "sent")]
    assert report.rejected[0].stage == "vendor" and report.rejected[0].reason
    if rig.sink.batch_size == 1:
        expected = 3  # one call per record; the vendor's 4xx rejects its record only
    elif rig.sink.response.item_results_path or rig.sink.response.failed or rig.sink.response.applied:
        expected = 1  # answered per item (or per listed email / contact id) inside one successful call
    else:
        expected = 2  # all or nothing: the 400 lists the bad item, the rest is resent once
    assert report.calls == expected
    rig.assert_holds(records)


def test_trakor_frozen_organisation_fails_fast():
    rig = make_rig("trakor", "products")
    rig.sandbox.frozen = True
    with pytest.raises(AuthError, match="HTTP 403: Organisation is frozen"):
        rig.write(rig.records(3))
    assert rig.sandbox.write_calls == 1 and rig.sandbox.products == {}


@pytest.mark.parametrize(
    "connector,sink",
    [("salesmanago", "contacts_batch"), ("salesmanago", "products"), ("datatalks", "events")],
    ids=lambda x: x,
)
def test_wrong_credentials_fail_fast_and_name_no_secret(connector, sink):
    rig = make_rig(connector, sink)
    wrong = {
        "salesmanago": {"SALESMANAGO_API_SECRET": "SECRET-wrong-secret", "SALESMANAGO_V3_API_KEY": "SECRET-wrong-key"},
        "datatalks": {"DATATALKS_GROUP_KEY": "SECRET-unknown-group"},
    }[connector]
    rig.env |= wrong
    with pytest.raises(AuthError) as info:
        rig.write(rig.records(2))
    assert "SECRET-" not in str(info.value)
    assert rig.stored() == {}
