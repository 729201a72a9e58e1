"""The ``integrations-pipeline`` command's quick subcommands (``run`` is exercised by the README/CI)."""

from __future__ import annotations

import json

from integrations_pipeline.cli import main


def test_validate_checks_every_spec_and_sync(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    for name in ("trackstar.yaml", "salestrekker.yaml", "salesmanago.yaml", "datatalks.yaml", "trakor.yaml"):
        assert f"ok  {name}" in out
    assert "ok  syncs/trackstar_orders_to_salesmanago_events.yaml: trackstar/orders → salesmanago/events_batch" in out


def test_spec_schema_prints_a_json_schema_of_the_spec_format(capsys):
    assert main(["spec-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "integrations_pipeline connector spec"
    assert {"name", "protocol", "base_url", "auth", "streams", "sinks"} <= set(schema["properties"])
