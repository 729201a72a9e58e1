"""Cross-system sync specs: one YAML file per sync (source stream → target sink), data only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.engine.write.mapping import SyncSpec, load_sync

SYNC_DIR = Path(__file__).parent


def load_syncs(connectors: Mapping[str, ConnectorSpec]) -> dict[str, SyncSpec]:
    """Every sync spec beside this file, validated against ``connectors``."""
    return {s.name: s for s in (load_sync(p, connectors) for p in sorted(SYNC_DIR.glob("*.yaml")))}
