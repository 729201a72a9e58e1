"""A total deadline per request, enforced on every socket operation, headers included.

httpx's timeouts are per operation: a server that sends one byte every two seconds (a slowloris) never
lets a 30-second read timeout fire, in the status line and headers as in the body. This module wraps the
network backend of httpcore (the transport under httpx) so each connect, read and write gets at most the
time left until the current request's deadline; past it, the operation times out at once.

``deadline_transport()`` builds an ``httpx.HTTPTransport`` with that backend; ``VendorClient`` sets the
deadline of each attempt with ``request_deadline``. Tests that inject a transport (``MockTransport``, a
sandbox) have no sockets: the client still checks the deadline while it reads a body.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_local = threading.local()


@contextmanager
def request_deadline(seconds: float) -> Iterator[float]:
    """Within this block, socket operations of this thread end by ``monotonic() + seconds``."""
    deadline = time.monotonic() + seconds
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = previous


def _clamp(timeout: float | None) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return 0.0  # the socket operation times out at once
    return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        bounded = _clamp(timeout)
        if bounded == 0.0:
            raise httpcore.ReadTimeout("the request's deadline passed")
        return self._inner.read(max_bytes, bounded)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        bounded = _clamp(timeout)
        if bounded == 0.0:
            raise httpcore.WriteTimeout("the request's deadline passed")
        self._inner.write(buffer, bounded)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend):
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _clamp(timeout), local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _clamp(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport() -> httpx.HTTPTransport:
    """httpx's default transport, its socket operations bounded by ``request_deadline``."""
    transport = httpx.HTTPTransport()
    pool = transport._pool  # httpx (pinned) exposes no network backend argument; httpcore's pool keeps it here
    pool._network_backend = _Backend(pool._network_backend)
    return transport


def deadline_passed() -> bool:
    """Whether this thread's current request deadline has passed (a timeout then means the deadline)."""
    deadline = getattr(_local, "deadline", None)
    return deadline is not None and time.monotonic() >= deadline


__all__ = ["deadline_passed", "deadline_transport", "request_deadline"]
