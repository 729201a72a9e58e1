"""Before the main job starts anything: every variable the selected vendors need, and a reachable warehouse.

``integrations-pipeline run`` calls ``preflight`` before it starts the sandbox, the service or a single step, and
stops with one message listing every problem (exit 2) instead of a traceback from the first step that needs a
variable, after earlier steps ran. A vendor's variables are what its runs bind (``defs.resources.required_env_vars``:
not the webhook secret, which only the service reads, nor the fallback connections variable of a vendor whose
connections come from the link flow); login alternatives (Salestrekker: an API key, or an email and a password) are
named together, so the message says every way to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from integrations_pipeline.defs.resources import required_env_vars
from integrations_pipeline.engine.auth import GraphqlLoginConfig
from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.engine.write.mapping import SyncSpec
from integrations_pipeline.warehouse.base import WarehouseError


@dataclass(frozen=True)
class Problem:
    """One thing that stops the main job: ``subject`` (a vendor, ``warehouse``) and what to do."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def needed_vendors(specs: Mapping[str, ConnectorSpec], syncs: Iterable[SyncSpec]) -> list[str]:
    """The vendors the main job calls: every vendor with streams (it reads them all), and each sync's target as
    routed (SALESmanago through Datatalks calls Datatalks)."""
    names = {name for name, spec in specs.items() if spec.streams}
    names |= {s.target_connector for s in syncs}
    return [name for name in specs if name in names]


def missing_credentials(spec: ConnectorSpec, environ: Mapping[str, str]) -> Problem | None:
    """What ``spec``'s runs need and ``environ`` lacks, every alternative named; None when nothing is missing."""
    needed = required_env_vars(spec, environ)
    methods: list[list[str]] = []
    auth = spec.auth
    if isinstance(auth, GraphqlLoginConfig):
        login: GraphqlLoginConfig = auth  # the spec's auth union is built at run time: name the member for mypy
        methods = [[s.env for s in m.variables.values()] for m in login.methods]
        alternatives = {v for m in methods for v in m}
        needed = [n for n in needed if n not in alternatives]
    missing = [n for n in dict.fromkeys(needed) if not environ.get(n)]
    login_ok = not methods or any(all(environ.get(v) for v in m) for m in methods)
    if not missing and login_ok:
        return None
    parts = []
    if missing:
        parts.append(", ".join(missing))
    if not login_ok:
        parts.append(", or ".join(" and ".join(m) for m in methods))
    return Problem(spec.name, f"set {'; and '.join(parts)}")


def warehouse_problem(url: str | None) -> Problem | None:
    """None when the warehouse at ``url`` (None: the embedded default) answers ``SELECT 1``."""
    from integrations_pipeline.warehouse.registry import connect_warehouse

    try:
        warehouse = connect_warehouse(url)
        try:
            warehouse.ping()
        finally:
            warehouse.close()
    except (WarehouseError, ConfigError) as exc:  # unreachable; or a URL no backend takes
        return Problem("warehouse", " ".join(str(exc).split()))  # the driver's lines, on one
    return None


def preflight(
    specs: Mapping[str, ConnectorSpec],
    syncs: Iterable[SyncSpec],
    environ: Mapping[str, str],
    *,
    warehouse_url: str | None,
    check_credentials: bool = True,
) -> list[Problem]:
    """Every problem at once: the selected vendors' missing variables (unless ``check_credentials`` is false: the
    sandbox sets them) and an unreachable warehouse."""
    problems: list[Problem] = []
    if check_credentials:
        for name in needed_vendors(specs, syncs):
            problem = missing_credentials(specs[name], environ)
            if problem is not None:
                problems.append(problem)
    warehouse = warehouse_problem(warehouse_url)
    if warehouse is not None:
        problems.append(warehouse)
    return problems
