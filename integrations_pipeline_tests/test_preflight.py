"""The main job's preflight: every missing variable (all alternatives named) and an unreachable warehouse, in one
message, exit 2, before anything starts (no Dagster instance, no sandbox, no step)."""

from __future__ import annotations

import pytest

from integrations_pipeline import cli
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment

VENDORS = ("trackstar", "salestrekker", "salesmanago", "datatalks", "trakor")
SALESTREKKER = "salestrekker: set SALESTREKKER_API_KEY, or SALESTREKKER_EMAIL and SALESTREKKER_PASSWORD"
NO_LOGIN = {"SALESTREKKER_API_KEY", "SALESTREKKER_EMAIL", "SALESTREKKER_PASSWORD"}  # the sandbox sets both ways


@pytest.fixture
def complete_env(monkeypatch, tmp_path):
    """Every vendor's variables as the sandbox sets them (nothing listens on the URLs: nothing is called), the
    embedded warehouse in a temp folder."""
    boxes = default_sandboxes(seed=0, sizes={"orders": 1})
    env = sandbox_environment({v: f"http://127.0.0.1:9/{v}" for v in VENDORS}, boxes)
    for name in [*env, "WAREHOUSE_URL", "SALESTREKKER_EMAIL", "SALESTREKKER_PASSWORD", "SALESMANAGO_VIA"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return env


CASES = [
    pytest.param({}, {}, [], id="complete"),
    pytest.param(NO_LOGIN, {}, [SALESTREKKER], id="login-alternatives-named"),
    pytest.param(NO_LOGIN - {"SALESTREKKER_API_KEY"}, {}, [], id="the-api-key-is-enough"),
    pytest.param(
        NO_LOGIN, {"SALESTREKKER_EMAIL": "ops@example.test", "SALESTREKKER_PASSWORD": "pw"}, [], id="or-the-password"
    ),
    pytest.param(NO_LOGIN - {"SALESTREKKER_PASSWORD"}, {}, [SALESTREKKER], id="half-a-login-is-none"),
    pytest.param(
        {"TRAKOR_API_KEY", "TRACKSTAR_API_KEY", "SALESMANAGO_API_SECRET", "SALESMANAGO_V3_API_KEY"},
        {},
        [
            "salesmanago: set SALESMANAGO_API_SECRET, SALESMANAGO_V3_API_KEY",
            "trackstar: set TRACKSTAR_API_KEY",
            "trakor: set TRAKOR_API_KEY",
        ],
        id="every-vendor-every-variable",
    ),
    pytest.param(
        {*NO_LOGIN, "DATATALKS_GROUP_KEY"},
        {"WAREHOUSE_URL": "mysql://u:hunter2@127.0.0.1/db"},
        [
            "datatalks: set DATATALKS_GROUP_KEY",
            SALESTREKKER,
            "warehouse: unsupported warehouse URL scheme 'mysql' in 'mysql://u:***@127.0.0.1/db'; expected one of "
            "['duckdb:///<absolute path>.duckdb', 'duckdb:///:memory:', 'postgresql://user[:password]@host[:port]/"
            "database', 'postgres://user[:password]@host[:port]/database']",
        ],
        id="variables-and-warehouse-together",
    ),
]


@pytest.mark.parametrize(("unset", "extra", "expected"), CASES)
def test_preflight_names_every_problem_at_once(complete_env, monkeypatch, tmp_path, capsys, unset, extra, expected):
    for name in unset:
        monkeypatch.delenv(name)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    problems = cli._preflight(cli.argparse.Namespace(no_sandbox=True))
    assert [str(p) for p in problems] == expected
    if not expected:
        return
    code = cli.main(["run", "--no-sandbox", "--dagster-home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: the main job cannot start; nothing was started:\n" + "".join(f"  - {e}\n" for e in expected)
    assert not (tmp_path / "home").exists()  # no instance, no run: nothing started
    assert "hunter2" not in err


def test_an_unreachable_warehouse_stops_the_job_before_the_sandbox_starts(complete_env, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://ip_user:PGPW-secret@127.0.0.1:9/nowhere")
    started = []
    monkeypatch.setattr("integrations_pipeline.sandbox.server.serve", lambda *a, **k: started.append(1))
    code = cli.main(["run", "--dagster-home", str(tmp_path / "home")])  # with the sandbox: only the warehouse
    err = capsys.readouterr().err
    assert code == 2 and started == []
    first, second, *rest = err.splitlines()
    assert first == "error: the main job cannot start; nothing was started:"
    assert second.startswith(
        "  - warehouse: cannot connect to PostgreSQL at postgresql://ip_user:***@127.0.0.1:9/nowhere: connection failed"
    )
    assert rest == [] and "PGPW-secret" not in err
    assert not (tmp_path / "home").exists()
