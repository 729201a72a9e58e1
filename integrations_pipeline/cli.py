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
- ``sandbox``: run the sandbox vendors in the foreground and print the variables that point at them.
- ``in-doubt list|resend|mark-delivered``: records a vendor call may or may not have applied (see
  ``engine.write.push``): list them, send them again, or record them as delivered.
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


def _cmd_lineage(args: argparse.Namespace) -> int:
    """``lineage <sync>``: every target field with its source path and how it is computed."""
    from rich.console import Console
    from rich.table import Table

    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.syncs import routed_syncs
    from integrations_pipeline.engine.write.mapping import lineage_markdown, lineage_rows

    connectors = load_connectors()
    syncs = {s.asset_ref: s for s in routed_syncs(connectors, os.environ)}
    ref = args.sync if args.sync in syncs else {s.name: r for r, s in syncs.items()}.get(args.sync)
    if ref is None:
        raise ConfigError(f"lineage: no sync '{args.sync}'; expected one of {sorted(syncs)} (or a sync name)")
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
    from integrations_pipeline.defs.syncs import routed_syncs, settle_in_doubt
    from integrations_pipeline.engine.auth import Credentials, secret_env_vars
    from integrations_pipeline.engine.client import ClientFactory
    from integrations_pipeline.warehouse import connect_warehouse

    connectors = load_connectors()
    syncs = {s.asset_ref: s for s in routed_syncs(connectors, os.environ)}
    by_name = {s.name: ref for ref, s in syncs.items()}
    if args.sync is not None:
        ref = args.sync if args.sync in syncs else by_name.get(args.sync)
        if ref is None:
            raise ConfigError(f"in-doubt: no sync '{args.sync}'; expected one of {sorted(syncs)} (or a sync name)")
        chosen = [ref]
    else:
        chosen = sorted(syncs)
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
            clients=ClientFactory(credentials, environ=os.environ, log=lambda m: print(m, file=sys.stderr)),
            run_id=f"cli-{os.getpid()}",
            log=print,
        )
        return 0
    finally:
        warehouse.close()


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
    from integrations_pipeline.sandbox.server import serve

    with serve(default_sandboxes(seed=args.seed)) as servers:
        for name, value in sandbox_environment(servers.base_urls).items():
            print(f"export {name}={value!r}")
        print("# sandbox vendors running; Ctrl-C to stop", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: the link flow's backend and the webhook receivers (``integrations_pipeline.service``)."""
    import uvicorn

    from integrations_pipeline.connectors import load_connectors
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
        return ClientFactory(credentials, environ=os.environ, log=log).connector(spec)

    app = create_app(settings, connectors, lambda: open_inbox(url), client_for, log=log)
    log(
        f"serving on http://{args.host}:{args.port} (webhooks for {', '.join(sorted(settings.webhook_secrets)) or 'none'})"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


# Trackstar's order packs take one call per order (10/s per connection): 300 orders keep that to a minute.
DEMO_SIZES = {"products": 150, "contacts": 200, "deals": 160, "orders": 300}


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
    if not config.exists():
        # A demo instance of our own: keep its console quiet. Users' own instances are untouched.
        config.write_text("telemetry:\n  enabled: false\n")
    Path(".data").mkdir(exist_ok=True)

    with ExitStack() as stack:
        if not args.no_sandbox:
            from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
            from integrations_pipeline.sandbox.server import serve

            # Trakor and Datatalks take one record per call (10/s): demo-sized catalogue and CRM keep the job quick.
            boxes = default_sandboxes(seed=args.seed, sizes=DEMO_SIZES)
            servers = stack.enter_context(serve(boxes))
            os.environ.update(sandbox_environment(servers.base_urls, boxes))
            console.print(f"[bold]sandbox vendors[/] on loopback: {', '.join(servers.base_urls)}")
            # Connections come through the link flow, as in production: no access token in the environment. The
            # service's keys live for this run only (the registry's tokens are sealed again on every run).
            os.environ.pop("TRACKSTAR_ACCESS_TOKEN", None)
            os.environ.setdefault("INTEGRATIONS_PIPELINE_API_KEY", secrets.token_urlsafe(24))
            os.environ["INTEGRATIONS_PIPELINE_SECRET_KEY"] = Fernet.generate_key().decode()

        from integrations_pipeline.connectors import load_connectors
        from integrations_pipeline.definitions import build_definitions
        from integrations_pipeline.defs.connections import add_partitions, connection_states
        from integrations_pipeline.defs.translator import CONNECTION_DIMENSION
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
        groups: dict[tuple[str, str | None, str | None], list] = {}
        for ad in assets:
            if any(c.EVENTS_TAG in ad.tags_by_key.get(k, {}) for k in ad.keys):
                continue  # webhook events: the followed webhook below runs them, as the events sensor does
            pdef = ad.partitions_def
            start = vendor = None
            days = pdef
            if isinstance(pdef, dg.MultiPartitionsDefinition | dg.DynamicPartitionsDefinition):
                vendor = ad.op.tags.get(c.VENDOR_TAG)  # the stream assets' op names its vendor
                if isinstance(pdef, dg.MultiPartitionsDefinition):
                    days = next(d.partitions_def for d in pdef.partitions_defs if d.name != CONNECTION_DIMENSION)
            if isinstance(days, dg.TimeWindowPartitionsDefinition):
                start = days.start.strftime("%Y-%m-%d")
            name = ad.node_def.name if ad.node_def else ad.key.to_python_identifier()
            if vendor is not None and not connections.get(vendor):
                console.print(f"[yellow]skipped[/] {name}: no usable {vendor} connection")
                continue
            groups.setdefault((name, start, vendor), []).extend(ad.keys)
        rows: list[tuple[str, int, int, int, float, str]] = []
        failures = 0
        today = datetime.now(UTC).date()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        # Sources before syncs: sync assets depend on the stream tables; stream assets depend on nothing outside
        # their own multi-asset (a child stream's lineage names its parent, in the same one).
        dependent = {key for ad in assets for key, deps in ad.asset_deps.items() if deps - set(ad.keys)}
        sync_keys = {key for ad in assets for key, group in ad.group_names_by_key.items() if group == "syncs"}

        def order(item):
            (op_name, _, _), keys = item
            return (any(k in dependent for k in keys), op_name)

        with console.status("") as status:
            for n, ((op_name, start, vendor), keys) in enumerate(sorted(groups.items(), key=order), 1):
                tags = {}
                label = op_name
                ends = ("", "")
                if vendor is not None:  # per connection: the rectangle of every usable connection
                    conns = connections[vendor]
                    ends = (f"{conns[0]}|", f"{conns[-1]}|") if start is not None else (conns[0], conns[-1])
                    label += f" {{{', '.join(conns)}}}"
                if start is not None:
                    first, last = _partition_range(start, today)
                    ends = (f"{ends[0]}{first}", f"{ends[1]}{last}")
                    label += f" [{first} … {last}]"
                if ends != ("", ""):
                    tags = {
                        "dagster/asset_partition_range_start": ends[0],
                        "dagster/asset_partition_range_end": ends[1],
                    }
                status.update(f"[{n}/{len(groups)}] materializing {label}")
                run_config: dict[str, Any] = dict(quiet)
                if args.dry_run and keys[0] in sync_keys:
                    run_config["ops"] = {op_name: {"config": {"dry_run": True}}}
                began = time.perf_counter()
                result = dg.materialize(
                    assets,
                    selection=keys,
                    instance=instance,
                    resources=defs.resources,
                    tags=tags,
                    run_config=run_config,
                    raise_on_error=False,
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
                f"{trip.total:.1f}s in all, plus the webhook_events sensor's interval (30 s) when it runs in the daemon"
            )

    table = Table(title="integrations_pipeline: sync summary")
    for col in ("asset", "rows", "calls", "retries", "seconds", "skipped connections"):
        table.add_column(col, justify="right" if col in ("rows", "calls", "retries", "seconds") else "left")
    for asset, nrows, calls, retries, secs, skipped in rows:
        table.add_row(asset, str(nrows), str(calls), str(retries), f"{secs:.2f}", skipped)
    console.print(table)
    console.print(
        f"warehouse: {redact_url(os.environ.get('WAREHOUSE_URL', 'duckdb:///' + str(Path('.data/warehouse.duckdb').resolve())))}\n"
        f"open the UI on these results:  DAGSTER_HOME={home} .venv/bin/dagster dev -w workspace.yaml"
    )
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
    sb = sub.add_parser("sandbox", help="serve the sandbox vendors on loopback")
    sb.add_argument("--seed", type=int, default=0)
    sb.set_defaults(func=_cmd_sandbox)
    args = parser.parse_args(argv)
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
