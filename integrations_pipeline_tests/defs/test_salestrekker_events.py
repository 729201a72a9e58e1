"""Salestrekker's id-only webhooks into data, over loopback, on DuckDB and PostgreSQL: the sandbox posts
``{id, event}``, the service stores it, ``apply_webhook_events`` reads each named deal once with ``ticket(id)`` (no
list query) and merges it by the newest-by-cursor rule; a deleted ticket settles, a transient failure waits and
is retried; end to end, a deal moved to won reaches SALESmanago once in the events sensor's one run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from integrations_pipeline.connectors import SPEC_DIR, load_connectors
from integrations_pipeline.dagster import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.events import JOB_NAME, SENSOR_NAME
from integrations_pipeline.defs.resources import WarehouseResource
from integrations_pipeline.defs.sensors import SENSOR_NAME as SYNC_SENSOR
from integrations_pipeline.engine.read.events import APPLIED_BY_READ, RETRY
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.warehouse import table_spec_for
from integrations_pipeline.warehouse.inbox import open_inbox

from .test_events import AT, _service

SPECS = load_connectors()
DEALS = dg.AssetKey(["salestrekker", "deals"])
CRM = [DEALS, dg.AssetKey(["salestrekker", "contacts"]), dg.AssetKey(["salestrekker", "workflows"])]
CRM_DAYS = {"dagster/asset_partition_range_start": "2026-10-01", "dagster/asset_partition_range_end": "2026-11-21"}
TO_SM_EVENTS = dg.AssetKey(["salesmanago", "salestrekker_deals_to_salesmanago_events"])
TO_SM_CONTACTS = dg.AssetKey(["salesmanago", "salestrekker_contacts_to_salesmanago_contacts"])
ST_EVENTS = dg.AssetKey(["salestrekker", "webhook_events"])
NO_SUCH_TICKET = "00000000-0000-4000-a000-999999999999"


@pytest.fixture
def crm(monkeypatch):
    """Small sandboxes (the CRM's syncs stay quick) on loopback, the environment pointed at them."""
    boxes = default_sandboxes(seed=3, sizes={"deals": 60, "contacts": 60, "orders": 5, "products": 5, "inventory": 5})
    with serve(boxes, timeout_stall_seconds=2.0) as servers:
        env = sandbox_environment(servers.base_urls, boxes)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("WAREHOUSE_URL", raising=False)
        yield boxes, env


def _deals(url: str) -> dict[str, dict]:
    with open_inbox(url) as wh:
        return {r["id"]: r for r in wh.read_records(table_spec_for(SPECS["salestrekker"], "deals"))}


def _events(url: str) -> list:
    with open_inbox(url) as wh:
        return wh.read_events("salestrekker")


def _deliver(box, env: dict[str, str], url: str) -> int:
    http = _service(env, url)
    box.webhooks.subscribe(f"http://testserver/webhooks/salestrekker/{box.webhook_token}")
    try:
        return box.webhooks.deliver(http)
    finally:
        box.webhooks.url = None


def _materializations(result) -> set[tuple[dg.AssetKey, str | None]]:
    mats = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    return {(m.asset_key, m.partition) for m in mats if m.asset_key.path[-1] != "webhook_events"}  # streams


def _same(stored: dict, truth: dict) -> bool:
    fields = ("id", "idStage", "updatedAt", "isWon", "isSettled", "wonAt", "values")
    return all(stored.get(f) == truth.get(f) for f in fields)


def test_changed_deals_are_read_once_per_id_and_merged(crm, warehouse_url):
    boxes, env = crm
    st = boxes["salestrekker"]
    st.webhooks.subscribe("http://placeholder")  # queue from the first change; delivered below
    touched = st.touch("deals", 4, AT)
    st.change_deal(touched[0], AT + timedelta(minutes=15))  # a second event for one deal
    st.announce(touched[1], "DealUpdated")  # and a notice repeated: six events, four deals
    assert _deliver(st, env, warehouse_url) == 6

    defs = build_definitions(warehouse_url=warehouse_url)
    before = dict(st.counts)
    result = defs.resolve_job_def(JOB_NAME).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    reads = {k: st.counts[k] - before.get(k, 0) for k in st.counts}
    assert reads["graphql ticket"] == 4 and reads.get("graphql tickets", 0) == 0  # by id, never the list
    assert all(reads[f"ticket {i}"] == 1 for i in touched)

    stored, truth = _deals(warehouse_url), {d["id"]: d for d in st.truth("deals")}
    assert set(stored) == set(touched)  # nothing but what the events named (no load ran)
    assert all(_same(stored[i], truth[i]) for i in touched), [(stored[i], truth[i]) for i in touched][:1]
    events = _events(warehouse_url)
    assert len(events) == 6 and {e.outcome for e in events} == {APPLIED_BY_READ} and all(e.applied_at for e in events)

    # Reported for the days the changes carry, with the reads it took.
    assert _materializations(result) == {(DEALS, "2026-11-25")}
    (mat,) = [
        m
        for e in result.get_asset_materialization_events()
        if (m := e.step_materialization_data.materialization).asset_key == DEALS
    ]
    assert mat.metadata[c.API_CALLS].value == 4 and mat.metadata["webhook_events"].value == 6

    # Nothing pending: the next run reads nothing and reports nothing.
    again = defs.resolve_job_def(JOB_NAME).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert again.success and not _materializations(again)
    assert st.counts["graphql ticket"] - before.get("graphql ticket", 0) == 4


def test_an_older_read_never_overwrites_a_newer_row(crm, warehouse_url):
    boxes, env = crm
    st = boxes["salestrekker"]
    st.webhooks.subscribe("http://placeholder")
    (deal_id,) = st.touch("deals", 1, AT)
    assert _deliver(st, env, warehouse_url) == 1
    # Meanwhile a load stored a newer version (its own webhook still on the way): the read returns an older one.
    newer = {
        **next(d for d in st.truth("deals") if d["id"] == deal_id),
        "updatedAt": "2026-11-25T10:30:00Z",
        "name": "newer, stored by a load",
    }
    table = table_spec_for(SPECS["salestrekker"], "deals")
    with open_inbox(warehouse_url) as wh:
        wh.ensure_table(table)
        with wh.open_load(table, "test/newer") as load:
            load.write_batch([newer])
            load.commit(None)

    result = build_definitions(warehouse_url=warehouse_url).resolve_job_def(JOB_NAME).execute_in_process()
    assert result.success and st.counts[f"ticket {deal_id}"] == 1
    kept = _deals(warehouse_url)[deal_id]
    assert (kept["name"], kept["updatedAt"]) == ("newer, stored by a load", "2026-11-25T10:30:00Z")
    assert [e.outcome for e in _events(warehouse_url)] == [APPLIED_BY_READ]


def test_a_deleted_ticket_settles_with_its_outcome(crm, warehouse_url):
    boxes, env = crm
    st = boxes["salestrekker"]
    st.webhooks.subscribe("http://placeholder")
    st.announce(NO_SUCH_TICKET, "DealDeleted")  # [unconfirmed] name; ticket(id) answers null
    assert _deliver(st, env, warehouse_url) == 1
    result = build_definitions(warehouse_url=warehouse_url).resolve_job_def(JOB_NAME).execute_in_process()
    assert result.success and not _materializations(result)
    (event,) = _events(warehouse_url)
    assert event.applied_at and event.outcome.startswith(f"gone: deals '{NO_SUCH_TICKET}' answered null")
    assert _deals(warehouse_url) == {}


def _quick_retry_specs(tmp_path: Path) -> Path:
    """salestrekker.yaml with a short retry policy and timeout (a test of giving up must not wait 15 s), and
    salesmanago.yaml as it is."""
    doc = yaml.safe_load((SPEC_DIR / "salestrekker.yaml").read_text())
    doc["retry"] = {"max_attempts": 2, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.02}
    doc["timeout_seconds"] = 0.5
    folder = tmp_path / "connectors"
    folder.mkdir()
    (folder / "salestrekker.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    # The target too, so the syncs that read deals are built (the retry tick names them).
    (folder / "salesmanago.yaml").write_text((SPEC_DIR / "salesmanago.yaml").read_text())
    return folder


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_a_transient_failure_leaves_events_pending_and_the_next_run_applies_them(crm, warehouse_url, tmp_path, fault):
    boxes, env = crm
    st = boxes["salestrekker"]
    st.webhooks.subscribe("http://placeholder")
    touched = st.touch("deals", 2, AT)
    assert _deliver(st, env, warehouse_url) == 2
    defs = build_definitions(connectors_dir=_quick_retry_specs(tmp_path), warehouse_url=warehouse_url)
    instance = dg.DagsterInstance.ephemeral()
    sensor = next(s for s in defs.sensors if s.name == SENSOR_NAME)
    resources = {c.WAREHOUSE_RESOURCE: WarehouseResource(url=warehouse_url)}
    tick = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert tick.run_requests[0].run_key.startswith("events-through-")

    st.faults.inject(fault, times=2, path_prefix="/graphql")  # every attempt the retry policy allows
    first = defs.resolve_job_def(JOB_NAME).execute_in_process(instance=instance)
    assert st.counts["timeout" if fault == "timeout" else "5xx"] == 2 and st.faults.pending() == 0
    assert first.success  # a vendor's bad minute is not a failed run: the events wait and are retried
    pending = _events(warehouse_url)
    assert all(e.applied_at is None and e.outcome.startswith(RETRY) for e in pending) and len(pending) == 2
    assert _deals(warehouse_url) == {} and not _materializations(first)

    # Nothing new arrives, yet the sensor asks for a run for the events that wait on a retry.
    retry = sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources=resources))
    assert [r.run_key.split("-")[:2] for r in retry.run_requests] == [["events", "retry"]]
    assert set(retry.run_requests[0].asset_selection) == {ST_EVENTS, TO_SM_EVENTS, TO_SM_CONTACTS}

    second = defs.resolve_job_def(JOB_NAME).execute_in_process(instance=instance)
    assert second.success and _materializations(second) == {(DEALS, "2026-11-25")}
    truth = {d["id"]: d for d in st.truth("deals")}
    stored = _deals(warehouse_url)
    assert set(stored) == set(touched) and all(_same(stored[i], truth[i]) for i in touched)
    assert {e.outcome for e in _events(warehouse_url)} == {APPLIED_BY_READ}
    done = sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources=resources))
    assert isinstance(done, dg.SkipReason)


def test_a_deal_won_in_the_crm_reaches_salesmanago_once_in_one_run(crm, warehouse_url):
    boxes, env = crm
    st, sm = boxes["salestrekker"], boxes["salesmanago"]
    defs = build_definitions(warehouse_url=warehouse_url)
    instance = dg.DagsterInstance.ephemeral()

    def run(keys, tags=None):
        result = dg.materialize(
            list(defs.assets), selection=keys, resources=defs.resources, tags=tags or {}, instance=instance
        )
        assert result.success
        return result

    run(CRM, CRM_DAYS)
    run([TO_SM_EVENTS])  # every milestone so far, once
    sync_sensor = next(s for s in defs.sensors if s.name == SYNC_SENSOR)
    settled = sync_sensor(dg.build_sensor_context(instance=instance)).cursor  # acted on everything so far
    sent_before = {k: len(v) for k, v in sm.events_by_external_id().items()}

    # A deal one stage from the end moves on: it is won (the sandbox posts DealChangesStage).
    deal = next(
        d
        for d in st.truth("deals")
        if not d["isWon"]
        and not d["isLost"]
        and next(w for w in st.truth("workflows") if w["id"] == d["idWorkflow"])["stages"][-2]["id"] == d["idStage"]
    )
    st.webhooks.subscribe("http://placeholder")
    # Now, as a webhook's change is: today has no daily partition yet, and the report still reaches the sensor.
    assert st.change_deal(deal["id"], datetime.now(UTC)) == "DealChangesStage"
    assert _deliver(st, env, warehouse_url) == 1

    resources = {c.WAREHOUSE_RESOURCE: WarehouseResource(url=warehouse_url)}
    events_tick = next(s for s in defs.sensors if s.name == SENSOR_NAME)(
        dg.build_sensor_context(instance=instance, resources=resources)
    )
    # One run: the deal is read by id and merged, then exactly the syncs that read deals, ordered after the merge:
    # deals → SALESmanago events, and contacts → SALESmanago (a deals lookup).
    (request,) = events_tick.run_requests
    assert set(request.asset_selection) == {ST_EVENTS, TO_SM_EVENTS, TO_SM_CONTACTS}
    one = run(request.asset_selection)
    steps = [e.step_key for e in one.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert steps.index("salestrekker__webhook_events") < steps.index(TO_SM_EVENTS.to_python_identifier())

    # The sync sensor sees deals materialized, and that the syncs ran after: no second run.
    after_run = sync_sensor(dg.build_sensor_context(instance=instance, cursor=settled))
    assert not after_run.run_requests, after_run.run_requests

    after = sm.events_by_external_id()
    new = {k: len(v) for k, v in after.items() if sent_before.get(k, 0) != len(v)}
    stage = next(w for w in st.truth("workflows") if w["id"] == deal["idWorkflow"])["stages"][-1]["id"]
    assert new == {f"deal-{deal['id']}-stage-{stage}": 1, f"deal-{deal['id']}-won": 1}
    assert after[f"deal-{deal['id']}-won"][0]["contactExtEventType"] == "PURCHASE"
