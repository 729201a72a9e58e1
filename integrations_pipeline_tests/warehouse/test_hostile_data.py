"""Odd data and unlucky timing on both backends: U+0000 in strings, loads of one key committing out of order."""

from __future__ import annotations

from integrations_pipeline.engine.read.load import merge_cursor_state

from .conftest import simple_record


def test_one_record_with_nul_never_fails_its_window(warehouse, simple_table):
    """PostgreSQL text and jsonb hold neither U+0000 nor a lone surrogate, DuckDB's JSON reader refuses a
    lone surrogate: both backends store them as U+FFFD, and the window loads."""
    records = [
        simple_record(1, name="nul\x00inside"),
        simple_record(2, data={"k\x00": ["a\x00b", {"deep": "\x00"}]}),
        simple_record(3, name="lone \ud800 surrogate, a pair 🚚 kept"),
        simple_record(4),
    ]
    with warehouse.open_load(simple_table, "k:nul") as load:
        load.write_batch(records)
        result = load.commit({"cursor": "2026-11-03T10:00:00Z"})
    assert result.inserted == 4
    rows = {r["id"]: r for r in warehouse.read_records(simple_table)}
    nul = "\ufffd"
    assert rows["t001"]["name"] == f"nul{nul}inside"
    assert rows["t002"]["data"] == {f"k{nul}": [f"a{nul}b", {"deep": nul}]}
    assert rows["t003"]["name"] == "lone \ufffd surrogate, a pair 🚚 kept"
    assert rows["t004"]["name"] == "thing 4"


def test_a_reject_holding_nul_is_recorded(warehouse):
    warehouse.record_rejects("s", [("k", "bad", {"name": "a\x00b"})])
    (row,) = warehouse.read_rejects("s")
    assert row["record"] == {"name": "a\ufffdb"}  # the bookkeeping tables store it alike on both backends


def _state(cursor: str, *ids: str) -> dict:
    return {"cursor": cursor, "ids_at_cursor": list(ids)}


def test_the_cursor_never_moves_back_when_loads_commit_out_of_order(warehouse, simple_table):
    # A backfill of an older window and a newer run of the same key: the newer commits first.
    older = warehouse.open_load(simple_table, "k:a")
    newer = warehouse.open_load(simple_table, "k:a")
    older.write_batch([simple_record(1, updated="2026-11-01T10:00:00Z")])
    newer.write_batch([simple_record(2, updated="2026-11-05T10:00:00Z")])
    newer.commit(_state("2026-11-05T10:00:00Z", "t002"), merge_cursor_state)
    older.commit(_state("2026-11-01T10:00:00Z", "t001"), merge_cursor_state)
    assert warehouse.read_state("k:a") == _state("2026-11-05T10:00:00Z", "t002")
    assert {r["id"] for r in warehouse.read_records(simple_table)} == {"t001", "t002"}  # rows stay exact
    # The same cursor from two loads: the ids at it are united; a later cursor replaces.
    again = warehouse.open_load(simple_table, "k:a")
    again.commit(_state("2026-11-05T10:00:00Z", "t009"), merge_cursor_state)
    assert warehouse.read_state("k:a") == _state("2026-11-05T10:00:00Z", "t002", "t009")
    later = warehouse.open_load(simple_table, "k:a")
    later.commit(_state("2026-11-06T00:00:00.250000Z", "t003"), merge_cursor_state)
    assert warehouse.read_state("k:a") == _state("2026-11-06T00:00:00.250000Z", "t003")


def test_merge_cursor_state_table():
    a, b = _state("2026-11-05T10:00:00Z", "x"), _state("2026-11-05T10:00:00.5Z", "y")
    assert merge_cursor_state(None, a) == a
    assert merge_cursor_state(a, None) == a
    assert merge_cursor_state(a, b) == b and merge_cursor_state(b, a) == b  # sub-second precision compares as time
    assert merge_cursor_state(a, {"cursor": None}) == a
    assert merge_cursor_state({"cursor": "garbage"}, a) == a
