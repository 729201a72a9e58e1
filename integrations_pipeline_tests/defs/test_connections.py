"""Connections the link flow stored are what the stream assets read, over loopback, on DuckDB and PostgreSQL.

A customer connects through the service (``/trackstar/store-token``); with no token pasted anywhere, the next
run of a Trackstar asset reads that customer's data. The fallback variable still works for single-token users,
and a connection the registry marks deleted is not read even when the variable still names it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.resources import WarehouseResource
from integrations_pipeline.warehouse import table_spec_for
from integrations_pipeline.warehouse.inbox import open_inbox
from integrations_pipeline_tests.linking import link, service
from integrations_pipeline_tests.partitions import connected_instance, stored_by_connection, trackstar_days

SPECS = load_connectors()
KEY = dg.AssetKey(["trackstar", "orders"])


def _run(url: str, connections=("conn_a", "conn_b"), raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """One run of ``trackstar/orders`` over every day of ``connections``' partitions."""
    defs = build_definitions()
    return dg.materialize(
        list(defs.assets),
        selection=[KEY],
        resources={**defs.resources, c.WAREHOUSE_RESOURCE: WarehouseResource(url=url)},
        tags=trackstar_days("2026-10-01", "2026-11-21", connections),
        instance=connected_instance(connections),
        raise_on_error=raise_on_error,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.to_string()  # Dagster's wrapper, then our error as its cause


def _partitions(result: dg.ExecuteInProcessResult) -> set[str]:
    return {str(e.partition).split("|")[0] for e in result.get_asset_materialization_events()}


def test_a_connection_linked_through_the_service_is_read_with_no_token_pasted(sandboxes, linked_env, warehouse_url):
    _, boxes = sandboxes
    link(service(linked_env, warehouse_url), linked_env, "code_b", customer_id="cust-1")
    result = _run(warehouse_url, ["conn_b"])
    assert result.success
    assert set(stored_by_connection(warehouse_url)) == {"conn_b"}
    # conn_a was never linked and no variable names it: a run of its partitions fails, saying so.
    refused = _run(warehouse_url, ["conn_a"], raise_on_error=False)
    assert not refused.success and "conn_a: unknown" in _failure(refused)
    with open_inbox(warehouse_url) as wh:
        rows = wh.read_records(table_spec_for(SPECS["trackstar"], "orders"))
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in boxes["trackstar"].truth("orders", "conn_b"))


def test_stored_tokens_need_the_key_and_the_run_says_which(sandboxes, linked_env, warehouse_url, monkeypatch):
    link(service(linked_env, warehouse_url), linked_env, "code_a", customer_id="cust-1")
    monkeypatch.delenv("INTEGRATIONS_PIPELINE_SECRET_KEY")
    result = _run(warehouse_url, ["conn_a"], raise_on_error=False)
    assert not result.success
    message = _failure(result)
    assert "INTEGRATIONS_PIPELINE_SECRET_KEY" in message and "conn_a" in message


def test_the_variable_is_a_fallback_and_a_deleted_connection_is_not_read(
    sandboxes, linked_env, warehouse_url, monkeypatch
):
    _, boxes = sandboxes
    link(service(linked_env, warehouse_url), linked_env, "code_b", customer_id="cust-1")
    with open_inbox(warehouse_url) as wh:
        assert wh.set_connection_status("trackstar", ["conn_b"], "deleted", now=datetime.now(UTC)) == 1
    tokens = boxes["trackstar"].connections
    monkeypatch.setenv("TRACKSTAR_ACCESS_TOKEN", ",".join(f"{cid}={tok}" for cid, tok in tokens.items()))
    result = _run(warehouse_url, raise_on_error=False)
    # conn_a (the variable's) is read and its partitions reported; conn_b's fail, naming why.
    assert not result.success and "conn_b: deleted" in _failure(result)
    assert _partitions(result) == {"conn_a"}
    assert set(stored_by_connection(warehouse_url)) == {"conn_a"}
