"""The ``.env`` the main job writes in sandbox mode, so everything after it runs with no manual export.

Dagster's CLI (``dagster dev``, ``dagster asset materialize``, ``dagster-daemon``) loads a ``.env`` from the
working directory before it opens its instance, so the file carries ``DAGSTER_HOME`` (the main job's instance: the
UI shows its runs, CLI backfills land in it), ``WAREHOUSE_URL`` (the embedded DuckDB file, as an absolute URL),
the sandbox vendors' URLs on their fixed ports (``integrations-pipeline sandbox`` serves them there) with the
sandbox's own demo credentials, and the service's keys, kept from one run to the next so the connection tokens
the registry holds sealed stay readable.

It holds sandbox demo values only: no real credential is ever written (``run --no-sandbox`` writes no file), and
a ``.env`` this project did not write is left alone. Read and written with python-dotenv (Dagster's own reader).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

MARKER = "# written by integrations-pipeline run (sandbox demo values only; safe to delete)"
#: Variables the sandbox mode must not leave behind: with them set, the connections would not come from the
#: link flow's registry.
LEFT_OUT = ("TRACKSTAR_ACCESS_TOKEN",)


def ours(path: Path) -> bool:
    """Whether ``path`` is absent or a file this project wrote (it may then be rewritten)."""
    return not path.exists() or path.read_text(errors="replace").startswith(MARKER)


def read(path: Path) -> dict[str, str]:
    """The values of ``path`` (none when it does not exist)."""
    if not path.exists():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def write(path: Path, values: Mapping[str, str]) -> None:
    """Write ``values`` to ``path`` (mode 0600), after the marker line, one ``KEY='value'`` per line."""
    lines = [MARKER]
    for key, value in values.items():
        if key in LEFT_OUT:
            continue
        if "'" in value or "\n" in value:
            raise ValueError(f"{key}: a value with a quote or a newline cannot be written to {path.name}")
        lines.append(f"{key}='{value}'")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)  # whole or not at all: a reader never sees half a file
