"""Load lifecycle: atomic commit with state, abort, exceptions, crashes, no leftover staging."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psycopg
import pytest

from integrations_pipeline.warehouse import LoadResult, WarehouseError
from integrations_pipeline_tests.warehouse.conftest import inventory_record


def _commit(wh, table, records, key="k", state=None):
    with wh.open_load(table, key) as load:
        load.write_batch(records)
        return load.commit(state)


def _staging_files(wh) -> list[str]:
    if wh.backend != "duckdb":
        return []
    try:
        return os.listdir(wh.staging_dir)
    except FileNotFoundError:
        return []


def _temp_tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname LIKE 'pg_temp%' AND c.relkind = 'r' AND c.relname LIKE 'ip_%'"
        ).fetchone()[0]


@pytest.fixture
def seeded(warehouse, inventory_table):
    """A table with two rows and a committed state."""
    _commit(warehouse, inventory_table, [inventory_record(1), inventory_record(2)], state={"cursor": "nov3"})
    return warehouse.read_records(inventory_table)


def _unchanged(warehouse, table, seeded):
    assert warehouse.read_records(table) == seeded
    assert warehouse.read_state("k") == {"cursor": "nov3"}
    assert _staging_files(warehouse) == []


def test_state_round_trip(warehouse, inventory_table):
    assert warehouse.read_state("trackstar.inventory:conn_a") is None
    state = {"cursor": "2026-11-03T00:00:00Z", "nested": {"pages": [1, 2]}, "n": 1.5, "ok": True, "none": None}
    _commit(warehouse, inventory_table, [inventory_record(1)], key="trackstar.inventory:conn_a", state=state)
    assert warehouse.read_state("trackstar.inventory:conn_a") == state
    assert warehouse.read_state("other") is None
    _commit(warehouse, inventory_table, [], key="trackstar.inventory:conn_a", state={"cursor": "later"})
    assert warehouse.read_state("trackstar.inventory:conn_a") == {"cursor": "later"}
    _commit(warehouse, inventory_table, [], key="trackstar.inventory:conn_a", state=None)
    assert warehouse.read_state("trackstar.inventory:conn_a") is None


def test_an_empty_load_still_commits_state(warehouse, inventory_table):
    with warehouse.open_load(inventory_table, "k") as load:
        assert load.commit({"done": True}) == LoadResult(0, 0, 0, 0)
    assert warehouse.read_state("k") == {"done": True}
    assert warehouse.row_count(inventory_table) == 0  # the table exists now, empty


def test_abort_leaves_table_and_state(warehouse, inventory_table, seeded):
    load = warehouse.open_load(inventory_table, "k")
    load.write_batch([inventory_record(1, onhand=-5), inventory_record(9)])
    load.abort()
    load.abort()  # idempotent
    assert load.status == "aborted"
    _unchanged(warehouse, inventory_table, seeded)
    with pytest.raises(WarehouseError, match="already aborted"):
        load.write_batch([inventory_record(3)])
    with pytest.raises(WarehouseError, match="already aborted"):
        load.commit({"cursor": "x"})


def test_exception_inside_the_context_aborts(warehouse, inventory_table, seeded):
    with pytest.raises(RuntimeError, match="page 2 failed"):
        with warehouse.open_load(inventory_table, "k") as load:
            load.write_batch([inventory_record(1, onhand=-5)])
            raise RuntimeError("page 2 failed")
    assert load.status == "aborted"
    _unchanged(warehouse, inventory_table, seeded)


def test_leaving_the_context_without_commit_aborts(warehouse, inventory_table, seeded):
    with warehouse.open_load(inventory_table, "k") as load:
        load.write_batch([inventory_record(7)])
    assert load.status == "aborted"
    _unchanged(warehouse, inventory_table, seeded)


def test_commit_once(warehouse, inventory_table):
    with warehouse.open_load(inventory_table, "k") as load:
        load.write_batch([inventory_record(1)])
        result = load.commit({"a": 1})
        assert load.status == "committed" and load.result == result and load.written == 1
        with pytest.raises(WarehouseError, match="already committed"):
            load.commit({"a": 2})
        with pytest.raises(WarehouseError, match="already committed"):
            load.write_batch([inventory_record(2)])
    assert warehouse.read_state("k") == {"a": 1}
    assert _staging_files(warehouse) == []


def test_failure_inside_commit_rolls_everything_back(warehouse, inventory_table, seeded, monkeypatch):
    load = warehouse.open_load(inventory_table, "k")
    load.write_batch([inventory_record(1, onhand=-5), inventory_record(9)])
    original = type(load)._merge

    def merge_then_crash(self, conn, source):
        original(self, conn, source)  # the rows are written inside the transaction...
        raise RuntimeError("power cut")  # ...which then never commits

    monkeypatch.setattr(type(load), "_merge", merge_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        load.commit({"cursor": "nov9"})
    assert load.status == "open"  # the staging survives a failed commit
    assert warehouse.read_records(inventory_table) == seeded
    assert warehouse.read_state("k") == {"cursor": "nov3"}
    # ...so the commit can be retried
    monkeypatch.setattr(type(load), "_merge", original)
    load.write_batch([inventory_record(10)])
    assert load.commit({"cursor": "nov9"}) == LoadResult(3, 2, 1, 0)
    assert warehouse.row_count(inventory_table) == 4
    assert warehouse.read_state("k") == {"cursor": "nov9"}
    assert _staging_files(warehouse) == []


def test_unreferenced_load_leaves_no_staging(warehouse, inventory_table):
    import gc

    load = warehouse.open_load(inventory_table, "k")
    load.write_batch([inventory_record(1)])
    if warehouse.backend == "duckdb":
        assert len(_staging_files(warehouse)) == 1
    del load
    gc.collect()
    assert _staging_files(warehouse) == []
    assert warehouse.row_count(inventory_table) == 0


def test_postgres_staging_is_session_private_and_dropped(postgres_url, inventory_table):
    from integrations_pipeline.warehouse import connect_warehouse

    with connect_warehouse(postgres_url) as wh:
        load = wh.open_load(inventory_table, "k")
        load.write_batch([inventory_record(1)])
        assert _temp_tables(postgres_url) == 1
        load.commit(None)
        assert _temp_tables(postgres_url) == 0
        with wh.open_load(inventory_table, "k") as load:
            load.write_batch([inventory_record(2)])
        assert _temp_tables(postgres_url) == 0


CRASHER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from integrations_pipeline.warehouse import Column, TableSpec, connect_warehouse
    table = TableSpec({schema!r}, "things", (Column("id", "string"), Column("v", "integer")), ("id",), None)
    wh = connect_warehouse({url!r})
    load = wh.open_load(table, "k")
    load.write_batch([{{"id": "a", "v": 2}}, {{"id": "new", "v": 1}}])
    os._exit(3)  # killed before commit: no cleanup of any kind runs
    """
)


def test_a_crash_before_commit_changes_nothing(warehouse, warehouse_url, unique_schema):
    from integrations_pipeline.warehouse import Column, TableSpec

    schema = unique_schema("crash")
    table = TableSpec(schema, "things", (Column("id", "string"), Column("v", "integer")), ("id",), None)
    _commit(warehouse, table, [{"id": "a", "v": 1}], state={"s": 1})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = CRASHER.format(root=root, schema=schema, url=warehouse_url)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert warehouse.read_records(table) == [{"id": "a", "v": 1}]
    assert warehouse.read_state("k") == {"s": 1}
    # the next load works normally
    assert _commit(warehouse, table, [{"id": "a", "v": 5}], state={"s": 2}) == LoadResult(1, 0, 1, 0)


def test_stale_staging_files_are_purged(duckdb_url, inventory_table):
    from integrations_pipeline.warehouse import connect_warehouse

    with connect_warehouse(duckdb_url) as wh:
        wh.staging_dir.mkdir(parents=True)
        stale = wh.staging_dir / "trackstar.inventory.dead.ndjson"
        stale.write_text("{}\n")
        os.utime(stale, (1_000_000_000, 1_000_000_000))
        fresh = wh.staging_dir / "trackstar.inventory.live.ndjson"
        fresh.write_text("{}\n")
        wh.open_load(inventory_table, "k").abort()
        assert not stale.exists() and fresh.exists()


def test_the_staging_of_a_killed_load_is_removed_by_the_next_load_at_once(duckdb_url, inventory_table, tmp_path):
    """A load killed with -9 leaves its parts; the next load of any table removes them (their owner is gone),
    and never a part whose writer still runs."""
    import signal
    import subprocess
    import sys
    import textwrap

    from integrations_pipeline.warehouse import connect_warehouse

    script = textwrap.dedent(f"""
        import dataclasses, os, signal, sys
        from integrations_pipeline.connectors import load_connectors
        from integrations_pipeline.warehouse import connect_warehouse, table_spec_for
        table = dataclasses.replace(table_spec_for(load_connectors()["trackstar"], "inventory"), schema={inventory_table.schema!r})
        wh = connect_warehouse({duckdb_url!r})
        load = wh.open_load(table, "k")
        load.write_batch([{{"id": "a", "updated_date": "2026-11-01T00:00:00Z", "_connection_id": "c"}}])
        print("staged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL and "staged" in child.stdout, child.stderr
    with connect_warehouse(duckdb_url) as wh:
        (left,) = os.listdir(wh.staging_dir)  # the killed load's part, minutes old at most
        with wh.open_load(inventory_table, "k2") as mine:
            mine.write_batch([inventory_record(1)])
            assert left not in os.listdir(wh.staging_dir)  # removed on sight: its writer is gone
            with wh.open_load(inventory_table, "k3") as other:
                other.write_batch([inventory_record(2)])
                assert len(os.listdir(wh.staging_dir)) == 2  # a live writer's parts are never touched


def test_staging_lives_beside_the_database(duckdb_url, inventory_table):
    from integrations_pipeline.warehouse import connect_warehouse

    with connect_warehouse(duckdb_url) as wh:
        with wh.open_load(inventory_table, "k") as load:
            load.write_batch([inventory_record(1)])
            (name,) = os.listdir(wh.staging_dir)
            assert str(wh.staging_dir) == wh.path + ".staging"
            assert name.startswith(f"{inventory_table.schema}.inventory.") and name.endswith(".ndjson")
            load.commit(None)
        assert not wh.staging_dir.exists()  # removed once empty


def test_a_staging_failure_breaks_the_load(warehouse, simple_table):
    from integrations_pipeline_tests.warehouse.conftest import simple_record

    with warehouse.open_load(simple_table, "k") as load:
        load.write_batch([simple_record(1)])
        if warehouse.backend == "postgres":
            # The staging session dies under us (a server restart): the COPY fails and takes its rows with it
            load._conn.close()
            with pytest.raises(WarehouseError):  # COPY writes are queued: it surfaces by the commit at the latest
                load.write_batch([simple_record(2)])
                load.commit({"s": 1})
        else:
            load._fh.close()  # the staging file vanishes under us (disk trouble)
            with pytest.raises(WarehouseError, match="closed file"):
                load.write_batch([simple_record(2)])
        with pytest.raises(WarehouseError, match="abort it and load the window again"):
            load.commit({"s": 1})
    assert load.status == "aborted"
    assert warehouse.row_count(simple_table) == 0
    assert warehouse.read_state("k") is None
