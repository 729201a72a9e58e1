"""A sync's source paths are checked against the schemas of the streams it reads: a typo in ``from``, a template,
a condition or a lookup fails at load (``validate``, and the definitions) naming the file, the place, the field and
the closest name, instead of a run rejecting every record for a "missing required field"."""

from __future__ import annotations

import copy

import pytest
import yaml

from integrations_pipeline import cli
from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.errors import SpecError
from integrations_pipeline.engine.write.mapping import _walk, parse_sync
from integrations_pipeline.syncs import SYNC_DIR

SPECS = load_connectors()


def _sync(name: str) -> dict:
    return yaml.safe_load((SYNC_DIR / f"{name}.yaml").read_text())


ORDERS = "trackstar_orders_to_salesmanago_events"
DEALS = "salestrekker_deals_to_salesmanago_events"
CONTACTS = "salestrekker_contacts_to_salesmanago_contacts"


def _set(doc: dict, dotted: list, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for part in dotted[:-1]:
        node = node[part]
    node[dotted[-1]] = value
    return doc


CASES = [
    pytest.param(
        ORDERS,
        ["fields", "contactEvent.externalId"],
        {"from": "idd"},
        "fields.contactEvent.externalId.from: 'idd': 'idd' is not a field of trackstar/orders; did you mean 'id'?",
        id="from",
    ),
    pytest.param(
        ORDERS,
        ["fields", "contactEvent.description"],
        {"template": "Order {order_numbr}"},
        "fields.contactEvent.description.template: 'order_numbr': 'order_numbr' is not a field of trackstar/orders; "
        "did you mean 'order_number'?",
        id="template",
    ),
    pytest.param(
        CONTACTS,
        ["where"],
        {"persn.contact.email": {"exists": True}},
        "where.persn.contact.email: 'persn.contact.email': 'persn' is not a field of salestrekker/contacts; did you "
        "mean 'person'?",
        id="where",
    ),
    pytest.param(
        DEALS,
        ["fields", "contactEvent.detail3"],
        {"from": "workflow.nme"},
        "fields.contactEvent.detail3.from: 'workflow.nme': 'nme' is not a field of salestrekker/workflows; did you "
        "mean 'name'?",
        id="under-a-lookup",
    ),
    pytest.param(
        DEALS,
        ["lookups", "client", "key"],
        "idd",
        "lookups.client.key: 'idd': 'idd' is not a field of salestrekker/contacts; did you mean 'id'?",
        id="lookup-key",
    ),
    pytest.param(
        DEALS,
        ["lookups", "workflow", "match"],
        "idWorkflw",
        "lookups.workflow.match: 'idWorkflw': 'idWorkflw' is not a field of salestrekker/deals; did you mean "
        "'idWorkflow'?",
        id="lookup-match",
    ),
    pytest.param(
        DEALS,
        ["emit", 1, "where"],
        {"idStage": {"differs_from": "workflw.stages[0].id"}},
        "emit[1].where.idStage.differs_from: 'workflw.stages[0].id': 'workflw' is not a field of salestrekker/deals; "
        "did you mean 'idWorkflow'?",
        id="operand-path",
    ),
]


@pytest.mark.parametrize(("sync", "at", "value", "expected"), CASES)
def test_a_typo_in_a_source_path_names_the_place_and_the_closest_field(sync, at, value, expected):
    with pytest.raises(SpecError) as err:
        parse_sync(_set(_sync(sync), at, value), f"{sync}.yaml", SPECS)
    assert err.value.problems == [expected]


def test_the_built_in_syncs_read_only_fields_their_streams_have():
    for path in sorted(SYNC_DIR.glob("*.yaml")):
        parse_sync(yaml.safe_load(path.read_text()), path.name, SPECS)  # raises on a problem


def test_a_described_nested_list_is_checked_inside():
    schema = {
        "type": "object",
        "properties": {"line_items": {"type": "array", "items": {"type": "object", "properties": {"sku": {}}}}},
    }
    assert _walk(schema, "line_items[].sku", "s/t") == ({}, None)
    assert _walk(schema, "line_items[0].sku", "s/t") == ({}, None)
    assert _walk(schema, "line_items[].skus", "s/t")[1] == (
        "'skus' is not a field of s/t under 'line_items'; did you mean 'sku'?"
    )


def test_paths_into_objects_the_schema_leaves_open_and_load_columns_are_not_guessed():
    # Salestrekker's person is an object the spec keeps whole: nothing under it is checked.
    doc = _set(_sync(CONTACTS), ["fields", "contact.phone"], {"from": "person.contact.mobile"})
    parse_sync(doc, f"{CONTACTS}.yaml", SPECS)
    # _connection_id is added by per-connection loads, not sent by the vendor.
    parse_sync(_set(_sync(ORDERS), ["fields", "contactEvent.detail2"], {"from": "_connection_id"}), "x.yaml", SPECS)


def test_validate_reports_the_file_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    syncs = tmp_path / "syncs"
    syncs.mkdir()
    doc = _set(_sync(ORDERS), ["fields", "contactEvent.externalId"], {"from": "idd"})
    (syncs / f"{ORDERS}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setattr("integrations_pipeline.syncs.SYNC_DIR", syncs)
    assert cli.main(["validate"]) == 1
    err = capsys.readouterr().err
    assert f"{ORDERS}.yaml: fields.contactEvent.externalId.from: 'idd'" in err and "did you mean 'id'?" in err
