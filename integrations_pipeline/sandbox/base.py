"""What every sandbox vendor shares: routing, injected faults, counters and the in-process transport.

A sandbox is a plain object whose ``handle(request) -> response`` speaks ``httpx`` types, so the same
code serves tests in-process (``sandbox.transport()`` is an ``httpx.MockTransport``) and the demo and
benchmarks over loopback (``integrations_pipeline.sandbox.server`` adapts it to real sockets).

Faults are queued deterministically: ``sandbox.faults.inject("429", times=3)`` makes the next three
matching requests fail that way. Kinds:

- ``"429"``: rate limited, with ``retry-after`` and ``x-ratelimit-*`` headers;
- ``"500"``, ``"502"``, ``"503"``: server errors;
- ``"timeout"``: no answer in time (in-process: ``httpx.ReadTimeout``; on a socket: the server stalls);
- ``"reset"``: the connection drops before a response (``httpx.RemoteProtocolError`` / a closed socket);
- ``"truncated"``: the body is cut in half (invalid JSON in-process; short Content-Length on a socket);
- ``"duplicate"``: a list page repeats records of the previous page (as when data shifts mid-paging);
  vendors that page handle it themselves via ``faults.take("duplicate", path)``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

FAULT_KINDS = ("429", "500", "502", "503", "timeout", "reset", "truncated", "duplicate")


class SandboxTimeout(Exception):
    """Raised by ``handle`` to simulate a server that never answers."""


class SandboxReset(Exception):
    """Raised by ``handle`` to simulate a connection dropped before any response."""


@dataclass
class _Queued:
    kind: str
    remaining: int
    path_prefix: str | None


@dataclass
class FaultPlan:
    """A FIFO of faults; each applies to the next requests whose path starts with ``path_prefix``."""

    queue: list[_Queued] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, kind: str, times: int = 1, path_prefix: str | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"got fault kind '{kind}', expected one of {list(FAULT_KINDS)}")
        with self.lock:
            self.queue.append(_Queued(kind, times, path_prefix))

    def take(self, kinds: tuple[str, ...], path: str) -> str | None:
        """Consume and return the first queued fault among ``kinds`` that matches ``path``."""
        with self.lock:
            for q in self.queue:
                if q.kind in kinds and (q.path_prefix is None or path.startswith(q.path_prefix)):
                    q.remaining -= 1
                    if q.remaining <= 0:
                        self.queue.remove(q)
                    return q.kind
        return None

    def pending(self) -> int:
        with self.lock:
            return sum(q.remaining for q in self.queue)

    def clear(self) -> None:
        """Drop every queued fault (the vendor recovered)."""
        with self.lock:
            self.queue.clear()


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body, separators=(",", ":")).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


Route = Callable[[httpx.Request], httpx.Response]


@dataclass
class _Message:
    msg_id: str
    body: bytes
    attempts: int = 0


@dataclass
class WebhookOutbox:
    """Webhooks a sandbox sends about its own changes, delivered when a test or the demo says so.

    Like Svix (and any sender worth the name), delivery is at-least-once: a message stays queued until the
    receiver answers 2xx, and ``deliver`` tries every queued message once more. ``sign(msg_id, body)``
    returns the headers a vendor adds (Svix's ``svix-id``/``svix-timestamp``/``svix-signature``, or none).
    """

    sign: Callable[[str, bytes], dict[str, str]]
    url: str | None = None
    queue: list[_Message] = field(default_factory=list)
    delivered: list[_Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, url: str) -> None:
        self.url = url

    def put(self, msg_id: str, payload: dict[str, Any]) -> None:
        if self.url is None:
            return  # nobody subscribed: the vendor sends nothing
        with self.lock:
            self.queue.append(_Message(msg_id, json.dumps(payload, separators=(",", ":")).encode()))

    def pending(self) -> int:
        with self.lock:
            return len(self.queue)

    def deliver(self, client: httpx.Client, *, order: Callable[[list[_Message]], list[_Message]] | None = None) -> int:
        """POST every queued message once (``order`` may shuffle them); returns how many got a 2xx."""
        with self.lock:
            batch = list(self.queue)
        ok = 0
        for message in order(batch) if order else batch:
            message.attempts += 1
            assert self.url is not None
            try:
                response = client.post(
                    self.url,
                    content=message.body,
                    headers={"content-type": "application/json", **self.sign(message.msg_id, message.body)},
                )
            except httpx.HTTPError:
                continue  # stays queued: delivered again next time
            if 200 <= response.status_code < 300:
                ok += 1
                with self.lock:
                    self.queue.remove(message)
                    self.delivered.append(message)
        return ok


@dataclass
class WritePause:
    """A knob for crash tests: write call number ``call`` (1-based, as ``write_calls`` counts it) stops
    ``before`` the vendor applies it or ``after`` (the answer held back), until ``release()``.
    ``reached`` is set when the call arrives there, so a test can kill the client at that point.
    ``discard`` (with ``before``): the call is then dropped without an answer, as if it never arrived."""

    call: int
    stage: str
    discard: bool = False
    timeout: float = 120.0
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class VendorSandbox:
    """Base of the five vendor sandboxes.

    Subclasses register routes in ``self.routes[(METHOD, path)]`` (exact path) or override ``route``
    for parametrised paths. ``handle`` applies queued transport/status faults first, then routes.
    """

    name = "vendor"

    def __init__(self) -> None:
        self.faults = FaultPlan()
        self.counts: Counter[str] = Counter()  # "requests", "429", "5xx", per-path "GET /wms/inventory", ...
        self.routes: dict[tuple[str, str], Route] = {}
        self._lock = threading.Lock()
        self._pauses: dict[int, WritePause] = {}

    def pause_write(
        self, call: int, *, stage: str = "after", discard: bool = False, timeout: float = 120.0
    ) -> WritePause:
        """Hold write call ``call`` before or after it is applied (``WritePause``); vendors with writes
        route each counted write through ``run_write``."""
        if stage not in ("before", "after") or (discard and stage != "before"):
            raise ValueError("stage is 'before' or 'after'; discard needs stage='before'")
        pause = WritePause(call, stage, discard, timeout)
        with self._lock:
            self._pauses[call] = pause
        return pause

    def run_write(self, number: int, handler: Route, request: httpx.Request) -> httpx.Response:
        """Apply write call ``number`` through ``handler``, honouring a ``pause_write`` for it."""
        with self._lock:
            pause = self._pauses.pop(number, None)
        if pause is not None and pause.stage == "before":
            pause.reached.set()
            pause.released.wait(pause.timeout)
            if pause.discard:
                raise SandboxReset(request.url.path)
        response = handler(request)
        if pause is not None and pause.stage == "after":
            pause.reached.set()
            pause.released.wait(pause.timeout)
        return response

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def route(self, request: httpx.Request) -> Route | None:
        return self.routes.get((request.method, request.url.path))

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.count("requests")
        self.count(f"{request.method} {path}")
        fault = self.faults.take(("429", "500", "502", "503", "timeout", "reset", "truncated"), path)
        if fault == "timeout":
            self.count("timeout")
            raise SandboxTimeout(path)
        if fault == "reset":
            self.count("reset")
            raise SandboxReset(path)
        if fault == "429":
            self.count("429")
            return self.rate_limited_response(retry_after=0)
        if fault in ("500", "502", "503"):
            self.count("5xx")
            return json_response(int(fault), {"error": f"injected {fault}", "origin": "sandbox"})
        handler = self.route(request)
        if handler is None:
            return json_response(404, {"error": f"no route {request.method} {path}"})
        response = handler(request)
        if response.status_code == 429:
            self.count("429")
        if fault == "truncated":
            self.count("truncated")
            body = response.content
            response = httpx.Response(response.status_code, content=body[: len(body) // 2], headers=response.headers)
            response.extensions["sandbox_truncated_from"] = len(body)
        return response

    def rate_limited_response(
        self, retry_after: float, limit: int = 0, reset_epoch: float | None = None
    ) -> httpx.Response:
        """A 429 in Trackstar's documented form; vendors may override the body."""
        headers = {
            "retry-after": f"{retry_after:g}",
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": "0",
        }
        if reset_epoch is not None:
            headers["x-ratelimit-reset"] = str(int(reset_epoch))
        return json_response(429, {"error": "rate limit exceeded", "origin": "trackstar"}, headers)

    def environment(self, base_url: str) -> dict[str, str]:
        """Env vars (base URL and sandbox credentials) pointing this vendor's connector at the
        sandbox served at ``base_url``; ``integrations_pipeline.sandbox.sandbox_environment``
        collects them. Vendors override it; the default is empty."""
        return {}

    def transport(self) -> httpx.MockTransport:
        """An in-process transport: faults become the httpx exceptions a real socket would raise."""

        def handler(request: httpx.Request) -> httpx.Response:
            try:
                return self.handle(request)
            except SandboxTimeout:
                raise httpx.ReadTimeout("sandbox: injected timeout", request=request) from None
            except SandboxReset:
                raise httpx.RemoteProtocolError("sandbox: connection reset by peer", request=request) from None

        return httpx.MockTransport(handler)
