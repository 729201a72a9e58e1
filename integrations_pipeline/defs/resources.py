"""Dagster resources: the warehouse, and one credentials resource per connector.

Credentials resources are generated from each spec: one optional string field per environment
variable the spec names, bound to ``dg.EnvVar(NAME)``. The UI therefore shows variable names, never
values; definitions load with nothing set; and a run without a required variable fails with Dagster's
message naming it. Variables that are alternatives (Salestrekker API key *or* email/password) are
bound only for the alternative chosen at load time; the others stay unset rather than failing.

Rate budgets (``rate_budgets``): every client of every run in this process draws on one store, named by
``RATE_LIMIT_URL`` (``redis://...`` for a deployment) or, unset, a SQLite file under ``.data/`` that
every process on this machine shares and that survives a restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

import dagster as dg
from pydantic import create_model

from integrations_pipeline.engine.auth import Credentials, GraphqlLoginConfig, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.connections import TokenVault
from integrations_pipeline.engine.ratelimit import BudgetStore
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import Warehouse, connect_warehouse

SECRET_KEY_ENV = "INTEGRATIONS_PIPELINE_SECRET_KEY"
RATE_LIMIT_URL_ENV = "RATE_LIMIT_URL"

_BUDGET_STORES: dict[str, BudgetStore] = {}


def rate_budgets(environ: Mapping[str, str] | None = None) -> BudgetStore:
    """The process's store of rate budgets: ``RATE_LIMIT_URL``, else ``sqlite:///<cwd>/.data/rate_budgets.sqlite``.
    One store per URL per process, so its clients share buckets and locks."""
    env = os.environ if environ is None else environ
    url = env.get(RATE_LIMIT_URL_ENV) or f"sqlite:///{(Path('.data') / 'rate_budgets.sqlite').resolve()}"
    store = _BUDGET_STORES.get(url)
    if store is None:
        store = _BUDGET_STORES[url] = BudgetStore(url)
    return store


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: ``url`` (or ``WAREHOUSE_URL``) picks DuckDB or PostgreSQL; unset → embedded DuckDB."""

    url: str | None = None

    def open(self) -> Warehouse:
        return connect_warehouse(self.url)

    def kind(self) -> str:
        """The backend by the URL's scheme, the variable resolved (an ``EnvVar`` is a name until then)."""
        url: str | None = self.url
        if isinstance(url, dg.EnvVar):
            url = url.get_value()
        url = url or os.environ.get("WAREHOUSE_URL") or "duckdb://"
        return "postgres" if url.lower().startswith("postgres") else "duckdb"


class ConnectionVaultResource(dg.ConfigurableResource):
    """The key(s) that open connection tokens the service stored (``engine.connections.TokenVault``);
    bound to ``EnvVar("INTEGRATIONS_PIPELINE_SECRET_KEY")`` when it is set, so the UI shows its name only."""

    secret_key: str | None = None

    def vault(self) -> TokenVault | None:
        return TokenVault.from_setting(self.secret_key, source=SECRET_KEY_ENV) if self.secret_key else None


def vault_resource(environ: Mapping[str, str]) -> ConnectionVaultResource:
    if environ.get(SECRET_KEY_ENV):
        return ConnectionVaultResource(secret_key=dg.EnvVar(SECRET_KEY_ENV))
    return ConnectionVaultResource()


class ConnectorCredentials(dg.ConfigurableResource):
    """Base of the generated per-connector credentials resources."""

    connector: ClassVar[str] = ""

    def credentials(self) -> Credentials:
        values = {name: getattr(self, field_name(name)) for name in self.env_var_names()}
        return Credentials(self.connector, values)

    def clients(self, log: Callable[[str], None] | None = None) -> ClientFactory:
        """The factory of this connector's clients: its credentials, and the run's environment for the
        settings a spec names (base URLs, plan limits): the Dagster layer hands the engine its environment."""
        return ClientFactory(self.credentials(), environ=os.environ, log=log, budgets=rate_budgets())

    @classmethod
    def env_var_names(cls) -> list[str]:
        return [f.upper() for f in cls.model_fields]


def field_name(env_var: str) -> str:
    return env_var.lower()


# Keyed by name and variables: a user's own spec may reuse a built-in vendor's name with other variables.
_CLASSES: dict[tuple[str, tuple[str, ...]], type[ConnectorCredentials]] = {}


def credentials_class(spec: ConnectorSpec) -> type[ConnectorCredentials]:
    """The generated resource class for ``spec`` (cached, so one class per connector and its variables)."""
    names = tuple(secret_env_vars(spec))
    key = (spec.name, names)
    if key not in _CLASSES:
        fields = {field_name(n): (str | None, None) for n in names}
        cls = create_model(  # type: ignore[call-overload]
            f"{spec.title.replace(' ', '')}Credentials",
            __base__=ConnectorCredentials,
            __doc__=f"Credentials for {spec.title}, each read from its environment variable.",
            **fields,
        )
        cls.connector = spec.name
        _CLASSES[key] = cls
    return _CLASSES[key]


def required_env_vars(spec: ConnectorSpec, environ: Mapping[str, str]) -> list[str]:
    """Variables a run needs: all of them, except unchosen login alternatives, the webhook secret (only the
    service verifies webhooks) and, for a vendor with a link flow, the fallback connections variable when it
    is not set (connections then come from the registry the service fills)."""
    names = secret_env_vars(spec)
    if spec.webhooks is not None:
        names = [n for n in names if n != spec.webhooks.verify.secret.env]
    if (
        spec.connections is not None
        and spec.connections.link is not None
        and not environ.get(spec.connections.token.env)
    ):
        names = [n for n in names if n != spec.connections.token.env]
    auth = spec.auth
    if isinstance(auth, GraphqlLoginConfig):
        login: GraphqlLoginConfig = auth  # the spec's auth union is built at run time: name the member for mypy
        methods = [[s.env for s in m.variables.values()] for m in login.methods]
        chosen = next((m for m in methods if all(environ.get(v) for v in m)), methods[0])
        alternatives = {v for m in methods for v in m}
        names = [n for n in names if n not in alternatives or n in chosen]
    return names


def credentials_resource(spec: ConnectorSpec, environ: Mapping[str, str] | None = None) -> ConnectorCredentials:
    env = os.environ if environ is None else environ
    cls = credentials_class(spec)
    return cls(**{field_name(n): dg.EnvVar(n) for n in required_env_vars(spec, env)})
