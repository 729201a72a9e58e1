"""Asset checks on every stream table, visible beside each asset in the UI.

- ``primary_key_unique``: no two rows share a primary key and none is null (a warehouse that merged
  wrongly, or a vendor whose ids changed shape, shows up here first);
- ``rows_match_schema``: every column the spec declares exists in the table;

and on every reverse-ETL sync asset:

- ``no_deliveries_in_doubt``: no record of the sync is in doubt (a vendor call whose outcome is
  unknown carried it, and the sink is not idempotent: events). It fails, with the keys, until a person
  settles them (``integrations-pipeline in-doubt resend|mark-delivered`` or the sync's run config).
"""

import dagster as dg

from integrations_pipeline.engine.spec import ConnectorSpec

from . import constants as c
from .resources import WarehouseResource
from .translator import ConnectorTranslator, StreamProps


def build_connector_checks(
    spec: ConnectorSpec, translator: ConnectorTranslator | None = None
) -> list[dg.AssetChecksDefinition]:
    translator = translator or ConnectorTranslator()
    return [_pk_check(translator, StreamProps(spec, name)) for name in spec.streams]


def _pk_check(translator: ConnectorTranslator, props: StreamProps) -> dg.AssetChecksDefinition:
    key = translator.get_asset_key(props)

    @dg.asset_check(
        asset=key,
        name="primary_key_unique",
        description=f"Rows of {props.table.schema}.{props.table.name} are unique and non-null on ({', '.join(props.table.primary_key)}).",
        required_resource_keys={c.WAREHOUSE_RESOURCE},
        blocking=False,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        warehouse = resource.open()
        try:
            frame = warehouse.read_frame(props.table)
        finally:
            warehouse.close()
        pk = list(props.table.primary_key)
        missing_cols = [col.name for col in props.table.columns if col.name not in frame.columns]
        nulls = int(frame[pk].isna().any(axis=1).sum()) if len(frame) else 0
        dupes = int(frame.duplicated(subset=pk).sum()) if len(frame) else 0
        return dg.AssetCheckResult(
            passed=(nulls == 0 and dupes == 0 and not missing_cols),
            metadata={
                "rows": len(frame),
                "null_keys": nulls,
                "duplicate_keys": dupes,
                "missing_columns": ", ".join(missing_cols) or "none",
            },
        )

    return _check


def build_in_doubt_check(asset_key: dg.AssetKey, state_key: str) -> dg.AssetChecksDefinition:
    """``no_deliveries_in_doubt`` on one sync asset (``state_key``: its delivered state)."""

    @dg.asset_check(
        asset=asset_key,
        name="no_deliveries_in_doubt",
        description=(
            "No record of this sync is in doubt: every vendor call's outcome is known. Fails until the records "
            f"in doubt are settled: integrations-pipeline in-doubt list --sync {state_key}"
        ),
        required_resource_keys={c.WAREHOUSE_RESOURCE},
        blocking=False,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        warehouse = resource.open()
        try:
            rows = warehouse.read_in_doubt(state_key)
        finally:
            warehouse.close()
        return dg.AssetCheckResult(
            passed=not rows,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "in_doubt": len(rows),
                "keys": ", ".join(r.key for r in rows[:20]) + (" ..." if len(rows) > 20 else "") or "none",
                "calls": len({r.call_id for r in rows}),
                "settle_with": f"integrations-pipeline in-doubt resend|mark-delivered --sync {state_key}",
            },
        )

    return _check
