"""Reverse ETL end to end: sandbox truth in the source → sync assets → the target sandboxes hold
exactly the mapped records; a re-run makes zero write calls; 3 changed sources → exactly 3 sent."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg
import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.engine.write.mapping import map_record
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.syncs import load_syncs
from integrations_pipeline_tests.partitions import connected_instance, trackstar_days

CONNECTORS = load_connectors()
SYNCS = load_syncs(CONNECTORS)
SOURCES = [dg.AssetKey(["trackstar", "orders"]), dg.AssetKey(["trackstar", "products"])]
PRODUCTS_TO_SM = dg.AssetKey(["salesmanago", "trackstar_products_to_salesmanago_products"])
PRODUCTS_TO_TRAKOR = dg.AssetKey(["trakor", "trackstar_products_to_trakor_products"])
ORDERS_TO_EVENTS = dg.AssetKey(["salesmanago", "trackstar_orders_to_salesmanago_events"])
TARGETS = [PRODUCTS_TO_SM, PRODUCTS_TO_TRAKOR, ORDERS_TO_EVENTS]
ALL_DAYS = trackstar_days("2026-10-01", "2026-11-21")


def _run(defs, keys, tags=None):
    result = dg.materialize(
        list(defs.assets),
        selection=keys,
        resources=defs.resources,
        tags=tags or {},
        instance=connected_instance(),
    )
    assert result.success
    return {
        e.asset_key: e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def _serve(monkeypatch, tmp_path, seed: int, sizes: dict[str, int]):
    boxes = default_sandboxes(seed=seed, sizes=sizes)
    with serve(boxes) as servers:
        for name, value in sandbox_environment(servers.base_urls, boxes).items():
            monkeypatch.setenv(name, value)
        # Every resource (warehouse, sink IO managers) binds to this warehouse via the variable.
        monkeypatch.setenv("WAREHOUSE_URL", f"duckdb:///{tmp_path / 'w.duckdb'}")
        yield boxes


@pytest.fixture
def small_sandboxes(monkeypatch, tmp_path):
    """Sandboxes sized so one-record-per-call targets (Trakor, paced at 10/s) stay quick."""
    yield from _serve(monkeypatch, tmp_path, 3, {"products": 40, "orders": 700, "inventory": 10})


def _truth(box, stream):
    return [{**r, "_connection_id": conn} for conn in box.connections for r in box.truth(stream, conn)]


def test_syncs_deliver_exactly_the_mapped_records_and_only_changes(small_sandboxes):
    boxes = small_sandboxes
    trackstar, sm, trakor = boxes["trackstar"], boxes["salesmanago"], boxes["trakor"]
    defs = build_definitions()
    _run(defs, SOURCES, ALL_DAYS)
    first = _run(defs, TARGETS)

    # SALESmanago catalog: exactly the mapped products.
    sync = SYNCS["trackstar_products_to_salesmanago_products"]
    want = {m["productId"]: m for m in (map_record(sync, r) for r in _truth(trackstar, "products"))}
    got = {pid: p for (_, pid), p in sm.products.items()}
    assert set(got) == set(want)
    assert all(got[k]["name"] == want[k]["name"] and got[k]["price"] == want[k]["price"] for k in want)
    md = first[PRODUCTS_TO_SM]
    assert md["created"].value == len(want) and md["write_calls"].value == -(-len(want) // 100)
    # Trakor: one product per distinct name (idempotent by name).
    names = {
        map_record(SYNCS["trackstar_products_to_trakor_products"], r)["name"] for r in _truth(trackstar, "products")
    }
    assert set(trakor.products) == names
    # SALESmanago events: one PURCHASE per order, keyed by the order id.
    orders = _truth(trackstar, "orders")
    events = sm.events_by_external_id()
    assert set(events) == {o["id"] for o in orders}
    assert all(len(v) == 1 for v in events.values())
    assert first[ORDERS_TO_EVENTS]["write_calls"].value == -(-len(orders) // 1000)

    # Nothing changed: zero write calls everywhere.
    calls_before = (sm.write_calls, trakor.write_calls)
    second = _run(defs, TARGETS)
    assert (sm.write_calls, trakor.write_calls) == calls_before
    assert all(second[k]["write_calls"].value == 0 for k in TARGETS)

    # Three products change at the source: exactly those three reach the catalog, in one call.
    changed = trackstar.touch("products", 3, datetime(2026, 11, 20, 12, tzinfo=UTC), "conn_a")
    _run(
        defs,
        [dg.AssetKey(["trackstar", "products"])],
        trackstar_days("2026-11-20", "2026-11-20"),
    )
    third = _run(defs, [PRODUCTS_TO_SM, PRODUCTS_TO_TRAKOR])
    # Trakor is keyed by name: a renamed product is a new product there, one call each.
    trakor_md = third[PRODUCTS_TO_TRAKOR]
    assert trakor_md["created"].value == trakor_md["write_calls"].value == 3
    assert trakor_md["skipped_insert_once"].value == 0 and trakor_md["updated"].value == 0
    md = third[PRODUCTS_TO_SM]
    assert md["updated"].value == 3 and md["created"].value == 0 and md["write_calls"].value == 1
    assert md["unchanged"].value == len(want) - 3
    assert len(changed) == 3


@pytest.fixture
def catalog_sandboxes(monkeypatch, tmp_path):
    """Enough products for three catalog calls (batch limit 100)."""
    yield from _serve(monkeypatch, tmp_path, 4, {"products": 125, "orders": 10, "inventory": 10})


def test_a_crash_mid_sync_then_a_rerun_sends_only_the_rest(catalog_sandboxes):
    boxes = catalog_sandboxes
    trackstar, sm = boxes["trackstar"], boxes["salesmanago"]
    defs = build_definitions()
    _run(defs, [dg.AssetKey(["trackstar", "products"])], ALL_DAYS)
    total = len(_truth(trackstar, "products"))
    assert total == 250

    # The first catalog call lands; then the vendor fails past the retry policy: the run fails.
    with outage_after_first_call(sm, "/v3/product/upsert", _server_error):
        result = dg.materialize(
            list(defs.assets),
            selection=[PRODUCTS_TO_SM],
            resources=defs.resources,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    assert not result.success
    assert len(sm.products) == 100  # the first batch arrived before the failure

    md = _run(defs, [PRODUCTS_TO_SM])[PRODUCTS_TO_SM]
    # The delivered batch was recorded despite the failure: only the other 150 go, in 2 calls.
    assert md["created"].value == 150 and md["write_calls"].value == 2 and md["unchanged"].value == 100
    sync = SYNCS["trackstar_products_to_salesmanago_products"]
    assert {pid for (_, pid) in sm.products} == {
        map_record(sync, r)["productId"] for r in _truth(trackstar, "products")
    }


@contextmanager
def outage_after_first_call(box, path: str, response):
    """The sandbox answers its first call to ``path`` as usual, then ``response()`` to every later one."""
    calls = {"n": 0}
    original = box.handle

    def failing(request):
        if request.url.path == path:
            calls["n"] += 1
            if calls["n"] > 1:
                return response()
        return original(request)

    box.handle = failing
    try:
        yield
    finally:
        box.handle = original


def _server_error():
    import httpx

    return httpx.Response(500, json={"messages": ["injected outage"], "reasonCode": 500})


@pytest.fixture
def orders_sandboxes(monkeypatch, tmp_path):
    yield from _serve(monkeypatch, tmp_path, 5, {"products": 5, "orders": 350, "inventory": 5})


def test_events_in_doubt_fail_the_run_and_the_check_until_a_person_settles_them(orders_sandboxes, capsys):
    """SALESmanago applies part of the events batch, then answers 500: nothing is retried or doubled; the
    run fails, the records wait in the in-doubt table (the check says so), and the CLI and the sync's
    run config settle them: mark delivered what the target has, resend what it lacks."""
    from integrations_pipeline.cli import main

    boxes = orders_sandboxes
    trackstar, sm = boxes["trackstar"], boxes["salesmanago"]
    defs = build_definitions()
    _run(defs, [dg.AssetKey(["trackstar", "orders"])], ALL_DAYS)
    orders = {o["id"] for o in _truth(trackstar, "orders")}
    assert len(orders) == 700
    sm.fail_batch_after(250)  # 250 events stored, then a 500

    instance = dg.DagsterInstance.ephemeral()
    everything = [*defs.assets, *defs.asset_checks]
    failed = dg.materialize(
        everything, selection=[ORDERS_TO_EVENTS], resources=defs.resources, instance=instance, raise_on_error=False
    )
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.error.message
    assert "records in doubt (in the in-doubt table)" in failure and "in-doubt list" in failure
    assert len(sm.events) == 250 and sm.write_calls == 1

    # The next run sends nothing (the 700 are held) and the check fails, naming them.
    result = dg.materialize(everything, selection=[ORDERS_TO_EVENTS], resources=defs.resources, instance=instance)
    md = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert (md["held_in_doubt"].value, md["write_calls"].value) == (700, 0)
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "no_deliveries_in_doubt" and not check.passed
    assert check.metadata["in_doubt"].value == 700

    assert main(["in-doubt", "list", "--sync", "trackstar_orders_to_salesmanago_events"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 700 and all("outcome unknown: HTTP 500" in line for line in listed)

    # A person looks at SALESmanago: 250 are there (mark them delivered), 450 are not (resend them).
    there = sorted({str(e["externalId"]) for e in sm.events})
    args = ["in-doubt", "mark-delivered", "--sync", "salesmanago/trackstar_orders_to_salesmanago_events"]
    assert main([*args, *(x for k in there for x in ("--key", k))]) == 0
    config = {"ops": {ORDERS_TO_EVENTS.to_python_identifier(): {"config": {"in_doubt": "resend"}}}}
    result = dg.materialize(
        everything, selection=[ORDERS_TO_EVENTS], resources=defs.resources, instance=instance, run_config=config
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    events = sm.events_by_external_id()
    assert set(events) == orders and all(len(v) == 1 for v in events.values())
