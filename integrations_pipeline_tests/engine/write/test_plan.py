"""The plan of a push: which records to send given what was delivered, per sink mode; keys; hash stability."""

from __future__ import annotations

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.write.keys import key_text
from integrations_pipeline.engine.write.plan import Plan, plan, record_hash

# A nested key (contact.email) exercises the dotted-path reader; the mode is swapped per case.
BASE_SINK = load_connectors()["salesmanago"].sinks["contacts_batch"]


def sink(mode: str):
    return BASE_SINK.model_copy(update={"mode": mode})


def contact(i: int, version: str = "") -> dict:
    return {"contact": {"email": f"c{i}@shop.test", "name": f"Name {i}{version}"}}


def key(i: int) -> str:
    return f"c{i}@shop.test"


def delivered_of(*records: dict) -> dict[str, str]:
    return {r["contact"]["email"]: record_hash(r) for r in records}


# -- record_hash -----------------------------------------------------------------------------------


def test_hash_ignores_key_order_at_every_level():
    a = {"a": 1, "b": {"x": [1, {"p": 1, "q": 2}], "y": None}}
    b = {"b": {"y": None, "x": [1, {"q": 2, "p": 1}]}, "a": 1}
    assert record_hash(a) == record_hash(b)


def test_hash_is_sha256_of_canonical_json():
    import hashlib

    assert record_hash({"b": 1, "a": "é"}) == hashlib.sha256(b'{"a":"\\u00e9","b":1}').hexdigest()
    assert len(record_hash({})) == 64


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"n": 1}, {"n": 1.0}),
        ({"n": 1}, {"n": "1"}),
        ({"l": [1, 2]}, {"l": [2, 1]}),
        ({"v": None}, {}),
        ({"b": True}, {"b": 1}),
    ],
)
def test_hash_tells_apart_what_json_tells_apart(a, b):
    assert record_hash(a) != record_hash(b)


def test_key_text_is_canonical():
    assert key_text("x") == "x"
    assert key_text(7) == key_text(7.0) == key_text("7") == "7"
    assert key_text(True) == "true"
    assert key_text(None) is None
    # Where the target ignores case (emails): one normalisation, lower() not casefold() (ß stays ß).
    assert key_text(" Ann@Shop.TEST ", case_insensitive=True) == "ann@shop.test"
    assert key_text("Straße@x.de", case_insensitive=True) == "straße@x.de"


# -- the plan, table-driven over modes ---------------------------------------------------------------

# Delivered before: c0 (same now), c1 (changed now), c2 (absent now). New now: c3.
BEFORE = [contact(0), contact(1), contact(2)]
NOW = [contact(0), contact(1, " v2"), contact(3)]

CASES = {
    # mode: (to_send keys, created, updated, unchanged, skipped_insert_once, deleted)
    "upsert": ([key(1), key(3)], [key(3)], [key(1)], [key(0)], [], [key(2)]),
    "delete": ([key(1), key(3)], [key(3)], [key(1)], [key(0)], [], [key(2)]),
    "insert_once": ([key(3)], [key(3)], [], [key(0), key(1)], [key(1)], [key(2)]),
    # An event that no longer appears is history, not a record that went away.
    "append": ([key(3)], [key(3)], [], [key(0), key(1)], [], []),
}


def keys_of(p: Plan, action: str | None = None) -> list[str]:
    return [i.key for i in p.to_send if action is None or i.action == action]


@pytest.mark.parametrize("mode", sorted(CASES))
def test_plan_by_mode(mode):
    to_send, created, updated, unchanged, skipped, deleted = CASES[mode]
    p = plan(sink(mode), NOW, delivered_of(*BEFORE))
    assert keys_of(p) == to_send
    assert keys_of(p, "create") == created
    assert keys_of(p, "update") == updated
    assert p.unchanged == unchanged
    assert p.skipped_insert_once == skipped
    assert p.deleted == deleted
    assert all(i.hash == record_hash(i.record) for i in p.to_send)


@pytest.mark.parametrize("mode", sorted(CASES))
def test_nothing_delivered_sends_everything_and_everything_delivered_sends_nothing(mode):
    records = [contact(i) for i in range(5)]
    first = plan(sink(mode), records, {})
    assert [i.record for i in first.to_send] == records and first.created == 5 and first.deleted == []
    again = plan(sink(mode), records, {i.key: i.hash for i in first.to_send})
    assert again.to_send == [] and len(again.unchanged) == 5


def test_key_order_of_a_record_does_not_make_it_changed():
    before = {"contact": {"email": key(0), "name": "A", "phone": "1"}}
    now = {"contact": {"phone": "1", "name": "A", "email": key(0)}}
    assert plan(sink("upsert"), [now], delivered_of(before)).to_send == []


def test_duplicates_last_wins_in_the_place_of_the_last():
    records = [contact(0, " old"), contact(1), contact(0, " new")]
    p = plan(sink("upsert"), records, {})
    assert p.superseded == 1
    assert [(i.index, i.record["contact"]["name"]) for i in p.to_send] == [(1, "Name 1"), (2, "Name 0 new")]
    assert p.to_send[1].hash == record_hash(contact(0, " new"))


def test_keyless_and_invalid_records_are_rejected_with_their_reasons_and_never_sent():
    keyless = [{"contact": {"name": "no email"}}, "not a record", {"contact": {"email": None}}]
    invalid = {"contact": {"email": key(5), "name": 7}}
    p = plan(sink("upsert"), [contact(0), *keyless, invalid], {})
    assert keys_of(p) == [key(0)]
    assert [(r.index, r.key, r.reason) for r in p.rejected] == [
        (1, None, "contact.email: required field is missing"),
        (2, None, "record: expected object, got string"),
        (3, None, "contact.email: required field is missing"),
        (4, key(5), "contact.name: expected string, got integer"),
    ]


def test_keys_compare_as_text():
    products = load_connectors()["salesmanago"].sinks["products"]  # key productId, top level
    before = {"productId": 7, "name": "P"}
    p = plan(products, [{"productId": "7", "name": "P"}, {"productId": 7.0, "name": "P"}], {"7": record_hash(before)})
    # "7" and 7.0 are one key (the later wins and is judged): the key stays delivered, not deleted.
    assert p.superseded == 1 and p.deleted == []
    assert [(r.key, r.reason) for r in p.rejected] == [("7", "productId: expected string, got number")]


def test_emails_are_one_key_whatever_their_case():
    # contacts_batch declares key_case: insensitive (SALESmanago keys contacts by email).
    before = {"contact": {"email": "ann@shop.test", "name": "A"}}
    now = [{"contact": {"email": "Ann@Shop.test", "name": "A"}}, {"contact": {"email": " ANN@shop.test", "name": "B"}}]
    p = plan(sink("upsert"), now, {"ann@shop.test": record_hash(before)})
    assert p.superseded == 1 and keys_of(p, "update") == ["ann@shop.test"] and p.deleted == []
    # The record goes as written: the vendor normalises the email itself.
    assert p.to_send[0].record["contact"]["email"] == " ANN@shop.test"


@pytest.mark.parametrize("mode", sorted(CASES))
def test_keys_in_doubt_are_held_not_sent(mode):
    p = plan(sink(mode), [contact(0), contact(3)], {}, in_doubt=[key(3)])
    assert keys_of(p) == [key(0)] and p.held == [key(3)]
    assert ("in_doubt", key(3)) in [(row[0], row[1]) for row in p.rows()]


def test_counts_and_rows():
    p = plan(sink("insert_once"), [*NOW, {"contact": {}}], delivered_of(*BEFORE), in_doubt=["x@shop.test"])
    assert p.counts() == {
        "created": 1, "updated": 0, "unchanged": 2, "rejected": 1, "deleted": 1, "held_in_doubt": 0,
        "skipped_insert_once": 1, "superseded": 0,
    }  # fmt: skip
    assert [(a, k) for a, k, _, _ in p.rows()] == [("create", key(3)), ("reject", None), ("delete", key(2))]


@pytest.mark.parametrize("n,size,calls", [(0, 1000, 0), (1, 1000, 1), (1000, 1000, 1), (2001, 1000, 3), (5, 2, 3)])
def test_batches_are_the_fewest_calls_in_record_order(n, size, calls):
    s = sink("upsert").model_copy(update={"batch_size": size})
    batches = plan(s, [contact(i) for i in range(n)], {}).batches()
    assert len(batches) == calls and [i.index for b in batches for i in b] == list(range(n))
