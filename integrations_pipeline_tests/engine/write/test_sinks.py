"""Unit tests of the sink runtime (``engine.write.sinks``) and the sink part of the spec, on MockTransport.

Covered: the record-validation table, spec load errors for sinks, packing (de-duplication, call
count), body templates, the SALESmanago batch answers as the public clients model them (contactIds;
createdAmount/failedAmount/failedContacts) and what is in doubt when they cannot tell, per-item results
(a generic vendor), all-or-nothing 400s that list bad items (Datatalks, SALESmanago v3), no retry of a
non-idempotent write that may have been applied, fatal auth errors with the partial report, and secrets
kept out of outcomes and errors. The real sandboxes are exercised in ``connectors/test_sink_conformance.py``.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import httpx
import pytest
import yaml

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory, VendorClient
from integrations_pipeline.engine.errors import (
    AuthError,
    MissingCredentialError,
    RequestRejectedError,
    SpecError,
)
from integrations_pipeline.engine.spec import ConnectorSpec, parse_spec
from integrations_pipeline.engine.write.keys import KeyReader
from integrations_pipeline.engine.write.plan import plan, validate_record
from integrations_pipeline.engine.write.push import send_unrecorded
from integrations_pipeline.engine.write.sinks import SinkWriter, render_body
from integrations_pipeline_tests.clock import FakeClock

from .._support import SECRETS, Recorder, json_response, spec

EXTRA_SECRETS = {
    "salesmanago": {
        "SALESMANAGO_V3_API_KEY": "SECRET-sm-v3-key",
        "SALESMANAGO_CATALOG_ID": "catalog-1",
    },
    "datatalks": {"DATATALKS_GROUP_KEY": "SECRET-group-key"},
    "trakor": {},
}
ENV = {"SALESMANAGO_V3_BASE_URL": "https://v3.example.test"}


def secrets_for(name: str) -> dict[str, str]:
    return {**SECRETS[name], **EXTRA_SECRETS[name]}


def sink_client(connector_spec: ConnectorSpec, sink: str, handler) -> VendorClient:
    clients = ClientFactory(
        Credentials(connector_spec.name, secrets_for(connector_spec.name)),
        transport=httpx.MockTransport(handler),
        clock=FakeClock(),
        environ=ENV,
        rng=random.Random(0),
    )
    return clients.sink(connector_spec, sink)


def writer(connector: str, sink: str, handler, connector_spec: ConnectorSpec | None = None) -> SinkWriter:
    spec_ = connector_spec or spec(connector)
    return SinkWriter(sink_client(spec_, sink, handler), spec_, sink)


def dt_product(i: int | str, **over: Any) -> dict[str, Any]:
    base = {
        "id": f"p{i}",
        "name": f"Product {i}",
        "description": "d",
        "category": "c",
        "brand": "b",
        "url": "https://shop.test/p",
        "image_url": "https://shop.test/p.jpg",
    }
    return {**base, **over}


def sm_contact(email: str, **contact: Any) -> dict[str, Any]:
    return {"contact": {"email": email, **contact}}


# -- validation ----------------------------------------------------------------------------------

VALIDATION = [
    ("trakor", "products", {"name": "x" * 300}, ["name: longer than 255 characters (300)"]),
    ("trakor", "products", {"name": "x" * 255, "price": 3}, []),
    ("trakor", "products", {"price": 3}, ["name: required field is missing"]),
    ("trakor", "products", {"name": None}, ["name: required field is missing"]),
    ("trakor", "products", {"name": ""}, ["name: required field is empty"]),
    ("trakor", "products", {"name": 12}, ["name: expected string, got integer"]),
    ("trakor", "products", {"name": "a", "price": "12.5"}, ["price: expected number, got string"]),
    ("trakor", "products", {"name": "a", "price": True}, ["price: expected number, got boolean"]),
    ("trakor", "products", {"name": "a", "price": float("nan")}, ["price: expected a finite number, got nan"]),
    ("trakor", "products", {"name": "a", "colour": "red"}, ["colour: unknown field (not declared by the sink)"]),
    ("trakor", "parties", ["not", "a", "dict"], ["record: expected object, got array"]),
    ("datatalks", "products", dt_product(1), []),
    ("datatalks", "products", dt_product(1, anything={"goes": 1}), []),
    ("datatalks", "products", dt_product(1, id="x" * 33), ["id: longer than 32 characters (33)"]),
    ("datatalks", "products", dt_product(1, sex=1.0, stock_available=4), []),
    ("datatalks", "products", dt_product(1, sex=1.5), ["sex: expected integer, got number"]),
    (
        "datatalks",
        "products",
        {"id": "p1", "name": "n" * 101},
        [
            "name: longer than 100 characters (101)",
            "description: required field is missing",
            "category: required field is missing",
            "brand: required field is missing",
            "url: required field is missing",
            "image_url: required field is missing",
        ],
    ),
    (
        "datatalks",
        "events",
        {"email": "a@b.se", "contactExtEventType": "LOCATION_ENTRY", "externalId": "e1"},
        [
            "contactExtEventType: got 'LOCATION_ENTRY', expected one of [PURCHASE, CART, VISIT, PHONE_CALL, OTHER, "
            "RESERVATION, CANCELLED, ACTIVATION, MEETING, OFFER, DOWNLOAD, LOGIN, TRANSACTION]"
        ],
    ),
    (
        "salesmanago",
        "events_batch",
        {"email": "a@b.se", "contactEvent": {"contactExtEventType": "NOPE", "externalId": "e1"}},
        ["contactEvent.contactExtEventType: got 'NOPE', expected one of the 37 values listed in the sink spec"],
    ),
    ("salesmanago", "contacts", sm_contact("a@b.se", address={"city": "Oslo"}), []),
    ("salesmanago", "contacts", {"contact": {"name": "A"}}, ["contact.email: required field is missing"]),
    (
        "salesmanago",
        "contacts",
        {"contact": "a@b.se"},
        [
            "contact.email: required field is missing",
            "contact: expected object, got string",
        ],
    ),
    (
        "salesmanago",
        "contacts",
        sm_contact("a@b.se", nick="x"),
        ["contact.nick: unknown field (not declared by the sink)"],
    ),
    ("salesmanago", "contacts", {**sm_contact("a@b.se"), "tags": "vip"}, ["tags: expected array, got string"]),
]


@pytest.mark.parametrize(
    "connector,sink,record,reasons", VALIDATION, ids=[f"{c}.{s}-{i}" for i, (c, s, _, _) in enumerate(VALIDATION)]
)
def test_validate_record(connector, sink, record, reasons):
    assert validate_record(spec(connector).sinks[sink], record) == reasons


def test_record_key_follows_dotted_paths_and_the_sinks_case_rule():
    sinks = spec("salesmanago").sinks
    contact_key, event_key = KeyReader.for_sink(sinks["contacts"]), KeyReader.for_sink(sinks["events"])
    assert contact_key(sm_contact("a@b.se")) == "a@b.se"
    # Emails are one key whatever their case and surrounding spaces; event ids are kept exactly.
    assert contact_key(sm_contact(" Case@Shop.TEST ")) == "case@shop.test"
    assert event_key({"contactEvent": {"externalId": "O-1"}}) == "O-1"
    assert event_key({"contactEvent": None}) is None
    assert contact_key("nope") is None


# -- spec: sinks load, and broken sinks say where ------------------------------------------------

RAW_DATATALKS = yaml.safe_load((SPEC_DIR / "datatalks.yaml").read_text())


def mutated(*path: Any, delete: bool = False) -> dict[str, Any]:
    """The datatalks document with ``path[:-1]`` set to ``path[-1]`` (or ``path`` deleted)."""
    doc = copy.deepcopy(RAW_DATATALKS)
    *parents, last = path if delete else path[:-1]
    node = doc
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = path[-1]
    return doc


SPEC_ERRORS = [
    (
        mutated("sinks", "products", "batch_size", 0),
        "datatalks.yaml: sinks.products.batch_size: Input should be greater than or equal to 1, got 0",
    ),
    (
        mutated("sinks", "products", "batch_size", 1),
        "datatalks.yaml: sinks.products.body: '$records' does not fit batch_size 1; use '$record' ($record for single-record endpoints, $records for batches)",
    ),
    (
        mutated("sinks", "contacts", "batch_size", 10),
        "datatalks.yaml: sinks.contacts.body: '$record' does not fit batch_size 10; use '$records' ($record for single-record endpoints, $records for batches)",
    ),
    (
        mutated("sinks", "contacts", "body", {"data": {}}),
        "datatalks.yaml: sinks.contacts.body: must contain '$record' exactly once (batch_size 1)",
    ),
    (mutated("sinks", "products", "key", "sku"), "datatalks.yaml: sinks.products.key: 'sku' is not in fields"),
    (
        mutated("sinks", "products", "key", "color"),
        "datatalks.yaml: sinks.products.key: 'color' must be a required field (fields.color.required: true)",
    ),
    (
        mutated("sinks", "products", "fields", "sex", {"type": "integer", "max_length": 3}),
        "datatalks.yaml: sinks.products.fields.sex: max_length applies to string and array fields, not integer",
    ),
    (
        mutated("sinks", "products", "fields", "name", {"type": "text"}),
        "datatalks.yaml: sinks.products.fields.name.type: Input should be 'string', 'integer', 'number', 'boolean', 'object' or 'array', got 'text'",
    ),
    (
        mutated("sinks", "products", "fields", "detail1.x", {"type": "string"}),
        "datatalks.yaml: sinks.products.fields.detail1: has sub-fields (detail1.x); declare only the sub-fields",
    ),
    (
        mutated("sinks", "products", "method", "GET"),
        "datatalks.yaml: sinks.products.method: Input should be 'POST', 'PUT' or 'DELETE', got 'GET'",
    ),
    (
        mutated("sinks", "products", "batchsize", 3),
        "datatalks.yaml: sinks.products.batchsize: unknown field (not allowed here)",
    ),
    (
        mutated("sinks", "products", "path", delete=True),
        "datatalks.yaml: sinks.products.path: required field is missing",
    ),
    (
        mutated("sinks", "products", "response", "item_index_field", None),
        "datatalks.yaml: sinks.products.response: item_errors_path needs exactly one of item_index_field or item_index_pattern",
    ),
    (
        mutated("sinks", "contacts", "response", "item_results_path", "result"),
        "datatalks.yaml: sinks.contacts.response: item_results_path/item_errors_path/failed/applied need a batch endpoint (batch_size > 1)",
    ),
    (
        mutated("sinks", "products", "response", "failed", {"path": "failed", "match": "nope"}),
        "datatalks.yaml: sinks.products.response.failed.match: 'nope' is not in fields, expected one of",
    ),
    (
        mutated("sinks", "products", "response", "failed", {"path": "failed", "match": "id", "keep_value_as": "x"}),
        "datatalks.yaml: sinks.products.response.failed.keep_value_as: a list of failed items has no value to keep",
    ),
    (
        mutated("sinks", "products", "response", "applied", {"path": "ids", "match": "id"})
        | {
            "sinks": {
                **RAW_DATATALKS["sinks"],
                "products": {
                    **RAW_DATATALKS["sinks"]["products"],
                    "response": {
                        **RAW_DATATALKS["sinks"]["products"]["response"],
                        "applied": {"path": "ids", "match": "id"},
                        "failed": {"path": "bad", "match": "id"},
                    },
                },
            }
        },
        "datatalks.yaml: sinks.products.response: declare the items an answer applied (applied) or those it did not (failed), not both",
    ),
    (
        mutated("sinks", "products", "key_case", "lower"),
        "datatalks.yaml: sinks.products.key_case: Input should be 'exact' or 'insensitive', got 'lower'",
    ),
    (
        mutated("sinks", "contacts", "body", {"data": "$record", "group_key": {"env": "lower"}}),
        "datatalks.yaml: sinks.contacts.body.env: String should match pattern '^[A-Z][A-Z0-9_]*$', got 'lower'",
    ),
    (
        mutated("sinks", "Products", RAW_DATATALKS["sinks"]["products"]),
        "datatalks.yaml: sinks.Products: sink name must be snake_case (lowercase letters, digits, '_')",
    ),
    (
        mutated("sinks", "contacts", "auth", {"type": "oauth"}),
        "datatalks.yaml: sinks.contacts.auth.type: got 'oauth', expected one of",
    ),
]


@pytest.mark.parametrize("doc,message", SPEC_ERRORS, ids=[m.split(": ", 2)[1] for _, m in SPEC_ERRORS])
def test_broken_sink_spec_message(doc, message):
    with pytest.raises(SpecError) as info:
        parse_spec(doc, "datatalks.yaml")
    assert str(info.value).splitlines()[0].startswith(message), str(info.value)


def test_builtin_sinks_declare_what_the_issue_asks():
    assert set(spec("salesmanago").sinks) == {
        "contacts", "contacts_batch", "contact_delete", "events", "events_batch", "products"
    }  # fmt: skip
    assert set(spec("datatalks").sinks) == {"contacts", "contact_delete", "events", "products"}
    assert set(spec("trakor").sinks) == {"products", "parties"}
    assert spec("salesmanago").sinks["events_batch"].batch_size == 1000
    assert spec("datatalks").sinks["contact_delete"].method == "DELETE"
    assert {s.mode for s in spec("trakor").sinks.values()} == {"insert_once"}


def test_body_env_references_are_credentials():
    # {env: NAME} in a body is found like any other secret: resources expose it, the client masks it.
    assert "DATATALKS_GROUP_KEY" in secret_env_vars(spec("datatalks"))
    assert {"SALESMANAGO_V3_API_KEY", "SALESMANAGO_CATALOG_ID"} <= set(secret_env_vars(spec("salesmanago")))


# -- packing and bodies --------------------------------------------------------------------------


def pack(sink, records) -> list[list[dict]]:
    return [[item.record for item in batch] for batch in plan(sink, list(records), {}).batches()]


def test_pack_dedupes_by_key_keeping_the_last_occurrence_and_never_packs_a_keyless_record():
    sink = spec("trakor").sinks["products"]
    records = [{"name": "a", "price": 1}, {"name": "b"}, {"name": "a", "price": 2}, {"price": 9}, {"price": 9}]
    assert pack(sink, records) == [[{"name": "b"}], [{"name": "a", "price": 2}]]
    planned = plan(sink, records, {})
    assert [(r.index, r.key, r.reason) for r in planned.rejected] == [
        (3, None, "name: required field is missing"), (4, None, "name: required field is missing")
    ]  # fmt: skip


@pytest.mark.parametrize("n,calls", [(0, 0), (1, 1), (100, 1), (101, 2), (250, 3)])
def test_pack_makes_the_fewest_calls(n, calls):
    sink = spec("salesmanago").sinks["products"]  # batch_size 100
    chunks = pack(sink, ({"productId": str(i), "name": "x"} for i in range(n)))
    assert len(chunks) == calls and sum(map(len, chunks)) == n
    assert all(len(c) <= 100 for c in chunks)


def test_pack_keys_compare_as_text():
    sink = spec("salesmanago").sinks["products"]
    assert pack(sink, [{"productId": 1, "name": "a"}, {"productId": "1", "name": "b"}]) == [
        [{"productId": "1", "name": "b"}]
    ]


def test_emails_differing_in_case_are_one_contact_and_one_delivery():
    sink = spec("salesmanago").sinks["contacts_batch"]
    records = [sm_contact("Case@Shop.test", name="first"), sm_contact("case@shop.test", name="last")]
    planned = plan(sink, records, {})
    assert [(i.key, i.record["contact"]["name"]) for i in planned.to_send] == [("case@shop.test", "last")]
    assert planned.superseded == 1


def test_render_body_templates():
    creds = Credentials("datatalks", secrets_for("datatalks"))
    dt = spec("datatalks").sinks
    assert render_body(dt["products"], [{"id": "1"}, {"id": "2"}], creds) == {
        "data": [{"id": "1"}, {"id": "2"}],
        "group_key": "SECRET-group-key",
    }
    assert render_body(dt["contacts"], [{"email": "a@b.se"}], creds) == {
        "data": {"email": "a@b.se"},
        "group_key": "SECRET-group-key",
    }
    sm = spec("salesmanago").sinks
    assert render_body(sm["contacts"], [sm_contact("a@b.se")], Credentials("salesmanago", {})) == sm_contact("a@b.se")
    with pytest.raises(ValueError, match="exactly one record"):
        render_body(sm["contacts"], [sm_contact("a@b.se")] * 2, Credentials("salesmanago", {}))
    with pytest.raises(MissingCredentialError, match="DATATALKS_GROUP_KEY"):
        render_body(dt["contacts"], [{"email": "a@b.se"}], Credentials("datatalks", {}))


# -- sending: per-item outcomes ------------------------------------------------------------------


def test_empty_write_makes_no_call():
    rec = Recorder([json_response(200, {})])
    report = send_unrecorded(writer("trakor", "products", rec), [])
    assert (rec.calls, report.calls, report.outcomes) == (0, 0, [])


def test_invalid_records_are_rejected_before_sending_and_the_rest_go():
    rec = Recorder([json_response(201, {"id": "i1", "sku": "PRD-00001", "name": "ok", "created": True})])
    report = send_unrecorded(writer("trakor", "products", rec), [{"name": "x" * 300}, {"name": "ok"}, {"price": 1}])
    assert rec.bodies() == [{"name": "ok"}]
    assert [(o.index, o.key, o.status, o.stage) for o in report.outcomes] == [
        (0, "x" * 300, "rejected", "validation"),
        (1, "ok", "sent", None),
        (2, None, "rejected", "validation"),
    ]
    assert report.outcomes[0].reason == "name: longer than 255 characters (300)"
    assert report.outcomes[1].response == {"id": "i1", "sku": "PRD-00001", "created": True}
    assert report.calls == 1


def test_superseded_records_are_counted_not_sent():
    rec = Recorder([json_response(200, {"id": "i1", "sku": "PRD-00001", "name": "a", "created": False})])
    report = send_unrecorded(writer("trakor", "products", rec), [{"name": "a", "price": 1}, {"name": "a", "price": 2}])
    assert rec.bodies() == [{"name": "a", "price": 2}]
    assert report.superseded == 1 and [o.index for o in report.outcomes] == [1]


def test_salesmanago_batchupsert_delivers_what_contact_ids_lists():
    # The answer as tomaszcekalo/SalesManago's ContactIdsResponse.cs models it: no per-item array.
    answer = {
        "success": True,
        "message": ["upsertDetails[1]: contact.email is not a valid email address: 'bad'"],
        "contactIds": {"a@b.se": "c-1", "c@b.se": "c-3"},
    }
    rec = Recorder([json_response(200, answer)])
    w = writer("salesmanago", "contacts_batch", rec)
    report = send_unrecorded(w, [sm_contact("a@b.se"), sm_contact("bad"), sm_contact("C@b.se")])
    (body,) = rec.bodies()
    assert [d["contact"]["email"] for d in body["upsertDetails"]] == ["a@b.se", "bad", "C@b.se"]
    assert "sha" in body and "SECRET-sm-apisecret" not in json.dumps(body)
    assert [(o.key, o.status) for o in report.outcomes] == [("a@b.se", "sent"), ("bad", "rejected"), ("c@b.se", "sent")]
    assert report.outcomes[1].reason == "upsertDetails[1]: contact.email is not a valid email address: 'bad'"
    assert report.outcomes[1].stage == "vendor"
    assert report.outcomes[2].response == {"contact_id": "c-3"}


def test_a_batchupsert_answer_without_contact_ids_is_in_doubt_not_an_error():
    rec = Recorder([json_response(200, {"success": True, "message": []})])
    report = send_unrecorded(writer("salesmanago", "contacts_batch", rec), [sm_contact("a@b.se"), sm_contact("c@b.se")])
    assert [o.status for o in report.outcomes] == ["in_doubt", "in_doubt"]
    assert "the answer has no 'contactIds'" in report.outcomes[0].reason


def events(*emails: str) -> list[dict[str, Any]]:
    return [
        {"email": email, "contactEvent": {"contactExtEventType": "PURCHASE", "externalId": f"o{i}"}}
        for i, email in enumerate(emails)
    ]


def batch_events_answer(created: int, failed: int, failed_contacts: list[str], message: str = "") -> httpx.Response:
    # BatchAddContactExtEventResponse.cs (tomaszcekalo/SalesManago): counts and failed emails only.
    body = {"success": True, "message": [message] if message else [], "createdAmount": created,
            "failedAmount": failed, "failedContacts": failed_contacts}  # fmt: skip
    return json_response(200, body)


def test_batch_events_reject_every_event_of_a_failed_email_when_the_counts_agree():
    rec = Recorder([batch_events_answer(2, 2, ["b@x.se"], "events[1]: date looks like seconds")])
    report = send_unrecorded(writer("salesmanago", "events_batch", rec), events("a@x.se", "B@x.se", "b@x.se", "c@x.se"))
    assert [(o.key, o.status) for o in report.outcomes] == [
        ("o0", "sent"), ("o1", "rejected"), ("o2", "rejected"), ("o3", "sent")
    ]  # fmt: skip
    assert report.outcomes[1].reason == "events[1]: date looks like seconds"
    assert rec.calls == 1


def test_batch_events_of_a_failed_email_are_in_doubt_when_only_some_failed():
    # failedAmount 1 for two events of b@x.se: one of them was created, and the answer cannot say which.
    rec = Recorder([batch_events_answer(2, 1, ["b@x.se"])])
    report = send_unrecorded(writer("salesmanago", "events_batch", rec), events("a@x.se", "b@x.se", "b@x.se"))
    assert [(o.key, o.status) for o in report.outcomes] == [("o0", "sent"), ("o1", "in_doubt"), ("o2", "in_doubt")]
    assert "1 of the 2 items listed in 'failedContacts' failed" in report.outcomes[1].reason


@pytest.mark.parametrize(
    "answer,why",
    [
        (
            {"success": True, "createdAmount": 2, "failedAmount": 1, "failedContacts": []},
            "counts 2 + 1 items for the 2 sent",
        ),
        ({"success": True, "createdAmount": 1, "failedAmount": 1, "failedContacts": []}, "counts 1 failed items"),
        ({"success": True}, "the answer has no 'failedContacts'"),
        ({"success": True, "failedContacts": "a@x.se"}, "is a str, expected a list or map"),
        ({"success": True, "createdAmount": "2", "failedContacts": []}, "is not a count"),
    ],
)
def test_a_batch_events_answer_that_does_not_add_up_puts_the_whole_call_in_doubt(answer, why):
    rec = Recorder([json_response(200, answer)])
    report = send_unrecorded(writer("salesmanago", "events_batch", rec), events("a@x.se", "b@x.se"))
    assert [o.status for o in report.outcomes] == ["in_doubt", "in_doubt"]
    assert why in report.outcomes[0].reason


def test_batch_events_counts_alone_prove_a_clean_call():
    rec = Recorder([json_response(200, {"success": True, "createdAmount": 2, "failedAmount": 0})])
    report = send_unrecorded(writer("salesmanago", "events_batch", rec), events("a@x.se", "b@x.se"))
    assert [o.status for o in report.outcomes] == ["sent", "sent"]


@pytest.mark.parametrize(
    "failure",
    [
        json_response(500, {"success": False, "message": ["internal error"]}),
        json_response(503, {"success": False, "message": ["busy"]}),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("peer closed"),
        httpx.Response(200, content=b'{"success": tr'),  # a 2xx cut short
    ],
    ids=["500", "503", "read-timeout", "reset-after-send", "truncated-2xx"],
)
def test_an_event_write_that_may_have_been_applied_is_never_retried(failure):
    rec = Recorder([failure, batch_events_answer(2, 0, [])])
    report = send_unrecorded(writer("salesmanago", "events_batch", rec), events("a@x.se", "b@x.se"))
    assert rec.calls == 1
    assert [o.status for o in report.outcomes] == ["in_doubt", "in_doubt"]
    assert report.outcomes[0].reason.startswith("outcome unknown")


@pytest.mark.parametrize(
    "refusal",
    [
        json_response(429, {"success": False, "message": ["slow down"]}, {"retry-after": "0"}),
        json_response(428, {"success": False, "message": ["precondition"]}),
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
    ],
    ids=["429", "428", "connect-error", "connect-timeout"],
)
def test_an_event_write_the_vendor_provably_did_not_apply_is_retried(refusal):
    rec = Recorder([refusal, batch_events_answer(2, 0, [])])
    report = send_unrecorded(writer("salesmanago", "events_batch", rec), events("a@x.se", "b@x.se"))
    assert rec.calls == 2 and report.retries == 1
    assert [o.status for o in report.outcomes] == ["sent", "sent"]


def test_an_idempotent_write_is_retried_after_a_5xx():
    rec = Recorder(
        [
            json_response(500, {"success": False, "message": ["oops"]}),
            json_response(200, {"success": True, "contactIds": {"a@b.se": "c1"}}),
        ]
    )
    report = send_unrecorded(writer("salesmanago", "contacts_batch", rec), [sm_contact("a@b.se")])
    assert rec.calls == 2 and [o.status for o in report.outcomes] == ["sent"]


def generic_item_results_spec() -> ConnectorSpec:
    """SALESmanago's batch upsert re-declared as a vendor that answers per item (``item_results_path``)."""
    base = spec("salesmanago")
    sink = base.sinks["contacts_batch"]
    response = sink.response.model_copy(
        update={"applied": None, "item_results_path": "result", "keep": {"contact_id": "contactId"}}
    )
    return base.model_copy(
        update={"sinks": {**base.sinks, "contacts_batch": sink.model_copy(update={"response": response})}}
    )


def test_a_vendor_answering_per_item_is_read_item_by_item():
    answer = {"success": True, "result": [
        {"success": True, "contactId": "c-1"}, {"success": False, "message": "bad email"}, {"success": True, "contactId": "c-3"}
    ]}  # fmt: skip
    rec = Recorder([json_response(200, answer)])
    report = send_unrecorded(
        writer("salesmanago", "contacts_batch", rec, generic_item_results_spec()),
        [sm_contact("a@b.se"), sm_contact("bad"), sm_contact("c@b.se")],
    )
    assert [(o.key, o.status, o.reason) for o in report.outcomes] == [
        ("a@b.se", "sent", None), ("bad", "rejected", "bad email"), ("c@b.se", "sent", None)
    ]  # fmt: skip
    assert report.outcomes[2].response == {"contact_id": "c-3"}


def test_item_results_that_do_not_line_up_put_the_call_in_doubt():
    rec = Recorder([json_response(200, {"success": True, "result": [{"success": True}]})])
    report = send_unrecorded(
        writer("salesmanago", "contacts_batch", rec, generic_item_results_spec()),
        [sm_contact("a@b.se"), sm_contact("c@b.se")],
    )
    assert [o.status for o in report.outcomes] == ["in_doubt", "in_doubt"]
    assert "expected 2 item results at 'result', got 1" in report.outcomes[0].reason


def test_all_or_nothing_400_rejects_the_listed_items_and_resends_the_rest_once():
    errors = [
        {"index": 1, "field": "name", "reason": "longer than 100 characters (150)"},
        {"index": 1, "field": "brand", "reason": "required"},
        {"index": 3, "field": None, "reason": "must be an object"},
    ]
    rec = Recorder([
        json_response(400, {"message": "2 invalid product(s)", "errors": errors}),
        json_response(200, {"success": True, "productIds": ["p0", "p2"]}),
    ])  # fmt: skip
    report = send_unrecorded(writer("datatalks", "products", rec), [dt_product(i) for i in range(4)])
    first, second = rec.bodies()
    assert [p["id"] for p in first["data"]] == ["p0", "p1", "p2", "p3"]
    assert [p["id"] for p in second["data"]] == ["p0", "p2"]
    assert report.calls == 2
    assert [(o.key, o.status) for o in report.outcomes] == [
        ("p0", "sent"), ("p1", "rejected"), ("p2", "sent"), ("p3", "rejected")
    ]  # fmt: skip
    assert report.outcomes[1].reason == "name: longer than 100 characters (150); brand: required"
    assert report.outcomes[3].reason == "must be an object"


def test_salesmanago_v3_problems_are_matched_to_items_by_message():
    problems = [{"reasonCode": 20, "message": "products[0].price: must be numeric"}]
    rec = Recorder([json_response(400, {"problems": problems}), json_response(200, {"productIds": ["b"]})])
    report = send_unrecorded(
        writer("salesmanago", "products", rec), [{"productId": "a", "name": "A"}, {"productId": "b", "name": "B"}]
    )
    assert [(o.key, o.status, o.reason) for o in report.outcomes] == [
        ("a", "rejected", "products[0].price: must be numeric"),
        ("b", "sent", None),
    ]
    first, second = rec.requests
    # The catalog sink uses its own host and the API-KEY header, not the signed classic body.
    assert str(first.url) == "https://v3.example.test/v3/product/upsert"
    assert first.headers["API-KEY"] == "SECRET-sm-v3-key"
    assert json.loads(first.content)["catalogId"] == "catalog-1" and "sha" not in json.loads(first.content)


def test_a_400_about_the_call_itself_raises():
    rec = Recorder([json_response(400, {"problems": [{"reasonCode": 20, "message": "catalogId: required (string)"}]})])
    with pytest.raises(RequestRejectedError, match="catalogId: required"):
        send_unrecorded(writer("salesmanago", "products", rec), [{"productId": "a", "name": "A"}])
    assert rec.calls == 1


def test_a_second_all_or_nothing_400_raises_with_the_partial_report():
    bad = json_response(
        400, {"message": "1 invalid product(s)", "errors": [{"index": 0, "field": "id", "reason": "required"}]}
    )
    rec = Recorder([bad, bad])
    with pytest.raises(RequestRejectedError) as info:
        send_unrecorded(writer("datatalks", "products", rec), [dt_product(0), dt_product(1)])
    assert rec.calls == 2
    assert [(o.key, o.status) for o in info.value.partial_report.outcomes] == [("p0", "rejected")]


def test_single_record_400_rejects_that_record_only():
    rec = Recorder([
        json_response(400, {"error": "Schema validation failed: name: must not be empty"}),
        json_response(201, {"id": "i2", "sku": "PRD-00002", "name": "b", "created": True}),
    ])  # fmt: skip
    report = send_unrecorded(writer("trakor", "products", rec), [{"name": " "}, {"name": "b"}])
    assert [(o.key, o.status) for o in report.outcomes] == [(" ", "rejected"), ("b", "sent")]
    assert report.outcomes[0].reason == "HTTP 400: Schema validation failed: name: must not be empty (/products)"


def test_single_record_404_is_a_broken_setup_not_a_bad_record():
    rec = Recorder([json_response(404, {"error": "no route"})])
    with pytest.raises(RequestRejectedError, match="HTTP 404"):
        send_unrecorded(writer("trakor", "parties", rec), [{"name": "a"}, {"name": "b"}])
    assert rec.calls == 1


# -- fatal errors and secrets --------------------------------------------------------------------


def test_trakor_403_frozen_fails_fast_with_the_partial_report():
    rec = Recorder([
        json_response(201, {"id": "i1", "sku": "PRD-00001", "name": "a", "created": True}),
        json_response(403, {"error": "Organisation is frozen"}),
    ])  # fmt: skip
    with pytest.raises(AuthError, match="HTTP 403: Organisation is frozen") as info:
        send_unrecorded(writer("trakor", "products", rec), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    assert rec.calls == 2  # never retried, and "c" never tried
    assert [(o.key, o.status) for o in info.value.partial_report.outcomes] == [("a", "sent")]


def test_salesmanago_not_authenticated_in_a_200_is_an_auth_error():
    answer = {"success": False, "message": ["Not authenticated: invalid sha"]}
    rec = Recorder([json_response(200, answer)])
    with pytest.raises(AuthError, match="credentials refused.*Not authenticated: invalid sha") as info:
        send_unrecorded(writer("salesmanago", "contacts", rec), [sm_contact("a@b.se"), sm_contact("c@b.se")])
    assert rec.calls == 1 and info.value.status == 200


def test_secrets_never_reach_outcomes_or_errors():
    # A vendor that echoes the group key and the AWS secret back in its messages.
    echo = "bad group SECRET-group-key with SECRET-aws-secret-key"
    rec = Recorder([
        json_response(400, {"message": echo}),
        json_response(400, {"message": "x", "errors": [{"index": 0, "field": "id", "reason": echo}]}),
        json_response(200, {"success": True}),
        json_response(403, {"message": echo}),
    ])  # fmt: skip
    w = writer("datatalks", "contacts", rec)
    single = send_unrecorded(w, [{"email": "a@b.se"}])
    batch = send_unrecorded(writer("datatalks", "products", rec), [dt_product(0), dt_product(1)])
    with pytest.raises(AuthError) as info:
        send_unrecorded(w, [{"email": "c@b.se"}])
    texts = [str(o) for o in single.outcomes + batch.outcomes] + [str(info.value)]
    assert all("SECRET-" not in t for t in texts), texts
    assert "***" in single.outcomes[0].reason and "***" in batch.outcomes[0].reason


def test_unknown_sink_names_the_choices():
    with pytest.raises(KeyError, match=r"no sink 'nope'; expected one of \['parties', 'products'\]"):
        writer("trakor", "nope", Recorder([json_response(200, {})]))


def test_retries_are_reported_separately_from_calls():
    rec = Recorder([
        json_response(503, {"error": "busy"}),
        json_response(201, {"id": "i1", "sku": "PRD-00001", "name": "a", "created": True}),
    ])  # fmt: skip
    report = send_unrecorded(writer("trakor", "products", rec), [{"name": "a"}])
    assert (report.calls, report.retries, rec.calls) == (1, 1, 2)


def test_a_sinks_client_reaches_the_sinks_own_host_with_the_sinks_own_auth():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, {})

    connector_spec = spec("salesmanago")
    config = connector_spec.client_config("products")
    assert config.base_url.env == "SALESMANAGO_V3_BASE_URL"
    assert config.auth.type == "static_headers"
    assert connector_spec.client_config().auth.type == "body_credentials"
    w = writer("salesmanago", "products", handler)
    send_unrecorded(w, [{"productId": "p1", "name": "One"}])
    assert [str(r.url) for r in seen] == ["https://v3.example.test/v3/product/upsert"]
    assert seen[0].headers["API-KEY"] == "SECRET-sm-v3-key"
    # The classic signed body (clientId, apiKey, sha) is the connector's auth, not this sink's.
    assert "apiKey" not in json.loads(seen[0].content)


def test_a_connectors_client_handed_to_a_sink_with_its_own_host_is_refused_and_closed():
    connector_spec = spec("salesmanago")
    clients = ClientFactory(
        Credentials("salesmanago", secrets_for("salesmanago")),
        environ=ENV,
        transport=httpx.MockTransport(lambda r: json_response(200, {})),
    )
    client = clients.connector(connector_spec)
    with pytest.raises(ValueError, match="not configured for this sink.*ClientFactory.sink"):
        SinkWriter(client, connector_spec, "products")
    with pytest.raises(RuntimeError):
        client.call("GET", "/anything")  # closed: the endpoint owned it even though it refused it
    # A sink without its own host shares the connector's configuration, so either client fits.
    SinkWriter(clients.connector(connector_spec), connector_spec, "events_batch").close()


def test_a_factory_builds_clients_only_for_its_credentials_connector():
    clients = ClientFactory(Credentials("trakor", secrets_for("trakor")), environ=ENV)
    with pytest.raises(ValueError, match="credentials are for 'trakor', not for connector 'salesmanago'"):
        clients.sink(spec("salesmanago"), "products")
