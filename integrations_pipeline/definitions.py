"""The Dagster code location: every connector's stream assets, checks, jobs, schedules and resources,
one reverse-ETL asset per sync spec, pushed by its target's sink IO manager, and the sensor that runs
a sync after the streams it reads are materialized.

``workspace.yaml`` and ``dagster dev -m integrations_pipeline.definitions`` load ``defs``: the built-in
specs, through the same builder a user's project calls (``integrations_pipeline.dagster``). Loading
reads only the YAML specs: no credential needs to be set until a run starts.
"""

from __future__ import annotations

from integrations_pipeline.dagster import build_definitions

defs = build_definitions()

__all__ = ["build_definitions", "defs"]
