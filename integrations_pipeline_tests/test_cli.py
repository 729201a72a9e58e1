"""The ``integrations-pipeline`` command's quick subcommands (``run`` is exercised by the README/CI)."""

from __future__ import annotations

import json
from pathlib import Path

from integrations_pipeline.cli import main


def test_validate_checks_every_spec_and_sync(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    for name in ("trackstar.yaml", "salestrekker.yaml", "salesmanago.yaml", "datatalks.yaml", "trakor.yaml"):
        assert f"ok  {name}" in out
    assert "ok  syncs/trackstar_orders_to_salesmanago_events.yaml: trackstar/orders → salesmanago/events_batch" in out


def test_spec_schema_prints_a_json_schema_of_the_spec_format(capsys):
    assert main(["spec-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "integrations_pipeline connector spec"
    assert {"name", "protocol", "base_url", "auth", "streams", "sinks"} <= set(schema["properties"])


def test_spec_schema_for_syncs_accepts_every_built_in_sync_and_refuses_a_typo(capsys):
    import jsonschema
    import yaml

    from integrations_pipeline.syncs import SYNC_DIR

    assert main(["spec-schema", "--syncs"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "integrations_pipeline sync spec" and "routed_from" not in schema["properties"]
    validator = jsonschema.Draft202012Validator(schema)
    paths = sorted(SYNC_DIR.glob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    doc = yaml.safe_load(paths[0].read_text())
    doc["feilds"] = doc.pop("fields", {})
    assert [e.validator for e in validator.iter_errors(doc)] == ["additionalProperties"]


def test_a_closed_pipe_ends_the_output_quietly():
    import subprocess
    import sys

    # `spec-schema | head -1`: the reader is gone before the schema is written (closed at once: the command is
    # still importing); no BrokenPipeError traceback, exit 0.
    proc = subprocess.Popen(
        [sys.executable, "-m", "integrations_pipeline.cli", "spec-schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err == b"" and proc.returncode == 0


def test_lineage_prints_each_target_field_with_its_source_path_and_how(capsys):
    assert main(["lineage", "salestrekker_deals_to_salesmanago_events", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| record | target field | ← | source | how |"
    assert (
        "| all | `email` | ← | salestrekker/contacts.person.contact.email (lookup client: idClients[] = id) "
        "| copied, then strip, lower |"
    ) in lines
    assert "| won | `contactEvent.contactExtEventType` | ← | — | constant 'PURCHASE' |" in lines
    assert "| won | `contactEvent.externalId` | ← | salestrekker/deals.id | template 'deal-{id}-won' |" in lines
    # Shared fields once, then each kind's own: 7 shared + 3 × 3.
    assert len(lines) == 2 + 7 + 9

    assert main(["lineage", "salesmanago/trackstar_orders_to_salesmanago_events"]) == 0
    out = capsys.readouterr().out
    assert "trackstar/orders.ship_to_address.email_address" in out and "copied, then strip, lower" in out
    assert main(["lineage", "nope"]) == 2
    assert "lineage: no sync 'nope'; expected one of [" in capsys.readouterr().err


def test_the_env_file_is_ours_to_rewrite_only_when_we_wrote_it(tmp_path):
    from dotenv import dotenv_values

    from integrations_pipeline import local_env

    path = tmp_path / ".env"
    assert local_env.ours(path)  # absent: ours to write
    local_env.write(path, {"DAGSTER_HOME": "/abs/home", "TRACKSTAR_ACCESS_TOKEN": "conn_a=t", "X": "a b=c#d"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert local_env.ours(path) and local_env.read(path) == {"DAGSTER_HOME": "/abs/home", "X": "a b=c#d"}
    assert dotenv_values(path) == {"DAGSTER_HOME": "/abs/home", "X": "a b=c#d"}  # as Dagster's CLI reads it
    path.write_text("MY_REAL_KEY=secret\n")  # a user's own file
    assert not local_env.ours(path)


def test_runs_the_cli_executes_carry_the_workspace_origin_so_the_ui_timeline_shows_them():
    """The UI's Overview timeline draws only runs with a repository origin; ``execute_in_process`` gives none. The
    main job's runs carry the origin ``dagster dev -w workspace.yaml`` gives its own (location named after the
    module, repository ``__repository__``), and nothing else about the run changes."""
    import dagster as dg
    from rich.console import Console

    from integrations_pipeline.cli import WORKSPACE_MODULE, _execute_with_progress

    @dg.asset
    def one() -> int:
        return 1

    job = dg.Definitions(assets=[one], jobs=[dg.define_asset_job("phase", selection=[one])]).resolve_job_def("phase")
    shown: list[str] = []
    with dg.instance_for_test() as instance:
        result = _execute_with_progress(job, instance, {"k": "v"}, {}, shown.append, Console(quiet=True))
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run.remote_job_origin is not None
        assert run.remote_job_origin.location_name == WORKSPACE_MODULE == "integrations_pipeline.definitions"
        assert run.remote_job_origin.repository_origin.repository_name == "__repository__"
        assert (run.job_name, run.tags["k"]) == ("phase", "v")
        assert "one materialized" in shown
        # The instance's own method is back: a run created afterwards by other code gets no origin from us.
        assert "create_run_for_job" not in vars(instance)
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    assert f"module_name: {WORKSPACE_MODULE}" in workspace.read_text()


def test_the_live_line_keeps_the_engines_page_counts_within_one_terminal_row():
    """rich crops a live line wider than the terminal: the page counts must come before anything it would cut."""
    from rich.console import Console

    from integrations_pipeline.cli import _live

    line = _live(
        "[4/7] trackstar_incremental_sync", "trackstar/orders [conn_a] page 11: 11000 records", Console(width=80)
    )
    assert line.startswith("[4/7] trackstar_incremental_sync · trackstar/orders [conn_a] page 11: 11000")
    assert line.endswith("…") and len(line) + 2 <= 80  # the spinner and its space
    wide = _live(
        "[4/7] trackstar_incremental_sync", "trackstar/orders [conn_a] page 11: 11000 records", Console(width=120)
    )
    assert wide.endswith("page 11: 11000 records")
