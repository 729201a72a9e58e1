"""The declarative connector spec: pydantic models for one vendor's YAML file, and its loader.

A spec says everything the engine needs to read a vendor: base URL, auth, rate limits, retry
policy, per-connection tokens, and streams (REST path or GraphQL query, where the records are,
primary key, cursor field and how a time window becomes request filters, JSON schema, the parent
stream a child stream is read once per record of, the vendor action a connection must list); and to
write to it: sinks (endpoint, batch size, record key, field rules, body template, where the
per-record outcomes are in the response; run by ``engine.write.sinks``), and, where a sink has a ``read``
block, how to fetch the target's current records by key (run by ``engine.write.reads``).

Loading never half-succeeds: a broken spec raises ``SpecError`` whose lines read
``trackstar.yaml: streams.inventory.pagination.type: got 'tokn', expected one of [...]``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, Discriminator, Field, ValidationError, field_validator, model_validator

from .auth import AUTH_TYPES
from .errors import SpecError
from .models import Frozen, Secret, Setting
from .read.pagination import PAGINATORS

# Unions over every registered type; pydantic picks the member by the ``type`` key.
# Union[...] of a tuple built at run time: the X | Y spelling cannot express it.
AuthSpec = Annotated[Union[AUTH_TYPES.configs()], Discriminator("type")]  # type: ignore[valid-type]  # noqa: UP007
PaginationSpec = Annotated[Union[PAGINATORS.configs()], Discriminator("type")]  # type: ignore[valid-type]  # noqa: UP007

SNAKE = r"^[a-z][a-z0-9_]*$"
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


# A path is appended to the base URL: it may not climb out of it, carry a query or name another host.
_BAD_PATH = re.compile(r"(^|/)\.\.(/|$)|[?#\\]|://|%2e%2e|%2f", re.IGNORECASE)


def check_path(path: str | None) -> str | None:
    """``path`` if it is a plain absolute path (``/wms/orders``), else ``ValueError`` saying why."""
    if path is None:
        return None
    if not path.startswith("/"):
        raise ValueError("a path must start with '/'")
    if _BAD_PATH.search(path):
        raise ValueError("a path may not contain '..', a query ('?'), a fragment ('#'), a scheme or encoded slashes")
    return path


def check_http_default(setting: Setting | None) -> Setting | None:
    """A base URL's default must be http(s): ``file://`` or another scheme fails at load, not at run time."""
    if (
        setting is not None
        and setting.default is not None
        and not setting.default.lower().startswith(("http://", "https://"))
    ):
        raise ValueError(f"a base URL must start with http:// or https://, got {setting.default!r}")
    return setting


class RateLimitSpec(Frozen):
    """Proactive pacing: at most ``requests`` per ``per_seconds`` (per connection if ``scope`` says so)."""

    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)
    methods: list[HttpMethod] = Field(default_factory=lambda: list(get_args(HttpMethod)))
    scope: Literal["connector", "connection"] = "connector"
    requests_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Environment variable that overrides ``requests`` (plan-dependent limits).",
    )


class RetrySpec(Frozen):
    """Exponential back-off with full jitter for retriable errors (429, 5xx, transport faults)."""

    max_attempts: int = Field(default=6, ge=1)
    initial_backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    retry_statuses: list[int] = Field(
        default_factory=lambda: [429, 500, 502, 503, 504],
        description="Statuses retried with back-off; add 428 for SALESmanago as its PHP SDK does.",
    )
    max_retry_after_seconds: float = Field(default=120.0, gt=0, description="Cap on a server's retry-after.")


class LimitsSpec(Frozen):
    """Safety limits against a vendor that misbehaves (or an attacker posing as one). Each breach is a
    ``LimitExceededError`` naming the limit, never retried."""

    deadline_seconds: float = Field(
        default=300.0, gt=0, description="Most seconds one request may take from sending to its last byte."
    )
    max_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Largest answer accepted, counted after decompression, while reading.",
    )
    max_pages: int = Field(
        default=100_000,
        gt=0,
        description="Most pages one stream reads per window and connection (a child stream: per parent).",
    )


class ResponseErrorsSpec(Frozen):
    """How errors hidden in HTTP-200 bodies are found."""

    graphql: bool = Field(default=False, description="Treat a non-empty top-level ``errors`` array as a failure.")
    graphql_auth_codes: list[str] = Field(
        default_factory=lambda: ["UNAUTHENTICATED", "FORBIDDEN"],
        description="``errors[].extensions.code`` values that mean the token is bad: re-login once.",
    )
    success_field: str | None = Field(default=None, description="Body flag that must be true (SALESmanago).")
    message_fields: list[str] = Field(
        default_factory=lambda: ["error", "message", "messages", "detail", "problems", "errors"],
        description="Body keys searched, in order, for the vendor's error message.",
    )
    unsupported_statuses: list[int] = Field(
        default_factory=list,
        description="Statuses that mean 'this connection cannot read the endpoint' (Trackstar 501: the WMS lacks "
        "it; 403: it is disabled for the organisation or connection): skip the stream for that connection, never "
        "retry. Never 401: refused credentials (a revoked token) must fail, not pass for a missing endpoint.",
    )

    @field_validator("unsupported_statuses")
    @classmethod
    def _unsupported_ok(cls, statuses: list[int]) -> list[int]:
        for status in statuses:
            if status == 401 or status == 429 or not 400 <= status < 600:
                raise ValueError(
                    f"{status} cannot mean 'endpoint unsupported' (4xx or 5xx only; 401 is refused credentials, "
                    "which must fail the run, and 429 is retried)"
                )
        return statuses


class ConnectionsSpec(Frozen):
    """Per-customer connections (Trackstar): one access token per connected system.

    The variable holds ``conn_id=token`` pairs separated by commas, or a single bare token (its
    connection id is then ``default``). Every record is stored with its ``_connection_id``.
    """

    token: Secret = Field(
        description="Fallback connections from a variable; connections stored by the link flow come first."
    )
    header: str = Field(description="Header that carries the connection's token.")
    link: LinkSpec | None = Field(default=None, description="How customers connect (a vendor's link flow).")


class LinkSpec(Frozen):
    """A vendor's link flow: the organisation asks for a link token, the customer's browser turns it into an
    auth code, the backend exchanges the code for the connection's access token; a list call names every
    connection, for reconciling. All these calls carry the organisation's auth only, no connection token."""

    token_path: str = Field(description="POST: a fresh link token for the front end.")
    token_field: str = Field(description="Answer field holding the link token.")
    exchange_path: str = Field(description="POST: an auth code (and a customer id) for an access token.")
    code_field: str = Field(description="Request field carrying the auth code.")
    customer_field: str = Field(description="Request field carrying our id of the customer.")
    list_path: str = Field(description="GET: every connection of the organisation.")
    list_records_path: str = Field(description="Dotted path of the connection list in the list answer.")
    access_token_field: str = Field(description="Exchange answer field holding the connection's token.")
    id_field: str = Field(description="Field holding the connection id, in exchange and list answers.")
    name_field: str = Field(description="Field holding the connected system's name.")
    actions_field: str = Field(description="Field listing what the connection can do (its endpoints).")


class WebhookVerifySpec(Frozen):
    """How a webhook proves it comes from the vendor: ``svix`` (a signed id, timestamp and body, verified by
    the svix library with the endpoint's ``whsec_`` secret) or ``path_token`` (the vendor signs nothing, so
    the receiving URL carries a secret of ours, compared in constant time)."""

    type: Literal["svix", "path_token"]
    secret: Secret


class ConnectionEventsSpec(Frozen):
    """Webhook events about a connection itself, which change the connection registry rather than a stream.

    ``created`` may carry the connection's access token (``token_field``): the receiver seals it with the
    registry's key before the event is stored, so it is never written in clear. ``history_completed`` says the
    vendor finished reading a resource's history from the customer's system: the rows it can serve for that
    resource are complete, so the connection's history for the resource's stream is read again.
    """

    created: str | None = Field(default=None, description="Event type: a customer connected.")
    deleted: str | None = Field(default=None, description="Event type: a connection was deleted.")
    history_completed: str | None = Field(
        default=None, description="Event type: the vendor's historical sync of one resource completed."
    )
    token_field: str | None = Field(
        default=None, description="Dotted path of the access token in a created event's body."
    )
    resource_field: str | None = Field(
        default=None, description="Dotted path of the resource a history event names (e.g. 'data.resource')."
    )
    resource_streams: dict[str, str] = Field(
        default_factory=dict, description="Resource name in a history event → the stream it fills."
    )
    oldest_field: str | None = Field(default=None, description="Dotted path of the oldest date the history holds.")
    newest_field: str | None = Field(default=None, description="Dotted path of the newest date the history holds.")

    def kind(self, event_type: str) -> str | None:
        """``created``, ``deleted``, ``history_completed``, or None for any other event type."""
        for kind in ("created", "deleted", "history_completed"):
            if getattr(self, kind) == event_type:
                return kind
        return None


class WebhookFetchSpec(Frozen):
    """How to read the one object an id-only event names (Salestrekker posts ``{id, event}``, nothing more):
    a GraphQL query taking the id, whose answer holds the object at ``record_path``. The object is read once
    per distinct id however many pending events name it, and merged into its stream by the stream load's
    newest-by-cursor rule. ``null`` there (or a GraphQL error with ``null`` there) means the object no longer
    exists for these credentials: the event is settled saying so."""

    query: str = Field(
        description="GraphQL query reading one object by id, e.g. 'query T($id: ID!) { ticket(id: $id) { ... } }'."
    )
    id_variable: str = Field(
        default="id", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The query's variable that takes the id."
    )
    variables: dict[str, Any] = Field(default_factory=dict, description="Fixed GraphQL variables.")
    record_path: str = Field(description="Dotted path of the object in the answer, e.g. 'data.ticket'.")

    @model_validator(mode="after")
    def _check_variable(self) -> WebhookFetchSpec:
        # A query that never uses the id would read the same thing for every event: a typo, caught at load.
        if not re.search(rf"\${re.escape(self.id_variable)}\b", self.query):
            raise ValueError(f"query declares no ${self.id_variable} (id_variable)")
        return self


class WebhooksSpec(Frozen):
    """Change notifications a vendor posts, and how each becomes a change of one stream."""

    verify: WebhookVerifySpec
    event_type_field: str = Field(description="Body field naming the event type.")
    connection_field: str | None = Field(default=None, description="Body field naming the connection, if any.")
    data_field: str | None = Field(
        default=None, description="Body field holding the changed object, when the event carries it."
    )
    id_field: str | None = Field(
        default=None, description="Body field holding the changed object's id, when the event carries only that."
    )
    streams: dict[str, str] = Field(
        default_factory=dict,
        description="Event type → the stream it changes; a type ending in '*' matches every type it begins "
        "('order.*'). Events of other types are stored and reported, never applied to a stream.",
    )
    fetch: dict[str, WebhookFetchSpec] = Field(
        default_factory=dict,
        description="Stream → how to read one of its objects by id, for events that carry only the id "
        "(id_field). Events of a stream without an entry here must carry their object (data_field).",
    )

    connection_events: ConnectionEventsSpec | None = Field(
        default=None, description="Events about connections (created, deleted, history completed)."
    )

    def secret_fields(self) -> list[str]:
        """Dotted body paths holding secrets: sealed (or dropped) before an event is stored."""
        ce = self.connection_events
        return [ce.token_field] if ce is not None and ce.token_field else []

    def stream_for(self, event_type: str) -> str | None:
        """The stream an event type changes: its exact entry, else the longest '*' entry it begins with."""
        if event_type in self.streams:
            return self.streams[event_type]
        prefixes = [k for k in self.streams if k.endswith("*") and event_type.startswith(k[:-1])]
        return self.streams[max(prefixes, key=len)] if prefixes else None


class IncrementalSpec(Frozen):
    """How a time window ``[start, end)`` on the cursor field becomes request inputs."""

    cursor_field: str
    start_input: str = Field(description="Request input for the inclusive lower bound, e.g. 'updated_date[gte]'.")
    end_input: str = Field(description="Request input for the exclusive upper bound, e.g. 'updated_date[lt]'.")
    datetime_format: str = Field(default="%Y-%m-%dT%H:%M:%SZ", description="strftime format of the bounds (UTC).")
    start_date: str = Field(default="2026-10-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="First daily partition.")
    lookback_days: int = Field(
        default=1,
        ge=0,
        le=90,
        description="A resumed read (the main job after its first run) starts this many days before the last day "
        "read, so a change stamped late, or a day read before it ended, is read again.",
    )


class ParentSpec(Frozen):
    """A child stream is read once per record of its parent stream (same connector, same connection): the
    parent's ``field`` fills the ``{param}`` placeholder of the child's path, and every child row carries it in
    ``column`` (part of the child's primary key), so ``/wms/warehouses/{warehouse_id}/locations`` becomes one
    table of every warehouse's locations.

    The parent's keys come from the parent's own list, read through the API in the same load (its paging and
    filters), not from the parent's table: the child then never depends on another asset having run first, or
    on the warehouse at all, and sees exactly the parents the vendor lists now. That costs one list page per
    page of parents, next to one child call per parent.

    ``window`` says which side a time window filters. ``child``: the child's own requests take it (the child
    endpoint filters on its cursor) and every parent is listed. ``parent``: the parent's list takes it and the
    child endpoint is called for the parents changed in the window only (an endpoint that neither pages nor
    filters, Trackstar's order packs); the child's cursor is then the parent's, copied onto each row by
    ``fields``.
    """

    stream: str = Field(description="The parent stream, in this connector.")
    field: str = Field(default="id", description="Parent record field holding the key the child path takes.")
    param: str = Field(pattern=SNAKE, description="Placeholder of the child's path, written {param}.")
    column: str | None = Field(
        default=None, description="Child column holding the parent key (default: param); part of primary_key."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Parent field → child column, copied onto every child row (the parent's cursor, for window: parent).",
    )
    window: Literal["child", "parent"] = Field(
        default="child", description="child: the window filters the child's requests; parent: the parent's list."
    )
    not_found_statuses: list[int] = Field(
        default_factory=list,
        description="Statuses of a child call that mean 'no such parent' (it was deleted after it was listed): "
        "that parent is counted and passed over, the others are read. 4xx only, and not 401/403 or 429.",
    )

    @field_validator("not_found_statuses")
    @classmethod
    def _not_found_ok(cls, statuses: list[int]) -> list[int]:
        for status in statuses:
            if not 400 <= status < 500 or status in (401, 403, 429):
                raise ValueError(
                    f"{status} cannot mean 'no such parent' (4xx only; 401/403 are refused credentials or a "
                    "disabled endpoint, 429 is retried)"
                )
        return statuses

    @property
    def key_column(self) -> str:
        """The child column that holds the parent key."""
        return self.column or self.param


class StreamSpec(Frozen):
    """One readable resource of a vendor; it becomes one Dagster asset and one warehouse table."""

    description: str
    path: str | None = Field(default=None, description="REST path, appended to the base URL.")
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Fixed query parameters.")
    query: str | None = Field(default=None, description="GraphQL query text (GraphQL connectors).")
    variables: dict[str, Any] = Field(default_factory=dict, description="Fixed GraphQL variables.")
    records_path: str = Field(description="Dotted path of the record list in a response body.")
    single_record: bool = Field(
        default=False,
        description="The answer holds one record (an object) at records_path, not a list (a child endpoint "
        "answering one object per parent: Trackstar order packs).",
    )
    primary_key: list[str] = Field(min_length=1)
    incremental: IncrementalSpec | None = None
    pagination: PaginationSpec  # type: ignore[valid-type]
    json_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema of one record.")
    parent: ParentSpec | None = Field(default=None, description="Read once per record of another stream.")
    action: str | None = Field(
        default=None,
        description="The vendor's name for this read in a connection's list of what it can do (Trackstar "
        "available_actions: get_orders): a connection known to lack it is skipped without a call. Unset: always read.",
    )

    _path_ok = field_validator("path")(classmethod(lambda cls, v: check_path(v)))

    @model_validator(mode="after")
    def _check_schema(self) -> StreamSpec:
        props = self.json_schema.get("properties")
        if self.json_schema.get("type") != "object" or not isinstance(props, dict) or not props:
            raise ValueError("schema must be a JSON Schema of type 'object' with properties")
        for key in self.primary_key:
            if key not in props:
                raise ValueError(f"primary_key field '{key}' is not in schema.properties")
        if self.incremental and self.incremental.cursor_field not in props:
            raise ValueError(f"cursor_field '{self.incremental.cursor_field}' is not in schema.properties")
        if self.parent is not None:
            column = self.parent.key_column
            if column not in props:
                raise ValueError(f"parent: column '{column}' (the parent key) is not in schema.properties")
            if column not in self.primary_key:
                raise ValueError(
                    f"parent: column '{column}' must be in primary_key: a child is one of its parent's, "
                    f"e.g. primary_key: [{', '.join([column, *(k for k in self.primary_key if k != column)])}]"
                )
            for target in self.parent.fields.values():
                if target not in props:
                    raise ValueError(f"parent.fields: column '{target}' is not in schema.properties")
            placeholders = _PLACEHOLDER.findall(self.path or "")
            if placeholders != [self.parent.param]:
                raise ValueError(
                    f"parent: the path must hold the placeholder {{{self.parent.param}}} once and no other, "
                    f"got {self.path!r}"
                )
        elif _PLACEHOLDER.search(self.path or ""):
            raise ValueError(f"path {self.path!r} holds a placeholder; only a child stream (parent:) fills one")
        return self


# A path placeholder of a child stream: {warehouse_id}.
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


# -- sinks (reverse ETL) --------------------------------------------------------------------------

# A record field, as a dotted path through the record the vendor receives (``contact.email``).
FIELD_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
RECORD, RECORDS = "$record", "$records"  # body-template placeholders (single / batch endpoints)
KEY, KEYS = "$key", "$keys"  # read-template placeholders (one key / a list of keys per call)
FieldType = Literal["string", "integer", "number", "boolean", "object", "array"]


class FieldRule(Frozen):
    """What one record field must be before it is sent."""

    type: FieldType
    required: bool = False
    max_length: int | None = Field(
        default=None, gt=0, description="Most characters (string) or items (array) the vendor accepts."
    )
    enum: list[str | int | float | bool] | None = Field(default=None, min_length=1, description="Allowed values.")

    @model_validator(mode="after")
    def _check(self) -> FieldRule:
        if self.max_length is not None and self.type not in ("string", "array"):
            raise ValueError(f"max_length applies to string and array fields, not {self.type}")
        return self


class ItemListSpec(Frozen):
    """A list (or map) in a batch answer that names items by one of their record fields."""

    path: str = Field(description="Dotted path of the list, or of a map whose keys are the values, in the answer.")
    match: str = Field(pattern=FIELD_PATH, description="Record field whose value the list holds (email).")
    case: Literal["exact", "insensitive"] = Field(
        default="exact", description="insensitive: the vendor answers the value in another case (emails lower-cased)."
    )
    keep_value_as: str | None = Field(
        default=None,
        description="For a map: the outcome response name its value is kept under (contactIds → contact_id).",
    )


class SinkResponseSpec(Frozen):
    """Where a write response reports per-record outcomes, and what to keep from it."""

    item_results_path: str | None = Field(
        default=None,
        description="Batch endpoints that answer per item (SALESmanago ``result``): dotted path of the list, "
        "aligned by position with the records sent.",
    )
    item_success_field: str = Field(default="success", description="Item-result flag that is false on rejection.")
    item_message_field: str = Field(default="message", description="Item-result field with the vendor's reason.")
    keep: dict[str, str] = Field(
        default_factory=dict,
        description="Outcome response name → dotted path in the response body (single-record endpoints) or "
        "in the item result (batch): Trakor ``id``/``sku``/``created``, SALESmanago ``contactId``.",
    )
    item_errors_path: str | None = Field(
        default=None,
        description="All-or-nothing batch endpoints: dotted path of the list of bad items in a 4xx body "
        "(Datatalks ``errors``, SALESmanago v3 ``problems``); those records are rejected, the rest resent once.",
    )
    item_index_field: str | None = Field(default=None, description="Key of an item error holding the item's index.")
    item_index_pattern: str | None = Field(
        default=None,
        description="Regex whose first group is the item's index, searched in the joined item-error fields "
        r"(SALESmanago v3: ``^products\[(\d+)\]``).",
    )
    item_error_fields: list[str] = Field(
        default_factory=lambda: ["message"],
        min_length=1,
        description="Item-error keys joined with ': ' to form the reason (Datatalks: field, reason).",
    )
    failed: ItemListSpec | None = Field(
        default=None,
        description="Batch endpoints whose 2xx answer lists the items it did NOT apply, by a record field "
        "(SALESmanago batchAddContactExtEvent ``failedContacts``: emails): every record matching is rejected "
        "with the answer's message, the rest delivered (``counts`` settle a mixed email).",
    )
    applied: ItemListSpec | None = Field(
        default=None,
        description="Batch endpoints whose 2xx answer lists the items it applied, by a record field "
        "(SALESmanago batchupsert ``contactIds``: a map email → contact id): a record missing from it was not applied.",
    )
    counts: dict[Literal["delivered", "rejected"], str] = Field(
        default_factory=dict,
        description="Paths of counts in a 2xx answer that must agree with the outcomes read from it "
        "(SALESmanago ``createdAmount``/``failedAmount``); an answer that disagrees is in doubt.",
    )
    auth_messages: list[str] = Field(
        default_factory=list,
        description="Substrings of a rejection message that mean the credentials were refused (SALESmanago "
        "answers 'Not authenticated' with HTTP 200 and success=false): fail fast instead of rejecting records.",
    )

    @model_validator(mode="after")
    def _check(self) -> SinkResponseSpec:
        if self.item_errors_path is None:
            if self.item_index_field or self.item_index_pattern:
                raise ValueError("item_index_field/item_index_pattern need item_errors_path")
            return self
        if (self.item_index_field is None) == (self.item_index_pattern is None):
            raise ValueError("item_errors_path needs exactly one of item_index_field or item_index_pattern")
        if self.item_index_pattern is not None:
            try:
                groups = re.compile(self.item_index_pattern).groups
            except re.error as exc:
                raise ValueError(f"item_index_pattern is not a valid regex: {exc}") from None
            if groups < 1:
                raise ValueError("item_index_pattern must capture the index in a group, e.g. '\\[(\\d+)\\]'")
        return self


class ProxySpec(Frozen):
    """The sinks of another connector that this sink forwards to, and how their fields map onto this one's."""

    sinks: list[str] = Field(
        min_length=1, description="Forwarded sinks, each '<connector>/<sink>' (salesmanago/contacts_batch)."
    )
    fields: dict[str, str] = Field(
        min_length=1, description="Field of the forwarded sinks (contact.email) → field of this sink (email)."
    )


class SinkReadSpec(Frozen):
    """The read side of a sink: how to fetch the target's current records for a list of keys.

    The key goes where the template says: a query parameter or the body, or one whole segment of the path
    (``/contact/$key``, one key per call, escaped so it stays one segment).

    Records come back in the shape the vendor stores and answers with, which need not be the sink's
    write shape (SALESmanago answers flat contact fields where the upsert nests them under
    ``contact``); ``key`` names the key inside a *returned* record.
    """

    description: str
    path: str = Field(
        pattern=r"^/",
        description=f"Endpoint path, appended to the (sink's or connector's) base URL; may hold '{KEY}' as one "
        "whole segment (batch_size 1).",
    )
    method: Literal["GET", "POST"] = "GET"
    batch_size: int = Field(ge=1, description=f"Most keys per call; 1 = one key per call ('{KEY}').")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Query-parameter template: a GET read puts '{KEY}' (batch_size 1) or '{KEYS}' (a list, sent "
        "as repeated parameters) here; {env: NAME} is replaced by that environment variable's value.",
    )
    body: Any = Field(
        default=None,
        description=f"JSON body template of a POST read: '{KEY}' (batch_size 1) or '{KEYS}' (the list of keys) is "
        "replaced by the key(s) and {env: NAME} by that environment variable's value.",
    )
    records_path: str = Field(
        description="Dotted path of the returned record (or list of records) in the answer; '' = the whole body."
    )
    key: str = Field(pattern=FIELD_PATH, description="Dotted path of the key inside each returned record.")
    compare: dict[str, str] = Field(
        default_factory=dict,
        description="Sink field (write shape) → path in a returned record (read shape): what a read-back must show "
        "equal for a record whose delivery is in doubt to count as delivered, so the read side settles an "
        "in-doubt upsert instead of re-sending it (where reading costs no more calls than re-sending).",
    )
    not_found_statuses: list[int] = Field(
        default_factory=list,
        description="HTTP statuses that mean 'no such record' for the keys of that call (Datatalks 404), not an "
        "error. 4xx only, and not 401/403 (credentials) or 429 (retried).",
    )

    @field_validator("params", "body")
    @classmethod
    def _env_refs(cls, value: Any) -> Any:
        # {env: NAME} becomes a Secret, as in SinkSpec.body: secret_env_vars() finds it.
        return _body_secrets(value)

    _path_ok = field_validator("path")(classmethod(lambda cls, v: check_path(v)))


class SinkSpec(Frozen):
    """One write operation of a vendor: a reverse-ETL target.

    Records are the items the vendor receives (nested where the vendor nests, e.g. SALESmanago's
    ``{contact: {email}}``); ``fields`` and ``key`` name their fields by dotted path.
    """

    description: str
    path: str = Field(pattern=r"^/", description="Endpoint path, appended to the (sink's or connector's) base URL.")
    method: Literal["POST", "PUT", "DELETE"] = "POST"
    batch_size: int = Field(ge=1, description="Most records per call; 1 = a single-record endpoint.")
    key: str = Field(
        pattern=FIELD_PATH,
        description="Record field the target is keyed by (upserts by, de-duplicates on); must be a required field.",
    )
    mode: Literal["upsert", "insert_once", "append", "delete"] = Field(
        default="upsert",
        description="What re-sending a key does: upsert = replaces it; insert_once = nothing, the first version "
        "stays (Trakor); append = adds another (events: never re-sent without proof it was not applied; a call "
        "whose outcome is unknown goes to the in-doubt table); delete = removes it.",
    )
    key_case: Literal["exact", "insensitive"] = Field(
        default="exact",
        description="insensitive: the target compares keys ignoring case and surrounding spaces (emails), so "
        "'Ann@X.se' and 'ann@x.se' are one key, sent and tracked once.",
    )
    fields: dict[str, FieldRule] = Field(min_length=1, description="Dotted field path → rule.")
    allow_extra_fields: bool = Field(
        default=False, description="Send undeclared fields as they are (Datatalks products)."
    )
    body: Any = Field(
        description=f"JSON template of the request body: '{RECORD}' (batch_size 1) or '{RECORDS}' is replaced by the "
        "record(s) and {env: NAME} by that environment variable's value."
    )
    response: SinkResponseSpec = Field(default_factory=SinkResponseSpec)
    auth: AuthSpec | None = Field(  # type: ignore[valid-type]
        default=None, description="Overrides the connector's auth (SALESmanago v3 catalog: API-KEY header)."
    )
    base_url: Setting | None = Field(default=None, description="Overrides the connector's base URL.")
    proxy_for: ProxySpec | None = Field(
        default=None,
        description="This sink forwards to another vendor's sinks (Datatalks → SALESmanago): a sync written for "
        "one of those can be routed here (``via``), its fields renamed by this map.",
    )

    read: SinkReadSpec | None = Field(
        default=None,
        description="How to fetch the target's current records by key (uses the sink's auth/base_url too).",
    )
    lookups: dict[str, SinkReadSpec] = Field(
        default_factory=dict,
        description="Other reads of the target, each by another key than the sink's (Datatalks: a contact by its "
        "SALESmanago id beside the read by email); run by SinkReader(..., lookup=name). Their key is compared "
        "exactly, and they settle no delivery (no compare).",
    )

    @field_validator("body")
    @classmethod
    def _env_refs(cls, value: Any) -> Any:
        # {env: NAME} becomes a Secret, so secret_env_vars() finds it (credentials, redaction).
        return _body_secrets(value)

    _path_ok = field_validator("path")(classmethod(lambda cls, v: check_path(v)))
    _base_ok = field_validator("base_url")(classmethod(lambda cls, v: check_http_default(v)))

    @property
    def idempotent(self) -> bool:
        """Whether sending a record twice leaves the target as sending it once (every mode but append)."""
        return self.mode != "append"


def _merged(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` over ``defaults``, nested mappings merged key by key (a stream's own value wins). A block that
    names another ``type`` than the default's replaces it whole (``pagination: {type: single}`` takes none of
    the default ``next_token``'s keys); ``null`` removes a default block (``incremental: null``)."""
    out = dict(defaults)
    for key, value in own.items():
        base = out.get(key)
        if (
            isinstance(base, dict)
            and isinstance(value, dict)
            and value.get("type", base.get("type")) == base.get("type")
        ):
            out[key] = _merged(base, value)
        else:
            out[key] = value
    return out


def _body_secrets(node: Any) -> Any:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return Secret.model_validate(node)
        return {k: _body_secrets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_body_secrets(v) for v in node]
    return node


def _count_placeholders(node: Any, placeholder: str) -> int:
    if isinstance(node, dict):
        return sum(_count_placeholders(v, placeholder) for v in node.values())
    if isinstance(node, list):
        return sum(_count_placeholders(v, placeholder) for v in node)
    return int(node == placeholder)


def _sink_problem(name: str, sink: SinkSpec) -> str | None:
    """The first cross-field problem of one sink, as ``sinks.<name>.<field>: ...``."""
    at = f"sinks.{name}"
    if not re.match(SNAKE, name):
        return f"{at}: sink name must be snake_case (lowercase letters, digits, '_')"
    want, other = (RECORD, RECORDS) if sink.batch_size == 1 else (RECORDS, RECORD)
    if _count_placeholders(sink.body, other):
        return (
            f"{at}.body: '{other}' does not fit batch_size {sink.batch_size}; use '{want}' "
            f"({RECORD} for single-record endpoints, {RECORDS} for batches)"
        )
    if _count_placeholders(sink.body, want) != 1:
        return f"{at}.body: must contain '{want}' exactly once (batch_size {sink.batch_size})"
    for path in sink.fields:
        if not re.match(FIELD_PATH, path):
            return f"{at}.fields.{path}: not a dotted field path (letters, digits, '_' separated by '.')"
        child = next((p for p in sink.fields if p.startswith(path + ".")), None)
        if child:
            return f"{at}.fields.{path}: has sub-fields ({child}); declare only the sub-fields"
    rule = sink.fields.get(sink.key)
    if rule is None:
        return f"{at}.key: '{sink.key}' is not in fields"
    if not rule.required:
        return f"{at}.key: '{sink.key}' must be a required field (fields.{sink.key}.required: true)"
    if sink.proxy_for is not None:
        for source, target in sink.proxy_for.fields.items():
            if source.endswith(".*") != target.endswith("*"):
                return (
                    f"{at}.proxy_for.fields.{source}: a prefix ('a.*') maps to a prefix ('b.*' or '*'), got '{target}'"
                )
            if target.endswith("*") and not sink.allow_extra_fields:
                return f"{at}.proxy_for.fields.{source}: a prefix needs allow_extra_fields (its keys are not declared)"
            if not target.endswith("*") and target not in sink.fields and not sink.allow_extra_fields:
                return (
                    f"{at}.proxy_for.fields.{source}: '{target}' is not in fields, expected one of {list(sink.fields)}"
                )
    r = sink.response
    if sink.batch_size == 1 and (r.item_results_path or r.item_errors_path or r.failed or r.applied):
        return (
            f"{at}.response: item_results_path/item_errors_path/failed/applied need a batch endpoint (batch_size > 1)"
        )
    if r.item_results_path and (r.failed or r.applied):
        return f"{at}.response: item_results_path answers per item already; drop failed/applied"
    if r.failed and r.applied:
        return f"{at}.response: declare the items an answer applied (applied) or those it did not (failed), not both"
    for name, listed in (("failed", r.failed), ("applied", r.applied)):
        if listed is not None and listed.match not in sink.fields:
            return f"{at}.response.{name}.match: '{listed.match}' is not in fields, expected one of {list(sink.fields)}"
    if r.failed is not None and r.failed.keep_value_as:
        return f"{at}.response.failed.keep_value_as: a list of failed items has no value to keep"
    for lookup, spec in sink.lookups.items():
        if not re.match(SNAKE, lookup):
            return f"{at}.lookups.{lookup}: a lookup name must be snake_case (lowercase letters, digits, '_')"
        if spec.compare:
            return f"{at}.lookups.{lookup}.compare: only the read block settles deliveries (by the sink's key)"
        problem = _read_problem(f"{at}.lookups.{lookup}", spec)
        if problem:
            return problem
    if sink.read is not None:
        for field_path in sink.read.compare:
            if field_path not in sink.fields and not sink.allow_extra_fields:
                return f"{at}.read.compare.{field_path}: not in fields, expected one of {list(sink.fields)}"
        return _read_problem(f"{at}.read", sink.read)
    return None


# Statuses the client never hands back as a plain rejection: credentials (401/403) and 429 (retried).
_NOT_NOT_FOUND = frozenset({401, 403, 429})


def _read_problem(at: str, read: SinkReadSpec) -> str | None:
    """The first cross-field problem of a sink's read block, as ``sinks.<name>.read.<field>: ...``."""
    want, other = (KEY, KEYS) if read.batch_size == 1 else (KEYS, KEY)
    template = "params" if read.method == "GET" else "body"
    if read.method == "GET" and read.body is not None:
        return f"{at}.body: a GET read sends no body; put '{want}' in params"
    for name, node in (("params", read.params), ("body", read.body)):
        if _count_placeholders(node, other):
            return (
                f"{at}.{name}: '{other}' does not fit batch_size {read.batch_size}; use '{want}' "
                f"({KEY} for one key per call, {KEYS} for a list)"
            )
    segments = read.path.split("/")
    if any(KEY in segment and segment != KEY for segment in segments):
        return f"{at}.path: a key in the path is one whole segment '{KEY}' (/contact/{KEY}), one key per call"
    in_path = segments.count(KEY)
    if in_path and read.batch_size != 1:
        return f"{at}.path: '{KEY}' in the path takes one key per call; set batch_size 1"
    if in_path and (_count_placeholders(read.params, KEY) or _count_placeholders(read.body, KEY)):
        return f"{at}.path: holds '{KEY}' already; take it out of params and body"
    if template == "body" and _count_placeholders(read.params, want):
        return f"{at}.params: a POST read sends its keys in the body; put '{want}' in body"
    if in_path + _count_placeholders(getattr(read, template), want) != 1:
        return f"{at}.{template}: must contain '{want}' exactly once (batch_size {read.batch_size})"
    for name, value in read.params.items():
        if not isinstance(value, str | int | float | bool | Secret):
            return (
                f"{at}.params.{name}: expected a string, number, boolean or {{env: NAME}}, got {type(value).__name__}"
            )
    for status in read.not_found_statuses:
        if not 400 <= status < 500 or status in _NOT_NOT_FOUND:
            return (
                f"{at}.not_found_statuses: {status} cannot mean 'not found' (4xx only; 401/403 are refused "
                "credentials, 429 is retried)"
            )
    return None


class ConnectorSpec(Frozen):
    """A whole vendor: how to reach it and what it offers."""

    name: str = Field(pattern=SNAKE)
    title: str
    description: str
    protocol: Literal["rest", "graphql"]
    base_url: Setting
    graphql_path: str = Field(default="/graphql", description="Endpoint path of a GraphQL connector.")
    auth: AuthSpec  # type: ignore[valid-type]
    connections: ConnectionsSpec | None = None
    rate_limits: list[RateLimitSpec] = Field(default_factory=list)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="Most seconds of silence while connecting or reading."
    )
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    errors: ResponseErrorsSpec = Field(default_factory=ResponseErrorsSpec)
    webhooks: WebhooksSpec | None = Field(default=None, description="Change notifications the vendor posts.")
    stream_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields every stream takes unless it says otherwise (records_path, pagination, incremental, "
        "...); nested blocks merge key by key, so a stream may override one key of its pagination.",
    )
    streams: dict[str, StreamSpec] = Field(default_factory=dict)
    sinks: dict[str, SinkSpec] = Field(default_factory=dict, description="Write operations (reverse ETL).")

    @model_validator(mode="before")
    @classmethod
    def _apply_stream_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("stream_defaults"), dict):
            return data
        defaults = data["stream_defaults"]
        streams = data.get("streams")
        if isinstance(streams, dict):
            data = {
                **data,
                "streams": {n: _merged(defaults, s) if isinstance(s, dict) else s for n, s in streams.items()},
            }
        return data

    @model_validator(mode="after")
    def _check_streams(self) -> ConnectorSpec:
        # Raised from the connector level, so each message names its own path for the error line.
        for name, stream in self.streams.items():
            if not re.match(SNAKE, name):
                raise ValueError(f"streams.{name}: stream name must be snake_case (lowercase letters, digits, '_')")
            if self.protocol == "rest" and not stream.path:
                raise ValueError(f"streams.{name}.path: required for a REST stream (protocol: rest)")
            if self.protocol == "graphql" and not stream.query:
                raise ValueError(f"streams.{name}.query: required for a GraphQL stream (protocol: graphql)")
            if stream.parent is not None:
                problem = self._parent_problem(name, stream)
                if problem:
                    raise ValueError(problem)
        if self.connections is not None and "connections" in self.streams:
            # The connection registry is an asset of its own, keyed <connector>/connections.
            raise ValueError("streams.connections: the name is taken by the connection registry of `connections:`")
        for name, sink in self.sinks.items():
            problem = _sink_problem(name, sink)
            if problem:
                raise ValueError(problem)
        if self.webhooks is not None:
            for event, target in self.webhooks.streams.items():
                if target not in self.streams:
                    raise ValueError(
                        f"webhooks.streams.{event}: no stream '{target}'; expected one of {sorted(self.streams)}"
                    )
            ce = self.webhooks.connection_events
            for resource, target in (ce.resource_streams if ce else {}).items():
                if target not in self.streams:
                    raise ValueError(
                        f"webhooks.connection_events.resource_streams.{resource}: no stream '{target}'; expected one "
                        f"of {sorted(self.streams)}"
                    )
            if ce is not None and self.connections is None:
                raise ValueError("webhooks.connection_events: the connector has no connections")

            for target in self.webhooks.fetch:
                problem = _fetch_problem(self, self.webhooks, target)
                if problem:
                    raise ValueError(f"webhooks.fetch.{target}: {problem}")
        return self

    _base_ok = field_validator("base_url")(classmethod(lambda cls, v: check_http_default(v)))
    _graphql_path_ok = field_validator("graphql_path")(classmethod(lambda cls, v: check_path(v)))

    def _parent_problem(self, name: str, stream: StreamSpec) -> str | None:
        """The first problem of a child stream's ``parent`` block, as ``streams.<name>.parent...: ...``."""
        parent = stream.parent
        assert parent is not None
        at = f"streams.{name}.parent"
        if self.protocol != "rest":
            return f"{at}: a child stream fills a REST path; GraphQL streams have none"
        if parent.stream == name or parent.stream not in self.streams:
            others = sorted(n for n in self.streams if n != name)
            return f"{at}.stream: no stream '{parent.stream}' to read parents from; expected one of {others}"
        of = self.streams[parent.stream]
        if of.parent is not None:
            return f"{at}.stream: '{parent.stream}' is itself a child; a parent must be a plain list"
        if parent.field not in of.json_schema.get("properties", {}):
            return f"{at}.field: '{parent.field}' is not in the schema of '{parent.stream}'"
        for source in parent.fields:
            if source not in of.json_schema.get("properties", {}):
                return f"{at}.fields.{source}: not in the schema of '{parent.stream}'"
        if parent.window == "parent":
            inc, parent_inc = stream.incremental, of.incremental
            if inc is None or parent_inc is None:
                return (
                    f"{at}.window: 'parent' needs both streams incremental (the window selects the parents "
                    f"changed in it); use window: child"
                )
            if parent.fields.get(parent_inc.cursor_field) != inc.cursor_field:
                return (
                    f"{at}.fields: window 'parent' needs the parent's cursor copied into the child's: "
                    f"fields: {{{parent_inc.cursor_field}: {inc.cursor_field}}}"
                )
        return None

    def lookback_days(self, streams: Iterable[str] | None = None) -> int:
        """The largest ``incremental.lookback_days`` of ``streams`` (default: all): how many days before the
        day it is for a scheduled or resumed read starts, so records stamped late are read (Trackstar syncs
        each WMS hourly or less, so a record stamped 23:30 may appear after the 01:00 run). 0 without
        incremental streams."""
        names = self.streams if streams is None else streams
        return max(
            (s.incremental.lookback_days for n in names if (s := self.streams.get(n)) and s.incremental), default=0
        )

    def fingerprint(self) -> str:
        """Stable hash of the spec's content: Dagster's ``code_version`` for its assets."""
        dumped = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(dumped.encode()).hexdigest()[:16]

    def client_config(self, sink: str | None = None) -> ClientConfig:
        """How a client reaches this connector's API, or the API of its sink ``sink`` (a sink may name
        its own host and auth: SALESmanago's v3 catalog)."""
        update: dict[str, Any] = {}
        if sink is not None:
            if sink not in self.sinks:
                raise KeyError(f"connector '{self.name}' has no sink '{sink}'; expected one of {sorted(self.sinks)}")
            own = self.sinks[sink]
            update = {k: v for k, v in (("auth", own.auth), ("base_url", own.base_url)) if v is not None}
        fields = {name: getattr(self, name) for name in ClientConfig.model_fields if name != "connector"}
        return ClientConfig(connector=self.name, **{**fields, **update})


def _fetch_problem(spec: ConnectorSpec, hooks: WebhooksSpec, stream: str) -> str | None:
    """Why ``webhooks.fetch.<stream>`` cannot work for ``spec``, or None."""
    if stream not in spec.streams:
        return f"no stream '{stream}'; expected one of {sorted(spec.streams)}"
    if spec.protocol != "graphql":
        return "reading an object by id takes a GraphQL query: the connector's protocol must be graphql"
    if spec.connections is not None:
        # The read would need the connection's token, and a GraphQL call carries none yet.
        return "reading by id is not supported for a connector with per-customer connections"
    if hooks.id_field is None and hooks.data_field is None:
        return "the events name no object: set webhooks.id_field (or data_field, whose 'id' is read)"
    return None


class ClientConfig(Frozen):
    """Everything a ``VendorClient`` reads to make requests: derived from a connector, or from one of its
    sinks (``ConnectorSpec.client_config``), so nothing forges a connector spec to change a host or auth."""

    connector: str = Field(description="The connector's name, for messages.")
    protocol: Literal["rest", "graphql"]
    base_url: Setting
    graphql_path: str
    auth: AuthSpec  # type: ignore[valid-type]
    connections: ConnectionsSpec | None
    rate_limits: list[RateLimitSpec]
    retry: RetrySpec
    timeout_seconds: float
    limits: LimitsSpec
    errors: ResponseErrorsSpec


def _format_error(err: Any, document: Any = None) -> str:
    loc = ".".join(str(p) for p in _document_path(err["loc"], document))
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        return f"{loc}.{ctx.get('discriminator', 'type').strip(chr(39))}: got '{ctx.get('tag')}', expected one of {expected}"
    if err["type"] == "union_tag_not_found":
        return f"{loc}.type: missing, expected one of {_tags_for(loc)}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (not allowed here)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif isinstance(err.get("input"), str | int | float | bool):
        # Show the offending scalar so the user need not look it up (specs hold no secret values).
        shown = repr(err["input"])
        msg = f"{msg}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    return f"{loc}: {msg}" if loc else msg


def _document_path(loc: tuple[Any, ...], document: Any) -> list[Any]:
    """``loc`` as a path through the YAML document: pydantic inserts the tag of a discriminated union
    (``auth.static_headers.headers``) where the document has none (``auth.headers``); drop such steps."""
    path: list[Any] = []
    node = document
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return path


def _tags_for(loc: str) -> list[str]:
    return AUTH_TYPES.names() if loc.endswith("auth") else PAGINATORS.names()


def parse_spec(data: Any, source: str) -> ConnectorSpec:
    """Validate already-parsed YAML; ``source`` names the file in every error line."""
    if data is None:
        raise SpecError(source, ["the document is empty; expected a mapping (name, title, protocol, ...)"])
    if not isinstance(data, dict):
        raise SpecError(source, [f"the document must be a mapping, got {type(data).__name__}"])
    try:
        return ConnectorSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_format_error(_at_defaults(e, data), data) for e in exc.errors(include_url=False)]
        raise SpecError(source, list(dict.fromkeys(problems))) from None  # a default broken for every stream: once


def _at_defaults(err: Any, document: dict[str, Any]) -> Any:
    """An error at ``streams.<s>.<path>`` whose value the stream took from ``stream_defaults`` is reported
    at ``stream_defaults.<path>``, where it can be fixed (and once, not once per stream)."""
    loc = tuple(err["loc"])
    defaults = document.get("stream_defaults")
    if len(loc) < 3 or loc[0] != "streams" or not isinstance(defaults, dict) or loc[2] not in defaults:
        return err
    node = (document.get("streams") or {}).get(loc[1])
    for part in loc[2:]:
        if not isinstance(node, dict) or part not in node:
            return {**err, "loc": ("stream_defaults", *loc[2:])}
        node = node[part]
    return err


def load_spec(path: str | Path, *, allow_env: Collection[str] = ()) -> ConnectorSpec:
    """Read and validate one YAML spec file.

    A spec reads only environment variables under its own prefix (``TRACKSTAR_*`` for ``trackstar``),
    so a drop-in connector cannot bind another connector's key or the warehouse URL into requests it
    sends anywhere; ``allow_env`` names the exceptions a deployment grants (the defs layer reads them
    from ``INTEGRATIONS_PIPELINE_ALLOW_ENV``).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path.name, [_yaml_problem(exc)]) from None
    expanded = expanded_size(data)
    if expanded > MAX_SPEC_NODES:
        # YAML aliases share one object per anchor, so loading is quick; validating and hashing copy
        # every reference, so nine levels of nine aliases (a 900-byte file) would run for ever.
        raise SpecError(path.name, [
            f"the document expands to {expanded:,} values through YAML aliases (*anchor), more than {MAX_SPEC_NODES:,}: "
            "an alias bomb or a runaway anchor"
        ])  # fmt: skip
    spec = parse_spec(data, path.name)
    if spec.name != path.stem:
        raise SpecError(path.name, [f"name: '{spec.name}' must match the file name '{path.stem}'"])
    foreign = [
        f"{where}: {name} is not under this connector's prefix {env_prefix(spec.name)}; a connector spec reads only "
        f"its own variables (a deployment may allow it: INTEGRATIONS_PIPELINE_ALLOW_ENV={name})"
        for where, name in env_references(spec)
        if not name.startswith(env_prefix(spec.name)) and name not in allow_env
    ]
    if foreign:
        raise SpecError(path.name, foreign)
    return spec


#: Most values a spec may hold once its YAML aliases are expanded (the built-in specs: a few thousand).
MAX_SPEC_NODES = 200_000


def expanded_size(document: Any) -> int:
    """How many values ``document`` holds with every shared (aliased) node counted each time it is used;
    computed once per distinct node, so an alias bomb is measured without being expanded."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias (a node containing itself) counts once, not for ever
        children = node.values() if isinstance(node, dict) else node
        total = 1 + sum(size(child) for child in children)
        sizes[id(node)] = total
        return total

    return size(document)


def env_prefix(connector: str) -> str:
    """The environment variables a connector may read start with this: ``TRACKSTAR_``."""
    return connector.upper() + "_"


def env_references(model: Any, path: str = "") -> list[tuple[str, str]]:
    """Every environment variable a spec names, with the dotted field path naming it (``auth.api_key.env``)."""
    found: list[tuple[str, str]] = []
    if isinstance(model, Secret | Setting):
        return [(f"{path}.env" if path else "env", model.env)]
    if isinstance(model, BaseModel):
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            key = info.alias or name
            here = f"{path}.{key}" if path else key
            if name == "requests_env" and isinstance(value, str):
                found.append((here, value))
            else:
                found.extend(env_references(value, here))
    elif isinstance(model, dict):
        for key, value in model.items():
            found.extend(env_references(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(model, list | tuple):
        for index, value in enumerate(model):
            found.extend(env_references(value, f"{path}[{index}]"))
    return found


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where the YAML breaks and why (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return "invalid YAML: " + " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return f"invalid YAML at {where}: {problem}" + (f" ({context})" if context else "")


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec format, for editor autocompletion (``integrations-pipeline spec-schema``)."""
    schema = ConnectorSpec.model_json_schema(by_alias=True)
    # A stream may take any field from stream_defaults, and nested blocks merge key by key (an incremental
    # block naming only its cursor_field): the loader, not the editor, checks a stream is whole.
    schema["$defs"]["StreamSpec"].pop("required", None)
    schema["$defs"]["IncrementalSpec"].pop("required", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "integrations_pipeline connector spec"
    return schema
