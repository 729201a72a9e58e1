"""Partition helpers for tests that run Trackstar streams: they are partitioned by connection × day.

The sandbox's default connections are ``conn_a`` and ``conn_b``; a Dagster instance knows them once they are
added as dynamic partitions (what the connections sensor or the ``trackstar/connections`` asset do).
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.warehouse import table_spec_for
from integrations_pipeline.warehouse.inbox import open_inbox

SANDBOX_CONNECTIONS = ("conn_a", "conn_b")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def connected_instance(
    connections: Sequence[str] = SANDBOX_CONNECTIONS, instance: dg.DagsterInstance | None = None
) -> dg.DagsterInstance:
    """``instance`` (default: a new ephemeral one) with a Trackstar partition per connection."""
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("trackstar_connections", list(connections))
    return instance


def trackstar_days(first: str, last: str, connections: Sequence[str] = SANDBOX_CONNECTIONS) -> dict[str, str]:
    """Run tags for days ``[first, last]`` of every connection in ``connections`` (one single run)."""
    return {RANGE_START: f"{connections[0]}|{first}", RANGE_END: f"{connections[-1]}|{last}"}


def days(first: str, last: str) -> dict[str, str]:
    """Run tags for days ``[first, last]`` of a daily-partitioned vendor (Salestrekker)."""
    return {RANGE_START: first, RANGE_END: last}


def stored_by_connection(warehouse_url: str, stream: str = "orders") -> dict[str, set[str]]:
    """The ids of a Trackstar stream's records the warehouse holds, by connection."""
    with open_inbox(warehouse_url) as wh:
        rows = wh.read_records(table_spec_for(load_connectors()["trackstar"], stream))
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["_connection_id"], set()).add(row["id"])
    return out
