"""A benchmark-only vendor server process: Trackstar with one connection, a chosen size and rate limit,
or SALESmanago (the reverse-ETL target) with an optional fixed delay per call.

``python benchmarks/_serve.py --inventory 100000 [--rate-limit 10] [--seed 0]`` builds a
``TrackstarSandbox`` with a single connection (``conn_a``) and no unsupported streams;
``python benchmarks/_serve.py --vendor salesmanago [--latency-ms 100]`` a ``SalesmanagoSandbox`` with
no hourly budget. Either is served on
127.0.0.1 with ``integrations_pipeline.sandbox.server.serve``, prints the ``export VAR=...`` lines
that point the trackstar connector at it followed by a ``# ready`` line, flushes, and serves until
SIGTERM (or SIGINT).

It runs in its own process because rendering a 1000-record page costs the sandbox ~35 ms of CPU (and
accepting a batch of 1,000 contacts about as much): in the benchmark's process it would share the GIL
with the client being measured, which a real vendor never does.

``GET /__bench/counts`` answers the sandbox's own counters (``requests``, ``429``, per-path counts)
so the rate-limit benchmark can cross-check the client's 429 count against the server's;
``POST /__bench/rate_limit`` (body ``{"per_second": 10}`` or ``null``) changes the per-token limit while
serving, so one server (and its page cache) serves an unlimited warm-up and a limited measurement.

``--connections N`` serves N connections (``conn_00`` ... with a token each; 1: ``conn_a``), each with
``--inventory`` records. ``--cache-pages`` keeps each list answer's body once rendered (per token and
URL): a later identical request still passes the API key, token and rate-limit checks, and gets fresh
rate-limit headers, but not the ~80 ms of CPU a 1,000-record page costs this Python sandbox to build.
A real vendor serves from many machines; on this one the sandbox would otherwise take a whole core at
10 pages/s and measure itself instead of the client.

The module CLI (``python -m integrations_pipeline.sandbox.server``) serves every vendor with two
Trackstar connections and no rate limit, which is why this wrapper exists.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
import time
from typing import Any

import httpx

from integrations_pipeline.sandbox.base import json_response
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox

CONNECTION_ID = "conn_a"
ACCESS_TOKEN = "bench-token-a"
READY_LINE = "# ready"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vendor", choices=["trackstar", "salesmanago"], default="trackstar")
    parser.add_argument("--inventory", type=int, default=0, help="inventory records of the one connection (trackstar)")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s per access token (default: none)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="a fixed delay before every answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connections", type=int, default=1, help="trackstar connections, a token each")
    parser.add_argument("--cache-pages", action="store_true", help="keep rendered list pages (see the docstring)")
    args = parser.parse_args(argv)

    sandbox: Any
    if args.vendor == "trackstar":
        sandbox = TrackstarSandbox(
            seed=args.seed,
            sizes={"inventory": args.inventory},
            connections=(
                {CONNECTION_ID: ACCESS_TOKEN}
                if args.connections == 1
                else {f"conn_{i:02d}": f"bench-token-{i:02d}" for i in range(args.connections)}
            ),
            unsupported={},
            rate_limit_per_second=args.rate_limit,
        )
    else:
        sandbox = SalesmanagoSandbox(requests_per_hour=None)

    def counts(request: httpx.Request) -> httpx.Response:
        with sandbox._lock:  # the sandbox's counter lock: a consistent snapshot while serving
            snapshot = dict(sandbox.counts)
        return json_response(200, snapshot)

    def rate_limit(request: httpx.Request) -> httpx.Response:
        value = json.loads(request.content or b"null")
        with sandbox._bucket_lock:
            sandbox.rate_limit_per_second = value.get("per_second") if value else None
            sandbox._buckets.clear()  # every token starts with a full bucket, as at a server start
        return json_response(200, {"per_second": sandbox.rate_limit_per_second})

    sandbox.routes[("GET", "/__bench/counts")] = counts
    if args.vendor == "trackstar":
        sandbox.routes[("POST", "/__bench/rate_limit")] = rate_limit
    if args.cache_pages:
        _cache_pages(sandbox)
    if args.latency_ms:
        inner, delay = sandbox.handle, args.latency_ms / 1000
        sandbox.handle = lambda request: (time.sleep(delay), inner(request))[1]

    stop = threading.Event()
    # Installed before "ready" is printed, so a parent that stops us right away is always heard.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with serve({args.vendor: sandbox}, host="127.0.0.1") as servers:
        for var, value in sandbox.environment(servers.base_urls[args.vendor]).items():
            print(f"export {var}={shlex.quote(value)}")
        print(READY_LINE)
        sys.stdout.flush()  # the parent blocks on these lines; a pipe is block-buffered otherwise
        while not stop.wait(0.5):
            pass
    return 0


def _cache_pages(sandbox: TrackstarSandbox) -> None:
    """Keep each 200 list answer per (token, URL); a repeat is authorised (API key, token, rate limit) as
    any request is, then answered from the kept body with its own rate-limit headers."""
    render = sandbox._list
    kept: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {}

    def cached(request: httpx.Request, stream: str, parent_id: str | None = None) -> httpx.Response:
        key = (request.headers.get("x-trackstar-access-token", ""), str(request.url))
        hit = kept.get(key)
        if hit is None:
            response = render(request, stream, parent_id)
            if response.status_code == 200:
                kept[key] = (response.content, dict(response.headers))
            return response
        _, denied, headers = sandbox._authorise(request, stream)
        if denied is not None:
            return denied
        body, first_headers = hit
        return httpx.Response(200, content=body, headers={**first_headers, **headers})

    sandbox._list = cached  # type: ignore[method-assign]  # the routes call self._list at request time


if __name__ == "__main__":
    raise SystemExit(main())
