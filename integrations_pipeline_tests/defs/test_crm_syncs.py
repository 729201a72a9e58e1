"""CRM reverse ETL end to end, over loopback: Salestrekker deals and contacts → SALESmanago contacts and
events, Trakor parties, Datatalks contacts; dry runs; routing through Datatalks; a crash mid-batch.

Expected target states are computed here from the sandbox's truth with rules written out in the test
(not with the sync mapping under test), so a wrong mapping fails.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import httpx
import pandas as pd
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs.syncs import DRY_RUN_TAG
from integrations_pipeline.warehouse import connect_warehouse

from .test_syncs import _run, _serve, outage_after_first_call

CRM = [dg.AssetKey(["salestrekker", s]) for s in ("deals", "contacts", "workflows")]
CRM_DAYS = {"dagster/asset_partition_range_start": "2026-10-01", "dagster/asset_partition_range_end": "2026-11-21"}
TO_SM_CONTACTS = dg.AssetKey(["salesmanago", "salestrekker_contacts_to_salesmanago_contacts"])
TO_SM_EVENTS = dg.AssetKey(["salesmanago", "salestrekker_deals_to_salesmanago_events"])
TO_PARTIES = dg.AssetKey(["trakor", "salestrekker_contacts_to_trakor_parties"])
TO_DT_CONTACTS = dg.AssetKey(["datatalks", "salestrekker_contacts_to_datatalks_contacts"])
CRM_SYNCS = [TO_SM_CONTACTS, TO_SM_EVENTS, TO_PARTIES, TO_DT_CONTACTS]
LATER = datetime(2026, 11, 20, 12, tzinfo=UTC)
NOV_20 = {"dagster/asset_partition_range_start": "2026-11-20", "dagster/asset_partition_range_end": "2026-11-20"}


@pytest.fixture
def crm(monkeypatch, tmp_path):
    """A small CRM: one-record-per-call targets (Trakor, Datatalks at 10/s) stay quick."""
    yield from _serve(
        monkeypatch, tmp_path, 7, {"contacts": 60, "deals": 50, "products": 5, "orders": 5, "inventory": 5}
    )


def _contacts(st):
    return {c["id"]: c for c in st.truth("contacts")}


def _expected_events(st) -> dict[str, dict]:
    """externalId → (type, email, value) from the CRM's truth, by the rules the sync promises."""
    contacts = _contacts(st)
    first_stage = {w["id"]: w["stages"][0]["id"] for w in st.truth("workflows") if w["stages"]}
    out = {}
    for deal in st.truth("deals"):
        client = next((contacts[c] for c in deal["idClients"] if c in contacts), None)
        email = client["person"]["contact"]["email"].strip().lower()
        value = deal["values"]["onceOff"]
        out[f"deal-{deal['id']}-created"] = ("OTHER", email, value)
        if deal["idStage"] != first_stage.get(deal["idWorkflow"]):
            out[f"deal-{deal['id']}-stage-{deal['idStage']}"] = ("OFFER", email, value)
        if deal["isWon"]:
            out[f"deal-{deal['id']}-won"] = ("PURCHASE", email, value)
    return out


def _events(sm) -> dict[str, list[dict]]:
    return {k: v for k, v in sm.events_by_external_id().items() if k.startswith("deal-")}


def test_crm_syncs_deliver_exactly_the_mapped_records_then_only_changes(crm):
    st, sm, trakor, dt = crm["salestrekker"], crm["salesmanago"], crm["trakor"], crm["datatalks"]
    defs = build_definitions()
    _run(defs, CRM, CRM_DAYS)
    first = _run(defs, CRM_SYNCS)

    contacts = _contacts(st)
    deals = st.truth("deals")
    # SALESmanago contacts: one per email, with name, phone and the deal summary as properties.
    for c in contacts.values():
        got = sm.find_contact(c["person"]["contact"]["email"])
        info = c["person"]["information"]
        assert got["name"] == f"{info['firstName']} {info['familyName']}"
        assert got["phone"] == c["person"]["contact"]["primary"]
        mine = [d for d in deals if c["id"] in d["idContacts"]]
        assert got["properties"]["salestrekker_deals"] == len(mine)
        assert got["properties"]["salestrekker_won_deals"] == sum(1 for d in mine if d["isWon"])
    assert first[TO_SM_CONTACTS]["created"].value == len(contacts)
    assert first[TO_SM_CONTACTS]["write_calls"].value == 1  # 60 contacts, batch limit 1,000

    # SALESmanago events: every milestone exactly once, with its type, client and value.
    want = _expected_events(st)
    events = _events(sm)
    assert set(events) == set(want)
    assert all(len(v) == 1 for v in events.values())
    for ext_id, (kind, email, value) in want.items():
        event = events[ext_id][0]
        assert (event["contactExtEventType"], event["email"], event["value"]) == (kind, email, value)
    assert {k for k, *_ in want.values()} == {"OTHER", "OFFER", "PURCHASE"}  # the data covers every kind
    assert first[TO_SM_EVENTS]["write_calls"].value == 1

    # Trakor parties: one per distinct full name; Datatalks: one call per contact.
    names = {
        f"{c['person']['information']['firstName']} {c['person']['information']['familyName']}"
        for c in contacts.values()
    }
    assert set(trakor.parties) == names
    assert first[TO_PARTIES]["superseded"].value == len(contacts) - len(names)
    assert dt.write_calls == first[TO_DT_CONTACTS]["write_calls"].value == len(contacts)

    # Nothing changed: zero write calls on every target.
    before = (sm.write_calls, trakor.write_calls, dt.write_calls)
    second = _run(defs, CRM_SYNCS)
    assert (sm.write_calls, trakor.write_calls, dt.write_calls) == before
    assert all(second[k]["write_calls"].value == 0 and second[k]["dry_run"].value is False for k in CRM_SYNCS)

    # Three contacts get a new phone: exactly those three are sent, in one call.
    changed_contacts = st.touch("contacts", 3, LATER)
    _run(defs, CRM, NOV_20)
    md = _run(defs, [TO_SM_CONTACTS])[TO_SM_CONTACTS]
    assert (md["updated"].value, md["created"].value, md["write_calls"].value) == (3, 0, 1)
    assert all(
        sm.find_contact(contacts[i]["person"]["contact"]["email"])["phone"]
        == _contacts(st)[i]["person"]["contact"]["primary"]
        for i in changed_contacts
    )

    # Three deals move on a stage (or, at the last one, change value): only their new milestones go.
    moved = st.touch("deals", 3, LATER)
    _run(defs, CRM, NOV_20)
    third = _run(defs, [TO_SM_EVENTS])
    new_events = set(_expected_events(st)) - set(want)
    # A moved deal gets its new stage's event (and a won event if it reached the end), nothing else.
    assert new_events and all(e.split("-", 1)[1].startswith(tuple(moved)) for e in new_events)
    assert set(_events(sm)) == set(want) | new_events
    assert all(len(v) == 1 for v in _events(sm).values())
    assert third[TO_SM_EVENTS]["created"].value == len(new_events) and third[TO_SM_EVENTS]["write_calls"].value == 1


def test_dry_run_writes_the_plan_and_calls_nothing(crm, tmp_path):
    st, sm = crm["salestrekker"], crm["salesmanago"]
    defs = build_definitions()
    _run(defs, CRM, CRM_DAYS)
    dry = {"ops": {"salesmanago__salestrekker_contacts_to_salesmanago_contacts": {"config": {"dry_run": True}}}}

    instance = dg.DagsterInstance.ephemeral()

    def run(config=None):
        result = dg.materialize(
            list(defs.assets),
            selection=[TO_SM_CONTACTS],
            resources=defs.resources,
            instance=instance,
            run_config=config or {},
        )
        assert result.success
        mats = result.asset_materializations_for_node("salesmanago__salestrekker_contacts_to_salesmanago_contacts")
        observed = [
            e.asset_observation_data.asset_observation.metadata
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
        if (config or {}).get("ops"):
            # A dry run materializes nothing: the plan is an observation, and the run says so in its tags.
            assert mats == [] and len(observed) == 1
            assert instance.get_run_by_id(result.run_id).tags[DRY_RUN_TAG] == "true"
            assert observed[0]["mode"].value.startswith("DRY RUN: planned only, nothing sent")
            return result.run_id, observed[0]
        assert observed == [] and mats[0].metadata["mode"].value == "sent"
        return result.run_id, mats[0].metadata

    calls = sm.write_calls
    run_id, md = run(dry)
    assert sm.write_calls == calls and not sm.contacts  # nothing reached SALESmanago
    assert md["dry_run"].value is True and md["created"].value == 60 and md["write_calls"].value == 0
    # What the sync holds, as a sent run would say: 60 contacts, the columns it sends.
    assert md["dagster/row_count"].value == 60
    columns = {col.name: col.type for col in md["dagster/column_schema"].value.columns}
    assert columns["contact.email"] == "string" and columns["properties.salestrekker_deals"] == "integer"
    assert instance.get_latest_materialization_event(TO_SM_CONTACTS) is None
    warehouse = connect_warehouse(None)
    try:
        plan = warehouse.read_plan("salesmanago/salestrekker_contacts_to_salesmanago_contacts", run_id)
        emails = {c["person"]["contact"]["email"].lower() for c in st.truth("contacts")}
        assert {r["action"] for r in plan} == {"create"} and {r["record_key"] for r in plan} == emails
        assert all(r["record"]["contact"]["email"] == r["record_key"] for r in plan)

        run()  # the real run sends them
        assert len(sm.contacts) == 60
        # Three change and one vanishes from the source: the dry run plans 3 updates and 1 delete.
        st.touch("contacts", 3, LATER)
        warehouse.record_delivery(
            "salesmanago/salestrekker_contacts_to_salesmanago_contacts", [("gone@example.com", "h", None)]
        )
        _run(defs, CRM, NOV_20)
        calls = sm.write_calls
        run_id, md = run(dry)
        assert sm.write_calls == calls
        plan = warehouse.read_plan("salesmanago/salestrekker_contacts_to_salesmanago_contacts", run_id)
        assert sorted(r["action"] for r in plan) == ["delete", "update", "update", "update"]
        assert next(r for r in plan if r["action"] == "delete")["record_key"] == "gone@example.com"
        assert (md["updated"].value, md["deleted_at_source"].value, md["unchanged"].value) == (3, 1, 57)
    finally:
        warehouse.close()


def test_routing_through_datatalks_then_back_sends_nothing_twice(crm, monkeypatch):
    st, sm, dt = crm["salestrekker"], crm["salesmanago"], crm["datatalks"]
    monkeypatch.setenv("SALESMANAGO_VIA", "datatalks")
    routed = build_definitions()
    node = next(a for a in routed.assets if TO_SM_EVENTS in a.keys)
    assert "datatalks" in node.specs_by_key[TO_SM_EVENTS].kinds  # the UI shows the route
    _run(routed, CRM, CRM_DAYS)
    md = _run(routed, [TO_SM_CONTACTS, TO_SM_EVENTS])
    want = _expected_events(st)
    # Datatalks forwarded every event and contact to SALESmanago, one call each.
    assert set(_events(sm)) == set(want) and all(len(v) == 1 for v in _events(sm).values())
    assert (
        dt.write_calls
        == len(want) + 60
        == md[TO_SM_EVENTS]["write_calls"].value + md[TO_SM_CONTACTS]["write_calls"].value
    )
    one = st.truth("contacts")[0]
    got = sm.find_contact(one["person"]["contact"]["email"])
    assert got["properties"]["externalId"] == one["id"] and "salestrekker_deals" in got["properties"]

    # Back to direct: the sync keeps its history, so no event is sent again.
    monkeypatch.setenv("SALESMANAGO_VIA", "direct")
    direct = build_definitions()
    calls = sm.write_calls
    md = _run(direct, [TO_SM_EVENTS])[TO_SM_EVENTS]
    assert md["write_calls"].value == 0 and sm.write_calls == calls


@pytest.fixture
def big_crm(monkeypatch, tmp_path):
    """More contacts than one SALESmanago batch (1,000), so a crash can fall between two calls."""
    yield from _serve(
        monkeypatch, tmp_path, 8, {"contacts": 1300, "deals": 20, "products": 5, "orders": 5, "inventory": 5}
    )


def test_crash_mid_batch_then_rerun_target_exact_and_rejects_complete(big_crm):
    st, sm = big_crm["salestrekker"], big_crm["salesmanago"]
    # Source data with bad emails: SALESmanago refuses those items inside an accepted batch.
    st.stores["contacts"].touch(
        6,
        datetime(2026, 11, 1, tzinfo=UTC),
        lambda rec, _r: rec["person"]["contact"].update(email=f"broken.{rec['id'][:8]}"),
    )
    defs = build_definitions()
    _run(defs, CRM, CRM_DAYS)
    emails = {c["person"]["contact"]["email"].lower() for c in st.truth("contacts")}
    broken = {e for e in emails if e.startswith("broken.")}
    good = emails - broken
    assert len(broken) == 6

    def outage():
        return httpx.Response(500, json={"success": False, "message": ["injected outage"]})

    with outage_after_first_call(sm, "/api/contact/batchupsert", outage):
        result = dg.materialize(
            list(defs.assets),
            selection=[TO_SM_CONTACTS],
            resources=defs.resources,
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    assert not result.success
    first_batch = set(sm.contacts)
    assert 0 < len(first_batch) <= 1000 and first_batch <= good

    state = "salesmanago/salestrekker_contacts_to_salesmanago_contacts"
    warehouse = connect_warehouse(None)
    try:
        # Everything the first call delivered or refused is recorded despite the failure.
        assert set(warehouse.read_delivered(state)) == first_batch
        rejected_first = {r["record_key"] for r in warehouse.read_rejects(state)}
        md = _run(defs, [TO_SM_CONTACTS])[TO_SM_CONTACTS]
        # The rest went in one call; nothing delivered before was sent again.
        assert md["write_calls"].value == 1 and md["unchanged"].value == len(first_batch)
        assert set(sm.contacts) == good
        rejects = warehouse.read_rejects(state)
        # Every bad contact is in the rejects table with the vendor's reason and the record sent.
        assert {r["record_key"] for r in rejects} == broken
        assert all(
            "email" in r["reason"].lower() and r["record"]["contact"]["email"] == r["record_key"] for r in rejects
        )
        # Those refused in the first call were offered again (they were never delivered), and refused again.
        assert rejected_first <= broken and len(rejects) == len(broken) + len(rejected_first)
    finally:
        warehouse.close()


def test_a_downstream_asset_reads_what_the_targets_hold(crm):
    st, sm = crm["salestrekker"], crm["salesmanago"]
    seen: dict[str, pd.DataFrame] = {}

    @dg.asset(ins={"sm": dg.AssetIn(key=TO_SM_CONTACTS), "dt": dg.AssetIn(key=TO_DT_CONTACTS)})
    def compare(sm: pd.DataFrame, dt: pd.DataFrame) -> None:
        seen["sm"], seen["dt"] = sm, dt

    defs = build_definitions()
    _run(defs, CRM, CRM_DAYS)
    _run(defs, [TO_SM_CONTACTS, TO_DT_CONTACTS])
    gone = sorted(sm.contacts)[0]
    sm.delete_contact(gone)  # someone deleted a contact in SALESmanago since
    calls = sm.write_calls
    result = dg.materialize(
        [*defs.assets, compare],
        selection=[compare.key],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success and sm.write_calls == calls  # reads only
    emails = sorted(c["person"]["contact"]["email"].lower() for c in st.truth("contacts"))
    for frame in (seen["sm"], seen["dt"]):
        assert list(frame["key"]) == emails
        missing = frame[~frame["in_target"].astype(bool)]
        assert list(missing["key"]) == [gone]
    got = seen["sm"].set_index("key")
    one = st.truth("contacts")[1]
    email = one["person"]["contact"]["email"].lower()
    assert got.loc[email, "phone"] == one["person"]["contact"]["primary"]
    assert got.loc[email, "properties.salestrekker_deals"] == sum(
        1 for d in st.truth("deals") if one["id"] in d["idContacts"]
    )


def test_a_key_prefixing_translator_works_end_to_end(crm):
    """The translator is the one authority on keys: prefix every stream key, and the syncs depend on, trace
    columns to and run after the prefixed streams (no "asset key salestrekker/workflows not found")."""
    from integrations_pipeline.defs.translator import ConnectorTranslator, StreamProps

    class Prefixed(ConnectorTranslator):
        def get_asset_key(self, props: StreamProps) -> dg.AssetKey:
            return dg.AssetKey(["acme", *super().get_asset_key(props).path])

    defs = build_definitions(translator=Prefixed())
    graph = defs.resolve_asset_graph()
    prefixed = [dg.AssetKey(["acme", *k.path]) for k in CRM]
    assert set(prefixed) <= graph.get_all_asset_keys() and not set(CRM) & graph.get_all_asset_keys()
    # deals, contacts and workflows (lookups), and the events asset (get_connector_asset_key is not overridden)
    assert graph.get(TO_SM_EVENTS).parent_keys == {*prefixed, dg.AssetKey(["salestrekker", "webhook_events"])}
    lineage = graph.get(TO_SM_EVENTS).metadata["dagster/column_lineage"]
    assert {d.asset_key for deps in lineage.deps_by_column.values() for d in deps} <= set(prefixed)
    _run(defs, prefixed, CRM_DAYS)
    md = _run(defs, [TO_SM_EVENTS])[TO_SM_EVENTS]
    st, sm = crm["salestrekker"], crm["salesmanago"]
    assert md["created"].value == len(_expected_events(st)) == len(sm.events)
