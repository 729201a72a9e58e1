"""The project as a library in a user's own Dagster project: ``integrations_pipeline.dagster.build_definitions``
with the user's spec folders and warehouse, and ``ConnectorsComponent`` in a scratch project's ``defs.yaml``,
loaded the way Dagster loads a defs folder, materialized against the sandbox, and checked by ``dg check yaml``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from integrations_pipeline.connectors import SPEC_DIR
from integrations_pipeline.dagster import (
    WAREHOUSE_IO_MANAGER,
    ConnectorsComponent,
    ConnectorTranslator,
    WarehouseResource,
    build_definitions,
)
from integrations_pipeline.engine.errors import ConfigError, SpecError
from integrations_pipeline.syncs import SYNC_DIR
from integrations_pipeline.warehouse import connect_warehouse, table_spec_for

BIN = Path(sys.executable).parent
TRAKOR_SYNCS = ["trackstar_products_to_trakor_products", "salestrekker_contacts_to_trakor_parties"]


def _keys(defs: dg.Definitions) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}


def _streams(vendor: str) -> set[str]:
    """The vendor's stream assets, its connection registry asset when it has a link flow, and its webhook events
    asset when it sends webhooks."""
    spec = yaml.safe_load((SPEC_DIR / f"{vendor}.yaml").read_text())
    registry = {f"{vendor}/connections"} if (spec.get("connections") or {}).get("link") else set()
    events = {f"{vendor}/webhook_events"} if spec.get("webhooks") and spec["streams"] else set()
    return {f"{vendor}/{s}" for s in spec["streams"]} | registry | events


def _copy(names: list[str], source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / f"{name}.yaml", folder / f"{name}.yaml")
    return folder


def _renamed_salestrekker(name: str) -> str:
    """Salestrekker's spec as a user's own vendor ``name``: a YAML this repo does not ship, same schema."""
    text = (SPEC_DIR / "salestrekker.yaml").read_text()
    return text.replace("name: salestrekker", f"name: {name}", 1).replace("SALESTREKKER_", f"{name.upper()}_")


def _acme() -> dict:
    return {
        "name": "acme",
        "title": "Acme",
        "description": "A user's own REST vendor.",
        "protocol": "rest",
        "base_url": {"env": "ACME_BASE_URL", "default": "https://api.acme.test"},
        "auth": {"type": "static_headers", "headers": {"Authorization": {"env": "ACME_TOKEN"}}},
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


# --- the Python API ---------------------------------------------------------------------------------------


def test_the_public_module_is_named_dagster_and_imports_the_dagster_library():
    import integrations_pipeline.dagster as api

    assert api.dg is dg and api.DAGSTER_VERSION == dg.__version__ == "1.13.27"
    assert api.dg.__name__ == "dagster"


def test_the_package_exports_the_component_lazily_and_its_import_pulls_in_no_dagster():
    script = (
        "import sys, integrations_pipeline, integrations_pipeline.engine\n"
        "assert not [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')], 'dagster imported'\n"
        "assert 'ConnectorsComponent' in dir(integrations_pipeline)\n"
        "from integrations_pipeline.dagster import ConnectorsComponent\n"
        "assert integrations_pipeline.ConnectorsComponent is ConnectorsComponent\n"
        "import dagster as dg\n"
        "assert issubclass(ConnectorsComponent, dg.Component)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    import integrations_pipeline

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        integrations_pipeline.NoSuchThing  # noqa: B018


def test_build_definitions_from_own_folders_and_warehouse(tmp_path):
    connectors = _copy(["trackstar", "salestrekker", "trakor"], SPEC_DIR, tmp_path / "connectors")
    (connectors / "acme.yaml").write_text(yaml.safe_dump(_acme()))
    syncs = _copy(TRAKOR_SYNCS, SYNC_DIR, tmp_path / "syncs")
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"

    defs = build_definitions(connectors_dir=connectors, syncs_dir=syncs, warehouse_url=url, environ={})

    expected = _streams("trackstar") | _streams("salestrekker") | {"acme/widgets"}
    assert _keys(defs) == expected | {f"trakor/{s}" for s in TRAKOR_SYNCS}
    warehouse = defs.resources["warehouse"]
    assert isinstance(warehouse, WarehouseResource) and warehouse.url == url
    # A run reads the specs again in its own process: from the folder the definitions were built from.
    assert defs.resources[WAREHOUSE_IO_MANAGER].connectors_dir == str(connectors.resolve())
    assert defs.resources["trakor_sink"].connectors_dir == str(connectors.resolve())
    assert "acme_credentials" in defs.resources
    assert "salesmanago_credentials" not in defs.resources  # only the folder's vendors


def test_built_in_syncs_are_kept_only_when_their_vendors_are_loaded(tmp_path):
    connectors = _copy(["trackstar", "salestrekker", "trakor"], SPEC_DIR, tmp_path / "connectors")
    defs = build_definitions(connectors_dir=connectors, environ={})
    assert {k for k in _keys(defs) if k.startswith("trakor/")} == {f"trakor/{s}" for s in TRAKOR_SYNCS}

    only = build_definitions(connectors_dir=connectors, connectors=["trackstar"], environ={})
    assert _keys(only) == _streams("trackstar")  # no sync: each names a vendor left out
    assert sorted(s.name for s in only.sensors) == ["trackstar_connections", "webhook_events"]  # no sync sensor


def test_defaults_are_the_built_in_specs_and_the_warehouse_url_variable():
    built_in = build_definitions(environ={})
    assert {"trackstar/orders", "salesmanago/trackstar_orders_to_salesmanago_events"} <= _keys(built_in)
    assert built_in.resources["warehouse"].url is None  # the embedded DuckDB default
    assert built_in.resources[WAREHOUSE_IO_MANAGER].connectors_dir is None
    by_name = build_definitions(environ={"WAREHOUSE_URL": "postgresql://u:secret@127.0.0.1:5432/db"})
    assert by_name.resources["warehouse"].url == dg.EnvVar("WAREHOUSE_URL")  # the name, never the value


def test_a_broken_spec_in_the_users_folder_names_the_file(tmp_path):
    folder = _copy(["trackstar"], SPEC_DIR, tmp_path / "connectors")
    broken = _acme()
    broken["streams"]["widgets"]["pagination"]["type"] = "pages"
    (folder / "acme.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(SpecError, match=r"^acme\.yaml: streams\.widgets\.pagination\.type: got 'pages'") as err:
        build_definitions(connectors_dir=folder, environ={})
    assert err.value.source == "acme.yaml"

    (folder / "acme.yaml").write_text("name: acme\nstreams: [unclosed\n")
    with pytest.raises(SpecError, match=r"^acme\.yaml: "):
        build_definitions(connectors_dir=folder, environ={})


def test_a_users_sync_naming_an_unknown_vendor_or_field_names_the_file(tmp_path):
    connectors = _copy(["trackstar", "trakor"], SPEC_DIR, tmp_path / "connectors")
    syncs = _copy(["trackstar_products_to_trakor_products"], SYNC_DIR, tmp_path / "syncs")
    (syncs / "orders_to_nowhere.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "orders_to_nowhere",
                "description": "A typo'd target vendor.",
                "source": "trackstar/orders",
                "target": "trakr/products",
                "fields": {"name": {"from": "id"}},
            }
        )
    )
    with pytest.raises(SpecError, match=r"^orders_to_nowhere\.yaml: target"):
        build_definitions(connectors_dir=connectors, syncs_dir=syncs, environ={})

    (syncs / "orders_to_nowhere.yaml").unlink()
    (syncs / "trackstar_products_to_trakor_products.yaml").write_text(
        (SYNC_DIR / "trackstar_products_to_trakor_products.yaml").read_text() + "surprise: 1\n"
    )
    with pytest.raises(SpecError, match=r"^trackstar_products_to_trakor_products\.yaml: surprise: unknown field"):
        build_definitions(connectors_dir=connectors, syncs_dir=syncs, environ={})


def test_a_missing_folder_or_unknown_vendor_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"connectors_dir: .*nowhere is not a folder"):
        build_definitions(connectors_dir=tmp_path / "nowhere", environ={})
    with pytest.raises(ConfigError, match=r"syncs_dir: .*nowhere is not a folder"):
        build_definitions(syncs_dir=tmp_path / "nowhere", environ={})
    with pytest.raises(ConfigError, match=r"connectors: got \['nope'\], expected some of \["):
        build_definitions(connectors=["nope"], environ={})


def test_a_translator_keys_the_users_streams():
    class Prefixed(ConnectorTranslator):
        def get_connector_asset_key(self, connector, name):
            return dg.AssetKey(["acme", *super().get_connector_asset_key(connector, name).path])

    keys = _keys(build_definitions(translator=Prefixed(), connectors=["trackstar"], environ={}))
    # Every asset of the vendor, the connection registry included.
    assert keys == {f"acme/{k}" for k in _streams("trackstar")}
    assert "acme/trackstar/connections" in keys

    class StreamsOnly(ConnectorTranslator):
        def get_asset_key(self, props):
            return dg.AssetKey(["acme", *super().get_asset_key(props).path])

    keys = _keys(build_definitions(translator=StreamsOnly(), connectors=["trackstar"], environ={}))
    apart = {"trackstar/connections", "trackstar/webhook_events"}  # keyed by get_connector_asset_key, not renamed
    assert keys == {f"acme/{k}" for k in _streams("trackstar") - apart} | apart


# --- the Component, in a scratch Dagster project ------------------------------------------------------------


def _scratch_project(root: Path, attributes: dict) -> tuple[Path, str]:
    """A dg project: ``pyproject.toml`` ([tool.dg]), ``src/<pkg>/defs/connectors/defs.yaml`` using the
    component, the user's own vendor spec beside it, and a Python asset reading a stream as its input."""
    package = f"scratch_{uuid.uuid4().hex[:10]}"  # unique: sys.modules caches packages by name
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{package}"\nversion = "0.0.1"\nrequires-python = ">=3.11"\n\n'
        f'[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "{package}"\n'
    )
    src = root / "src" / package
    component = src / "defs" / "connectors"
    specs = component / "specs"
    specs.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "defs" / "__init__.py").write_text("")
    (specs / "crm.yaml").write_text(_renamed_salestrekker("crm"))
    shutil.copy(SPEC_DIR / "trackstar.yaml", specs / "trackstar.yaml")
    document = {"type": "integrations_pipeline.ConnectorsComponent", "attributes": attributes}
    (component / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    (src / "defs" / "report.py").write_text(
        "import dagster as dg\n\n\n"
        '@dg.asset(ins={"workflows": dg.AssetIn(key=["crm", "workflows"])})\n'
        "def workflow_count(workflows) -> int:\n"
        "    return len(workflows)\n"
    )
    return root, package


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A Dagster home with telemetry off, so neither Dagster nor ``dg`` writes outside the test."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


ATTRIBUTES = {
    "connectors_dir": "specs",
    "connectors": ["crm"],
    "warehouse_url": "{{ env.SCRATCH_WAREHOUSE_URL }}",
}


def test_the_component_in_a_scratch_project_loads_and_materializes_a_stream(
    sandboxes, sandbox_env, tmp_path, monkeypatch, dagster_home
):
    _, boxes = sandboxes
    # The user's vendor `crm` reads CRM_* variables: point them at the Salestrekker sandbox.
    for name, value in sandbox_env.items():
        if name.startswith("SALESTREKKER_"):
            monkeypatch.setenv(name.replace("SALESTREKKER_", "CRM_"), value)
    warehouse_url = f"duckdb:///{tmp_path / 'scratch.duckdb'}"
    monkeypatch.setenv("SCRATCH_WAREHOUSE_URL", warehouse_url)
    root, package = _scratch_project(tmp_path / "project", ATTRIBUTES)
    monkeypatch.syspath_prepend(str(root / "src"))

    defs = dg.load_from_defs_folder(path_within_project=root)

    # crm is Salestrekker's spec renamed: its webhooks come with it (crm/webhook_events).
    assert _keys(defs) == {"crm/deals", "crm/contacts", "crm/workflows", "crm/webhook_events", "workflow_count"}
    assert defs.resources["warehouse"].url == warehouse_url  # the template, rendered
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey(["crm", "workflows"]), dg.AssetKey("workflow_count")],
    )
    assert result.success

    want = boxes["salestrekker"].truth("workflows")
    assert want
    crm = yaml.safe_load(_renamed_salestrekker("crm"))
    from integrations_pipeline.engine.spec import parse_spec

    warehouse = connect_warehouse(warehouse_url)
    try:
        rows = warehouse.read_records(table_spec_for(parse_spec(crm, "crm.yaml"), "workflows"))
    finally:
        warehouse.close()
    assert sorted(r["id"] for r in rows) == sorted(w["id"] for w in want)
    # The downstream asset got the table through the stream's IO manager, from the user's spec folder.
    assert result.output_for_node("workflow_count") == len(want)


def test_the_component_resolves_its_folders_from_its_own_defs_yaml(tmp_path, dagster_home, monkeypatch):
    root, _ = _scratch_project(tmp_path / "project", {**ATTRIBUTES, "connectors": ["crm", "trackstar"]})
    monkeypatch.syspath_prepend(str(root / "src"))
    monkeypatch.delenv("SCRATCH_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    defs = dg.load_from_defs_folder(path_within_project=root)
    assert _keys(defs) == {f"crm/{s}" for s in ("deals", "contacts", "workflows", "webhook_events")} | _streams(
        "trackstar"
    ) | {"workflow_count"}
    assert defs.resources["warehouse"].url is None  # an unset variable renders nothing: the default


def test_the_component_names_a_wrong_attribute_and_takes_one_warehouse(tmp_path):
    with pytest.raises(ValueError, match="warehouse_url or warehouse_url_env, not both"):
        ConnectorsComponent(warehouse_url="duckdb://", warehouse_url_env="WAREHOUSE_URL")
    with pytest.raises(ValueError, match="connector_dir"):
        ConnectorsComponent(connector_dir="specs")
    by_name = dg.build_defs_for_component(ConnectorsComponent(warehouse_url_env="MY_WAREHOUSE", connectors=["trakor"]))
    assert by_name.resources["warehouse"].url == dg.EnvVar("MY_WAREHOUSE")


def _dg(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "dg"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_dg_check_yaml_passes_on_the_scratch_project_and_dg_lists_the_component(tmp_path, dagster_home):
    root, _ = _scratch_project(tmp_path / "project", ATTRIBUTES)
    checked = _dg(root, "check", "yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "validated successfully" in checked.stdout + checked.stderr

    listed = _dg(root, "list", "components", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "integrations_pipeline.ConnectorsComponent" in listed.stdout

    # A typo in an attribute fails the check, naming it.
    defs_yaml = root / "src" / _package(root) / "defs" / "connectors" / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text().replace("connectors_dir:", "connector_dir:"))
    bad = _dg(root, "check", "yaml")
    assert bad.returncode != 0 and "connector_dir" in bad.stdout + bad.stderr


def _package(root: Path) -> str:
    return next(p.name for p in (root / "src").iterdir() if p.name.startswith("scratch_"))


def test_the_readme_example_project_loads(dagster_home, monkeypatch):
    """``examples/my_project`` (the README's): the component's defs.yaml plus the user's own asset."""
    root = Path(__file__).resolve().parents[2] / "examples" / "my_project"
    monkeypatch.syspath_prepend(str(root / "src"))
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    defs = dg.load_from_defs_folder(path_within_project=root)
    assert _keys(defs) == _streams("trackstar") | _streams("salestrekker") | {"order_count"}
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("order_count")).parent_keys == {dg.AssetKey(["trackstar", "orders"])}
