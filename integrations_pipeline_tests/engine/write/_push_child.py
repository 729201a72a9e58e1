"""A push in a process of its own, for the crash and race tests to kill with -9 or run twice at once.

``python -m integrations_pipeline_tests.engine.write._push_child --sink events_batch --n 6000 ...``
pushes ``n`` deterministic records (``records(sink, n)``) to the SALESmanago connector named by the
environment (the test's loopback sandbox) through ``engine.write.push.push``, with the warehouse at
``--warehouse`` as the ledger, and prints the report as JSON on stdout. ``--resend-in-doubt`` sends
the records in doubt instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.errors import IntegrationsError
from integrations_pipeline.engine.write.push import push, resend_in_doubt
from integrations_pipeline.warehouse import connect_warehouse


def records(sink: str, n: int) -> list[dict]:
    """Orders as PURCHASE events (97 customers, keyed by order id) or contacts (one per email)."""
    if sink.startswith("events"):
        return [
            {
                "email": f"c{i % 97}@shop.test",
                "contactEvent": {
                    "contactExtEventType": "PURCHASE",
                    "externalId": f"o{i}",
                    "value": float(i % 50),
                    "date": 1_790_000_000_000,
                },
            }
            for i in range(n)
        ]
    return [{"contact": {"email": f"c{i}@shop.test", "name": f"Name {i}"}} for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--state-key", default="salesmanago/orders_to_events")
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--run-id", default=f"child-{os.getpid()}")
    parser.add_argument("--lease-wait", type=float, default=60.0)
    parser.add_argument("--resend-in-doubt", action="store_true")
    args = parser.parse_args()
    spec = load_connectors()["salesmanago"]
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), os.environ)
    warehouse = connect_warehouse(args.warehouse)
    common = dict(
        spec=spec, sink_name=args.sink, ledger=warehouse, state_key=args.state_key,
        clients=ClientFactory(credentials, environ=os.environ, log=lambda m: print(m, file=sys.stderr)),
        run_id=args.run_id, lease_wait=args.lease_wait, log=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    try:
        if args.resend_in_doubt:
            report = resend_in_doubt(None, **common)
        else:
            report = push(records(args.sink, args.n), **common)
    except IntegrationsError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    finally:
        warehouse.close()
    print(json.dumps(dataclasses.asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
