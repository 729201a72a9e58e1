"""Fault tolerance end to end: engine → sandbox faults → real warehouse.

With each injected fault the warehouse must end identical to a fault-free run (nothing lost, nothing
doubled), and a window that finally fails must leave its rows and its cursor exactly as they were.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integrations_pipeline.defs.assets import WarehouseDestination
from integrations_pipeline.engine.errors import RetriesExhaustedError
from integrations_pipeline.engine.read.extract import Window
from integrations_pipeline.engine.read.load import load_stream
from integrations_pipeline.warehouse import connect_warehouse, table_spec_for

from .harness import ALL_TIME_END, sort_key, vendor_harness

WINDOW = Window(datetime(2026, 10, 1, tzinfo=UTC), ALL_TIME_END)
FAULTS = ["429", "500", "502", "503", "timeout", "reset", "truncated", "duplicate"]
CASES = [("trackstar", "inventory"), ("trackstar", "orders"), ("salestrekker", "deals")]


def _sync(h, stream, url, window=WINDOW, progress=None):
    wh = connect_warehouse(url)
    try:
        table = table_spec_for(h.spec, stream)
        wh.ensure_table(table)
        with h.client() as client:
            result = load_stream(
                client, stream, WarehouseDestination(wh, table), h.connections(), window=window, progress=progress
            )
        return result, client.stats, sorted(wh.read_records(table), key=sort_key(list(table.primary_key)))
    finally:
        wh.close()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("connector", "stream"), CASES, ids=[f"{c}/{s}" for c, s in CASES])
def test_each_fault_leaves_the_warehouse_as_a_clean_run_would(connector, stream, fault, tmp_path):
    clean = vendor_harness(connector)
    _, _, expected = _sync(clean, stream, f"duckdb:///{tmp_path / 'clean.duckdb'}")

    faulty = vendor_harness(connector)
    # Faults start after the first request (login, for GraphQL) so they land mid-stream too.
    faulty.sandbox.faults.inject(fault, times=3)
    result, stats, got = _sync(faulty, stream, f"duckdb:///{tmp_path / 'faulty.duckdb'}")

    assert got == expected  # no record lost, none doubled, same versions
    assert len(got) == len({tuple(sort_key(["_connection_id", "id"])(r)) for r in got})
    if fault != "duplicate":
        assert stats.retries >= 3
        assert faulty.sandbox.faults.pending() == 0
    else:
        assert result.records > len(got)  # the overlap really was delivered, and deduplicated


def test_a_window_that_finally_fails_leaves_rows_and_cursor_unchanged(tmp_path):
    h = vendor_harness("trackstar")
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    wh = connect_warehouse(url)
    table = table_spec_for(h.spec, "inventory")
    wh.ensure_table(table)
    dest = WarehouseDestination(wh, table)
    with h.client() as client:
        load_stream(client, "inventory", dest, h.connections(), now=ALL_TIME_END)
    rows_before = sorted(wh.read_records(table), key=sort_key(list(table.primary_key)))
    states_before = {c.id: wh.read_state(f"trackstar.inventory.{c.id}") for c in h.connections()}
    assert all(states_before.values())

    last = max(r["updated_date"] for r in h.sandbox.truth("inventory", "conn_a"))
    later = datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(minutes=5)
    h.sandbox.add("inventory", 1500, later, "conn_a")  # two pages of new records

    # Every request after the first page of this read fails, more often than the retry policy tries. Set
    # while the vendor serves page 1: the next page is fetched ahead of staging, so a hook on our side
    # ("page 1 staged") would come after page 2 was already read.
    inner = h.sandbox.handle

    served: list[str] = []

    def fail_after_first_page(request):
        response = inner(request)
        if request.url.path == "/wms/inventory" and not served:
            served.append(str(request.url))
            h.sandbox.faults.inject("503", times=50)
        return response

    h.sandbox.handle = fail_after_first_page
    with h.client() as client, pytest.raises(RetriesExhaustedError, match="503"):
        load_stream(client, "inventory", dest, h.connections(), now=ALL_TIME_END)
    assert len(served) == 1  # page 1 was answered; the read failed on the page after it

    assert sorted(wh.read_records(table), key=sort_key(list(table.primary_key))) == rows_before
    assert {c.id: wh.read_state(f"trackstar.inventory.{c.id}") for c in h.connections()} == states_before
    wh.close()


def test_a_sliced_range_keeps_the_days_before_a_failure_and_resumes_after_them(tmp_path):
    """A backfill range read a day at a time: a day that finally fails keeps the days before it
    committed (rows and checkpoint), and reading the same range again reads only from that day on."""
    h = vendor_harness("trackstar")
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    days = [datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=i) for i in range(11)]
    window = Window(days[0], days[-1])  # ten days
    failing_day = days[6].strftime("%Y-%m-%dT%H:%M:%S")
    asked: list[str] = []
    inner = h.sandbox.handle

    def vendor(request):
        since = request.url.params.get("updated_date[gte]", "")
        if request.url.path == "/wms/inventory":
            asked.append(since)
            if since.startswith(failing_day) and h.sandbox.faults.pending() == 0 and not getattr(vendor, "done", 0):
                vendor.done = 1  # type: ignore[attr-defined]
                h.sandbox.faults.inject("503", times=50, path_prefix="/wms/inventory")
        return inner(request)

    h.sandbox.handle = vendor
    wh = connect_warehouse(url)
    table = table_spec_for(h.spec, "inventory")
    wh.ensure_table(table)
    dest = WarehouseDestination(wh, table)
    (conn_a,) = [c for c in h.connections() if c.id == "conn_a"]
    with h.client() as client, pytest.raises(RetriesExhaustedError, match="503"):
        load_stream(client, "inventory", dest, [conn_a], window=window, slice_by=timedelta(days=1))
    assert [a[:10] for a in asked if not a.startswith(failing_day)] == [
        d.strftime("%Y-%m-%d") for d in days[:6]
    ]  # one page per day, days 1-6, then day 7 failed

    def truth(until):
        return sorted(
            (r for r in h.sandbox.truth("inventory", "conn_a") if days[0].isoformat()[:19] <= r["updated_date"][:19] < until.isoformat()[:19]),
            key=lambda r: r["id"],
        )  # fmt: skip

    def stored():
        return sorted((r for r in wh.read_records(table) if r["_connection_id"] == "conn_a"), key=lambda r: r["id"])

    kept = truth(days[6])
    assert kept and [r["id"] for r in stored()] == [r["id"] for r in kept]  # days 1-6 committed, day 7 not
    state = wh.read_state("trackstar.inventory.conn_a")
    assert state["ranges"] == {f"{days[0].isoformat().replace('+00:00', 'Z')}|{days[-1].isoformat().replace('+00:00', 'Z')}": days[6].isoformat().replace("+00:00", "Z")}  # fmt: skip

    asked.clear()
    h.sandbox.faults.clear()  # the vendor recovered
    with h.client() as client:
        result = load_stream(client, "inventory", dest, [conn_a], window=window, slice_by=timedelta(days=1))
    (outcome,) = result.outcomes
    assert outcome.resumed_after == days[6].isoformat().replace("+00:00", "Z") and outcome.slices == 4
    assert [a[:10] for a in asked] == [d.strftime("%Y-%m-%d") for d in days[6:10]]  # only the days left
    assert [r["id"] for r in stored()] == [r["id"] for r in truth(days[-1])]
    assert "ranges" not in wh.read_state("trackstar.inventory.conn_a")  # the range is done
    wh.close()
