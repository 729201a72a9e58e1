"""Each partition's own metadata on a range run's materializations, in one step instead of one per partition.

A range run (connections × days) gives every partition its own figures (records, cursor window) with
``context.add_asset_metadata(..., partition_key=p)``. Dagster 1.13 checks ``p`` on every such call by computing
the run's whole range again, reading the dynamic partitions (the connections) from the instance: ~10 ms a call
for 25 connections × 7 days, and the range grows with both, so a range of N partitions costs O(N²) (a year of
50 connections: 18,250 partitions × a range of 18,250 keys, per stream). Its accumulator also copies every
partition's metadata on every call.

``add_partition_metadata`` checks the partitions once against ``context.partition_keys`` and hands Dagster's
step the same accumulator entries ``add_asset_metadata`` would have made, in one update. This is the one
place that touches Dagster internals (``StepExecutionContext._metadata_accumulator`` and
``OutputMetadataAccumulator``, dagster/_core/execution/context/system.py and metadata_logging.py of the pinned
1.13.27); where they are not as expected it falls back to the public call, and
``test_partition_metadata.py`` fails on such a Dagster so the fallback is noticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg


def fast_path(context: dg.AssetExecutionContext) -> Any | None:
    """The step context whose accumulator can take the metadata directly, or None (use the public call)."""
    try:
        from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
    except ImportError:
        return None
    step = context.get_step_execution_context()
    accumulator = getattr(step, "_metadata_accumulator", None)
    if not isinstance(accumulator, OutputMetadataAccumulator) or not hasattr(AssetMetadataHandle, "partition_key"):
        return None
    return step


def add_partition_metadata(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, figures: Mapping[str, Mapping[str, Any]]
) -> None:
    """``figures`` (partition key → metadata) added to ``asset_key``'s materializations of this run."""
    step = fast_path(context)
    if step is None:
        for partition, own in figures.items():
            context.add_asset_metadata(own, asset_key=asset_key, partition_key=partition)
        return
    from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

    targeted = set(context.partition_keys)
    stray = [p for p in figures if p not in targeted]
    if stray:
        raise dg.DagsterInvariantViolationError(
            f"metadata for partition {stray[0]!r} of {asset_key.to_user_string()}, which this run does not target"
        )
    entries = dict(step._metadata_accumulator.per_output_metadata)  # noqa: SLF001 (see the module docstring)
    for partition, own in figures.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=partition)
        entries[handle] = {**entries.get(handle, {}), **own}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=entries)  # noqa: SLF001
