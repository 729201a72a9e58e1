"""Cross-system sync specs: one YAML file per sync (source stream → target sink), data only.

Built-in syncs live beside this file; a user's project may name a folder of its own (``sync_paths``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from integrations_pipeline.engine.errors import ConfigError, SpecError
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.engine.write.mapping import SyncSpec, load_sync

SYNC_DIR = Path(__file__).parent


def sync_paths(syncs_dir: str | Path | None = None) -> list[Path]:
    """Every ``*.yaml`` in ``syncs_dir``, or the built-in syncs when None."""
    folder = SYNC_DIR if syncs_dir is None else Path(syncs_dir)
    if not folder.is_dir():
        raise ConfigError(f"syncs_dir: {folder} is not a folder (expected one holding <sync>.yaml specs)")
    return sorted(p.resolve() for p in folder.glob("*.yaml"))


def load_syncs(connectors: Mapping[str, ConnectorSpec], paths: Iterable[Path] | None = None) -> dict[str, SyncSpec]:
    """Every sync spec in ``paths`` (default: the built-in ones), validated against ``connectors``."""
    found = sync_paths() if paths is None else paths
    return {s.name: s for s in (load_sync(p, connectors) for p in found)}


def named_connectors(path: Path) -> set[str]:
    """The connectors a sync file names (source, target, lookups, ``via``), read without checking them
    against any connector: so a project can leave out the syncs of vendors it did not select."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path.name, [f"invalid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(path.name, [f"the document must be a mapping, got {type(data).__name__}"])
    refs = [data.get("source"), data.get("target"), *(lk.get("stream") for lk in _lookups(data))]
    names = {str(r).split("/", 1)[0] for r in refs if isinstance(r, str) and "/" in r}
    if isinstance(data.get("via"), str):
        names.add(data["via"])
    return names


def _lookups(data: dict) -> list[dict]:
    lookups = data.get("lookups")
    return [v for v in lookups.values() if isinstance(v, dict)] if isinstance(lookups, dict) else []
