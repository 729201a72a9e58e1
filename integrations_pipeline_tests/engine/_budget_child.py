"""A Trackstar reader in a process of its own, for the shared-budget tests to run two at once.

``python -m integrations_pipeline_tests.engine._budget_child --store URL --n 40`` builds the trackstar
connector's client from the environment (the test's loopback sandbox) with its rate budgets in ``URL``,
reads a start time (epoch seconds) from stdin and waits for it (so two children start together), makes
``n`` GET requests on the first connection and prints the client's stats as JSON.

``run_readers`` starts several at once (the shared-budget tests and ``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory, parse_connections
from integrations_pipeline.engine.ratelimit import BudgetStore


def run_readers(
    store: str, n: int, env: Mapping[str, str], *, readers: int = 2, timeout: float = 600
) -> tuple[float, list[tuple[int, str, str]]]:
    """``readers`` reader processes on one token, started together 2 s from now (after their imports);
    the seconds from that start until all ended, and each one's (exit code, stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                __spec__.name if __spec__ else "integrations_pipeline_tests.engine._budget_child",
                "--store",
                store,
                "--n",
                str(n),
            ],
            env={**os.environ, **env},
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(readers)
    ]
    start_at = time.time() + 2.0
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start_at}\n")
        proc.stdin.flush()
    outs = [proc.communicate(timeout=timeout) for proc in procs]
    elapsed = time.time() - start_at
    return elapsed, [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outs, strict=True)]


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
