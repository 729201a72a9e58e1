"""The vendor HTTP client: auth, proactive rate limiting, retries and error classification, on httpx.

One ``VendorClient`` per connector and run. ``call()`` sends one logical request and returns the
decoded JSON body, or raises an error from ``engine.errors``:

- the rate limiter (``engine.ratelimit``) paces the request first;
- transport failures (timeouts, resets, truncated or undecodable bodies) become ``TransportError``;
- 429 → ``RateLimitedError`` honouring ``retry-after`` / ``x-ratelimit-reset``; 5xx (but not 501) and
  the spec's extra retry statuses → ``ServerError``; both retried with exponential back-off and jitter;
- the spec's ``unsupported_statuses`` (Trackstar 501, and 403: an endpoint disabled for the connection)
  → ``EndpointUnsupportedError``, never retried;
- 401/403 (403 unless the spec lists it as unsupported) → ``AuthError`` (after one fresh login when the
  auth type caches a token);
- other 4xx (and a 501 the spec does not list as unsupported) → ``RequestRejectedError`` with the
  vendor's message;
- HTTP-200 bodies are checked too: GraphQL ``errors`` and SALESmanago ``success: false``;
- a write that must not be applied twice (``call(idempotent=False)``: events) is retried only after a
  failure that proves the vendor did not act on it (429, 428, no connection); any other retriable
  failure raises ``OutcomeUnknownError`` at once, for the write side to put the records in doubt.

Counters in ``ClientStats`` (calls, retries, 429s, waits) feed the Dagster metadata.
Error messages are built from the status, the URL path and the vendor's message only: never from
headers, query strings or request bodies, which may carry credentials; and any credential value the
vendor's message echoes back is masked.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from .auth import AUTH_TYPES, Auth, Credentials, OutgoingRequest, dig
from .deadline import deadline_transport, request_deadline
from .errors import (
    AuthError,
    ConfigError,
    EndpointUnsupportedError,
    LimitExceededError,
    MissingCredentialError,
    OutcomeUnknownError,
    RateLimitedError,
    RequestRejectedError,
    ResponseFormatError,
    RetriableError,
    RetriesExhaustedError,
    ServerError,
    TransportError,
)
from .ratelimit import Budget, BudgetStore, Clock, SystemClock, budget_key
from .redact import MASK, MIN_SECRET_LENGTH, mask, redact_url
from .spec import ConnectorSpec, RateLimitSpec

USER_AGENT = "integrations-pipeline/0.1 (+https://github.com/integrations-pipeline)"
# Request headers whose values are credentials derived per request (AWS SigV4, Svix-style signatures).
SIGNATURE_HEADERS = ("authorization", "x-amz-security-token", "svix-signature", "webhook-signature")
#: How many of the latest request signatures redaction masks (each is two values: header and signature).
RECENT_SIGNATURES = 16


def _may_have_applied(exc: RetriableError) -> bool:
    """Whether the vendor may have acted on a request that failed this way.

    A 429 is the vendor refusing before acting, and so is a 4xx the policy retries (SALESmanago's
    428); a request that found no connection never left. Anything else (a 5xx, a timeout or reset
    after sending, an unreadable 2xx) may come after the vendor applied it.
    """
    if isinstance(exc, RateLimitedError):
        return False
    if isinstance(exc, TransportError):
        return exc.request_sent
    return exc.status is None or exc.status >= 500


@dataclass(frozen=True)
class Connection:
    """One customer connection (Trackstar): its id, the token sent in the spec's header, and what the vendor
    says it can do (``available_actions``: ``get_orders``, ...; ``None`` = unknown, so every stream is read
    and the vendor's own answer, a 501, decides)."""

    id: str
    token: SecretStr | None = None
    available_actions: frozenset[str] | None = None

    def lacks(self, action: str | None) -> bool:
        """Whether the vendor said this connection cannot do ``action`` (never when either is unknown)."""
        return action is not None and self.available_actions is not None and action not in self.available_actions

    def __repr__(self) -> str:
        return f"Connection({self.id!r})"


def parse_connections(spec: ConnectorSpec, credentials: Credentials) -> list[Connection]:
    """The connections to read: ``conn_a=tok,conn_b=tok`` or one bare token (id ``default``)."""
    if spec.connections is None:
        return [Connection("default")]
    raw = credentials.get(spec.connections.token.env)
    conns: list[Connection] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        conn_id, sep, token = part.partition("=")
        conns.append(
            Connection(conn_id.strip(), SecretStr(token.strip())) if sep else Connection("default", SecretStr(part))
        )
    return conns


@dataclass
class ClientStats:
    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    transport_errors: int = 0
    server_errors: int = 0
    logins: int = 0
    waited_seconds: float = 0.0
    backoff_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class _Limit:
    spec: RateLimitSpec
    limiters: dict[str, Budget] = field(default_factory=dict)


class VendorClient:
    """Sends one connector's requests. ``transport`` is the test seam (MockTransport, a sandbox).

    How it makes requests comes from ``config`` alone: ``spec.client_config(sink)``, the connector's or
    one of its sinks' (``sink=``). ``spec`` stays the connector's, for the streams and sinks readers and
    writers look up. ``environ`` holds the settings a spec names (base URL, plan limits): the engine never
    reads the process environment itself; the Dagster layer and the CLI hand it in (``ClientFactory``).
    """

    def __init__(
        self,
        spec: ConnectorSpec,
        credentials: Credentials,
        *,
        environ: Mapping[str, str],
        sink: str | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        log: Callable[[str], None] | None = None,
        budgets: BudgetStore | None = None,
    ):
        self.spec = spec
        self.sink = sink
        # Rate budgets: shared with every process using the same store (SQLite, Redis); a client given
        # none paces only itself.
        self.budgets = budgets or BudgetStore("memory://")
        config = self.config = spec.client_config(sink)
        self.credentials = credentials
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.stats = ClientStats()
        self.log = log or (lambda message: None)
        env = self.environ = environ
        self.base_url = (base_url or env.get(config.base_url.env) or config.base_url.default or "").rstrip("/")
        if not self.base_url:
            raise MissingCredentialError(config.base_url.env, config.connector)
        if not self.base_url.lower().startswith(("http://", "https://")):
            # A file:// or ftp:// base (a typo, or a spec pointing at the local disk) fails here, not after retries.
            raise ConfigError(
                f"connector '{config.connector}': base URL must start with http:// or https://, got "
                f"{redact_url(self.base_url).split('://')[0]}:// (from {config.base_url.env} or the spec's default)"
            )
        self.auth: Auth = AUTH_TYPES.build(config.auth, credentials=credentials, clock=self.clock.monotonic)
        self._limits = [_Limit(self._effective(rl, env)) for rl in config.rate_limits]
        self._connection_secrets: set[str] = set()
        self._signatures: deque[str] = deque(maxlen=RECENT_SIGNATURES)
        self._http = httpx.Client(
            transport=transport if transport is not None else deadline_transport(),
            timeout=httpx.Timeout(config.timeout_seconds),
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
            auth=self.auth.httpx_auth(),
            event_hooks={"request": [self._remember_signatures]},
        )

    @staticmethod
    def _effective(rl: RateLimitSpec, env) -> RateLimitSpec:
        if rl.requests_env and env.get(rl.requests_env):
            raw = env[rl.requests_env]
            requests = int(raw) if raw.strip().isdigit() else 0
            if requests <= 0:  # a plan limit, not a secret: safe to show
                raise ConfigError(f"environment variable {rl.requests_env} must be a positive integer, got {raw!r}")
            return rl.model_copy(update={"requests": requests})
        return rl

    # -- public -----------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        connection: Connection | None = None,
        idempotent: bool = True,
        paced: bool = False,
    ) -> Any:
        """One logical request with pacing and retries; returns the decoded JSON body.

        ``idempotent=False`` (a write that must not be applied twice: an event) retries only failures
        that prove the vendor did not act on it (a 429, a 428, no connection made); any other
        retriable failure may have reached the vendor and raises ``OutcomeUnknownError`` at once.
        ``paced=True``: the caller already took this request's rate-limit slot (``pace``).
        """
        policy = self.config.retry
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(method, path, params, json_body, connection, pace=not (paced and attempt == 1))
            except AuthError:
                # A cached token may have expired server-side: one fresh login, then give up.
                if not relogged and self.auth.invalidate():
                    relogged = True
                    attempt -= 1  # a fresh login is not a retry: the policy's attempts stay whole
                    self.log(f"{self.config.connector}: auth refused on {path}; logging in again")
                    continue
                raise
            except (ResponseFormatError, LimitExceededError) as exc:
                # The request reached the vendor; for a write that must not repeat, its fate is unknown.
                if not idempotent:
                    raise OutcomeUnknownError(exc) from None
                raise
            except RetriableError as exc:
                if not idempotent and _may_have_applied(exc):
                    raise OutcomeUnknownError(exc) from None
                if attempt >= policy.max_attempts:
                    raise RetriesExhaustedError(exc, attempt) from exc
                delay = self._backoff(attempt, exc)
                self.stats.retries += 1
                self.stats.backoff_seconds += delay
                self.log(f"{self.config.connector}: {exc}; retry {attempt}/{policy.max_attempts - 1} in {delay:.2f}s")
                self.clock.sleep(delay)

    def graphql(self, query: str, variables: dict[str, Any], *, authenticated: bool = True) -> Any:
        """POST a GraphQL document to the connector's endpoint."""
        body = {"query": query, "variables": variables}
        if authenticated:
            return self.call("POST", self.config.graphql_path, json_body=body)
        return self._attempt("POST", self.config.graphql_path, None, body, None, authenticate=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VendorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _remember_signatures(self, request: httpx.Request) -> None:
        # Runs after httpx's auth flow signed the request (SigV4): a vendor echoing the Authorization
        # header or a security token back in an error must not show it.
        # Only the latest few are kept: a signature is echoed in the answer to its own request, and masking
        # every signature a long push ever sent made each redaction compile a pattern of thousands (O(n²)).
        for name in SIGNATURE_HEADERS:
            value = request.headers.get(name)
            if value:
                self._signatures.append(value)
                # The signature alone, in case only it is echoed.
                signature = value.rpartition("Signature=")[2]
                if signature and signature != value:
                    self._signatures.append(signature)

    def pace(self, method: str, connection: Connection | None = None) -> None:
        """Wait for a rate-limit slot for one request now (then ``call(..., paced=True)``): a caller that
        must do something between the wait and the send (write an intent) waits first."""
        self._pace(method, connection)

    def _pace(self, method: str, connection: Connection | None) -> None:
        for limit in self._limits:
            if method not in limit.spec.methods:
                continue
            key = connection.id if (limit.spec.scope == "connection" and connection) else "*"
            limiter = limit.limiters.get(key)
            if limiter is None:
                limiter = limit.limiters[key] = self.budgets.budget(
                    self._budget_key(limit, connection if key != "*" else None),
                    limit.spec.requests,
                    limit.spec.per_seconds,
                    self.clock,
                )
            self.stats.waited_seconds += limiter.acquire()

    def _budget_key(self, limit: _Limit, connection: Connection | None) -> str:
        """Whose budget a limit is: the vendor account (host and credentials) or one connection's token.
        Every process and run holding the same credentials shares it (hashed: no secret in the store)."""
        index = str(self._limits.index(limit))
        if connection is not None:
            who = connection.token.get_secret_value() if connection.token is not None else connection.id
            return budget_key(self.config.connector, self.base_url, index, "connection", who)
        return budget_key(self.config.connector, self.base_url, index, *sorted(self.credentials.all_values()))

    def _login(self, mutation: str, variables: dict[str, Any]) -> Any:
        self.stats.logins += 1
        return self.graphql(mutation, variables, authenticated=False)

    def _attempt(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json_body: Any,
        connection: Connection | None,
        authenticate: bool = True,
        pace: bool = True,
    ) -> Any:
        # Pace before authenticating: signed bodies carry a requestTime that must be fresh when sent,
        # and a limiter wait can be long (SALESmanago's hourly budget).
        if pace:
            self._pace(method, connection)
        out = OutgoingRequest(method=method, url=self.base_url + path, params=dict(params or {}), json=json_body)
        if authenticate:
            self.auth.apply(out, self._login)
        if connection is not None and connection.token is not None and self.config.connections:
            out.headers[self.config.connections.header] = connection.token.get_secret_value()
            self._connection_secrets.add(connection.token.get_secret_value())
        self.stats.calls += 1
        content_bytes = None
        if out.json is not None:
            content_bytes = json.dumps(out.json, separators=(",", ":")).encode()
            out.headers["content-type"] = "application/json"
        limits = self.config.limits
        deadline = math.inf
        try:
            request = self._http.build_request(
                out.method, out.url, params=out.params or None, headers=out.headers, content=content_bytes
            )
            # Every socket operation of this request ends by the deadline (engine.deadline), headers too.
            with request_deadline(limits.deadline_seconds) as deadline:
                started = time.monotonic()
                response = self._http.send(request, stream=True)
                try:
                    content = self._read_body(response, path, started)
                finally:
                    response.close()
        except httpx.TimeoutException as exc:
            self.stats.transport_errors += 1
            # Only a connect or pool timeout proves the request never left this machine.
            sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            if time.monotonic() >= deadline and sent:
                raise LimitExceededError(
                    f"{self.config.connector}: the answer to {path} was not complete after limits.deadline_seconds "
                    f"({limits.deadline_seconds:g} s)",
                    path=path,
                ) from None
            raise TransportError(f"timed out: {type(exc).__name__}", path=path, request_sent=sent) from None
        except httpx.TransportError as exc:
            self.stats.transport_errors += 1
            sent = not isinstance(exc, httpx.ConnectError)
            raise TransportError(f"connection failed: {type(exc).__name__}", path=path, request_sent=sent) from None
        return self._classify(response, content, path)

    def _read_body(self, response: httpx.Response, path: str, started: float) -> bytes:
        """The decoded body, read chunk by chunk against the spec's deadline and size limit, so a
        decompression bomb or a server trickling bytes is cut off instead of filling memory or hanging."""
        limits = self.config.limits
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise LimitExceededError(
                    f"{self.config.connector}: the answer to {path} passed limits.max_body_bytes ({limits.max_body_bytes} bytes, "
                    "counted after decompression); not read further",
                    status=response.status_code,
                    path=path,
                )
            elapsed = time.monotonic() - started
            if elapsed > limits.deadline_seconds:
                raise LimitExceededError(
                    f"{self.config.connector}: the answer to {path} was not complete after limits.deadline_seconds "
                    f"({limits.deadline_seconds:g} s; {size} bytes so far)",
                    status=response.status_code,
                    path=path,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, response: httpx.Response, content: bytes, path: str) -> Any:
        """The JSON body, or for a 2xx an error that says what is wrong: truncated (retriable), or a
        complete answer that no retry will turn into JSON (an HTML page, invalid UTF-8, too deep)."""
        status = response.status_code
        try:
            return json.loads(content) if content else None
        except RecursionError:
            raise ResponseFormatError(
                f"{self.config.connector}: the answer to {path} nests JSON deeper than the parser allows "
                f"(about {sys.getrecursionlimit()} levels)",
                status=status,
                path=path,
            ) from None
        except ValueError as exc:
            if not 200 <= status < 300:
                return None  # an error page: the status tells what happened
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > len(content):
                self.stats.transport_errors += 1
                raise TransportError(
                    f"response body truncated ({len(content)} of {declared} bytes)", status=status, path=path
                ) from None
            preview = self.redact(content[:80].decode("utf-8", "replace"))
            content_type = response.headers.get("content-type", "")
            if content_type and "json" not in content_type.lower():
                reason = f"answered {content_type!r}, not JSON: {preview!r}"
            else:
                try:
                    content.decode("utf-8")
                except UnicodeDecodeError as bad:
                    reason = f"answered bytes that are not UTF-8 (at byte {bad.start}: {content[bad.start : bad.start + 1]!r})"
                else:
                    reason = f"answered text that is not JSON ({exc}): {preview!r}"
            raise ResponseFormatError(f"{self.config.connector}: {path} {reason}", status=status, path=path) from None

    def _classify(self, response: httpx.Response, content: bytes, path: str) -> Any:
        status = response.status_code
        errors = self.config.errors
        body = self._decode(response, content, path)
        if status < 400 and not (errors.graphql or errors.success_field):
            return body  # the common case: no message to build, nothing to redact
        message = self.redact(self._message(body) or response.reason_phrase or "no message")
        if status in errors.unsupported_statuses:
            raise EndpointUnsupportedError(message, status=status, path=path)
        if status == 429:
            self.stats.rate_limited += 1
            raise RateLimitedError(message, status=status, path=path, retry_after=self._retry_after(response))
        if status in self.config.retry.retry_statuses or (status >= 500 and status != 501):
            # 501 Not Implemented never heals by waiting: it falls through to the fatal branch.
            self.stats.server_errors += 1
            raise ServerError(message, status=status, path=path, retry_after=self._retry_after(response))
        if status in (401, 403):
            raise AuthError(message, status=status, path=path)
        if status >= 400:
            raise RequestRejectedError(message, status=status, path=path, body=body)
        if errors.graphql and isinstance(body, dict) and body.get("errors"):
            gql = body["errors"]
            codes = {str(dig(e, "extensions.code")) for e in gql if isinstance(e, dict)}
            text = self.redact("; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in gql))
            if codes & set(errors.graphql_auth_codes):
                raise AuthError(f"GraphQL: {text}", status=status, path=path)
            # The body goes along (never into the message): a field error leaves null where the object
            # would be, which a read by id takes as "not there" (engine.read.events).
            raise RequestRejectedError(f"GraphQL: {text}", status=status, path=path, body=body)
        if errors.success_field and isinstance(body, dict) and body.get(errors.success_field) is False:
            raise RequestRejectedError(f"{errors.success_field}=false: {message}", status=status, path=path)
        return body

    def _message(self, body: Any) -> str | None:
        """Every message field present, in the spec's order (Trackstar 422: ``error`` and ``detail``)."""
        if not isinstance(body, dict):
            return None
        found: list[str] = []
        for key in self.config.errors.message_fields:
            value = body.get(key)
            if value in (None, "", [], {}):
                continue
            if isinstance(value, list):
                parts = [v.get("message", json.dumps(v)) if isinstance(v, dict) else str(v) for v in value]
                text = "; ".join(parts)
            elif isinstance(value, dict):
                text = json.dumps(value, sort_keys=True)
            else:
                text = str(value)
            if text not in found:
                found.append(text)
        return "; ".join(found) or None

    def add_secret(self, value: str) -> None:
        """Mask ``value`` too from now on (a token a vendor just issued, before anything can echo it)."""
        if value:
            self._connection_secrets.add(value)

    def redact(self, text: str) -> str:
        """Mask any credential a vendor echoes back (``invalid key 'abc...'``), in any case and its
        common encodings (``engine.redact.mask``), and the signatures this client sent."""
        # Signatures change with every request: replaced verbatim (as they are echoed), longest first and before
        # the lasting secrets, so the cached pattern of those is not compiled again for each call.
        for signature in sorted(self._signatures, key=len, reverse=True):
            if len(signature) >= MIN_SECRET_LENGTH and signature in text:
                text = text.replace(signature, MASK)
        return mask(text, {*self.auth.secret_values(), *self._connection_secrets})

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after")
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                pass  # an HTTP-date: fall through to the reset header or plain back-off
        reset = response.headers.get("x-ratelimit-reset")
        if reset is not None:
            try:
                return max(0.0, float(reset) - self.clock.time())
            except ValueError:
                return None
        return None

    def _backoff(self, attempt: int, exc: RetriableError) -> float:
        policy = self.config.retry
        if exc.retry_after is not None:
            # The server said when; add a little jitter so parallel runs don't stampede together.
            return min(exc.retry_after, policy.max_retry_after_seconds) + self.rng.uniform(0, 0.1)
        ceiling = min(policy.max_backoff_seconds, policy.initial_backoff_seconds * policy.multiplier ** (attempt - 1))
        # "Equal jitter": never less than half the exponential step, never more than the step.
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


class ClientFactory:
    """Builds the clients of one connector and its sinks from one place: the connector's credentials, the
    environment the Dagster layer or the CLI hands in, and the transport, clock, rng and log a test or a run
    injects. The write side takes a factory, so a sink with its own host and auth gets its client here and
    never builds one itself."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        environ: Mapping[str, str],
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        log: Callable[[str], None] | None = None,
        budgets: BudgetStore | None = None,
    ):
        self.credentials = credentials
        self.environ = environ
        self.transport = transport
        self.clock = clock
        self.rng = rng
        self.log = log
        # One store for every client built here: a connector's and its sinks' requests draw on the same
        # budgets (a process-local one unless the caller hands in SQLite or Redis).
        self.budgets = budgets or BudgetStore("memory://")

    def connector(self, spec: ConnectorSpec) -> VendorClient:
        """A client for the connector's own API (its streams)."""
        return self._build(spec, None)

    def sink(self, spec: ConnectorSpec, sink: str) -> VendorClient:
        """A client for one sink: the connector's API, or the sink's own host and auth when it names them."""
        return self._build(spec, sink)

    def _build(self, spec: ConnectorSpec, sink: str | None) -> VendorClient:
        if spec.name != self.credentials.connector:
            raise ValueError(f"credentials are for '{self.credentials.connector}', not for connector '{spec.name}'")
        return VendorClient(
            spec,
            self.credentials,
            environ=self.environ,
            sink=sink,
            transport=self.transport,
            clock=self.clock,
            rng=self.rng,
            log=self.log,
            budgets=self.budgets,
        )

    def __repr__(self) -> str:
        return f"ClientFactory({self.credentials!r})"
