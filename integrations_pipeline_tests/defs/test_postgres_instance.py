"""Beyond one machine: the same assets run on a Dagster instance whose storage is PostgreSQL,
with PostgreSQL as the warehouse too (the README's multi-machine configuration)."""

from __future__ import annotations

import os

import dagster as dg

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.resources import WarehouseResource
from integrations_pipeline.warehouse import connect_warehouse, table_spec_for


def test_runs_on_postgres_storage_into_postgres_warehouse(sandboxes, sandbox_env, postgres_url, tmp_path):
    _, boxes = sandboxes
    (tmp_path / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: {env: IP_TEST_DAGSTER_PG_URL}\n"
    )
    # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, whose server-side binding breaks
    # dagster-postgres's DDL; name the psycopg2 driver that dagster-postgres is written for.
    os.environ["IP_TEST_DAGSTER_PG_URL"] = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            defs = build_definitions()
            result = dg.materialize(
                list(defs.assets),
                selection=[dg.AssetKey(["salestrekker", "workflows"])],
                resources={**defs.resources, c.WAREHOUSE_RESOURCE: WarehouseResource(url=postgres_url)},
                instance=instance,
            )
            assert result.success
            runs = instance.get_runs()
            assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
            latest = instance.get_latest_materialization_event(dg.AssetKey(["salestrekker", "workflows"]))
            assert latest is not None
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    finally:
        del os.environ["IP_TEST_DAGSTER_PG_URL"]
    wh = connect_warehouse(postgres_url)
    try:
        rows = wh.read_records(table_spec_for(load_connectors()["salestrekker"], "workflows"))
    finally:
        wh.close()
    assert sorted(rows, key=lambda r: r["id"]) == boxes["salestrekker"].truth("workflows")
