"""Every error the engine raises, under one root.

The tree (retries key off the type, never off scattered status checks)::

    IntegrationsError
    ├── ConfigError                      the spec or the environment is wrong; nothing was sent
    │   ├── SpecError                    a YAML spec fails validation (names file and field path)
    │   └── MissingCredentialError       an environment variable the spec needs is not set
    ├── SyncError                        something went wrong talking to a vendor
    │   ├── RetriableError               worth another attempt after a back-off
    │   │   ├── RateLimitedError         HTTP 429 (carries the server's retry-after, if any)
    │   │   ├── ServerError              HTTP 5xx (but not 501), SALESmanago 503, PHP-SDK 428
    │   │   └── TransportError           timeouts, connection resets, truncated or undecodable bodies
    │   ├── OutcomeUnknownError          a write that may have reached the vendor got no readable answer;
    │   │                                never retried when re-sending is not harmless (events)
    │   └── FatalError                   retrying cannot help; the run fails with the vendor's message
    │       ├── AuthError                401/403, GraphQL auth errors after one re-login (a revoked
    │       │                            Trackstar access token: 401, never a skip)
    │       ├── RequestRejectedError     other 4xx, GraphQL ``errors``, SALESmanago ``success: false``
    │       ├── EndpointUnsupportedError a status the spec lists as unsupported: Trackstar 501 (this
    │       │                            connection's WMS lacks the endpoint), 403 (it is disabled)
    │       ├── PaginationLoopError      a paginator saw the same token twice
    │       ├── RetriesExhaustedError    a retriable error persisted past the retry policy
    │       ├── ResponseFormatError      a complete answer that is not what JSON and the spec say
    │       │                            (an HTML page, invalid UTF-8, nesting too deep, a record
    │       │                            that is not an object, a cursor that is not a date)
    │       └── LimitExceededError       a safety limit of the spec's ``limits`` (deadline, body size,
    │                                    pages per window) was reached
    ├── PushBusyError                    another run holds the sync's lease: one writer per sync
    │   └── LeaseLostError               this run's lease expired and another run took it over
    └── WebhookRejected                  a webhook that is not the vendor's (bad signature, stale,
                                         wrong path token) or not readable; carries the status to answer

Messages never contain secret values: the client builds them from the status, the
vendor's error text (with any credential the vendor echoes back masked) and the request path,
never from headers or bodies it sent.
"""

from __future__ import annotations


class IntegrationsError(Exception):
    """Root of every error raised by integrations_pipeline."""


class ConfigError(IntegrationsError):
    """The configuration (spec files or environment) is invalid; no request was made."""


class SpecError(ConfigError):
    """A connector spec failed validation.

    ``problems`` lists ``"<field.path>: <message>"`` strings; ``str()`` prefixes each with the file name
    so that the first line a user reads says exactly where to look.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class MissingCredentialError(ConfigError):
    """An environment variable the connector needs is not set."""

    def __init__(self, variable: str, connector: str, hint: str | None = None):
        self.variable = variable
        self.connector = connector
        super().__init__(
            f"environment variable {variable} is not set (needed by connector '{connector}'); "
            + (hint or "set it, or run against the sandbox with `integrations-pipeline run`")
        )


class SyncError(IntegrationsError):
    """A request to a vendor failed."""

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None):
        self.status = status
        self.path = path
        self.message = message  # without the status and path, for a caller that adds context
        where = f" ({path})" if path else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{code}{message}{where}")


class RetriableError(SyncError):
    """The request may succeed if repeated after a pause."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, path=path)
        self.retry_after = retry_after


class RateLimitedError(RetriableError):
    """HTTP 429: the vendor asks us to slow down."""


class ServerError(RetriableError):
    """The vendor failed on its side (5xx other than 501, or a documented retry status)."""


class TransportError(RetriableError):
    """The exchange itself failed: timeout, reset connection, truncated or invalid body.

    ``request_sent`` is False only when the request provably never left (no connection could be made):
    then even a write that must not be repeated may be retried.
    """

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None, request_sent: bool = True):
        super().__init__(message, status=status, path=path)
        self.request_sent = request_sent


class FatalError(SyncError):
    """Repeating the request cannot help."""


class AuthError(FatalError):
    """The credentials were refused."""


class RequestRejectedError(FatalError):
    """The vendor rejected the request (4xx, GraphQL errors, ``success: false``).

    ``body`` is the decoded error body, where an all-or-nothing batch endpoint lists the items it
    refused. It is kept on the object, never put into the message (a body may echo what was sent).
    """

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None, body=None):
        super().__init__(message, status=status, path=path)
        self.body = body


class EndpointUnsupportedError(FatalError):
    """The connection cannot read this endpoint (the spec's ``errors.unsupported_statuses``: Trackstar 501, the
    connected WMS does not implement it; 403, it is disabled for the organisation or connection): the stream is
    skipped for that connection."""


class PaginationLoopError(FatalError):
    """A paginator received a token it had already followed."""


class RetriesExhaustedError(FatalError):
    """A retriable error persisted through every attempt the retry policy allows."""

    def __init__(self, last: RetriableError, attempts: int):
        self.last = last
        self.attempts = attempts
        super().__init__(f"gave up after {attempts} attempts; last error: {last}")
        self.status = last.status  # kept for callers, but not repeated in the message


class OutcomeUnknownError(SyncError):
    """A write may have reached the vendor, and its answer was lost, a 5xx or unreadable.

    Whether the vendor applied it is unknown. For an idempotent write (an upsert by key) the client
    retries it like any retriable error; for one that is not (an event: SALESmanago does not
    de-duplicate), it is never retried: the records go to the in-doubt table for a person to settle.
    ``cause`` is the retriable error it replaces.
    """

    def __init__(self, cause: SyncError):
        self.cause = cause
        super().__init__(f"outcome unknown: {cause}")
        self.status, self.path = cause.status, cause.path


class PushBusyError(IntegrationsError):
    """Another run holds the lease on this sync's delivered state (one writer per sync at a time)."""


class LeaseLostError(PushBusyError):
    """This run's lease on a sync expired (a long wait) and another run took it; nothing more is sent."""


class ResponseFormatError(FatalError):
    """The vendor answered in full, but not in a form retrying can fix (see the tree)."""


class LimitExceededError(FatalError):
    """A request or a read passed one of the connector's ``limits``; the message names it and its value."""


class WebhookRejected(IntegrationsError):
    """A webhook we do not accept; ``status`` is what to answer (401 unsigned, 400 malformed, 413 too big)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
