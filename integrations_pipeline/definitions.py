"""The Dagster code location: every connector's stream assets, checks, jobs, schedules and resources,
one reverse-ETL asset per sync spec, pushed by its target's sink IO manager, and the sensor that runs
a sync after the streams it reads are materialized.

``workspace.yaml`` and ``dagster dev -m integrations_pipeline.definitions`` load ``defs``. Loading reads
only the YAML specs: no credential needs to be set until a run starts.
"""

from __future__ import annotations

import os

import dagster as dg

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.assets import build_connector_assets
from integrations_pipeline.defs.checks import build_connector_checks
from integrations_pipeline.defs.io_managers import WAREHOUSE_IO_MANAGER, WarehouseIOManager
from integrations_pipeline.defs.resources import WarehouseResource, credentials_resource
from integrations_pipeline.defs.schedules import build_connector_jobs_and_schedules
from integrations_pipeline.defs.sensors import build_sync_sensor
from integrations_pipeline.defs.syncs import SinkIOManager, build_sync_assets, build_sync_checks, io_manager_key
from integrations_pipeline.defs.translator import ConnectorTranslator, SyncTranslator


def build_definitions(
    environ: dict[str, str] | None = None, translator: ConnectorTranslator | None = None
) -> dg.Definitions:
    """Every connector's streams and every sync as Dagster definitions. ``translator`` decides every asset key
    (streams, and through a ``SyncTranslator`` the syncs and what they depend on)."""
    env = dict(os.environ) if environ is None else environ
    translator = translator or ConnectorTranslator()
    warehouse = WarehouseResource(url=dg.EnvVar("WAREHOUSE_URL")) if env.get("WAREHOUSE_URL") else WarehouseResource()
    assets, checks, jobs, schedules = [], [], [], []
    resources: dict[str, object] = {
        c.WAREHOUSE_RESOURCE: warehouse,
        WAREHOUSE_IO_MANAGER: WarehouseIOManager(warehouse=warehouse),
    }
    connectors = load_connectors()
    for spec in connectors.values():
        credentials = credentials_resource(spec, env)
        resources[c.credentials_resource_key(spec.name)] = credentials
        if spec.sinks:
            resources[io_manager_key(spec.name)] = SinkIOManager(
                connector=spec.name, credentials=credentials, warehouse=warehouse
            )
        if not spec.streams:
            continue
        assets += build_connector_assets(spec, translator, warehouse_kind=warehouse.kind())
        checks += build_connector_checks(spec, translator)
        j, s = build_connector_jobs_and_schedules(spec, translator)
        jobs += j
        schedules += s
    sync_assets = build_sync_assets(connectors, env, SyncTranslator(translator))
    return dg.Definitions(
        assets=[*assets, *sync_assets],
        asset_checks=[*checks, *build_sync_checks(sync_assets)],
        jobs=jobs,
        schedules=schedules,
        sensors=[build_sync_sensor(sync_assets)],
        resources=resources,
    )


defs = build_definitions()
