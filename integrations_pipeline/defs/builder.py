"""The one builder of Dagster definitions: connector specs and sync specs → assets, checks, jobs,
schedules, the sync sensor and the resources they need.

This repo's code location (``integrations_pipeline/definitions.py``), the public library API
(``integrations_pipeline.dagster.build_definitions``) and the ``ConnectorsComponent`` all call
``build_definitions`` here, so a user's project gets exactly what this repo runs.

Loading reads only the YAML specs: no credential needs to be set until a run starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dagster as dg

from integrations_pipeline.connectors import load_connectors, spec_paths
from integrations_pipeline.engine.errors import ConfigError, SpecError
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.engine.write.mapping import SyncSpec, load_sync
from integrations_pipeline.syncs import named_connectors, sync_paths
from integrations_pipeline.warehouse.registry import WAREHOUSE_URL_ENV

from . import constants as c
from .assets import build_connector_assets
from .checks import build_connector_checks
from .connections import build_connections_asset, build_connections_sensor
from .events import build_events_assets, build_events_job, build_events_sensor
from .io_managers import WAREHOUSE_IO_MANAGER, WarehouseIOManager
from .resources import WarehouseResource, credentials_resource, vault_resource
from .schedules import build_connector_jobs_and_schedules
from .sensors import build_sync_sensor
from .syncs import SinkIOManager, build_sync_assets, build_sync_checks, io_manager_key
from .translator import ConnectorTranslator, SyncTranslator


def build_definitions(
    *,
    connectors_dir: str | Path | None = None,
    syncs_dir: str | Path | None = None,
    warehouse_url: str | dg.EnvVar | None = None,
    translator: ConnectorTranslator | None = None,
    environ: Mapping[str, str] | None = None,
    connectors: Sequence[str] | None = None,
    sync_translator: SyncTranslator | None = None,
) -> dg.Definitions:
    """Every connector's streams and every sync as Dagster definitions.

    - ``connectors_dir``: a folder of ``<vendor>.yaml`` specs (the built-in schema); None: the built-in
      specs and those of the ``integrations_pipeline.connectors`` entry points.
    - ``syncs_dir``: a folder of ``<sync>.yaml`` specs; None: the built-in syncs, each kept only when
      every vendor it names is loaded (a project with its own vendors does not inherit syncs it cannot
      run). A sync of ``syncs_dir`` naming a vendor that is not in the specs is an error naming the file.
    - ``warehouse_url``: the warehouse (``duckdb:///...``, ``postgresql://...``, or a ``dg.EnvVar``);
      None: ``WAREHOUSE_URL`` (bound as ``dg.EnvVar``, so the UI shows its name) when set in ``environ``,
      else the embedded DuckDB default. A plain string shows in the resource's config in the UI: pass a
      URL holding a password as ``dg.EnvVar("NAME")``.
    - ``translator``: decides every asset key (streams, and through ``sync_translator``, by default a
      ``SyncTranslator`` over it, the syncs and what they depend on).
    - ``environ``: the environment the definitions are built from (default ``os.environ``): which
      credential alternatives are bound, ``<VENDOR>_VIA`` routes, ``INTEGRATIONS_PIPELINE_ALLOW_ENV``.
    - ``connectors``: only these vendors (names of loaded specs); None: all of them. Syncs naming a
      vendor left out are left out too.
    """
    env = dict(os.environ) if environ is None else dict(environ)
    translator = translator or ConnectorTranslator()
    sync_translator = sync_translator or SyncTranslator(translator)
    available = load_connectors(spec_paths(connectors_dir), environ=env)
    specs = select_connectors(available, connectors)
    syncs = select_syncs(sync_paths(syncs_dir), available, specs, strict=syncs_dir is not None)
    # The IO managers read specs again in the run's process: tell them the folder, as an absolute path
    # (a run's working directory need not be the one the definitions were loaded from).
    spec_dir = None if connectors_dir is None else str(Path(connectors_dir).resolve())
    warehouse = warehouse_resource(warehouse_url, env)
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    resources: dict[str, object] = {
        c.WAREHOUSE_RESOURCE: warehouse,
        c.VAULT_RESOURCE: vault_resource(env),
        WAREHOUSE_IO_MANAGER: WarehouseIOManager(warehouse=warehouse, connectors_dir=spec_dir),
    }
    for spec in specs.values():
        credentials = credentials_resource(spec, env)
        resources[c.credentials_resource_key(spec.name)] = credentials
        if spec.sinks:
            resources[io_manager_key(spec.name)] = SinkIOManager(
                connector=spec.name, credentials=credentials, warehouse=warehouse, connectors_dir=spec_dir
            )
        if not spec.streams:
            continue
        assets += build_connector_assets(spec, translator, warehouse_kind=warehouse.kind())
        if spec.connections is not None:
            sensors.append(build_connections_sensor(spec, translator))
            if spec.connections.link is not None:
                registry = build_connections_asset(spec, translator)
                assets.append(registry)
                jobs.append(
                    dg.define_asset_job(
                        f"{spec.name}_connections_reconcile",
                        selection=dg.AssetSelection.assets(registry),
                        description=f"{spec.title}: reconcile the connection registry with the vendor's list.",
                        tags={c.VENDOR_TAG: spec.name},
                    )
                )
        checks += build_connector_checks(spec, translator)
        j, s = build_connector_jobs_and_schedules(spec, translator)
        jobs += j
        schedules += s
    sync_assets = build_sync_assets(specs, env, sync_translator, syncs)
    jobs += build_sync_jobs(sync_assets)
    events_assets = build_events_assets(specs, translator)
    if sync_assets:  # no syncs: nothing for the sync sensor to watch
        sensors.append(build_sync_sensor(sync_assets, ignore=[a.key for a in events_assets]))
    if events_assets:
        assets += events_assets
        jobs.append(build_events_job(events_assets))
        sensors.append(build_events_sensor(specs, translator, sync_assets))
    return dg.Definitions(
        assets=[*assets, *sync_assets],
        asset_checks=[*checks, *build_sync_checks(sync_assets)],
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
    )


def build_sync_jobs(sync_assets: Sequence[dg.AssetsDefinition]) -> list[dg.UnresolvedAssetJobDefinition]:
    """``sync_to_<vendor>``: every sync into one target vendor, with its checks, in one run (the main job's sync
    phases; a name the runs list and the timeline read well)."""
    by_target: dict[str, list[dg.AssetKey]] = {}
    for asset in sync_assets:
        for key in asset.keys:
            by_target.setdefault(key.path[0], []).append(key)
    return [
        dg.define_asset_job(
            f"sync_to_{vendor}",
            selection=dg.AssetSelection.assets(*keys),
            description=f"Every sync into {vendor}: {', '.join(k.path[-1] for k in keys)}.",
            tags={c.VENDOR_TAG: vendor},
        )
        for vendor, keys in sorted(by_target.items())
    ]


def warehouse_resource(url: str | dg.EnvVar | None, environ: Mapping[str, str]) -> WarehouseResource:
    """The warehouse resource for ``url``; None: ``WAREHOUSE_URL`` by name when set, else the default."""
    if url is not None:
        return WarehouseResource(url=url)
    if environ.get(WAREHOUSE_URL_ENV):
        return WarehouseResource(url=dg.EnvVar(WAREHOUSE_URL_ENV))
    return WarehouseResource()


def select_connectors(available: Mapping[str, ConnectorSpec], names: Sequence[str] | None) -> dict[str, ConnectorSpec]:
    """``available`` restricted to ``names`` (None: all), in the order loaded; an unknown name is an error."""
    if names is None:
        return dict(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"connectors: got {unknown}, expected some of {sorted(available)}")
    return {name: spec for name, spec in available.items() if name in set(names)}


def select_syncs(
    paths: Iterable[Path],
    available: Mapping[str, ConnectorSpec],
    selected: Mapping[str, ConnectorSpec],
    *,
    strict: bool,
) -> list[SyncSpec]:
    """The syncs of ``paths`` whose vendors are all ``selected``, each validated against them.

    A sync naming a vendor that was loaded but not selected is left out. One naming a vendor that is not
    loaded at all is left out when ``strict`` is false (the built-in syncs, in a project with vendors of
    its own), and is an error naming the file when true (the project's own syncs: a typo, not a choice).
    """
    syncs = []
    for path in paths:
        names = named_connectors(path)
        if names <= set(selected):
            syncs.append(load_sync(path, selected))
        elif strict and not names <= set(available):
            # Validated against every loaded vendor, so the message is the sync's usual one
            # ("source: got 'acme/x', expected one of [...]"), naming the file.
            load_sync(path, available)
            missing = sorted(names - set(available))
            raise SpecError(
                path.name, [f"names connectors {missing} that are not loaded, expected {sorted(available)}"]
            )
    return syncs
