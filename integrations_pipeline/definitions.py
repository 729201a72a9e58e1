"""The Dagster code location: every connector's stream assets, checks, jobs, schedules and resources.

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
from integrations_pipeline.defs.resources import WarehouseResource, credentials_resource
from integrations_pipeline.defs.schedules import build_connector_jobs_and_schedules


def build_definitions(environ: dict[str, str] | None = None) -> dg.Definitions:
    env = dict(os.environ) if environ is None else environ
    warehouse = WarehouseResource(url=dg.EnvVar("WAREHOUSE_URL")) if env.get("WAREHOUSE_URL") else WarehouseResource()
    assets, checks, jobs, schedules = [], [], [], []
    resources: dict[str, object] = {c.WAREHOUSE_RESOURCE: warehouse}
    for spec in load_connectors().values():
        if not spec.streams:
            continue  # write-only connectors get assets with their sinks
        assets += build_connector_assets(spec, warehouse_kind=warehouse.kind())
        checks += build_connector_checks(spec)
        j, s = build_connector_jobs_and_schedules(spec)
        jobs += j
        schedules += s
        resources[c.credentials_resource_key(spec.name)] = credentials_resource(spec, env)
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules, resources=resources)


defs = build_definitions()
