"""Hostile vendors on loopback, hostile specs on disk: each ends in one clear error, bounded in time and memory.

Servers (real sockets, so compression and trickling are real): a gzip bomb, a slowloris, a vendor handing
out page tokens for ever, an HTML page with a 200, invalid UTF-8, JSON nested 100,000 deep, records that
are not objects, a cursor that is not a date, and a vendor echoing the API key upper-cased and in base64.
No test asserts a duration: the limits end each case, and the errors say which limit.
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import resource
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from integrations_pipeline.engine.auth import Credentials
from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.errors import (
    ConfigError,
    LimitExceededError,
    RequestRejectedError,
    ResponseFormatError,
    SpecError,
)
from integrations_pipeline.engine.read.extract import read_pages
from integrations_pipeline.engine.read.load import load_stream
from integrations_pipeline.engine.spec import load_spec, parse_spec

from ._support import fake_spec

API_KEY = "SECRET-hostile-api-key-7"


def _gzip_bomb(inflated: int) -> bytes:
    """``inflated`` bytes of zeros (a JSON prefix first), gzip-compressed: about 1,000 to 1."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6) as f:
        f.write(b'{"data": ["')
        block = b"0" * (1 << 22)
        for _ in range(inflated >> 22):
            f.write(block)
    return out.getvalue()


@functools.cache
def bomb() -> bytes:
    return _gzip_bomb(1 << 30)  # 1 GiB inflated, about 1 MB on the wire


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    calls: dict[str, int] = {}

    def log_message(self, *args) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        Hostile.calls[path] = Hostile.calls.get(path, 0) + 1
        if path == "/bomb":
            self._send(200, bomb(), content_encoding="gzip")
        elif path == "/slowloris":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "1000000")
            self.end_headers()
            try:
                for _ in range(600):  # 1 byte every 0.2 s: never silent long enough for a read timeout
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        elif path == "/slowheaders":
            try:
                for byte in b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"x-pad: " + b"a" * 200:
                    self.wfile.write(bytes([byte]))  # the status line and headers, one byte at a time
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        elif path == "/endless":
            n = Hostile.calls[path]
            self._send(200, json.dumps({"data": [{"id": str(n)}], "next_token": f"t{n}"}).encode())
        elif path == "/html":
            self._send(200, b"<html><body>Down for maintenance</body></html>", "text/html; charset=utf-8")
        elif path == "/utf8":
            self._send(200, b'{"data": [{"id": "\xff\xfe"}]}')
        elif path == "/deep":
            self._send(200, b"[" * 100_000 + b"]" * 100_000)
        elif path == "/ints":
            self._send(200, b'{"data": [1, 2, 3]}')
        elif path == "/cursor":
            self._send(200, b'{"data": [{"id": "a1", "updated": "yesterday-ish"}]}')
        elif path == "/echo":
            key = self.headers.get("x-api-key", "")
            message = f"bad key {key.upper()} (base64 {base64.b64encode(key.encode()).decode()}; {key.lower()})"
            self._send(400, json.dumps({"error": message}).encode())
        else:
            self._send(404, b'{"error": "no route"}')


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    bomb()  # built before any request: building it inside a handler would look like a slow server
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _stream(path: str, **extra) -> dict:
    return {
        "description": "A hostile list.",
        "path": path,
        "records_path": "data",
        "primary_key": ["id"],
        "pagination": {"type": "next_token", "token_path": "next_token", "token_param": "page_token"},
        "schema": {"type": "object", "properties": {"id": {"type": "string"}, "updated": {"type": "string"}}},
        **extra,
    }


def hostile_spec(**limits):
    paths = ["/bomb", "/slowloris", "/slowheaders", "/endless", "/html", "/utf8", "/deep", "/ints", "/cursor", "/echo"]
    streams = {p.strip("/"): _stream(p) for p in paths}
    streams["cursor"] = _stream("/cursor", incremental={
        "cursor_field": "updated", "start_input": "updated[gte]", "end_input": "updated[lt]",
    })  # fmt: skip
    return fake_spec(
        {"type": "static_headers", "headers": {"x-api-key": {"env": "FAKE_API_KEY"}}},
        streams=streams,
        timeout_seconds=30,  # silence allowed; the limits below end each case (generous for a loaded machine)
        retry={"max_attempts": 3, "initial_backoff_seconds": 0.01},
        limits={"deadline_seconds": 2, "max_body_bytes": 8 << 20, "max_pages": 25, **limits},
    )


def client_for(url: str, **limits) -> VendorClient:
    return VendorClient(
        hostile_spec(**limits), Credentials("fake", {"FAKE_API_KEY": API_KEY}), environ={"FAKE_BASE_URL": url}
    )


def read_all(client: VendorClient, stream: str) -> list:
    return [page for page in read_pages(client, stream)]


CASES: list[tuple[str, type[Exception], str]] = [
    (
        "bomb",
        LimitExceededError,
        "fake stream 'bomb': the answer to /bomb passed limits.max_body_bytes (8388608 bytes, counted after decompression); not read further",
    ),
    (
        "slowloris",
        LimitExceededError,
        "fake stream 'slowloris': the answer to /slowloris was not complete after limits.deadline_seconds (2 s",
    ),
    (
        "endless",
        LimitExceededError,
        "fake stream 'endless': more than limits.max_pages (25) pages in one window; the vendor keeps handing out page tokens",
    ),
    (
        "html",
        ResponseFormatError,
        "fake stream 'html': /html answered 'text/html; charset=utf-8', not JSON: '<html><body>Down for maintenance</body></html>'",
    ),
    ("utf8", ResponseFormatError, "fake stream 'utf8': /utf8 answered bytes that are not UTF-8 (at byte 18: b'\\xff')"),
    ("deep", ResponseFormatError, "fake stream 'deep': the answer to /deep nests JSON deeper than the parser allows"),
    ("ints", ResponseFormatError, "fake stream 'ints': record 0 of page 1 at 'data' is a number 1, expected an object"),
]


@pytest.mark.parametrize(("stream", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_vendor_ends_in_one_clear_error_without_retries(hostile_url, stream, error, message):
    Hostile.calls.clear()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client = client_for(hostile_url)
    with pytest.raises(error) as info:
        read_all(client, stream)
    assert message in str(info.value)
    assert client.stats.retries == 0  # retrying cannot help any of these
    if stream != "endless":
        assert Hostile.calls[f"/{stream}"] == 1
    # Memory stays bounded: the 1 GiB bomb is cut at the 8 MiB limit (ru_maxrss is in KiB on Linux).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 300 * 1024


def test_a_cursor_that_is_not_a_date_names_the_record_and_the_value(hostile_url):
    from integrations_pipeline.engine.client import Connection
    from integrations_pipeline_tests.engine._support import FakeDestination

    with pytest.raises(ResponseFormatError) as info:
        load_stream(client_for(hostile_url), "cursor", FakeDestination(), [Connection("default")])
    assert str(info.value) == (
        "fake stream 'cursor': record 'a1' has cursor field 'updated' = 'yesterday-ish', not an ISO 8601 timestamp"
    )


def test_an_echoed_key_is_masked_whatever_its_encoding(hostile_url):
    with pytest.raises(RequestRejectedError) as info:
        read_all(client_for(hostile_url), "echo")
    text = f"{info.value} {info.value!r}"
    for leak in (API_KEY, API_KEY.upper(), API_KEY.lower(), base64.b64encode(API_KEY.encode()).decode()):
        assert leak not in text
    assert str(info.value) == "HTTP 400: bad key *** (base64 ***; ***) (/echo)"


# -- hostile specs -----------------------------------------------------------------------------------


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


BASE = """name: fake
title: Fake
description: d
protocol: rest
base_url: {env: FAKE_BASE_URL, default: "https://fake.test"}
auth: {type: none}
"""

STREAM = """streams:
  things:
    description: t
    path: /things
    records_path: data
    primary_key: [id]
    pagination: {type: single}
    schema: {type: object, properties: {id: {type: string}}}
"""


def _alias_bomb() -> str:
    lines = ["streams:", "  things:", "    description: t", "    path: /things", "    records_path: data",
             "    primary_key: [id]", "    pagination: {type: single}", "    schema:", "      type: object",
             "      properties: {id: {type: string}}", '      x0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']  # fmt: skip
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"      x{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


SPECS: list[tuple[str, str, str]] = [
    (
        "alias-bomb",
        BASE + _alias_bomb(),
        "fake.yaml: the document expands to 490,329,078 values through YAML aliases (*anchor), more than 200,000: an alias bomb or a runaway anchor",
    ),
    (
        "foreign-env",
        BASE.replace("auth: {type: none}", "auth: {type: static_headers, headers: {x-key: {env: TRACKSTAR_API_KEY}}}")
        + STREAM,
        "fake.yaml: auth.headers.x-key.env: TRACKSTAR_API_KEY is not under this connector's prefix FAKE_; a connector spec reads only its own variables",
    ),
    (
        "file-url",
        BASE.replace('"https://fake.test"', '"file:///etc/passwd"') + STREAM,
        "fake.yaml: base_url: a base URL must start with http:// or https://, got 'file:///etc/passwd'",
    ),
    (
        "dotdot-path",
        BASE + STREAM.replace("path: /things", "path: /../../admin/delete?all=1"),
        "fake.yaml: streams.things.path: a path may not contain '..', a query ('?'), a fragment ('#'), a scheme or encoded slashes, got '/../../admin/delete?all=1'",
    ),
    (
        "scheme-path",
        BASE + STREAM.replace("path: /things", "path: /go/https://evil.test/x"),
        "fake.yaml: streams.things.path: a path may not contain '..', a query ('?'), a fragment ('#'), a scheme or encoded slashes",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), SPECS, ids=[s[0] for s in SPECS])
def test_a_hostile_spec_is_refused_at_load_with_the_file_and_field(tmp_path, name, text, message):
    with pytest.raises(SpecError) as info:
        load_spec(_yaml(tmp_path, "fake", text))
    assert str(info.value).startswith(message), str(info.value)


def test_a_base_url_from_the_environment_must_be_http_too():
    spec = parse_spec(
        {
            "name": "fake",
            "title": "F",
            "description": "d",
            "protocol": "rest",
            "base_url": {"env": "FAKE_BASE_URL"},
            "auth": {"type": "none"},
        },  # fmt: skip
        "fake.yaml",
    )
    with pytest.raises(
        ConfigError, match=r"connector 'fake': base URL must start with http:// or https://, got file://"
    ):
        VendorClient(spec, Credentials("fake", {}), environ={"FAKE_BASE_URL": "file:///etc/passwd"})


def test_a_recursive_alias_is_measured_not_followed():
    import yaml

    from integrations_pipeline.engine.spec import expanded_size

    document = yaml.safe_load("a: &x [1, *x]")  # a list that contains itself
    assert expanded_size(document) == 4
