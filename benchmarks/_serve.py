"""A benchmark-only Trackstar server process: one connection, a chosen size and rate limit.

``python benchmarks/_serve.py --inventory 100000 [--rate-limit 10] [--seed 0]`` builds a
``TrackstarSandbox`` with a single connection (``conn_a``) and no unsupported streams, serves it on
127.0.0.1 with ``integrations_pipeline.sandbox.server.serve``, prints the ``export VAR=...`` lines
that point the trackstar connector at it followed by a ``# ready`` line, flushes, and serves until
SIGTERM (or SIGINT).

It runs in its own process because rendering a 1000-record page costs the sandbox ~35 ms of CPU:
in the benchmark's process it would share the GIL with the client being measured.

``GET /__bench/counts`` answers the sandbox's own counters (``requests``, ``429``, per-path counts)
so the rate-limit benchmark can cross-check the client's 429 count against the server's.

The module CLI (``python -m integrations_pipeline.sandbox.server``) serves every vendor with two
Trackstar connections and no rate limit, which is why this wrapper exists.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

import httpx

from integrations_pipeline.sandbox.base import json_response
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox

CONNECTION_ID = "conn_a"
ACCESS_TOKEN = "bench-token-a"
READY_LINE = "# ready"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", type=int, required=True, help="inventory records of the one connection")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s per access token (default: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sandbox = TrackstarSandbox(
        seed=args.seed,
        sizes={"inventory": args.inventory},
        connections={CONNECTION_ID: ACCESS_TOKEN},
        unsupported={},
        rate_limit_per_second=args.rate_limit,
    )

    def counts(request: httpx.Request) -> httpx.Response:
        with sandbox._lock:  # the sandbox's counter lock: a consistent snapshot while serving
            snapshot = dict(sandbox.counts)
        return json_response(200, snapshot)

    sandbox.routes[("GET", "/__bench/counts")] = counts

    stop = threading.Event()
    # Installed before "ready" is printed, so a parent that stops us right away is always heard.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with serve({"trackstar": sandbox}, host="127.0.0.1") as servers:
        for var, value in sandbox.environment(servers.base_urls["trackstar"]).items():
            print(f"export {var}={shlex.quote(value)}")
        print(READY_LINE)
        sys.stdout.flush()  # the parent blocks on these lines; a pipe is block-buffered otherwise
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
