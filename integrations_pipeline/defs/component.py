"""``ConnectorsComponent``: the connectors and syncs as a Dagster Component, for a user's ``defs.yaml``.

.. code-block:: yaml

    type: integrations_pipeline.ConnectorsComponent
    attributes:
      connectors_dir: connectors        # relative to this defs.yaml's folder; omit for the built-in specs
      syncs_dir: syncs                  # omit for the built-in syncs
      warehouse_url: "{{ env.WAREHOUSE_URL }}"
      connectors: [trackstar, salestrekker]

It builds through the same ``build_definitions`` as this repo's code location (``defs/builder.py``).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import ConfigDict, Field, model_validator

from .builder import build_definitions
from .translator import ConnectorTranslator, SyncTranslator


class ConnectorsComponent(dg.Component, dg.Resolvable, dg.Model):
    """Declarative ETL connectors: every stream of the vendor specs as an asset loaded into the warehouse,
    every sync spec as a reverse-ETL asset, with checks, schedules, the sync sensor and their resources.

    Override ``get_translator`` (and ``get_sync_translator``) in a subclass to change asset keys.
    """

    # dg.Model already forbids unknown attributes (a typo in defs.yaml fails); frozen as our models are.
    model_config = ConfigDict(extra="forbid", frozen=True)

    connectors_dir: str | None = Field(
        default=None,
        description="Folder of <vendor>.yaml connector specs, relative to this defs.yaml's folder. "
        "Omit for the built-in specs (and those of the integrations_pipeline.connectors entry points).",
    )
    syncs_dir: str | None = Field(
        default=None,
        description="Folder of <sync>.yaml sync specs, relative to this defs.yaml's folder. Omit for the "
        "built-in syncs (each kept only when every vendor it names is loaded).",
    )
    warehouse_url: str | None = Field(
        default=None,
        description="duckdb:///path/file.duckdb or postgresql://...; may be templated, e.g. "
        "'{{ env.WAREHOUSE_URL }}' (then its value shows in the resource's config: for a URL holding a "
        "password use warehouse_url_env). Omit: WAREHOUSE_URL when set, else the embedded DuckDB default.",
    )
    warehouse_url_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the warehouse URL, read when a run starts "
        "(the UI shows the name, never the value). Not together with warehouse_url.",
    )
    connectors: list[str] | None = Field(
        default=None,
        description="Only these vendors (spec names); omit for all. Syncs naming another vendor are left out.",
    )

    @model_validator(mode="after")
    def _one_warehouse(self) -> ConnectorsComponent:
        if self.warehouse_url and self.warehouse_url_env:
            raise ValueError("give warehouse_url or warehouse_url_env, not both")
        return self

    def get_translator(self) -> ConnectorTranslator:
        """The translator of stream keys, groups and metadata (override in a subclass)."""
        return ConnectorTranslator()

    def get_sync_translator(self, translator: ConnectorTranslator) -> SyncTranslator:
        """The translator of sync keys; by default it keys the streams a sync reads by ``translator``."""
        return SyncTranslator(translator)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        translator = self.get_translator()
        return build_definitions(
            connectors_dir=_folder(context, self.connectors_dir),
            syncs_dir=_folder(context, self.syncs_dir),
            warehouse_url=self._warehouse_url(),
            translator=translator,
            sync_translator=self.get_sync_translator(translator),
            connectors=self.connectors,
        )

    def _warehouse_url(self) -> str | dg.EnvVar | None:
        if self.warehouse_url_env:
            return dg.EnvVar(self.warehouse_url_env)
        # A template over an unset variable renders empty: that is "not given", not a URL.
        return self.warehouse_url or None


def _folder(context: dg.ComponentLoadContext, value: str | None) -> Path | None:
    """``value`` as a path: relative paths are relative to the component's own folder (its defs.yaml), as a
    user reading the defs.yaml expects; the builder says so when it is not a folder."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else context.path / path
