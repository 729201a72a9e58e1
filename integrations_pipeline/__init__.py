"""integrations_pipeline: declarative ETL connector plugins on Dagster.

Layers import one way only: ``engine`` (no Dagster) ← ``warehouse`` ← ``defs`` (Dagster);
``connectors`` is data; ``sandbox`` imports nothing of the others but the shared fault helpers.

``integrations_pipeline.ConnectorsComponent`` (the name a user's ``defs.yaml`` gives as ``type:``) is
exported lazily: importing this package, or ``integrations_pipeline.engine``, imports no Dagster.
"""

from __future__ import annotations

import importlib
from typing import Any

# Name → the module defining it, imported on first access (PEP 562).
_LAZY = {"ConnectorsComponent": "integrations_pipeline.dagster"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # Dagster finds components in a registry module by dir() (`dg list components`): list the lazy names.
    return sorted({*globals(), *_LAZY})
