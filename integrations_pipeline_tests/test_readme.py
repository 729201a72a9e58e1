"""The README's commands work as written, on a fresh copy of the project, after its first command.

A newcomer's shell: a copy of the project's files (no ``.data``, no instance, no ``.env``) with this checkout's
``.venv``, and none of the vendor, warehouse or Dagster variables set. The main job (the first command, past its
install) runs first; then every fenced block marked ``bash runnable`` runs, in order, as written (``bash -e``), and
must succeed; so must the terminal-safe inline commands (``lineage``, ``validate``, ``spec-schema``). Each block's
own effects are checked where the README promises one: the backfill lands in the main job's instance.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FIRST = 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/integrations-pipeline run'
BLOCK = re.compile(r"^```bash runnable\n(.*?)^```$", re.M | re.S)
INLINE = re.compile(r"`(\.venv/bin/integrations-pipeline (?:lineage|validate|spec-schema)[^`]*)`")
#: What a newcomer's shell does not have set.
CLEARED = re.compile(
    r"^(TRACKSTAR|SALESTREKKER|SALESMANAGO|DATATALKS|TRAKOR|INTEGRATIONS_PIPELINE)_|^(WAREHOUSE_URL|DAGSTER_HOME)$"
)


def _fresh_copy(dest: Path) -> None:
    """The project's files as a clone has them: git's list when there is one, else the tree without local state."""
    try:
        files = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    for name in filter(None, files):
        if name.split("/")[0] in {".venv", ".data", ".dagster_home", ".env", ".git"}:
            continue
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def _shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_readme_starts_with_the_two_commands():
    blocks = re.findall(r"^```bash[^\n]*\n(.*?)^```$", README, re.M | re.S)
    assert blocks[0].strip() == FIRST
    assert blocks[1].strip() == ".venv/bin/python -m pytest -q -n 2"


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "integrations-pipeline").exists(), reason="needs the .venv")
def test_every_runnable_readme_command_works_as_written_after_the_main_job(tmp_path):
    project = tmp_path / "project"
    _fresh_copy(project)
    env = {k: v for k, v in os.environ.items() if not CLEARED.search(k)}
    blocks = BLOCK.findall(README)
    assert len(blocks) >= 3, "the README marks its runnable blocks with ```bash runnable"
    try:
        main = _shell(FIRST.split(" && ")[-1], project, env, timeout=1800)
        assert main.returncode == 0, main.stdout[-3000:] + main.stderr[-3000:]
        assert (project / ".env").stat().st_mode & 0o777 == 0o600
        for block in blocks:
            ran = _shell(block, project, env)
            assert ran.returncode == 0, f"{block}\n--- stdout\n{ran.stdout[-3000:]}\n--- stderr\n{ran.stderr[-3000:]}"
        for command in INLINE.findall(README):
            ran = _shell(command, project, env, timeout=300)
            assert ran.returncode == 0, f"{command}\n{ran.stderr[-2000:]}"
        # The backfill landed in the main job's instance, the one `dagster dev` opens from .env.
        import dagster as dg

        with dg.DagsterInstance.from_config(str(project / ".dagster_home")) as instance:
            inventory = instance.get_latest_materialization_event(dg.AssetKey(["trackstar", "inventory"]))
            assert inventory is not None
            run = instance.get_run_by_id(inventory.run_id)
            assert run is not None and run.tags.get("dagster/asset_partition_range_end") == "conn_b|2026-11-07"
            # The main job's runs are named for their phase, and they evaluated the asset checks.
            names = {r.job_name for r in instance.get_runs()}
            assert {"salestrekker_incremental_sync", "trackstar_incremental_sync", "sync_to_salesmanago"} <= names
            # ... and carry the workspace's origin, so the UI's Overview timeline draws them.
            phases = {"salestrekker_incremental_sync", "trackstar_incremental_sync", "sync_to_salesmanago"}
            origins = {
                r.remote_job_origin and r.remote_job_origin.location_name
                for r in instance.get_runs()
                if r.job_name in phases
            }
            assert origins == {"integrations_pipeline.definitions"}
            checks = [
                r.event_log_entry.dagster_event.asset_check_evaluation_data
                for r in instance.get_records_for_run(
                    instance.get_runs(filters=dg.RunsFilter(job_name="sync_to_salesmanago"))[0].run_id,
                    of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                ).records
            ]
            assert checks and all(c.passed for c in checks)
        nux = (project / ".dagster_home" / "dagster.yaml").read_text()
        assert "nux:\n  enabled: false" in nux  # the UI's first visit opens without the community modal

        # Incremental: run again, nothing changed at the vendors: each stream reads from its last day (less
        # its lookback), one call per stream and connection; child streams add one call per parent.
        again = _shell(FIRST.split(" && ")[-1], project, env, timeout=1800)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert re.search(r"done trackstar_incremental_sync \{conn_a, conn_b\} \[(\S+) … (\S+)\]", again.stdout)
        with dg.DagsterInstance.from_config(str(project / ".dagster_home")) as instance:
            (latest, first) = instance.get_runs(filters=dg.RunsFilter(job_name="trackstar_incremental_sync"), limit=2)
            start = latest.tags["dagster/asset_partition_range_start"].split("|")[1]
            before = first.tags["dagster/asset_partition_range_end"].split("|")[1]
            # From the last day the first run read, less the lookback (1 day): not from start_date again.
            assert date.fromisoformat(start) == date.fromisoformat(before) - timedelta(days=1)
            calls = {
                r.event_log_entry.dagster_event.asset_observation_data.asset_observation.asset_key.path[-1]: (
                    r.event_log_entry.dagster_event.asset_observation_data.asset_observation.metadata["api_calls"].value
                )
                for r in instance.get_records_for_run(
                    latest.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
                ).records
            }
        children = {"warehouse_locations": 5, "order_packs": 0}  # parents per connection read again (none changed)
        assert len(calls) == 15
        for stream, n in calls.items():
            assert n <= 2 * (1 + children.get(stream, 0)), (stream, n)  # two connections
    finally:
        _shell(".venv/bin/integrations-pipeline sandbox --stop", project, env, timeout=60)
