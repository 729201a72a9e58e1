"""A Trackstar reader in a process of its own, for the shared-budget tests to run two at once.

``python -m integrations_pipeline_tests.engine._budget_child --store URL --n 40`` builds the trackstar
connector's client from the environment (the test's loopback sandbox) with its rate budgets in ``URL``,
reads a start time (epoch seconds) from stdin and waits for it (so two children start together), makes
``n`` GET requests on the first connection and prints the client's stats as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory, parse_connections
from integrations_pipeline.engine.ratelimit import BudgetStore


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    spec = load_connectors()["trackstar"]
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), os.environ)
    client = ClientFactory(credentials, environ=os.environ, budgets=BudgetStore(args.store)).connector(spec)
    connection = parse_connections(spec, credentials)[0]
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(args.n):
        client.call("GET", "/wms/warehouses", params={"limit": 1}, connection=connection)
    json.dump(client.stats.as_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
