"""The read side of sinks (``engine.write.reads``): contacts written with ``SinkWriter`` to the real sandboxes
in-process are read back with ``SinkReader`` by key.

Covered: found and not-found keys, de-duplication (as text, and ignoring case where the spec says the
target does), calls = ⌈unique keys / 50⌉ for SALESmanago and one per key for Datatalks, 404 as "not
found", refused credentials failing fast with an ``AuthError`` that holds no secret, a sink's own
auth/base_url and ``{env: NAME}`` in read templates, and misconfigured answers failing loudly. The
spec rules for ``read:`` are in the broken-spec table of ``test_spec.py``.
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory, VendorClient
from integrations_pipeline.engine.errors import AuthError, ConfigError, FatalError, RequestRejectedError
from integrations_pipeline.engine.spec import ConnectorSpec, parse_spec
from integrations_pipeline.engine.write.push import send_unrecorded
from integrations_pipeline.engine.write.reads import ReadReport, SinkReader
from integrations_pipeline.engine.write.sinks import SinkWriter
from integrations_pipeline.sandbox.base import VendorSandbox
from integrations_pipeline.sandbox.datatalks import DatatalksSandbox
from integrations_pipeline.sandbox.salesmanago import MAX_BASIC_EMAILS, SalesmanagoSandbox
from integrations_pipeline_tests.clock import FakeClock

from .._support import Recorder, json_response, spec

BASE = "http://sandbox.test"
GROUP = "sandbox-group"


def _email(i: int) -> str:
    return f"c{i}@shop.test"


def sm_record(i: int) -> dict[str, Any]:
    return {"contact": {"email": _email(i), "name": f"Name {i}", "address": {"city": "Oslo"}}}


def dt_record(i: int) -> dict[str, Any]:
    return {"email": _email(i), "name": f"Name {i}", "city": "Oslo", "segment": "vip"}


@dataclass
class Rig:
    """A connector spec wired to its sandbox in-process; every request the sandbox sees is kept."""

    spec: ConnectorSpec
    sandbox: VendorSandbox
    env: dict[str, str]

    def __post_init__(self) -> None:
        self.requests: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return self.sandbox.handle(request)

        self.transport = httpx.MockTransport(handler)

    def client(self, sink: str) -> VendorClient:
        credentials = Credentials.from_environ(self.spec.name, secret_env_vars(self.spec), self.env)
        clients = ClientFactory(
            credentials, transport=self.transport, environ=self.env, clock=FakeClock(), rng=random.Random(0)
        )
        return clients.sink(self.spec, sink)

    def write(self, sink: str, records: list[dict[str, Any]]) -> None:
        with SinkWriter(self.client(sink), self.spec, sink) as w:
            report = send_unrecorded(w, records)
        assert len(report.sent) == len(records), report.rejected

    def reader(self, sink: str) -> SinkReader:
        return SinkReader(self.client(sink), self.spec, sink)

    def read(self, sink: str, keys: list[Any]) -> ReadReport:
        self.requests.clear()
        with self.reader(sink) as r:
            return r.read(keys)


def salesmanago_rig(connector_spec: ConnectorSpec | None = None, **env: str) -> Rig:
    sandbox = SalesmanagoSandbox(requests_per_hour=None)
    return Rig(connector_spec or spec("salesmanago"), sandbox, {**sandbox.environment(BASE), **env})


def datatalks_rig(**env: str) -> Rig:
    sandbox = DatatalksSandbox()
    return Rig(spec("datatalks"), sandbox, {**sandbox.environment(BASE), "DATATALKS_GROUP_KEY": GROUP, **env})


def basic_bodies(rig: Rig) -> list[dict[str, Any]]:
    return [json.loads(r.content) for r in rig.requests if r.url.path == "/api/contact/basic"]


# -- SALESmanago: POST /api/contact/basic, ≤ 50 emails a call ----------------------------------


@pytest.mark.parametrize("sink", ["contacts", "contacts_batch"])
def test_salesmanago_reads_back_what_was_written(sink):
    rig = salesmanago_rig()
    rig.write(sink, [sm_record(i) for i in range(3)])
    report = rig.read(sink, [_email(0), _email(2), "nobody@shop.test", _email(1)])
    assert set(report.found) == {_email(0), _email(1), _email(2)}
    assert report.not_found == ["nobody@shop.test"]
    assert report.calls == 1 and report.sink == sink
    found = report.found[_email(2)]
    # SALESmanago answers its flat contact shape, not the upsert's {contact: {...}}.
    assert found["email"] == _email(2) and found["name"] == "Name 2" and found["address"] == {"city": "Oslo"}
    assert found["contactId"] == rig.sandbox.contacts[_email(2)]["contactId"] and "contact" not in found
    (body,) = basic_bodies(rig)
    assert body["email"] == [_email(0), _email(2), "nobody@shop.test", _email(1)]
    assert "sha" in body and "apiSecret" not in body  # the signed classic body, as for writes


@pytest.mark.parametrize("n", [1, 49, 50, 51, 100, 101, 130])
def test_salesmanago_calls_are_unique_keys_over_50_rounded_up(n):
    rig = salesmanago_rig()
    rig.write("contacts_batch", [sm_record(i) for i in range(n)])
    emails = [_email(i) for i in range(n)]
    # Every key twice, once in capitals: SALESmanago emails are one key whatever their case.
    report = rig.read("contacts_batch", emails + [e.upper() for e in emails] + ["nobody@shop.test"])
    unique = n + 1
    assert report.calls == math.ceil(unique / MAX_BASIC_EMAILS) == len(basic_bodies(rig))
    sent = [e for body in basic_bodies(rig) for e in body["email"]]
    assert sent == emails + ["nobody@shop.test"]  # each key once, as first given, in order
    assert all(len(body["email"]) <= MAX_BASIC_EMAILS for body in basic_bodies(rig))
    assert set(report.found) == set(emails) | {e.upper() for e in emails}
    assert report.found[emails[-1].upper()] is report.found[emails[-1]]
    assert report.not_found == ["nobody@shop.test"]


def test_keys_are_deduplicated_as_text():
    rig = salesmanago_rig()
    rig.write("contacts", [sm_record(0)])
    report = rig.read("contacts", [_email(0), " " + _email(0).upper() + " ", _email(0), "x@shop.test", "x@shop.test"])
    assert report.calls == 1 and basic_bodies(rig)[0]["email"] == [_email(0), "x@shop.test"]
    assert list(report.found) == [_email(0), " " + _email(0).upper() + " "]
    assert report.not_found == ["x@shop.test"]


def test_a_deleted_contact_is_not_found():
    rig = salesmanago_rig()
    rig.write("contacts_batch", [sm_record(0), sm_record(1)])
    rig.write("contact_delete", [{"email": _email(0)}])
    report = rig.read("contacts_batch", [_email(0), _email(1)])
    assert report.not_found == [_email(0)] and list(report.found) == [_email(1)]


def test_no_keys_make_no_call():
    rig = salesmanago_rig()
    report = rig.read("contacts", [])
    assert (report.calls, report.found, report.not_found, rig.requests) == (0, {}, [], [])


@pytest.mark.parametrize("key", [None, "", "  ", True, {"email": "a@b.se"}])
def test_an_unusable_key_is_refused_before_any_call(key):
    rig = salesmanago_rig()
    with pytest.raises(ValueError, match=r"salesmanago sink 'contacts' read: key at position 1 is"):
        rig.read("contacts", ["a@shop.test", key])
    assert rig.requests == []


def test_more_emails_than_the_vendor_takes_is_a_rejected_call():
    # The sandbox enforces the documented 50: a spec that packs more gets the vendor's refusal.
    doc = yaml.safe_load((SPEC_DIR / "salesmanago.yaml").read_text())
    doc["sinks"]["contacts"]["read"] = {**doc["sinks"]["contacts"]["read"], "batch_size": 60}
    rig = salesmanago_rig(parse_spec(doc, "salesmanago.yaml"))
    with pytest.raises(RequestRejectedError, match="too many emails: 60 > 50") as info:
        rig.read("contacts", [_email(i) for i in range(61)])
    assert info.value.partial_report.calls == 1 and info.value.partial_report.found == {}


# -- Datatalks: GET /contact_by_email?email=, one key a call, 404 = not found -------------------


def test_datatalks_reads_one_key_per_call_and_404_is_not_found():
    rig = datatalks_rig()
    rig.write("contacts", [dt_record(i) for i in range(3)])
    keys = [_email(2), "nobody@shop.test", _email(0), _email(2), "other@shop.test", _email(1)]
    report = rig.read("contacts", keys)
    assert report.calls == 5 == len(rig.requests)  # one per unique key
    assert [r.url.params["email"] for r in rig.requests] == [
        _email(2), "nobody@shop.test", _email(0), "other@shop.test", _email(1)
    ]  # fmt: skip
    assert all(r.method == "GET" and r.url.path == "/v1/contact_by_email" and not r.content for r in rig.requests)
    assert set(report.found) == {_email(0), _email(1), _email(2)}
    assert report.not_found == ["nobody@shop.test", "other@shop.test"]
    found = report.found[_email(1)]
    # The answer is SALESmanago's contact: the flat write's city is nested, extra fields are properties.
    assert found["name"] == "Name 1" and found["address"]["city"] == "Oslo" and found["properties"]["segment"] == "vip"


def test_datatalks_looks_a_contact_up_by_its_salesmanago_id():
    """Seed 002's other read: GET /contact/{sm_id}, the id one path segment, 404 = no such contact."""
    rig = datatalks_rig()
    rig.write("contacts", [dt_record(i) for i in range(3)])
    by_email = rig.read("contacts", [_email(0), _email(2)]).found
    ids = [by_email[_email(0)]["contactId"], by_email[_email(2)]["contactId"]]
    rig.requests.clear()
    with SinkReader(rig.client("contacts"), rig.spec, "contacts", lookup="by_sm_id") as reader:
        report = reader.read([ids[1], "no-such-id", ids[0], ids[1], "a/b?c"])
    assert report.calls == 4 == len(rig.requests)  # one per unique id
    assert [r.url.raw_path.decode() for r in rig.requests] == [
        f"/v1/contact/{ids[1]}", "/v1/contact/no-such-id", f"/v1/contact/{ids[0]}", "/v1/contact/a%2Fb%3Fc"
    ]  # fmt: skip
    assert all(r.method == "GET" and not r.url.params and not r.content for r in rig.requests)
    assert report.found[ids[0]] == by_email[_email(0)] and report.found[ids[1]] == by_email[_email(2)]
    assert report.not_found == ["no-such-id", "a/b?c"]


def test_a_lookup_compares_its_key_exactly_and_an_unknown_lookup_says_which_exist():
    rig = datatalks_rig()
    rig.write("contacts", [dt_record(0)])
    contact_id = rig.read("contacts", [_email(0)]).found[_email(0)]["contactId"]
    with SinkReader(rig.client("contacts"), rig.spec, "contacts", lookup="by_sm_id") as reader:
        # The sink's emails compare ignoring case (one call for two spellings); a contact id is not an email.
        report = reader.read([contact_id, contact_id.upper()])
    assert contact_id != contact_id.upper() and report.calls == 2
    assert list(report.found) == [contact_id] and report.not_found == [contact_id.upper()]
    with pytest.raises(ConfigError, match=r"has no lookup 'by_id'; expected one of \['by_sm_id'\]"):
        SinkReader(rig.client("contacts"), rig.spec, "contacts", lookup="by_id")


@pytest.mark.parametrize("n", [0, 1, 4])
def test_datatalks_calls_equal_the_keys(n):
    rig = datatalks_rig()
    rig.write("contacts", [dt_record(i) for i in range(n)])
    report = rig.read("contacts", [_email(i) for i in range(n)])
    assert report.calls == n == len(rig.requests) and len(report.found) == n and report.not_found == []


def test_a_status_not_listed_as_not_found_raises():
    rec = Recorder([json_response(200, {"data": {"email": _email(0)}}), json_response(400, {"message": "bad email"})])
    rig = datatalks_rig()
    client = VendorClient(
        rig.spec,
        Credentials.from_environ("datatalks", secret_env_vars(rig.spec), rig.env),
        transport=httpx.MockTransport(rec),
        environ=rig.env,
        clock=FakeClock(),
    )
    with pytest.raises(RequestRejectedError, match="HTTP 400: bad email") as info:
        SinkReader(client, rig.spec, "contacts").read([_email(0), _email(1), _email(2)])
    partial = info.value.partial_report
    assert rec.calls == 2 and partial.calls == 2
    assert list(partial.found) == [_email(0)] and partial.not_found == []  # the failed call adds nothing


def test_retries_are_reported_apart_from_calls():
    rig = datatalks_rig()
    rig.write("contacts", [dt_record(0)])
    rig.sandbox.faults.inject("503", times=1)
    report = rig.read("contacts", [_email(0)])
    assert (report.calls, report.retries, len(rig.requests)) == (1, 1, 2)
    assert list(report.found) == [_email(0)]


# -- refused credentials: fail fast, no secret in the error --------------------------------------


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, text


def test_salesmanago_bad_credentials_fail_fast_with_an_auth_error():
    good = salesmanago_rig()
    good.write("contacts", [sm_record(0)])
    rig = Rig(good.spec, good.sandbox, {**good.env, "SALESMANAGO_API_SECRET": "WRONG-secret-value"})
    with pytest.raises(AuthError) as info:
        rig.read("contacts_batch", [_email(i) for i in range(120)])  # would be 3 calls
    text = str(info.value)
    assert text.startswith("salesmanago sink read 'contacts_batch': credentials refused: ")
    assert "Not authenticated: invalid sha" in text and info.value.status == 200
    assert len(rig.requests) == 1 and info.value.partial_report.calls == 1  # never retried, no second call
    assert info.value.partial_report.found == {} and info.value.partial_report.not_found == []
    _assert_no_secret(text, "WRONG-secret-value", good.sandbox.api_secret, good.sandbox.api_key)


def test_datatalks_bad_credentials_fail_fast_with_an_auth_error():
    good = datatalks_rig()
    good.write("contacts", [dt_record(0)])
    rig = Rig(good.spec, good.sandbox, {**good.env, "DATATALKS_AWS_SECRET_ACCESS_KEY": "WRONG-aws-secret"})
    with pytest.raises(AuthError) as info:
        rig.read("contacts", [_email(0), _email(1)])
    text = str(info.value)
    assert text.startswith("datatalks sink read 'contacts': credentials refused: HTTP 403: ")
    assert info.value.status == 403 and len(rig.requests) == 1
    _assert_no_secret(text, "WRONG-aws-secret", good.sandbox.secret_access_key, GROUP)


def test_a_vendor_echoing_a_secret_has_it_masked():
    echo = "bad key SECRET-aws-secret-echo"
    rig = datatalks_rig(DATATALKS_AWS_SECRET_ACCESS_KEY="SECRET-aws-secret-echo")
    client = VendorClient(
        rig.spec,
        Credentials.from_environ("datatalks", secret_env_vars(rig.spec), rig.env),
        transport=httpx.MockTransport(Recorder([json_response(403, {"message": echo})])),
        environ=rig.env,
        clock=FakeClock(),
    )
    with pytest.raises(AuthError) as info:
        SinkReader(client, rig.spec, "contacts").read([_email(0)])
    assert "SECRET-" not in str(info.value) and "***" in str(info.value)


# -- which sinks can be read, and a sink's own auth/base URL ---------------------------------------


def test_a_sink_without_read_says_so():
    rig = salesmanago_rig()
    with pytest.raises(ConfigError) as info:
        rig.reader("events_batch")
    assert str(info.value) == (
        "connector 'salesmanago' sink 'events_batch' has no read operation (no 'read:' block in its spec); "
        "sinks that can be read: ['contacts', 'contacts_batch']"
    )
    with pytest.raises(KeyError, match="has no sink 'nope'"):
        rig.reader("nope")


def test_builtin_reads_are_declared_as_documented():
    sm, dt = spec("salesmanago").sinks, spec("datatalks").sinks
    for name in ("contacts", "contacts_batch"):
        read = sm[name].read
        assert (read.method, read.path, read.batch_size, read.body) == (
            "POST",
            "/api/contact/basic",
            50,
            {"email": "$keys"},
        )
        assert (read.records_path, read.key, read.not_found_statuses) == ("contacts", "email", [])
    assert sm["contacts"].read.batch_size == MAX_BASIC_EMAILS
    read = dt["contacts"].read
    assert (read.method, read.path, read.batch_size, read.params, read.body) == (
        "GET", "/contact_by_email", 1, {"email": "$key"}, None
    )  # fmt: skip
    assert (read.records_path, read.key, read.not_found_statuses) == ("data", "email", [404])
    assert [n for n, s in sm.items() if s.read is not None] == ["contacts", "contacts_batch"]
    assert [n for n, s in dt.items() if s.read is not None] == ["contacts"]
    by_id = dt["contacts"].lookups["by_sm_id"]  # seed 002: GET .../contact/sm_id
    assert (by_id.method, by_id.path, by_id.batch_size, by_id.params, by_id.body) == (
        "GET",
        "/contact/$key",
        1,
        {},
        None,
    )
    assert (by_id.records_path, by_id.key, by_id.not_found_statuses, by_id.compare) == ("data", "contactId", [404], {})
    assert [n for n, s in dt.items() if s.lookups] == ["contacts"] and not any(s.lookups for s in sm.values())
    assert all(s.read is None for s in spec("trakor").sinks.values())  # Trakor has no read endpoints


def _catalog_spec(read: dict[str, Any]) -> ConnectorSpec:
    doc = copy.deepcopy(yaml.safe_load((SPEC_DIR / "salesmanago.yaml").read_text()))
    doc["sinks"]["products"]["read"] = read
    return parse_spec(doc, "salesmanago.yaml")


PRODUCT_READ = {
    "description": "Products by id (a made-up endpoint on the v3 host).",
    "path": "/v3/product/get",
    "method": "POST",
    "batch_size": 2,
    "body": {"catalogId": {"env": "SALESMANAGO_CATALOG_ID"}, "productIds": "$keys"},
    "params": {"tenant": {"env": "SALESMANAGO_OWNER"}},
    "records_path": "products",
    "key": "productId",
}
V3_ENV = {
    "SALESMANAGO_V3_BASE_URL": "https://v3.example.test",
    "SALESMANAGO_V3_API_KEY": "SECRET-v3-key",
    "SALESMANAGO_CATALOG_ID": "catalog-7",
}


def _v3_reader(connector_spec: ConnectorSpec, rec: Recorder) -> SinkReader:
    env = {**SalesmanagoSandbox().environment("https://app.example.test"), **V3_ENV}
    transport = httpx.MockTransport(rec)
    credentials = Credentials.from_environ("salesmanago", secret_env_vars(connector_spec), env)
    clients = ClientFactory(credentials, transport=transport, environ=env, clock=FakeClock())
    return SinkReader(clients.sink(connector_spec, "products"), connector_spec, "products")


def test_a_sink_with_its_own_auth_and_host_reads_with_them_and_templates_resolve_secrets():
    connector_spec = _catalog_spec(PRODUCT_READ)
    assert {"SALESMANAGO_CATALOG_ID", "SALESMANAGO_OWNER"} <= set(
        secret_env_vars(connector_spec.sinks["products"].read)
    )
    rec = Recorder(
        lambda req: json_response(
            200, {"products": [{"productId": k} for k in json.loads(req.content)["productIds"][:1]]}
        )
    )
    with _v3_reader(connector_spec, rec) as reader:
        report = reader.read([1, "2", "3"])  # ids compare as text: 1 and "1" would be one key
    assert report.calls == 2 and set(report.found) == {"1", "3"} and report.not_found == ["2"]
    first = rec.requests[0]
    assert str(first.url).startswith("https://v3.example.test/v3/product/get?tenant=")
    assert first.headers["API-KEY"] == "SECRET-v3-key"
    body = json.loads(first.content)
    assert body == {"catalogId": "catalog-7", "productIds": [1, "2"]}  # no signed classic body on the v3 host


@pytest.mark.parametrize(
    "answer,message",
    [
        ({"items": []}, "expected a record or a list of records at 'products', got nothing"),
        ({"products": "none"}, "expected a record or a list of records at 'products', got a str"),
        ({"products": [{"id": "1"}]}, "a returned record has no 'productId'; check read.key"),
    ],
    ids=["missing-path", "not-records", "record-without-key"],
)
def test_an_answer_that_does_not_fit_the_spec_fails_loudly(answer, message):
    # A wrong records_path or key must not pass for "nothing found".
    with pytest.raises(FatalError, match=message):
        _v3_reader(_catalog_spec(PRODUCT_READ), Recorder([json_response(200, answer)])).read(["1"])
