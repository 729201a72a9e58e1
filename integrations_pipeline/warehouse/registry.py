"""Which backend opens which warehouse URL, and ``connect_warehouse``.

``BACKENDS`` has one line per backend: its URL schemes, where its class lives and the URL forms it
accepts. Adding a backend is one module in ``warehouse/`` (a ``Warehouse`` subclass, see ``base.py``)
plus one line here. The class is named, not imported: its module is loaded the first time a URL of
its scheme is opened (or the class is asked for by name), so a program that only ever uses DuckDB
never imports psycopg, and no module here imports a backend (the backends import ``base.py``).

URLs: ``duckdb:///abs/path.duckdb``, ``duckdb:///:memory:``, ``postgresql://user@host:port/db``
(or ``postgres://``). ``Warehouse.url`` never shows a password.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.redact import redact_url

from .base import Warehouse

WAREHOUSE_URL_ENV = "WAREHOUSE_URL"


@dataclass(frozen=True)
class Backend:
    """One backend: the URL schemes it opens, its class as ``module:Class``, and its URL forms (for messages)."""

    schemes: tuple[str, ...]
    target: str
    urls: tuple[str, ...]

    @property
    def class_name(self) -> str:
        return self.target.partition(":")[2]

    def load(self) -> type[Warehouse]:
        """The backend's class (importing its module, and with it the driver, on first use)."""
        module, _, name = self.target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, Warehouse)):
            raise TypeError(f"warehouse backend {self.target} is not a Warehouse class")
        return cls


BACKENDS: tuple[Backend, ...] = (
    Backend(
        ("duckdb",),
        "integrations_pipeline.warehouse.duckdb:DuckDBWarehouse",
        ("duckdb:///<absolute path>.duckdb", "duckdb:///:memory:"),
    ),
    Backend(
        ("postgresql", "postgres"),
        "integrations_pipeline.warehouse.postgres:PostgresWarehouse",
        ("postgresql://user[:password]@host[:port]/database", "postgres://user[:password]@host[:port]/database"),
    ),
)
ACCEPTED_URLS: tuple[str, ...] = tuple(url for backend in BACKENDS for url in backend.urls)


def backend_for(scheme: str) -> Backend | None:
    """The backend opening URLs of ``scheme`` (lower case), if any."""
    return next((b for b in BACKENDS if scheme in b.schemes), None)


def backend_class(name: str) -> type[Warehouse] | None:
    """The backend class called ``name`` (e.g. ``DuckDBWarehouse``), loaded; None if no backend has it."""
    backend = next((b for b in BACKENDS if b.class_name == name), None)
    return None if backend is None else backend.load()


def default_warehouse_url() -> str:
    """``duckdb:///<cwd>/.data/warehouse.duckdb`` (the directory is created)."""
    path = Path.cwd() / ".data" / "warehouse.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"duckdb://{path}"


def connect_warehouse(url: str | None = None, **options: Any) -> Warehouse:
    """Open the warehouse at ``url`` (default: ``$WAREHOUSE_URL``, else a DuckDB file under ``./.data``).

    Nothing is connected yet: the first operation connects. ``options`` go to the backend
    (DuckDB: ``lock_timeout`` seconds, ``memory_limit`` e.g. "1GB", also as URL query options;
    PostgreSQL: ``connect_timeout`` seconds).
    """
    if url is None:
        url = os.environ.get(WAREHOUSE_URL_ENV) or default_warehouse_url()
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"warehouse URL is empty; expected one of {list(ACCEPTED_URLS)}")
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower() if sep else ""
    backend = backend_for(scheme) if scheme else None
    if backend is not None:
        return backend.load()(url, **options)
    shown = redact_url(url)
    if not scheme:
        raise ConfigError(f"warehouse URL '{shown}' has no scheme; expected one of {list(ACCEPTED_URLS)}")
    raise ConfigError(
        f"unsupported warehouse URL scheme '{scheme}' in '{shown}'; expected one of {list(ACCEPTED_URLS)}"
    )


__all__ = [
    "ACCEPTED_URLS",
    "BACKENDS",
    "WAREHOUSE_URL_ENV",
    "Backend",
    "backend_class",
    "backend_for",
    "connect_warehouse",
    "default_warehouse_url",
]
