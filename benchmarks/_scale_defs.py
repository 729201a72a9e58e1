"""The code location of the scale simulation (``scale.py``): Trackstar's streams and one sensor that plans the runs.

Loaded by the simulation's Dagster daemon (and its run workers) from the workspace ``scale.py`` writes. The
Trackstar spec comes from ``SCALE_CONNECTORS_DIR`` (the shipped spec with its first partition a year back); the
sensor ``scale_simulation`` asks, on its first tick, for one run per group of ``SCALE_GROUP`` connections over the
days ``[SCALE_FIRST, SCALE_LAST]`` of the ``SCALE_STREAMS`` streams (a rectangle of partitions: the connections
of the group × the days, read in one run as the main job's runs are). The daemon's run queue starts them within
its limits; nothing here runs a sync by itself.
"""

from __future__ import annotations

import os

import dagster as dg

from integrations_pipeline.defs.builder import build_definitions
from integrations_pipeline.defs.translator import RANGE_END_TAG, RANGE_START_TAG, partition_key

SIM_TAG = "scale/simulation"


STREAMS = [dg.AssetKey(["trackstar", s]) for s in os.environ.get("SCALE_STREAMS", "orders").split(",")]


def _plan() -> list[dg.RunRequest]:
    connections = os.environ["SCALE_CONNECTIONS"].split(",")
    group = int(os.environ["SCALE_GROUP"])
    first, last = os.environ["SCALE_FIRST"], os.environ["SCALE_LAST"]
    streams = STREAMS
    requests = []
    for n in range(0, len(connections), group):
        members = connections[n : n + group]
        requests.append(
            dg.RunRequest(
                run_key=f"{os.environ['SCALE_ID']}:{n}",
                asset_selection=streams,
                tags={
                    SIM_TAG: os.environ["SCALE_ID"],
                    RANGE_START_TAG: str(partition_key(members[0], first)),
                    RANGE_END_TAG: str(partition_key(members[-1], last)),
                },
            )
        )
    return requests


@dg.sensor(
    name="scale_simulation",
    asset_selection=dg.AssetSelection.assets(*STREAMS),
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def scale_simulation(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    if context.cursor == os.environ.get("SCALE_ID"):
        return dg.SkipReason("planned already")
    return dg.SensorResult(run_requests=_plan(), cursor=os.environ["SCALE_ID"])


defs = dg.Definitions.merge(
    build_definitions(connectors_dir=os.environ.get("SCALE_CONNECTORS_DIR"), connectors=["trackstar"]),
    dg.Definitions(sensors=[scale_simulation]),
)
