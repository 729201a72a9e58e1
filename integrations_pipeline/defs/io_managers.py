"""Stream assets as inputs: a downstream asset that takes ``trackstar/orders`` gets its table as a DataFrame.

Stream assets write their rows themselves (page by page into the warehouse, ``assets.py``): they hand no
value to Dagster, so the default IO manager had nothing to load and a downstream asset failed with
``FileNotFoundError``. ``WarehouseIOManager`` is the stream assets' IO manager: storing is a no-op, and
loading an input reads the upstream stream's table from the warehouse (DuckDB or PostgreSQL alike, through
``Warehouse.read_frame``). When the downstream asset is partitioned like the stream (daily), only the rows
whose cursor field falls in the partitions' time window are returned.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from integrations_pipeline.connectors import load_connectors, spec_paths
from integrations_pipeline.warehouse import table_spec_for

from . import constants as c
from .resources import WarehouseResource
from .translator import WAREHOUSE_IO_MANAGER


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Reads stream tables for downstream assets; stores nothing (the stream assets already did)."""

    warehouse: WarehouseResource
    # The folder the stream's spec came from (None: the built-in and entry-point specs): loading an
    # input reads the spec in the run's process, and must read the one the definitions were built from.
    connectors_dir: str | None = None

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is not None:
            raise TypeError(
                f"{context.asset_key.to_user_string()}: a stream asset writes its rows to the warehouse itself and "
                f"returns nothing to store, got {type(obj).__name__}"
            )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        assert upstream is not None  # an input of an asset always has the asset that produced it
        metadata = upstream.definition_metadata
        connector, stream = str(metadata[c.CONNECTOR]), str(metadata[c.STREAM])
        spec = load_connectors(spec_paths(self.connectors_dir))[connector]
        table = table_spec_for(spec, stream)
        warehouse = self.warehouse.open()
        try:
            frame = warehouse.read_frame(table)
        finally:
            warehouse.close()
        cursor = spec.streams[stream].incremental
        if cursor is not None and context.has_asset_partitions and len(frame):
            window = context.asset_partitions_time_window
            values = pd.to_datetime(frame[cursor.cursor_field], utc=True)
            frame = frame[(values >= window.start) & (values < window.end)].reset_index(drop=True)
        context.log.info(f"{connector}/{stream}: {len(frame)} rows from {table.full_name}")
        return frame


__all__ = ["WAREHOUSE_IO_MANAGER", "WarehouseIOManager"]
