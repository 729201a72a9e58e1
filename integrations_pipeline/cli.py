"""The ``integrations-pipeline`` command.

- ``run``: the main job. Starts the sandbox vendors on loopback (unless ``--no-sandbox``), then
  materializes every asset into the warehouse (embedded DuckDB by default) through a persistent
  Dagster instance under ``.dagster_home/``, showing progress, and prints a summary table and how to
  open the UI on the result. ``--dry-run`` makes the sync assets plan (``_integrations.sync_plans``)
  instead of calling the targets.
- ``spec-schema``: the JSON Schema of the connector spec format, for editor autocompletion.
- ``validate``: load every spec (built-in and entry-point) and every sync, and report errors with file and field.
- ``lineage <sync>``: each target field of a sync, the source path it comes from and how it is computed.
- ``serve``: the service: Trackstar's link flow (``/trackstar/link-token``, ``/trackstar/store-token``) and the
  webhook receivers (``/webhooks/trackstar``, ``/webhooks/salestrekker/<token>``), storing into the warehouse.
- ``sandbox``: the sandbox vendors on fixed loopback ports (what the main job's ``.env`` names), in the foreground
  or ``--detach``-ed; ``--stop`` stops the background one.
- ``in-doubt list|resend|mark-delivered``: records a vendor call may or may not have applied (see
  ``engine.write.push``): list them, send them again, or record them as delivered.

In sandbox mode ``run`` writes ``.env`` (``local_env``): Dagster's CLI and ``dagster dev`` load it, and so do the
other commands here (not ``run`` and ``sandbox``), for what the environment lacks.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.spec import spec_json_schema


def _cmd_spec_schema(args: argparse.Namespace) -> int:
    from integrations_pipeline.engine.write.mapping import sync_json_schema

    print(json.dumps(sync_json_schema() if args.syncs else spec_json_schema(), indent=2))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from integrations_pipeline.connectors import allowed_env, discover_spec_paths
    from integrations_pipeline.engine.spec import load_spec
    from integrations_pipeline.engine.write.mapping import load_sync
    from integrations_pipeline.syncs import SYNC_DIR

    failed = 0
    specs = {}
    for path in discover_spec_paths():
        try:
            spec = specs[path.stem] = load_spec(path, allow_env=allowed_env())
            print(f"ok  {path.name}: {len(spec.streams)} streams, {len(spec.sinks)} sinks")
        except ConfigError as exc:
            failed += 1
            print(exc, file=sys.stderr)
    for path in sorted(SYNC_DIR.glob("*.yaml")):
        try:
            sync = load_sync(path, specs)
            print(f"ok  syncs/{path.name}: {sync.source} → {sync.target}")
        except ConfigError as exc:
            failed += 1
            print(exc, file=sys.stderr)
    return 1 if failed else 0


def _sync_ref(syncs: dict[str, Any], name: str, command: str) -> str:
    """The asset key (``salesmanago/<name>``) of the sync ``name`` names, by asset key or by sync name."""
    ref = name if name in syncs else {s.name: r for r, s in syncs.items()}.get(name)
    if ref is None:
        raise ConfigError(f"{command}: no sync '{name}'; expected one of {sorted(syncs)} (or a sync name)")
    return ref


def _cmd_lineage(args: argparse.Namespace) -> int:
    """``lineage <sync>``: every target field with its source path and how it is computed."""
    from rich.console import Console
    from rich.table import Table

    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.syncs import routed_syncs
    from integrations_pipeline.engine.write.mapping import lineage_markdown, lineage_rows

    connectors = load_connectors()
    syncs = {s.asset_ref: s for s in routed_syncs(connectors, os.environ)}
    ref = _sync_ref(syncs, args.sync, "lineage")
    sync = syncs[ref]
    if args.markdown:
        print(lineage_markdown(sync))
        return 0
    rows = lineage_rows(sync)
    table = Table(title=f"{ref}: {sync.source} → {sync.target}", title_justify="left")
    kinds = any(r.record for r in rows)
    for column in (["record"] if kinds else []) + ["target field", "source", "how"]:
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(*([r.record or "all"] if kinds else []), r.target, "\n".join(r.sources) or "—", r.how)
    Console(width=max(Console().width, 120)).print(table)
    return 0


def _cmd_in_doubt(args: argparse.Namespace) -> int:
    """``in-doubt list|resend|mark-delivered``: the records a vendor call may or may not have applied."""
    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.resources import rate_budgets
    from integrations_pipeline.defs.syncs import routed_syncs, settle_in_doubt
    from integrations_pipeline.engine.auth import Credentials, secret_env_vars
    from integrations_pipeline.engine.client import ClientFactory
    from integrations_pipeline.warehouse import connect_warehouse

    connectors = load_connectors()
    syncs = {s.asset_ref: s for s in routed_syncs(connectors, os.environ)}
    chosen = [_sync_ref(syncs, args.sync, "in-doubt")] if args.sync is not None else sorted(syncs)
    warehouse = connect_warehouse(os.environ.get("WAREHOUSE_URL"))
    try:
        if args.action == "list":
            total = 0
            for ref in chosen:
                for row in warehouse.read_in_doubt(ref):
                    total += 1
                    since = datetime.fromtimestamp(row.since, UTC).isoformat(timespec="seconds") if row.since else "?"
                    print(f"{ref}\t{row.key}\tsince {since}\trun {row.run_id}\tcall {row.call_id}\t{row.reason}")
            print(f"{total} records in doubt", file=sys.stderr)
            return 0
        if args.sync is None or not (args.all or args.key):
            raise ConfigError(f"in-doubt {args.action}: name the sync (--sync) and the keys (--key K ...) or --all")
        sync = syncs[chosen[0]]
        spec = connectors[sync.target_connector]
        keys = None if args.all else list(args.key)
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), os.environ)
        settle_in_doubt(
            args.action.replace("-", "_"),
            keys,
            spec=spec,
            sink_name=sync.target_sink,
            warehouse=warehouse,
            state_key=chosen[0],
            clients=ClientFactory(
                credentials, environ=os.environ, log=lambda m: print(m, file=sys.stderr), budgets=rate_budgets()
            ),
            run_id=f"cli-{os.getpid()}",
            log=print,
        )
        return 0
    finally:
        warehouse.close()


SANDBOX_PIDFILE = Path(".data") / "sandbox.pid"


def _cmd_sandbox(args: argparse.Namespace) -> int:
    """``sandbox``: the vendors on their fixed ports (``SANDBOX_PORTS``), with the main job's data. In the
    foreground by default; ``--detach`` starts it in the background and returns once every port answers;
    ``--stop`` stops the background one."""
    import signal
    import socket
    import subprocess

    from integrations_pipeline.sandbox import DEMO_SIZES, SANDBOX_PORTS, default_sandboxes, sandbox_environment
    from integrations_pipeline.sandbox.server import serve

    ports = ", ".join(f"{name} {port}" for name, port in SANDBOX_PORTS.items())
    if args.stop:
        pid = _sandbox_pid()
        if pid is None:
            print("no background sandbox is running")
            return 0
        os.kill(pid, signal.SIGTERM)
        SANDBOX_PIDFILE.unlink(missing_ok=True)
        print(f"stopped the sandbox (pid {pid})")
        return 0
    if args.detach:
        pid = _sandbox_pid()
        if pid is not None:
            print(f"the sandbox is running already (pid {pid}) on 127.0.0.1: {ports}")
            return 0
        SANDBOX_PIDFILE.parent.mkdir(exist_ok=True)
        with open(SANDBOX_PIDFILE.parent / "sandbox.log", "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "integrations_pipeline.cli", "sandbox", "--seed", str(args.seed)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # it outlives this command and the terminal's Ctrl-C
            )
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None:
                print(f"error: the sandbox exited ({child.returncode}); see .data/sandbox.log", file=sys.stderr)
                return 1
            try:
                for port in SANDBOX_PORTS.values():
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    child.terminate()
                    print("error: the sandbox did not start within 60 s; see .data/sandbox.log", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        SANDBOX_PIDFILE.write_text(str(child.pid))
        print(
            f"sandbox vendors running in the background (pid {child.pid}) on 127.0.0.1: {ports}; "
            "stop them with: .venv/bin/integrations-pipeline sandbox --stop"
        )
        return 0
    boxes = default_sandboxes(seed=args.seed, sizes=DEMO_SIZES)
    try:
        servers = serve(boxes, ports=SANDBOX_PORTS)
    except OSError as exc:
        raise ConfigError(
            f"sandbox: cannot listen on 127.0.0.1 ({ports}): {exc.strerror or exc}; is a sandbox running already? "
            "Stop it with: .venv/bin/integrations-pipeline sandbox --stop"
        ) from None
    with servers:
        for name, value in sandbox_environment(servers.base_urls, boxes).items():
            print(f"export {name}={value!r}", flush=True)
        print("# sandbox vendors running; Ctrl-C to stop", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # --stop: leave through the context manager
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def _sandbox_pid() -> int | None:
    """The background sandbox's pid, if it still runs."""
    try:
        pid = int(SANDBOX_PIDFILE.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        SANDBOX_PIDFILE.unlink(missing_ok=True)
        return None
    return pid


def _cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: the link flow's backend and the webhook receivers (``integrations_pipeline.service``)."""
    import uvicorn

    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.resources import rate_budgets
    from integrations_pipeline.engine.auth import Credentials, secret_env_vars
    from integrations_pipeline.engine.client import ClientFactory
    from integrations_pipeline.service.app import ServiceSettings, create_app
    from integrations_pipeline.warehouse.inbox import open_inbox

    connectors = load_connectors()
    settings = ServiceSettings.from_environ(connectors, os.environ)
    url = os.environ.get("WAREHOUSE_URL")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def client_for(spec):
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), os.environ)
        return ClientFactory(credentials, environ=os.environ, log=log, budgets=rate_budgets()).connector(spec)

    app = create_app(settings, connectors, lambda: open_inbox(url), client_for, log=log)
    log(
        f"serving on http://{args.host}:{args.port} (webhooks for {', '.join(sorted(settings.webhook_secrets)) or 'none'})"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


#: The code location ``dagster dev -w workspace.yaml`` loads (its ``python_module``; Dagster names the location
#: after the module and the repository of a ``Definitions`` ``__repository__``).
WORKSPACE_MODULE = "integrations_pipeline.definitions"


def workspace_job_origin(job_name: str) -> Any:
    """The origin a run of ``job_name`` launched from the UI carries. The UI's Overview timeline draws only runs
    that have one, so the runs this CLI executes in-process carry it too and appear beside the UI's own."""
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    target = LoadableTargetOrigin(
        executable_path=sys.executable, module_name=WORKSPACE_MODULE, working_directory=os.getcwd()
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, location_name=WORKSPACE_MODULE)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)


def _execute_with_progress(job: Any, instance: Any, tags: Any, run_config: Any, show: Any, console: Any) -> Any:
    """Run ``job`` in-process on a thread while this one follows its event log: the step that runs, the engine's
    progress lines (pages, records) and each materialized asset go to ``show`` (the live line); warnings and
    errors are printed above it, with their asset's step."""
    import logging
    import threading
    import uuid

    run_id = str(uuid.uuid4())
    box: dict[str, Any] = {}

    create_run_for_job = instance.create_run_for_job

    def with_origin(*args: Any, **kwargs: Any) -> Any:
        # execute_in_process creates its run with no origin; this run gets the workspace's (workspace_job_origin).
        if kwargs.get("remote_job_origin") is None and kwargs.get("run_id") == run_id:
            kwargs["remote_job_origin"] = workspace_job_origin(job.name)
        return create_run_for_job(*args, **kwargs)

    def work() -> None:
        instance.create_run_for_job = with_origin
        try:
            box["result"] = job.execute_in_process(
                instance=instance, tags=tags, run_config=run_config, raise_on_error=False, run_id=run_id
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread below
            box["error"] = exc
        finally:
            del instance.create_run_for_job  # the class's method again

    worker = threading.Thread(target=work, name=f"run-{job.name}", daemon=True)
    worker.start()
    cursor = None
    while True:
        alive = worker.is_alive()
        if instance.has_run(run_id):
            page = instance.get_records_for_run(run_id, cursor=cursor)
            cursor = page.cursor
            for record in page.records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if event is None:  # a log line of a step (the engine's, ours)
                    if entry.level >= logging.WARNING:
                        colour = "red" if entry.level >= logging.ERROR else "yellow"
                        console.print(f"[{colour}]{logging.getLevelName(entry.level).lower()}[/] {entry.user_message}")
                    else:
                        show(entry.user_message)
                elif event.event_type_value == "STEP_START":
                    show(f"{event.step_key} started")
                elif event.event_type_value == "ASSET_MATERIALIZATION" and event.asset_key is not None:
                    show(f"{event.asset_key.to_user_string()} materialized")
        if not alive:
            break
        worker.join(0.3)
    if "error" in box:
        raise box["error"]
    return box["result"]


def _resume_day(instance: Any, job: Any, pdef: Any, specs: Any, first: str, last: str) -> str:
    """The first day a partitioned phase reads: the last day its previous successful run read, less the largest
    ``lookback_days`` of its streams' specs; ``first`` (the start date) when it never succeeded."""
    import dagster as dg

    from integrations_pipeline.defs.translator import RANGE_END_TAG, split_partition_key

    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    end = runs[0].tags.get(RANGE_END_TAG) if runs else None
    if not end:
        return first
    _, day = split_partition_key(end, pdef)
    keys = job.asset_layer.selected_asset_keys
    lookback = max((specs[k.path[0]].lookback_days([k.path[-1]]) for k in keys if k.path[0] in specs), default=1)
    resumed = (date.fromisoformat(day or first) - timedelta(days=lookback)).isoformat()
    return min(max(first, resumed), last)


def _partition_range(start_date: str, today: date) -> tuple[str, str]:
    last = today - timedelta(days=1)  # today's partition is not complete yet
    return start_date, last.isoformat()


def _preflight(args: argparse.Namespace) -> list[Any]:
    """``preflight.preflight`` for ``run``: the sandbox sets every vendor variable itself, so then only the
    warehouse is checked."""
    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.syncs import routed_syncs
    from integrations_pipeline.preflight import preflight

    environ = dict(os.environ)
    specs = load_connectors(environ=environ)
    return preflight(
        specs,
        routed_syncs(specs, environ),
        environ,
        warehouse_url=environ.get("WAREHOUSE_URL"),
        check_credentials=args.no_sandbox,
    )


def _live(heading: str, text: str, console: Any) -> str:
    """The live line: ``heading · text``, the text cut to what is left of one terminal row (spinner included)."""
    room = max(20, console.width - len(heading) - 6)
    return f"{heading} · {text if len(text) <= room else text[: room - 1] + '…'}"


def _cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg
    from cryptography.fernet import Fernet
    from rich.console import Console
    from rich.table import Table

    from integrations_pipeline.defs import constants as c
    from integrations_pipeline.engine.redact import redact_url

    # Non-terminals default to 80 columns, which truncates asset keys in the summary table.
    console = Console(width=max(Console().width, 110))
    problems = _preflight(args)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        print(f"error: the main job cannot start; nothing was started:\n{lines}", file=sys.stderr)
        return 2
    home = Path(args.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() == "telemetry:\n  enabled: false\n":  # absent, or an older one of ours
        # A demo instance of our own: keep its console quiet, and the UI's first visit free of the community
        # modal (Dagster's nux setting). Users' own instances are untouched.
        config.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    Path(".data").mkdir(exist_ok=True)

    env_file = Path(".env")
    with ExitStack() as stack:
        if not args.no_sandbox:
            from integrations_pipeline import local_env
            from integrations_pipeline.sandbox import DEMO_SIZES, SANDBOX_PORTS, default_sandboxes, sandbox_environment
            from integrations_pipeline.sandbox.server import serve

            boxes = default_sandboxes(seed=args.seed, sizes=DEMO_SIZES)
            # Ephemeral ports for the job itself (a sandbox left running on the fixed ports is no obstacle).
            servers = stack.enter_context(serve(boxes))
            os.environ.update(sandbox_environment(servers.base_urls, boxes))
            console.print(f"[bold]sandbox vendors[/] on loopback: {', '.join(servers.base_urls)}")
            # Connections come through the link flow, as in production: no access token in the environment. The
            # service's keys are kept in .env, so the tokens the registry holds sealed stay readable afterwards.
            saved = local_env.read(env_file) if local_env.ours(env_file) else {}
            os.environ.pop("TRACKSTAR_ACCESS_TOKEN", None)
            api_key = saved.get("INTEGRATIONS_PIPELINE_API_KEY") or secrets.token_urlsafe(24)
            secret_key = saved.get("INTEGRATIONS_PIPELINE_SECRET_KEY") or Fernet.generate_key().decode()
            os.environ.setdefault("INTEGRATIONS_PIPELINE_API_KEY", api_key)
            os.environ["INTEGRATIONS_PIPELINE_SECRET_KEY"] = secret_key
            if local_env.ours(env_file):
                fixed = {name: f"http://127.0.0.1:{port}" for name, port in SANDBOX_PORTS.items()}
                warehouse_url = (
                    os.environ.get("WAREHOUSE_URL") or f"duckdb:///{Path('.data/warehouse.duckdb').resolve()}"
                )
                local_env.write(
                    env_file,
                    {
                        "DAGSTER_HOME": str(home),
                        # A URL of the user's own may hold a password: only the embedded file's is written.
                        **({"WAREHOUSE_URL": warehouse_url} if warehouse_url.startswith("duckdb://") else {}),
                        **sandbox_environment(fixed, boxes),
                        "INTEGRATIONS_PIPELINE_API_KEY": os.environ["INTEGRATIONS_PIPELINE_API_KEY"],
                        "INTEGRATIONS_PIPELINE_SECRET_KEY": secret_key,
                    },
                )
            else:
                console.print("[yellow]left .env alone[/]: it was not written by integrations-pipeline")

        from integrations_pipeline.connectors import load_connectors
        from integrations_pipeline.definitions import build_definitions
        from integrations_pipeline.defs.connections import add_partitions, connection_states
        from integrations_pipeline.defs.translator import CONNECTION_DIMENSION, RANGE_END_TAG, RANGE_START_TAG
        from integrations_pipeline.engine.auth import Credentials, secret_env_vars
        from integrations_pipeline.warehouse.registry import connect_warehouse

        defs = build_definitions()
        instance = dg.DagsterInstance.get()
        specs = load_connectors(environ=dict(os.environ))
        http = None
        if not args.no_sandbox:
            from integrations_pipeline.demo import onboard, service_client

            http = stack.enter_context(service_client(specs, dict(os.environ), os.environ.get("WAREHOUSE_URL")))
            for linked in onboard(http, dict(os.environ), boxes["trackstar"]):
                console.print(
                    f"[bold]onboarded[/] {linked.connection_id} ({linked.integration_name}) through the link flow: "
                    "link token → auth code → /trackstar/store-token (token stored sealed)"
                )
        connections: dict[str, list[str]] = {}  # vendor → its usable connections, each given its partition
        for spec in specs.values():
            if spec.connections is None or not spec.streams:
                continue
            warehouse = connect_warehouse(os.environ.get("WAREHOUSE_URL"))
            try:
                credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), os.environ)
                states = connection_states(spec, warehouse, credentials)
            finally:
                warehouse.close()
            add_partitions(instance, spec, states.known)
            connections[spec.name] = states.usable
        assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
        # The main job is one named run per phase: each vendor's streams (its jobs), then each target vendor's syncs
        # (sync_to_<vendor>), with their checks; the runs list and the timeline read as what was done.
        job_names = {j.name for j in defs.jobs or []}
        phases: list[tuple[str, str | None]] = []  # (job, the vendor whose connections it reads)
        for spec in specs.values():
            if not spec.streams:
                continue
            own = [f"{spec.name}_connections_reconcile", f"{spec.name}_incremental_sync", f"{spec.name}_full_refresh"]
            for name in (n for n in own if n in job_names):
                reads = spec.name if spec.connections is not None and not name.endswith("_reconcile") else None
                if reads is not None and not connections.get(reads):
                    console.print(f"[yellow]skipped[/] {name}: no usable {reads} connection")
                    continue
                phases.append((name, reads))
        phases += [(name, None) for name in sorted(job_names) if name.startswith("sync_to_")]
        sync_ops = {
            ad.node_def.name: key.path[0]
            for ad in assets
            for key, group in ad.group_names_by_key.items()
            if group == "syncs" and ad.node_def is not None
        }
        rows: list[tuple[str, int, int, int, float, str]] = []
        failures = 0
        today = datetime.now(UTC).date()
        # Dagster's console logger stays silent: the live line shows each run's progress, and its warnings and
        # errors are printed above that line (_execute_with_progress), never glued to it.
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

        with console.status("") as status:
            for n, (job_name, vendor) in enumerate(phases, 1):
                job = defs.resolve_job_def(job_name)
                pdef = job.partitions_def
                start = None
                days = pdef
                if isinstance(pdef, dg.MultiPartitionsDefinition):
                    days = next(d.partitions_def for d in pdef.partitions_defs if d.name != CONNECTION_DIMENSION)
                if isinstance(days, dg.TimeWindowPartitionsDefinition):
                    start = days.start.strftime("%Y-%m-%d")
                tags = {}
                label = job_name
                ends = ("", "")
                if vendor is not None:  # per connection: the rectangle of every usable connection
                    conns = connections[vendor]
                    ends = (f"{conns[0]}|", f"{conns[-1]}|") if start is not None else (conns[0], conns[-1])
                    label += f" {{{', '.join(conns)}}}"
                if start is not None:
                    first, last = _partition_range(start, today)
                    # Incremental: after the first run, each vendor's streams read from the last day they read
                    # (less the spec's lookback), not from start_date again.
                    first = _resume_day(instance, job, pdef, specs, first, last)
                    ends = (f"{ends[0]}{first}", f"{ends[1]}{last}")
                    label += f" [{first} … {last}]"
                if ends != ("", ""):
                    tags = {
                        RANGE_START_TAG: ends[0],
                        RANGE_END_TAG: ends[1],
                    }
                # The phase's whole label (connections, days) is printed once; the live line keeps to one terminal
                # row (rich crops a longer one, which hid the engine's page counts behind the label).
                console.print(f"[{n}/{len(phases)}] {label}", highlight=False)
                status.update(f"[{n}/{len(phases)}] {job_name}")
                run_config: dict[str, Any] = dict(quiet)
                if args.dry_run and job_name.startswith("sync_to_"):
                    vendor_ops = [op for op, target in sync_ops.items() if f"sync_to_{target}" == job_name]
                    run_config["ops"] = {op: {"config": {"dry_run": True}} for op in vendor_ops}
                began = time.perf_counter()
                heading = f"[{n}/{len(phases)}] {job_name}"
                result = _execute_with_progress(
                    job,
                    instance,
                    tags,
                    run_config,
                    lambda text, h=heading: status.update(_live(h, text, console)),
                    console,
                )
                took = time.perf_counter() - began
                if not result.success:
                    failures += 1
                    console.print(f"[red]FAILED[/] {label}: {_failure_text(result)}")
                    continue
                seen = set()
                # A range run reports its totals once, as an observation of each stream; the partitions carry
                # their own records and windows.
                totals = {
                    e.asset_observation_data.asset_observation.asset_key: e.asset_observation_data.asset_observation
                    for e in result.all_events
                    if e.event_type_value == "ASSET_OBSERVATION"
                }
                materialized = [
                    e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
                ]
                # A dry run of a sync materializes nothing: its plan is the observation.
                reported: list[Any] = [
                    *materialized,
                    *(o for k, o in totals.items() if k not in {m.asset_key for m in materialized}),
                ]
                for mat in reported:
                    # A ranged single run reports one materialization per partition; one row per asset.
                    if mat.asset_key in seen:
                        continue
                    seen.add(mat.asset_key)
                    observed = totals.get(mat.asset_key)
                    md = {**mat.metadata, **(observed.metadata if observed is not None else {})}
                    dry = " (dry run)" if _meta(md, "dry_run") else ""
                    rows.append(
                        (
                            mat.asset_key.to_user_string() + dry,
                            # Sync assets report records considered and write calls instead.
                            _meta(md, c.ROW_COUNT) or _meta(md, "records_considered"),
                            _meta(md, c.API_CALLS) or _meta(md, "write_calls"),
                            _meta(md, c.RETRIES),
                            float(_meta(md, c.SECONDS)),
                            _short_skips(_meta(md, c.SKIPPED) or ""),
                        )
                    )
                console.print(f"[green]done[/] {label} in {took:.1f}s")

        if http is not None and not args.dry_run and not failures:
            from integrations_pipeline.demo import follow_one_webhook

            status_line = "following one webhook: a new WMS order → SALESmanago"
            with console.status(status_line):
                trip = follow_one_webhook(defs, instance, http, boxes)
            console.print(
                f"[bold]webhook[/] order.created {trip.order_id} ({trip.connection_id}) → stored in {trip.stored:.2f}s"
                f" → one run merged it into trackstar.orders (no Trackstar call) and ran "
                f"{', '.join(trip.syncs)}: {trip.events_sent} SALESmanago event(s) sent, in {trip.synced:.2f}s; "
                + (
                    "(none: the sandbox starts its data afresh each run, and an earlier run here sent this order "
                    "id already; nothing is sent twice) "
                    if trip.events_sent == 0
                    else ""
                )
                + f"{trip.total:.1f}s in all, plus the webhook_events sensor's interval (30 s) when it runs in the daemon"
            )

    table = Table(title="integrations_pipeline: sync summary")
    for col in ("asset", "rows", "calls", "retries", "seconds", "skipped connections"):
        table.add_column(col, justify="right" if col in ("rows", "calls", "retries", "seconds") else "left")
    for asset, nrows, calls, retries, secs, skipped in rows:
        table.add_row(asset, str(nrows), str(calls), str(retries), f"{secs:.2f}", skipped)
    console.print(table)
    warehouse_shown = redact_url(
        os.environ.get("WAREHOUSE_URL", "duckdb:///" + str(Path(".data/warehouse.duckdb").resolve()))
    )
    if args.no_sandbox:
        explore = f"open the UI on these results:  DAGSTER_HOME={home} .venv/bin/dagster dev -w workspace.yaml"
    else:
        explore = (
            "explore the results (.env, written here, gives Dagster this instance, the warehouse and the sandbox):\n"
            "  .venv/bin/integrations-pipeline sandbox --detach   # the vendors again, on fixed ports, for new runs\n"
            "  .venv/bin/dagster dev -w workspace.yaml             # the UI on these runs"
        )
    console.print(f"warehouse: {warehouse_shown}\n{explore}")
    return 1 if failures else 0


def _short_skips(text: str) -> str:
    """``conn_b: HTTP 501: GET /wms/returns is not ...`` → ``conn_b (HTTP 501)`` for the table."""
    if text in ("", "none"):
        return ""
    parts = []
    for item in text.split("; "):
        conn, _, reason = item.partition(": ")
        parts.append(f"{conn} ({reason.split(':')[0]})")
    return ", ".join(parts)


def _meta(md, key):
    value = md.get(key)
    return getattr(value, "value", value) if value is not None else 0


def _failure_text(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "run failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="integrations-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every sync (against the sandbox by default) and print a summary")
    run.add_argument("--no-sandbox", action="store_true", help="use the vendors named by the environment")
    run.add_argument("--seed", type=int, default=0, help="sandbox data seed")
    run.add_argument("--dagster-home", default=".dagster_home", help="Dagster instance directory")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="sync assets plan instead of sending: the diff goes to _integrations.sync_plans, no vendor write call",
    )
    run.set_defaults(func=_cmd_run)
    schema = sub.add_parser(
        "spec-schema",
        help="print the JSON Schema of connector specs (or, with --syncs, of sync specs)",
        description="Print a JSON Schema for editor autocompletion and validation of the YAML specs, e.g. "
        "`integrations-pipeline spec-schema > connector.schema.json`, then point your editor's YAML language "
        "server at it.",
    )
    schema.add_argument("--syncs", action="store_true", help="the sync spec format instead of the connector one")
    schema.set_defaults(func=_cmd_spec_schema)
    sub.add_parser(
        "validate",
        help="validate every connector spec and every sync (fields, routes, source paths against stream schemas)",
        description="Load every connector spec (built-in and entry-point) and every built-in sync; print 'ok' per "
        "file, or each problem with its file and field (a typo in a sync's source path gets the closest field "
        "name). Exit 1 when any file has a problem.",
    ).set_defaults(func=_cmd_validate)
    lineage = sub.add_parser(
        "lineage",
        help="show a sync's column lineage: each target field, the source path it comes from, and how",
        description="The sync as routed by the environment (SALESMANAGO_VIA). The same table is on the sync asset "
        "in the UI (metadata column_lineage_table).",
    )
    lineage.add_argument("sync", help="the sync: its asset key (salesmanago/<name>) or its name")
    lineage.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    lineage.set_defaults(func=_cmd_lineage)
    doubt = sub.add_parser(
        "in-doubt",
        help="records a vendor call may or may not have applied: list them, resend them, or mark them delivered",
        description=(
            "A write whose outcome is unknown (the process was killed mid-call, the vendor answered 5xx after "
            "applying, the answer was unreadable) is never re-sent on its own when sending twice would double it "
            "(events). Check the target, then resend what it lacks or mark delivered what it has."
        ),
    )
    doubt.add_argument("action", choices=["list", "resend", "mark-delivered"])
    doubt.add_argument("--sync", help="the sync: its asset key (salesmanago/<name>) or its name")
    doubt.add_argument("--key", action="append", default=[], help="a record key (repeatable)")
    doubt.add_argument("--all", action="store_true", help="every record in doubt of the sync")
    doubt.set_defaults(func=_cmd_in_doubt)
    srv = sub.add_parser("serve", help="serve the link flow and the webhook receivers (see README: Connections)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8090)
    srv.set_defaults(func=_cmd_serve)
    sb = sub.add_parser(
        "sandbox",
        help="serve the sandbox vendors on their fixed loopback ports (the ones .env names)",
        description="The five sandbox vendors with the main job's data, on 127.0.0.1 ports 8711-8715: what the "
        ".env the main job writes points dagster dev and the dagster CLI at. Prints the variables; --detach runs "
        "it in the background (pid in .data/sandbox.pid, output in .data/sandbox.log), --stop stops that one.",
    )
    sb.add_argument("--seed", type=int, default=0, help="sandbox data seed (the main job's default: 0)")
    sb.add_argument("--detach", action="store_true", help="run in the background; return once every port answers")
    sb.add_argument("--stop", action="store_true", help="stop the background sandbox")
    sb.set_defaults(func=_cmd_sandbox)
    args = parser.parse_args(argv)
    if args.command not in ("run", "sandbox") and Path(".env").is_file():
        # As Dagster's CLI does: a .env in the working directory (the main job writes one) fills what the
        # environment lacks. Not for run (the sandbox mode sets its own; --no-sandbox means the real vendors).
        from dotenv import load_dotenv

        load_dotenv(Path(".env"), override=False)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`spec-schema | head`): stop quietly, as Unix tools do. Python would flush
        # stdout again at exit and print a second error: point it at devnull first (Python's own advice).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
