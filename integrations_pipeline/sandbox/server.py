"""Serve sandbox vendors over real HTTP on loopback, with faults that happen on the socket.

``serve({"trackstar": TrackstarSandbox(), ...})`` starts one stdlib ``ThreadingHTTPServer`` per
sandbox on an ephemeral port, each in a daemon thread, and returns ``SandboxServers`` (a context
manager) with ``base_urls[name] = "http://127.0.0.1:PORT"``. Each request becomes an
``httpx.Request`` handed to ``sandbox.handle``; the same object that serves tests in-process serves
the demo and the benchmarks.

Transport faults are real socket behaviour here (in-process, ``VendorSandbox.transport`` raises the
httpx exceptions instead):

- ``SandboxTimeout``: the handler stalls ``timeout_stall_seconds`` without answering, then closes
  (the client sees ``httpx.ReadTimeout`` if its read timeout is shorter);
- ``SandboxReset``: the socket is closed with no response (``httpx.RemoteProtocolError`` or
  ``httpx.ReadError``, depending on whether FIN or RST arrives first);
- a response whose ``extensions`` carry ``sandbox_truncated_from``: headers announce the original
  Content-Length, the cut body is written and the connection closed
  (``httpx.RemoteProtocolError``: incomplete body).

Speed: HTTP/1.1 keep-alive, TCP_NODELAY, one ``sendall`` per response, no request logging.

``python -m integrations_pipeline.sandbox.server`` starts every available sandbox and prints the
``export`` lines that point the connectors at them.
"""

from __future__ import annotations

import argparse
import http
import signal
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

from integrations_pipeline.sandbox.base import SandboxReset, SandboxTimeout, VendorSandbox

# Hop-by-hop or length headers the server writes itself.
_SKIP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() must not wait for a stalled (timeout fault) handler
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: VendorSandbox, stall_seconds: float) -> None:
        super().__init__(address, _Handler)
        self.sandbox = sandbox
        self.stall_seconds = stall_seconds
        self.closing = threading.Event()
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def close_all(self) -> None:
        """Stop serving and drop idle keep-alive connections (their threads block on a read)."""
        self.closing.set()
        self.shutdown()
        self.server_close()
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so httpx reuses connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the peer (or a reset fault) already closed the socket

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # per-request logging would dominate the benchmarks

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        server = self.server
        body = self._read_body()
        address = server.server_address
        host = self.headers.get("host") or f"{address[0]!r}:{address[1]}".replace("'", "")
        request = httpx.Request(
            self.command, f"http://{host}{self.path}", headers=list(self.headers.items()), content=body
        )
        try:
            response = server.sandbox.handle(request)
        except SandboxTimeout:
            # Hold the connection open without answering, then give up on it.
            server.closing.wait(server.stall_seconds)
            self.close_connection = True
            return
        except SandboxReset:
            # Close at once with no response; linger 0 makes it an RST rather than a FIN.
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            return
        except Exception as exc:  # a sandbox bug must show as a 500, not a dropped connection
            response = httpx.Response(
                500, json={"error": f"sandbox error: {type(exc).__name__}: {exc}", "origin": "sandbox"}
            )
        self._write(response)

    def _write(self, response: httpx.Response) -> None:
        content = response.content
        truncated_from = response.extensions.get("sandbox_truncated_from")
        try:
            phrase = http.HTTPStatus(response.status_code).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {response.status_code} {phrase}"]
        lines.extend(f"{k}: {v}" for k, v in response.headers.multi_items() if k.lower() not in _SKIP_HEADERS)
        lines.append(f"Content-Length: {truncated_from if truncated_from is not None else len(content)}")
        if truncated_from is not None or self.close_connection:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + content)  # one sendall: no Nagle/delayed-ACK stall between parts
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class SandboxServers:
    """Running servers: ``base_urls[name]``, ``sandboxes[name]``; ``close()`` or use as ``with``."""

    def __init__(self) -> None:
        self.base_urls: dict[str, str] = {}
        self.sandboxes: dict[str, VendorSandbox] = {}
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []

    def close(self) -> None:
        for server in self._servers.values():
            server.close_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> SandboxServers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve(
    sandboxes: Mapping[str, VendorSandbox],
    host: str = "127.0.0.1",
    timeout_stall_seconds: float = 5.0,
    ports: Mapping[str, int] | None = None,
) -> SandboxServers:
    """Start one HTTP server per sandbox on ``host``, at ``ports[name]`` or an ephemeral port; returns at once."""
    servers = SandboxServers()
    try:
        for name, sandbox in sandboxes.items():
            server = _Server((host, (ports or {}).get(name, 0)), sandbox, timeout_stall_seconds)
            port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"sandbox-{name}", daemon=True
            )
            thread.start()
            servers._servers[name] = server
            servers._threads.append(thread)
            servers.sandboxes[name] = sandbox
            servers.base_urls[name] = f"http://{host}:{port}"
    except BaseException:
        servers.close()
        raise
    return servers


def _parse_sizes(values: list[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for value in values:
        stream, _, n = value.partition("=")
        if not n.isdigit():
            raise SystemExit(f"--size expects STREAM=N, got {value!r}")
        sizes[stream] = int(n)
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Start every available sandbox, print ``export`` lines, serve until interrupted."""
    from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment

    parser = argparse.ArgumentParser(
        prog="python -m integrations_pipeline.sandbox.server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (same seed, same data)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="STREAM=N",
        help="stream size, e.g. inventory=1000000 (repeatable)",
    )
    parser.add_argument("--timeout-stall", type=float, default=5.0, help="seconds an injected timeout holds a request")
    args = parser.parse_args(argv)
    sandboxes = default_sandboxes(seed=args.seed, sizes=_parse_sizes(args.size) or None)
    stop = threading.Event()
    with serve(sandboxes, host=args.host, timeout_stall_seconds=args.timeout_stall) as servers:
        for name, url in servers.base_urls.items():
            print(f"# {name}: {url}", file=sys.stderr)
        for var, value in sandbox_environment(servers.base_urls, sandboxes).items():
            print(f"export {var}={_shell_quote(value)}")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def _shell_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`") + '"'


if __name__ == "__main__":
    raise SystemExit(main())
