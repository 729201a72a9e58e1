"""Connector discovery: built-in specs plus third-party specs from the entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import yaml

import integrations_pipeline.connectors as connectors
from integrations_pipeline.engine.errors import SpecError

BUILTIN = {"trackstar", "salestrekker", "salesmanago", "datatalks", "trakor"}


def _plugin(tmp_path: Path, monkeypatch, name: str, body: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    module = f"plugin_{name}_{tmp_path.name}".replace("-", "_")  # unique: sys.modules caches by name
    (tmp_path / f"{module}.py").write_text(f"def specs():\n    return [{str(path)!r}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="acme", value=f"{module}:specs", group=connectors.ENTRY_POINT_GROUP)
    real = connectors.entry_points

    def fake(group: str):
        return [*real(group=group), ep] if group == connectors.ENTRY_POINT_GROUP else real(group=group)

    monkeypatch.setattr(connectors, "entry_points", fake)
    return path


def _acme(name: str = "acme") -> dict:
    return {
        "name": name,
        "title": "Acme",
        "description": "A third-party REST vendor added without Python in this project.",
        "protocol": "rest",
        "base_url": {"env": f"{name.upper()}_BASE_URL", "default": "https://api.acme.test"},
        "auth": {"type": "static_headers", "headers": {"Authorization": {"env": f"{name.upper()}_TOKEN"}}},
        "streams": {
            "widgets": {
                "description": "Widgets.",
                "path": "/widgets",
                "records_path": "items",
                "primary_key": ["id"],
                "pagination": {"type": "page_number", "page_size": 50},
                "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
            }
        },
    }


def test_builtin_specs_are_registered_through_the_entry_point_group():
    assert BUILTIN <= set(connectors.load_connectors())


def test_a_plugin_spec_becomes_assets(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, "acme", _acme())
    specs = connectors.load_connectors()
    assert set(specs) == BUILTIN | {"acme"}
    from integrations_pipeline.definitions import build_definitions

    keys = {k.to_user_string() for k in build_definitions(environ={}).resolve_asset_graph().get_all_asset_keys()}
    assert "acme/widgets" in keys


def test_a_plugin_reusing_a_builtin_name_is_rejected_naming_both(tmp_path, monkeypatch):
    path = _plugin(tmp_path, monkeypatch, "trakor", _acme("trakor"))
    with pytest.raises(SpecError, match=r"trakor.yaml: name: connector 'trakor' is already defined by .*trakor.yaml"):
        connectors.load_connectors()
    assert path.exists()


def test_a_plugin_spec_reads_only_its_own_variables_unless_the_deployment_allows_more(tmp_path, monkeypatch):
    """A drop-in YAML may not bind another connector's credentials (or the warehouse URL) into its requests."""
    spec = _acme()
    spec["auth"]["headers"]["Authorization"] = {"env": "TRACKSTAR_API_KEY"}
    spec["streams"]["widgets"]["params"] = {"x": 1}
    spec["base_url"] = {"env": "WAREHOUSE_URL", "default": "https://api.acme.test"}
    _plugin(tmp_path, monkeypatch, "acme", spec)
    with pytest.raises(SpecError) as info:
        connectors.load_connectors()
    assert str(info.value).splitlines() == [
        "acme.yaml: base_url.env: WAREHOUSE_URL is not under this connector's prefix ACME_; a connector spec reads "
        "only its own variables (a deployment may allow it: INTEGRATIONS_PIPELINE_ALLOW_ENV=WAREHOUSE_URL)",
        "acme.yaml: auth.headers.Authorization.env: TRACKSTAR_API_KEY is not under this connector's prefix ACME_; a "
        "connector spec reads only its own variables (a deployment may allow it: INTEGRATIONS_PIPELINE_ALLOW_ENV=TRACKSTAR_API_KEY)",
    ]
    monkeypatch.setenv("INTEGRATIONS_PIPELINE_ALLOW_ENV", "WAREHOUSE_URL, TRACKSTAR_API_KEY")
    assert "acme" in connectors.load_connectors()
