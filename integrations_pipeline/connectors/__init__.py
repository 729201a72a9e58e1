"""Connector specs: one YAML file per vendor (data only), plus discovery of third-party specs.

Built-in specs live beside this file. Other packages add connectors through the entry-point group
``integrations_pipeline.connectors``: each entry point names a callable returning YAML paths. A user's
own Dagster project may instead name a folder of its own specs (``spec_paths(connectors_dir)``); they are
validated by the same models, and an error names the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path

from integrations_pipeline.engine.errors import ConfigError, SpecError
from integrations_pipeline.engine.spec import ConnectorSpec, load_spec

ENTRY_POINT_GROUP = "integrations_pipeline.connectors"
ALLOW_ENV = "INTEGRATIONS_PIPELINE_ALLOW_ENV"
SPEC_DIR = Path(__file__).parent


def builtin_spec_paths() -> list[Path]:
    return sorted(SPEC_DIR.glob("*.yaml"))


def discover_spec_paths() -> list[Path]:
    """Built-in specs first, then every entry point's, de-duplicated by resolved path."""
    paths: list[Path] = list(builtin_spec_paths())
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        provider = ep.load()
        found: Iterable[str | Path] = provider()
        paths.extend(Path(p) for p in found)
    return list(dict.fromkeys(p.resolve() for p in paths))


def spec_paths(connectors_dir: str | Path | None = None) -> list[Path]:
    """The spec files to load: every ``*.yaml`` in ``connectors_dir``, or, when None, the built-in and
    entry-point specs (``discover_spec_paths``). A folder given replaces them: a user's project loads
    exactly the vendors it names."""
    if connectors_dir is None:
        return discover_spec_paths()
    folder = Path(connectors_dir)
    if not folder.is_dir():
        raise ConfigError(f"connectors_dir: {folder} is not a folder (expected one holding <vendor>.yaml specs)")
    return sorted(p.resolve() for p in folder.glob("*.yaml"))


def allowed_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Variables a deployment lets any connector spec read beyond its own prefix:
    ``INTEGRATIONS_PIPELINE_ALLOW_ENV=NAME,NAME`` (names, comma-separated)."""
    env = os.environ if environ is None else environ
    return frozenset(n.strip() for n in env.get(ALLOW_ENV, "").split(",") if n.strip())


def load_connectors(
    paths: Iterable[Path] | None = None, *, environ: Mapping[str, str] | None = None
) -> dict[str, ConnectorSpec]:
    """Load and validate every spec; two specs with one name is an error naming both files.
    ``environ`` (default ``os.environ``) is where ``INTEGRATIONS_PIPELINE_ALLOW_ENV`` is read."""
    specs: dict[str, ConnectorSpec] = {}
    origin: dict[str, Path] = {}
    allow = allowed_env(environ)
    for path in discover_spec_paths() if paths is None else paths:
        spec = load_spec(path, allow_env=allow)
        if spec.name in specs:
            raise SpecError(path.name, [f"name: connector '{spec.name}' is already defined by {origin[spec.name]}"])
        specs[spec.name], origin[spec.name] = spec, path
    return specs
