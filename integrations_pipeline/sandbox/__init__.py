"""Sandbox vendors: local servers that behave like Trackstar, Salestrekker, SALESmanago, Datatalks and Trakor.

``default_sandboxes()`` builds one of each available vendor; ``server.serve()`` puts them on loopback
ports; ``sandbox_environment(base_urls)`` gives the env vars (base URLs and the sandboxes' own
credentials) that point the connectors at them. Vendor modules are imported lazily, so importing
this package stays cheap and a vendor module that is missing is simply skipped.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integrations_pipeline.sandbox.base import VendorSandbox

# name -> (module, class); the order is the order servers start and env vars print.
VENDORS: dict[str, tuple[str, str]] = {
    "trackstar": ("integrations_pipeline.sandbox.trackstar", "TrackstarSandbox"),
    "salestrekker": ("integrations_pipeline.sandbox.salestrekker", "SalestrekkerSandbox"),
    "salesmanago": ("integrations_pipeline.sandbox.salesmanago", "SalesmanagoSandbox"),
    "datatalks": ("integrations_pipeline.sandbox.datatalks", "DatatalksSandbox"),
    "trakor": ("integrations_pipeline.sandbox.trakor", "TrakorSandbox"),
}


#: Where ``integrations-pipeline sandbox`` serves the vendors, so the ``.env`` the main job writes (and ``dagster
#: dev``, ``dagster asset materialize`` read) points at them whenever they run.
SANDBOX_PORTS: dict[str, int] = {
    "trackstar": 8711,
    "salestrekker": 8712,
    "salesmanago": 8713,
    "datatalks": 8714,
    "trakor": 8715,
}
#: The sandbox's data sizes for the main job and ``integrations-pipeline sandbox`` alike (the same records either
#: way): Trackstar's order packs take one call per order at 10/s per connection, Trakor and Datatalks one record
#: per call, so a demo-sized catalogue and CRM keep the main job to a few minutes.
DEMO_SIZES: dict[str, int] = {"products": 150, "contacts": 200, "deals": 160, "orders": 300}


def _vendor_class(name: str) -> type | None:
    module_name, class_name = VENDORS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # that vendor's sandbox is not written (yet): skip it
        raise
    return getattr(module, class_name, None)


def _construct(cls: type, **candidates: Any) -> Any:
    """Call ``cls`` with the candidate keyword arguments its signature accepts."""
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in candidates.items() if k in params and v is not None})


def default_sandboxes(seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict[str, VendorSandbox]:
    """One sandbox per available vendor, seeded alike. ``sizes`` maps stream names to record
    counts (e.g. ``{"inventory": 1_000_000, "deals": 5000}``); each vendor takes its own streams."""
    from integrations_pipeline.sandbox.salestrekker import DEFAULT_SIZES as ST_SIZES
    from integrations_pipeline.sandbox.trackstar import DEFAULT_SIZES as TS_SIZES

    sizes = dict(sizes or {})
    unknown = set(sizes) - set(TS_SIZES) - set(ST_SIZES)
    if unknown:
        raise ValueError(
            f"got sizes for unknown streams {sorted(unknown)}, expected some of {sorted({*TS_SIZES, *ST_SIZES})}"
        )
    out: dict[str, VendorSandbox] = {}
    for name in VENDORS:
        cls = _vendor_class(name)
        if cls is None:
            continue
        own = {
            k: v
            for k, v in sizes.items()
            if k in (TS_SIZES if name == "trackstar" else ST_SIZES if name == "salestrekker" else ())
        }
        # Datatalks is a SALESmanago proxy: let it forward into the SALESmanago sandbox, as the real one does.
        forward_to = out.get("salesmanago") if name == "datatalks" else None
        out[name] = _construct(cls, seed=seed, sizes=own or None, forward_to=forward_to)
    return out


def _fallback_environment(name: str, base_url: str, sandbox: Any) -> dict[str, str]:
    """Env vars for sandboxes that do not override ``VendorSandbox.environment``: read their
    credential attributes (constructor defaults) and the base paths their specs expect."""
    env: dict[str, str] = {}

    def put(var: str, attr: str) -> None:
        value = getattr(sandbox, attr, None)
        if value is not None:
            env[var] = str(value)

    if name == "salesmanago":
        env["SALESMANAGO_BASE_URL"] = base_url
        put("SALESMANAGO_CLIENT_ID", "client_id")
        put("SALESMANAGO_API_KEY", "api_key")
        put("SALESMANAGO_API_SECRET", "api_secret")
        put("SALESMANAGO_OWNER", "owner")
    elif name == "datatalks":
        env["DATATALKS_BASE_URL"] = f"{base_url}/v1"  # the spec's default base ends in /v1
        put("DATATALKS_AWS_ACCESS_KEY_ID", "access_key_id")
        put("DATATALKS_AWS_SECRET_ACCESS_KEY", "secret_access_key")
    elif name == "trakor":
        env["TRAKOR_BASE_URL"] = f"{base_url}/api/public/v1"  # the spec's default base ends there
        put("TRAKOR_API_KEY", "api_key")
    else:
        env[f"{name.upper()}_BASE_URL"] = base_url
    return env


def sandbox_environment(
    base_urls: Mapping[str, str], sandboxes: Mapping[str, VendorSandbox] | None = None
) -> dict[str, str]:
    """Env var values pointing each connector at its sandbox: base URL plus sandbox credentials.

    ``base_urls`` is ``SandboxServers.base_urls``; pass the running ``sandboxes`` when they were
    built with non-default credentials (otherwise default instances supply them).
    """
    from integrations_pipeline.sandbox.base import VendorSandbox

    if sandboxes is None:
        sandboxes = default_sandboxes()
    env: dict[str, str] = {}
    for name, url in base_urls.items():
        sandbox = sandboxes.get(name)
        url = url.rstrip("/")
        if sandbox is not None and type(sandbox).environment is not VendorSandbox.environment:
            env.update(sandbox.environment(url))
        else:
            env.update(_fallback_environment(name, url, sandbox))
    return env


__all__ = ["DEMO_SIZES", "SANDBOX_PORTS", "VENDORS", "default_sandboxes", "sandbox_environment"]
