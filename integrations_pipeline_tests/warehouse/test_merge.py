"""One row per key, newest by cursor, whatever order windows are committed in; honest counts."""

from __future__ import annotations

import itertools

import pytest

from integrations_pipeline.warehouse import Column, LoadResult, TableSpec
from integrations_pipeline_tests.warehouse.conftest import by_key, inventory_record, simple_record

NOV3 = "2026-11-03T10:00:00Z"
NOV5 = "2026-11-05T10:00:00Z"
NOV7 = "2026-11-07T10:00:00Z"


def _commit(wh, table, pages, key="k", state=None):
    with wh.open_load(table, key) as load:
        for page in pages:
            load.write_batch(page)
        return load.commit(state)


def test_duplicates_within_a_load_keep_the_greatest_cursor(warehouse, inventory_table):
    pages = [
        [inventory_record(1, updated=NOV3, onhand=3), inventory_record(2, updated=NOV5, onhand=20)],
        [inventory_record(1, updated=NOV7, onhand=7), inventory_record(2, updated=NOV3, onhand=21)],
        [inventory_record(1, updated=NOV5, onhand=5)],
    ]
    result = _commit(warehouse, inventory_table, pages)
    assert result == LoadResult(staged=2, inserted=2, updated=0, unchanged=0)
    back = {r["id"]: r for r in warehouse.read_records(inventory_table)}
    assert back["inv_00001"]["onhand"] == 7 and back["inv_00001"]["updated_date"] == NOV7
    assert back["inv_00002"]["onhand"] == 20 and back["inv_00002"]["updated_date"] == NOV5


def test_duplicates_with_equal_cursor_keep_the_last_written(warehouse, inventory_table):
    pages = [
        [inventory_record(1, onhand=1), inventory_record(1, onhand=2)],
        [inventory_record(1, onhand=3)],
        [inventory_record(2, onhand=9)],
        [inventory_record(1, onhand=4), inventory_record(2, onhand=10)],
    ]
    result = _commit(warehouse, inventory_table, pages)
    assert result.staged == 2
    back = {r["id"]: r["onhand"] for r in warehouse.read_records(inventory_table)}
    assert back == {"inv_00001": 4, "inv_00002": 10}


def test_same_id_on_two_connections_is_two_rows(warehouse, inventory_table):
    pages = [[inventory_record(1, connection="a", onhand=1), inventory_record(1, connection="b", onhand=2)]]
    assert _commit(warehouse, inventory_table, pages).inserted == 2
    back = warehouse.read_records(inventory_table)
    assert [(r["_connection_id"], r["onhand"]) for r in back] == [("a", 1), ("b", 2)]


WINDOWS = {
    # window name → the version of each record that window returned
    "nov3": [inventory_record(1, updated=NOV3, onhand=3), inventory_record(2, updated=NOV3, onhand=3)],
    "nov5": [inventory_record(2, updated=NOV5, onhand=5), inventory_record(3, updated=NOV5, onhand=5)],
    "nov7": [inventory_record(1, updated=NOV7, onhand=7), inventory_record(3, updated=NOV7, onhand=7)],
}
NEWEST = [
    inventory_record(1, updated=NOV7, onhand=7),
    inventory_record(2, updated=NOV5, onhand=5),
    inventory_record(3, updated=NOV7, onhand=7),
]


@pytest.mark.parametrize("order", list(itertools.permutations(WINDOWS)), ids="-".join)
def test_newest_wins_whatever_the_commit_order(warehouse, inventory_table, order):
    for window in order:
        _commit(warehouse, inventory_table, [WINDOWS[window]], key=f"k:{window}", state={"window": window})
    assert warehouse.read_records(inventory_table) == NEWEST
    for window in order:
        assert warehouse.read_state(f"k:{window}") == {"window": window}


def test_counts_on_out_of_order_commits(warehouse, inventory_table):
    assert _commit(warehouse, inventory_table, [WINDOWS["nov7"]]) == LoadResult(2, 2, 0, 0)
    # Nov 3 holds an older record 1 (unchanged: the table keeps Nov 7) and a new record 2
    assert _commit(warehouse, inventory_table, [WINDOWS["nov3"]]) == LoadResult(2, 1, 0, 1)
    # Nov 5: record 2 is newer (updated), record 3 is older than Nov 7's (unchanged)
    assert _commit(warehouse, inventory_table, [WINDOWS["nov5"]]) == LoadResult(2, 0, 1, 1)
    assert warehouse.read_records(inventory_table) == NEWEST


def test_recommitting_a_window_is_idempotent(warehouse, inventory_table):
    records = [inventory_record(i) for i in range(10)]
    assert _commit(warehouse, inventory_table, [records], state={"c": 1}) == LoadResult(10, 10, 0, 0)
    before = warehouse.read_frame(inventory_table)
    assert _commit(warehouse, inventory_table, [records], state={"c": 1}) == LoadResult(10, 0, 0, 10)
    after = warehouse.read_frame(inventory_table)
    assert warehouse.read_records(inventory_table) == records
    assert list(before["_synced_at"]) == list(after["_synced_at"])  # unchanged rows are not rewritten


def test_equal_cursor_with_new_content_overwrites(warehouse, inventory_table):
    _commit(warehouse, inventory_table, [[inventory_record(1, onhand=1), inventory_record(2, onhand=2)]])
    result = _commit(warehouse, inventory_table, [[inventory_record(1, onhand=100), inventory_record(2, onhand=2)]])
    assert result == LoadResult(2, 0, 1, 1)
    assert [r["onhand"] for r in warehouse.read_records(inventory_table)] == [100, 2]


def test_extra_fields_count_as_content(warehouse, inventory_table):
    _commit(warehouse, inventory_table, [[inventory_record(1)]])
    assert _commit(warehouse, inventory_table, [[inventory_record(1, surprise=1)]]) == LoadResult(1, 0, 1, 0)
    assert warehouse.read_records(inventory_table) == [inventory_record(1, surprise=1)]
    assert _commit(warehouse, inventory_table, [[inventory_record(1)]]) == LoadResult(1, 0, 1, 0)
    assert warehouse.read_records(inventory_table) == [inventory_record(1)]


def test_null_cursor_is_the_oldest(warehouse, simple_table):
    _commit(warehouse, simple_table, [[simple_record(1, n=1)]])
    # an incoming row without a cursor does not replace one that has a cursor
    assert _commit(warehouse, simple_table, [[simple_record(1, updated=None, n=2)]]) == LoadResult(1, 0, 0, 1)
    assert warehouse.read_records(simple_table)[0]["n"] == 1
    # a stored row without a cursor is replaced by anything
    _commit(warehouse, simple_table, [[simple_record(2, updated=None, n=1)]])
    assert _commit(warehouse, simple_table, [[simple_record(2, updated=None, n=2)]]).updated == 1
    assert _commit(warehouse, simple_table, [[simple_record(2, n=3)]]).updated == 1
    assert warehouse.read_records(simple_table)[1]["n"] == 3
    # within a load, a cursor beats no cursor whatever the order
    _commit(warehouse, simple_table, [[simple_record(3, n=1)], [simple_record(3, updated=None, n=2)]])
    assert warehouse.read_records(simple_table)[2]["n"] == 1


def test_without_cursor_the_latest_write_wins(warehouse, unique_schema):
    table = TableSpec(
        unique_schema("wf"), "workflows", (Column("id", "string"), Column("name", "string")), ("id",), None
    )
    assert _commit(warehouse, table, [[{"id": "w1", "name": "a"}, {"id": "w1", "name": "b"}]]) == LoadResult(1, 1, 0, 0)
    assert _commit(warehouse, table, [[{"id": "w1", "name": "c"}, {"id": "w2", "name": "x"}]]) == LoadResult(2, 1, 1, 0)
    assert _commit(warehouse, table, [[{"id": "w1", "name": "c"}]]) == LoadResult(1, 0, 0, 1)
    assert warehouse.read_records(table) == [{"id": "w1", "name": "c"}, {"id": "w2", "name": "x"}]


def test_cursor_compares_as_time_not_text(warehouse, simple_table):
    # 12:00+02:00 is 10:00Z, earlier than 11:00Z although it sorts later as text
    _commit(warehouse, simple_table, [[simple_record(1, updated="2026-11-03T11:00:00Z", n=1)]])
    assert (
        _commit(warehouse, simple_table, [[simple_record(1, updated="2026-11-03T12:00:00+02:00", n=2)]]).unchanged == 1
    )
    assert warehouse.read_records(simple_table)[0]["n"] == 1


def test_large_overlapping_loads(warehouse, inventory_table):
    first = [inventory_record(i, updated=NOV3) for i in range(1500)]
    second = [inventory_record(i, updated=NOV5, onhand=-1) for i in range(1000, 2500)]
    assert _commit(warehouse, inventory_table, [first[i : i + 500] for i in range(0, 1500, 500)]) == LoadResult(
        1500, 1500, 0, 0
    )
    # pages overlap: record 1000..1099 appear twice in the second load
    pages = [second[:600], second[500:1500]]
    assert _commit(warehouse, inventory_table, pages) == LoadResult(1500, 1000, 500, 0)
    expected = by_key(first[:1000] + second, inventory_table)
    assert warehouse.read_records(inventory_table) == expected
    assert warehouse.row_count(inventory_table) == 2500
