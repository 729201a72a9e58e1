"""The reverse-ETL diff: which records to send given what was delivered, per sink mode; hash stability."""

from __future__ import annotations

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.write.diff import Diff, diff, key_text, outcome_rows, record_hash
from integrations_pipeline.engine.write.sinks import Outcome, WriteReport

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
    [({"n": 1}, {"n": 1.0}), ({"n": 1}, {"n": "1"}), ({"l": [1, 2]}, {"l": [2, 1]}), ({"v": None}, {}), ({"b": True}, {"b": 1})],
)
def test_hash_tells_apart_what_json_tells_apart(a, b):
    assert record_hash(a) != record_hash(b)


def test_key_text_is_canonical():
    assert key_text("x") == "x"
    assert key_text(7) == key_text(7.0) == key_text("7") == "7"
    assert key_text(True) == "true"
    assert key_text(None) is None


# -- diff, table-driven over modes ------------------------------------------------------------------

# Delivered before: c0 (same now), c1 (changed now), c2 (absent now). New now: c3.
BEFORE = [contact(0), contact(1), contact(2)]
NOW = [contact(0), contact(1, " v2"), contact(3)]

CASES = {
    # mode: (to_send keys, created, updated, unchanged, skipped_insert_once)
    "upsert": ([key(1), key(3)], [key(3)], [key(1)], [key(0)], []),
    "delete": ([key(1), key(3)], [key(3)], [key(1)], [key(0)], []),
    "insert_once": ([key(3)], [key(3)], [], [key(0), key(1)], [key(1)]),
    "append": ([key(3)], [key(3)], [], [key(0), key(1)], []),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_diff_by_mode(mode):
    to_send, created, updated, unchanged, skipped = CASES[mode]
    d = diff(sink(mode), NOW, delivered_of(*BEFORE))
    emails = lambda records: [r["contact"]["email"] for r in records]  # noqa: E731
    assert emails(d.to_send) == to_send
    assert emails(d.created) == created
    assert emails(d.updated) == updated
    assert d.unchanged == unchanged
    assert d.skipped_insert_once == skipped
    assert d.deleted == [key(2)]
    assert set(d.hashes) == set(to_send)
    assert all(d.hashes[r["contact"]["email"]] == record_hash(r) for r in d.to_send)


@pytest.mark.parametrize("mode", sorted(CASES))
def test_nothing_delivered_sends_everything_and_everything_delivered_sends_nothing(mode):
    records = [contact(i) for i in range(5)]
    first = diff(sink(mode), records, {})
    assert first.to_send == records and len(first.created) == 5 and first.deleted == []
    again = diff(sink(mode), records, {k: first.hashes[k] for k in first.hashes})
    assert again.to_send == [] and len(again.unchanged) == 5


def test_key_order_of_a_record_does_not_make_it_changed():
    before = {"contact": {"email": key(0), "name": "A", "phone": "1"}}
    now = {"contact": {"phone": "1", "name": "A", "email": key(0)}}
    assert diff(sink("upsert"), [now], delivered_of(before)).to_send == []


def test_duplicates_last_wins_like_the_writer():
    records = [contact(0, " old"), contact(1), contact(0, " new")]
    d = diff(sink("upsert"), records, {})
    assert d.superseded == 1
    assert [r["contact"]["name"] for r in d.to_send] == ["Name 0 new", "Name 1"]
    assert d.hashes[key(0)] == record_hash(contact(0, " new"))


def test_keyless_records_are_sent_for_the_writer_to_reject():
    keyless = [{"contact": {"name": "no email"}}, "not a record", {"contact": {"email": None}}]
    d = diff(sink("upsert"), [contact(0), *keyless], {})
    assert d.keyless == keyless
    assert d.to_send == [contact(0), *keyless]
    assert list(d.hashes) == [key(0)]


def test_keys_compare_as_text():
    products = load_connectors()["salesmanago"].sinks["products"]  # key productId, top level
    before = {"productId": 7, "name": "P"}
    d = diff(products, [{"productId": "7", "name": "P"}, {"productId": 7.0, "name": "P"}], {"7": record_hash(before)})
    # "7" and 7.0 are one key (the later wins); 7.0 hashes differently from 7, so it is an update.
    assert d.superseded == 1 and len(d.updated) == 1 and d.deleted == []


def test_counts():
    d = diff(sink("insert_once"), NOW, delivered_of(*BEFORE))
    assert d.counts() == {
        "created": 1, "updated": 0, "unchanged": 2, "deleted": 1, "skipped_insert_once": 1, "keyless": 0, "superseded": 0,
    }
    assert isinstance(Diff(), Diff)


def test_outcome_rows_split_sent_and_rejected():
    d = diff(sink("upsert"), [contact(0), contact(1), {"contact": {}}], {})
    report = WriteReport(
        sink="contacts_batch",
        outcomes=[
            Outcome(0, key(0), "sent", response={"contact_id": "id0"}),
            Outcome(1, key(1), "rejected", "name: too long", stage="vendor"),
            Outcome(2, None, "rejected", "contact.email: required field is missing", stage="validation"),
        ],
    )
    delivered, rejected = outcome_rows(d, report)
    assert delivered == [(key(0), record_hash(contact(0)), {"contact_id": "id0"})]
    assert rejected == [
        (key(1), "name: too long", contact(1)),
        (None, "contact.email: required field is missing", {"contact": {}}),
    ]


def test_large_inputs_take_one_lookup_per_record():
    # Not a benchmark (see the report for figures): a guard against accidental quadratic behaviour.
    import time

    n = 200_000
    records = [{"contact": {"email": f"c{i}@x.test", "name": "N"}} for i in range(n)]
    start = time.perf_counter()
    first = diff(sink("upsert"), records, {})
    again = diff(sink("upsert"), records, first.hashes)
    assert len(first.created) == n and again.to_send == []
    assert time.perf_counter() - start < 20
