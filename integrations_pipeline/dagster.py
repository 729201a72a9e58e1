"""The public Dagster API: what a user's own Dagster project imports to use these connectors.

.. code-block:: python

    from integrations_pipeline.dagster import build_definitions

    defs = build_definitions(connectors_dir="connectors", warehouse_url="duckdb:///data/warehouse.duckdb")

or, in a ``defs.yaml``, ``type: integrations_pipeline.ConnectorsComponent``.

This module is named ``dagster`` inside the ``integrations_pipeline`` package; ``import dagster`` below
(and everywhere in the package) is absolute, so it reaches the Dagster library, never this module.
"""

from __future__ import annotations

import dagster as dg

from integrations_pipeline.defs.builder import build_definitions
from integrations_pipeline.defs.component import ConnectorsComponent
from integrations_pipeline.defs.io_managers import WAREHOUSE_IO_MANAGER, WarehouseIOManager
from integrations_pipeline.defs.resources import (
    ConnectorCredentials,
    WarehouseResource,
    credentials_class,
    credentials_resource,
    required_env_vars,
)
from integrations_pipeline.defs.syncs import SinkIOManager, SyncRunConfig, io_manager_key
from integrations_pipeline.defs.translator import ConnectorTranslator, StreamProps, SyncTranslator

# Held so a reader (and a test) can see that the name above is the library, not this module.
DAGSTER_VERSION: str = dg.__version__

__all__ = [
    "WAREHOUSE_IO_MANAGER",
    "ConnectorCredentials",
    "ConnectorTranslator",
    "ConnectorsComponent",
    "SinkIOManager",
    "StreamProps",
    "SyncRunConfig",
    "SyncTranslator",
    "WarehouseIOManager",
    "WarehouseResource",
    "build_definitions",
    "credentials_class",
    "credentials_resource",
    "io_manager_key",
    "required_env_vars",
]
