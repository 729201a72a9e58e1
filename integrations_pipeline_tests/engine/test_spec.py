"""Spec loading: a table of broken specs (real files, mutated in Python) and the exact error each
gives; the built-in specs load; the published JSON Schema is valid and describes the fields."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from integrations_pipeline.connectors import SPEC_DIR, builtin_spec_paths
from integrations_pipeline.engine.auth import AUTH_TYPES
from integrations_pipeline.engine.errors import ConfigError, SpecError
from integrations_pipeline.engine.read.pagination import PAGINATORS
from integrations_pipeline.engine.spec import ConnectorSpec, _merged, load_spec, parse_spec, spec_json_schema

DELETE = object()


def _raw(name: str) -> dict[str, Any]:
    """A built-in spec as a document, its ``stream_defaults`` written into each stream: the broken-spec
    table below mutates one stream's own fields."""
    document = yaml.safe_load((SPEC_DIR / name).read_text())
    defaults = document.pop("stream_defaults", None)
    if defaults:
        document["streams"] = {n: _merged(copy.deepcopy(defaults), s) for n, s in document["streams"].items()}
    return document


RAW = {name: _raw(name) for name in ("trackstar.yaml", "salestrekker.yaml", "salesmanago.yaml", "datatalks.yaml")}


def setp(*path_and_value: Any) -> Callable[[dict], None]:
    """A mutation: set (or, with DELETE, remove) the value at a path of keys/indexes."""
    *path, value = path_and_value

    def mutate(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


def rename_stream(old: str, new: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        doc["streams"][new] = doc["streams"].pop(old)

    return mutate


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        for m in mutations:
            m(doc)

    return mutate


PAGINATOR_NAMES = "['single', 'next_token', 'offset', 'page_number', 'graphql_cursor']"
AUTH_NAMES = "['none', 'static_headers', 'graphql_login', 'body_credentials', 'aws_sigv4']"
ENV = "String should match pattern '^[A-Z][A-Z0-9_]*$'"

BROKEN: list[tuple[str, str, Callable[[dict], None], str]] = [
    (
        "paginator-typo",
        "trackstar.yaml",
        setp("streams", "inventory", "pagination", "type", "tokn"),
        f"streams.inventory.pagination.type: got 'tokn', expected one of {PAGINATOR_NAMES}",
    ),
    (
        "paginator-type-missing",
        "trackstar.yaml",
        setp("streams", "orders", "pagination", "type", DELETE),
        f"streams.orders.pagination.type: missing, expected one of {PAGINATOR_NAMES}",
    ),
    (
        "unknown-auth-type",
        "trackstar.yaml",
        setp("auth", "type", "oauth2"),
        f"auth.type: got 'oauth2', expected one of {AUTH_NAMES}",
    ),
    (
        "auth-type-missing",
        "salestrekker.yaml",
        setp("auth", "type", DELETE),
        f"auth.type: missing, expected one of {AUTH_NAMES}",
    ),
    (
        "body-credentials-field-written-twice",
        "salesmanago.yaml",
        setp("auth", "timestamp_ms", "sha"),
        "auth: body field 'sha' is written twice (fields, digest.field, timestamp_ms)",
    ),
    (
        "body-credentials-unknown-digest",
        "salesmanago.yaml",
        setp("auth", "digest", "algorithm", "crc32"),
        "auth.digest.algorithm: Input should be 'sha1', 'sha256', 'sha512' or 'md5', got 'crc32'",
    ),
    (
        "unknown-top-level-field",
        "trackstar.yaml",
        setp("base_ur", "https://x"),
        "base_ur: unknown field (not allowed here)",
    ),
    (
        "unknown-stream-field",
        "trackstar.yaml",
        setp("streams", "inventory", "recods_path", "data"),
        "streams.inventory.recods_path: unknown field (not allowed here)",
    ),
    (
        "unknown-field-inside-a-paginator-names-the-yaml-path",
        "trackstar.yaml",
        setp("streams", "inventory", "pagination", "token_pth", "next_token"),
        "streams.inventory.pagination.token_pth: unknown field (not allowed here)",
    ),
    (
        "unknown-field-inside-auth",
        "salestrekker.yaml",
        setp("auth", "token_ttl", 5),
        "auth.token_ttl: unknown field (not allowed here)",
    ),
    (
        "primary-key-not-in-schema",
        "trackstar.yaml",
        setp("streams", "inventory", "primary_key", ["sku_id"]),
        "streams.inventory: primary_key field 'sku_id' is not in schema.properties",
    ),
    (
        "cursor-field-not-in-schema",
        "salestrekker.yaml",
        setp("streams", "deals", "incremental", "cursor_field", "modifiedAt"),
        "streams.deals: cursor_field 'modifiedAt' is not in schema.properties",
    ),
    (
        "schema-not-an-object",
        "trackstar.yaml",
        setp("streams", "returns", "schema", {"type": "array"}),
        "streams.returns: schema must be a JSON Schema of type 'object' with properties",
    ),
    (
        "rest-stream-without-path",
        "trackstar.yaml",
        setp("streams", "warehouses", "path", DELETE),
        "streams.warehouses.path: required for a REST stream (protocol: rest)",
    ),
    (
        "graphql-stream-without-query",
        "salestrekker.yaml",
        setp("streams", "contacts", "query", DELETE),
        "streams.contacts.query: required for a GraphQL stream (protocol: graphql)",
    ),
    (
        "lowercase-env-var-in-static-header",
        "trackstar.yaml",
        setp("auth", "headers", "x-trackstar-api-key", "env", "trackstar_api_key"),
        f"auth.headers.x-trackstar-api-key.env: {ENV}, got 'trackstar_api_key'",
    ),
    (
        "lowercase-env-var-in-login-method",
        "salestrekker.yaml",
        setp("auth", "methods", 1, "variables", "password", "env", "salestrekker_password"),
        f"auth.methods.1.variables.password.env: {ENV}, got 'salestrekker_password'",
    ),
    (
        "lowercase-env-var-for-base-url",
        "trackstar.yaml",
        setp("base_url", "env", "trackstar-base-url"),
        f"base_url.env: {ENV}, got 'trackstar-base-url'",
    ),
    (
        "lowercase-requests-env",
        "trackstar.yaml",
        setp("rate_limits", 0, "requests_env", "requests_per_second"),
        f"rate_limits.0.requests_env: {ENV}, got 'requests_per_second'",
    ),
    (
        "negative-rate-limit",
        "trackstar.yaml",
        setp("rate_limits", 0, "requests", -10),
        "rate_limits.0.requests: Input should be greater than 0, got -10",
    ),
    (
        "zero-rate-window",
        "salestrekker.yaml",
        setp("rate_limits", 0, "per_seconds", 0),
        "rate_limits.0.per_seconds: Input should be greater than 0, got 0",
    ),
    (
        "lowercase-http-method-in-rate-limit",
        "trackstar.yaml",
        setp("rate_limits", 0, "methods", ["get"]),
        "rate_limits.0.methods.0: Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE', got 'get'",
    ),
    (
        "unknown-rate-limit-scope",
        "trackstar.yaml",
        setp("rate_limits", 1, "scope", "global"),
        "rate_limits.1.scope: Input should be 'connector' or 'connection', got 'global'",
    ),
    (
        "connector-name-not-snake-case",
        "trackstar.yaml",
        setp("name", "Track-Star"),
        "name: String should match pattern '^[a-z][a-z0-9_]*$', got 'Track-Star'",
    ),
    (
        "stream-name-not-snake-case",
        "trackstar.yaml",
        rename_stream("inbound_shipments", "inbound-shipments"),
        "streams.inbound-shipments: stream name must be snake_case (lowercase letters, digits, '_')",
    ),
    (
        "missing-required-field",
        "salestrekker.yaml",
        setp("title", DELETE),
        "title: required field is missing",
    ),
    (
        "missing-records-path",
        "trackstar.yaml",
        setp("streams", "products", "records_path", DELETE),
        "streams.products.records_path: required field is missing",
    ),
    (
        "empty-primary-key",
        "salestrekker.yaml",
        setp("streams", "workflows", "primary_key", []),
        "streams.workflows.primary_key: List should have at least 1 item after validation, not 0",
    ),
    (
        "zero-page-size",
        "salestrekker.yaml",
        setp("streams", "deals", "pagination", "page_size", 0),
        "streams.deals.pagination.page_size: Input should be greater than 0, got 0",
    ),
    (
        "no-login-methods",
        "salestrekker.yaml",
        setp("auth", "methods", []),
        "auth.methods: List should have at least 1 item after validation, not 0",
    ),
    (
        "zero-retry-attempts",
        "trackstar.yaml",
        setp("retry", "max_attempts", 0),
        "retry.max_attempts: Input should be greater than or equal to 1, got 0",
    ),
    (
        "non-integer-status",
        "trackstar.yaml",
        setp("errors", "unsupported_statuses", ["501x"]),
        "errors.unsupported_statuses.0: Input should be a valid integer, unable to parse string as an integer, "
        "got '501x'",
    ),
    (
        "bad-start-date",
        "trackstar.yaml",
        setp("streams", "orders", "incremental", "start_date", "01/10/2026"),
        "streams.orders.incremental.start_date: String should match pattern '^\\d{4}-\\d{2}-\\d{2}$', got '01/10/2026'",
    ),
    (
        "unknown-protocol",
        "salestrekker.yaml",
        setp("protocol", "soap"),
        "protocol: Input should be 'rest' or 'graphql', got 'soap'",
    ),
    (
        "auth-given-as-a-string",
        "trackstar.yaml",
        setp("auth", "static_headers"),
        "auth: Input should be a valid dictionary or object to extract fields from, got 'static_headers'",
    ),
    # Sink reads (``read:``): placeholders mirror $record/$records; salesmanago's contacts and
    # contacts_batch share one read block (a YAML anchor): cross-field problems name contacts, the
    # first; field-level ones would name both, so those cases use datatalks.
    (
        "read-batch-without-keys-placeholder",
        "salesmanago.yaml",
        setp("sinks", "contacts", "read", "body", {"email": "ann@shop.test"}),
        "sinks.contacts.read.body: must contain '$keys' exactly once (batch_size 50)",
    ),
    (
        "read-keys-placeholder-twice",
        "salesmanago.yaml",
        setp("sinks", "contacts", "read", "body", {"email": "$keys", "also": ["$keys"]}),
        "sinks.contacts.read.body: must contain '$keys' exactly once (batch_size 50)",
    ),
    (
        "read-single-key-placeholder-in-a-batch",
        "salesmanago.yaml",
        setp("sinks", "contacts", "read", "body", {"email": "$key"}),
        "sinks.contacts.read.body: '$key' does not fit batch_size 50; use '$keys' ($key for one key per call, "
        "$keys for a list)",
    ),
    (
        "read-post-with-keys-in-params",
        "salesmanago.yaml",
        setp("sinks", "contacts", "read", "params", {"email": "$keys"}),
        "sinks.contacts.read.params: a POST read sends its keys in the body; put '$keys' in body",
    ),
    (
        "read-post-without-body",
        "salesmanago.yaml",
        setp("sinks", "contacts", "read", "body", DELETE),
        "sinks.contacts.read.body: must contain '$keys' exactly once (batch_size 50)",
    ),
    (
        "read-zero-batch-size",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "batch_size", 0),
        "sinks.contacts.read.batch_size: Input should be greater than or equal to 1, got 0",
    ),
    (
        "read-keys-placeholder-with-batch-size-1",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "params", {"email": "$keys"}),
        "sinks.contacts.read.params: '$keys' does not fit batch_size 1; use '$key' ($key for one key per call, "
        "$keys for a list)",
    ),
    (
        "read-get-without-key-placeholder",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "params", {"email": "x"}),
        "sinks.contacts.read.params: must contain '$key' exactly once (batch_size 1)",
    ),
    (
        "read-get-with-a-body",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "body", {"email": "$key"}),
        "sinks.contacts.read.body: a GET read sends no body; put '$key' in params",
    ),
    (
        "read-nested-query-param",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "params", {"email": "$key", "filter": {"a": 1}}),
        "sinks.contacts.read.params.filter: expected a string, number, boolean or {env: NAME}, got dict",
    ),
    (
        "read-auth-status-as-not-found",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "not_found_statuses", [404, 403]),
        "sinks.contacts.read.not_found_statuses: 403 cannot mean 'not found' (4xx only; 401/403 are refused "
        "credentials, 429 is retried)",
    ),
    (
        "read-lowercase-env-var-in-params",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "params", {"email": "$key", "group_key": {"env": "group_key"}}),
        f"sinks.contacts.read.params.env: {ENV}, got 'group_key'",
    ),
    (
        "read-path-without-slash",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "path", "contact_by_email"),
        "sinks.contacts.read.path: String should match pattern '^/', got 'contact_by_email'",
    ),
    (
        "read-method-put",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "method", "PUT"),
        "sinks.contacts.read.method: Input should be 'GET' or 'POST', got 'PUT'",
    ),
    (
        "read-missing-records-path",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "records_path", DELETE),
        "sinks.contacts.read.records_path: required field is missing",
    ),
    (
        "read-unknown-field",
        "datatalks.yaml",
        setp("sinks", "contacts", "read", "records_pth", "data"),
        "sinks.contacts.read.records_pth: unknown field (not allowed here)",
    ),
    (
        "proxy-field-not-in-sink",
        "datatalks.yaml",
        setp("sinks", "events", "proxy_for", "fields", "contactEvent.value", "amount"),
        "sinks.events.proxy_for.fields.contactEvent.value: 'amount' is not in fields, expected one of ['email', "
        "'contactExtEventType', 'externalId', 'description', 'products', 'location', 'value', 'shopDomain', 'date', "
        + ", ".join(f"'detail{i}'" for i in range(1, 21))
        + "]",
    ),
    (
        "proxy-prefix-to-a-field",
        "datatalks.yaml",
        setp("sinks", "contacts", "proxy_for", "fields", "properties.*", "name"),
        "sinks.contacts.proxy_for.fields.properties.*: a prefix ('a.*') maps to a prefix ('b.*' or '*'), got 'name'",
    ),
    (
        "proxy-without-sinks",
        "datatalks.yaml",
        setp("sinks", "contacts", "proxy_for", "sinks", []),
        "sinks.contacts.proxy_for.sinks: List should have at least 1 item after validation, not 0",
    ),
    (
        "webhook-fetch-unknown-stream",
        "salestrekker.yaml",
        lambda doc: doc["webhooks"]["fetch"].update(tickets=doc["webhooks"]["fetch"]["deals"]),
        "webhooks.fetch.tickets: no stream 'tickets'; expected one of ['contacts', 'deals', 'workflows']",
    ),
    (
        "webhook-fetch-without-its-variable",
        "salestrekker.yaml",
        setp("webhooks", "fetch", "deals", "id_variable", "ticketId"),
        "webhooks.fetch.deals: query declares no $ticketId (id_variable)",
    ),
    (
        "webhook-fetch-on-rest",
        "trackstar.yaml",
        setp(
            "webhooks",
            "fetch",
            {"orders": {"query": "query O($id: ID!) { order(id: $id) { id } }", "record_path": "data.order"}},
        ),
        "webhooks.fetch.orders: reading an object by id takes a GraphQL query: the connector's protocol must be graphql",
    ),
    (
        "lookup-key-inside-a-segment",
        "datatalks.yaml",
        setp("sinks", "contacts", "lookups", "by_sm_id", "path", "/contact/id-$key"),
        "sinks.contacts.lookups.by_sm_id.path: a key in the path is one whole segment '$key' (/contact/$key), "
        "one key per call",
    ),
    (
        "lookup-path-key-batched",
        "datatalks.yaml",
        setp("sinks", "contacts", "lookups", "by_sm_id", "batch_size", 5),
        "sinks.contacts.lookups.by_sm_id.path: '$key' in the path takes one key per call; set batch_size 1",
    ),
    (
        "lookup-key-twice",
        "datatalks.yaml",
        setp("sinks", "contacts", "lookups", "by_sm_id", "params", {"id": "$key"}),
        "sinks.contacts.lookups.by_sm_id.path: holds '$key' already; take it out of params and body",
    ),
    (
        "lookup-settles-nothing",
        "datatalks.yaml",
        setp("sinks", "contacts", "lookups", "by_sm_id", "compare", {"name": "name"}),
        "sinks.contacts.lookups.by_sm_id.compare: only the read block settles deliveries (by the sink's key)",
    ),
    # -- child streams (parent:) and unsupported statuses --
    (
        "parent-unknown-stream",
        "trackstar.yaml",
        setp("streams", "warehouse_locations", "parent", "stream", "warehouse"),
        "streams.warehouse_locations.parent.stream: no stream 'warehouse' to read parents from; expected one of "
        "['bills', 'inbound_shipment_suppliers', 'inbound_shipments', 'inventory', 'inventory_ledger', "
        "'labor_activities', 'order_channels', 'order_packs', 'orders', 'products', 'returns', 'shipping_methods', "
        "'warehouse_customers', 'warehouses']",
    ),
    (
        "parent-is-a-child",
        "trackstar.yaml",
        setp("streams", "order_packs", "parent", "stream", "warehouse_locations"),
        "streams.order_packs.parent.stream: 'warehouse_locations' is itself a child; a parent must be a plain list",
    ),
    (
        "parent-field-unknown",
        "trackstar.yaml",
        setp("streams", "warehouse_locations", "parent", "field", "uuid"),
        "streams.warehouse_locations.parent.field: 'uuid' is not in the schema of 'warehouses'",
    ),
    (
        "parent-placeholder-missing",
        "trackstar.yaml",
        setp("streams", "warehouse_locations", "path", "/wms/warehouses/{id}/locations"),
        "streams.warehouse_locations: parent: the path must hold the placeholder {warehouse_id} once and no other, "
        "got '/wms/warehouses/{id}/locations'",
    ),
    (
        "placeholder-without-parent",
        "trackstar.yaml",
        setp("streams", "orders", "path", "/wms/orders/{order_id}"),
        "streams.orders: path '/wms/orders/{order_id}' holds a placeholder; only a child stream (parent:) fills one",
    ),
    (
        "parent-key-not-in-primary-key",
        "trackstar.yaml",
        setp("streams", "warehouse_locations", "primary_key", ["id"]),
        "streams.warehouse_locations: parent: column 'warehouse_id' must be in primary_key: a child is one of its "
        "parent's, e.g. primary_key: [warehouse_id, id]",
    ),
    (
        "parent-window-without-the-cursor-copied",
        "trackstar.yaml",
        setp("streams", "order_packs", "parent", "fields", {}),
        "streams.order_packs.parent.fields: window 'parent' needs the parent's cursor copied into the child's: "
        "fields: {updated_date: order_updated_date}",
    ),
    (
        "parent-window-on-a-full-refresh-child",
        "trackstar.yaml",
        setp("streams", "order_packs", "incremental", None),
        "streams.order_packs.parent.window: 'parent' needs both streams incremental (the window selects the "
        "parents changed in it); use window: child",
    ),
    (
        "parent-not-found-401",
        "trackstar.yaml",
        setp("streams", "order_packs", "parent", "not_found_statuses", [404, 401]),
        "streams.order_packs.parent.not_found_statuses: 401 cannot mean 'no such parent' (4xx only; 401/403 are "
        "refused credentials or a disabled endpoint, 429 is retried)",
    ),
    (
        "unsupported-401",
        "trackstar.yaml",
        setp("errors", "unsupported_statuses", [501, 401]),
        "errors.unsupported_statuses: 401 cannot mean 'endpoint unsupported' (4xx or 5xx only; 401 is refused "
        "credentials, which must fail the run, and 429 is retried)",
    ),
]


def test_the_table_is_big_enough():
    assert len(BROKEN) >= 12
    assert len({case[0] for case in BROKEN}) == len(BROKEN)


@pytest.mark.parametrize(("source", "mutate", "message"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_spec_message(source, mutate, message):
    doc = copy.deepcopy(RAW[source])
    mutate(doc)
    with pytest.raises(SpecError) as info:
        parse_spec(doc, source)
    assert str(info.value) == f"{source}: {message}"
    assert info.value.problems == [message] and info.value.source == source
    assert isinstance(info.value, ConfigError)


def test_every_problem_is_reported_each_on_its_own_line():
    doc = copy.deepcopy(RAW["trackstar.yaml"])
    setp("name", "Track")(doc)
    setp("timeout_seconds", 0)(doc)
    setp("streams", "inventory", "pagination", "type", "tokn")(doc)
    with pytest.raises(SpecError) as info:
        parse_spec(doc, "trackstar.yaml")
    assert str(info.value).splitlines() == [
        "trackstar.yaml: name: String should match pattern '^[a-z][a-z0-9_]*$', got 'Track'",
        "trackstar.yaml: timeout_seconds: Input should be greater than 0, got 0",
        f"trackstar.yaml: streams.inventory.pagination.type: got 'tokn', expected one of {PAGINATOR_NAMES}",
    ]


def test_error_lists_follow_the_registries():
    """The 'expected one of' lists are the registries, so a new type shows up without edits here."""
    assert PAGINATOR_NAMES == str(PAGINATORS.names())
    assert AUTH_NAMES == str(AUTH_TYPES.names())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "the document is empty; expected a mapping (name, title, protocol, ...)"),
        (["trackstar"], "the document must be a mapping, got list"),
        ("name: trackstar", "the document must be a mapping, got str"),
    ],
)
def test_document_not_a_mapping(data, message):
    with pytest.raises(SpecError) as info:
        parse_spec(data, "x.yaml")
    assert str(info.value) == f"x.yaml: {message}"


# -- load_spec: files ---------------------------------------------------------------------------------


def test_file_name_must_match_the_name(tmp_path: Path):
    path = tmp_path / "trackstar_copy.yaml"
    path.write_text((SPEC_DIR / "trackstar.yaml").read_text())
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == "trackstar_copy.yaml: name: 'trackstar' must match the file name 'trackstar_copy'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: trakor\nauth: {type: none\n",
            "invalid YAML at line 3, column 1: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping)",
        ),
        ("name: trakor\n  title: x: y\n", "invalid YAML at line 2, column 8: mapping values are not allowed here"),
        (
            "name: trakor\n\ttitle: x\n",
            "invalid YAML at line 2, column 1: found character '\\t' that cannot start any token "
            "(while scanning for the next token)",
        ),
    ],
    ids=["unclosed-flow-mapping", "bad-indentation", "tab"],
)
def test_invalid_yaml(tmp_path: Path, text, message):
    path = tmp_path / "trakor.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"trakor.yaml: {message}"
    assert "\n" not in str(info.value)


def test_empty_file(tmp_path: Path):
    path = tmp_path / "trakor.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(SpecError, match=r"^trakor\.yaml: the document is empty"):
        load_spec(path)


def test_a_real_file_broken_on_disk_names_the_file(tmp_path: Path):
    text = (SPEC_DIR / "trackstar.yaml").read_text().replace("type: next_token", "type: tokn", 1)
    path = tmp_path / "trackstar.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    # The pagination lives in stream_defaults: the error is reported there, once, not once per stream.
    assert str(info.value) == (
        f"trackstar.yaml: stream_defaults.pagination.type: got 'tokn', expected one of {PAGINATOR_NAMES}"
    )


# -- the built-in specs -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", builtin_spec_paths(), ids=lambda p: p.stem)
def test_builtin_spec_loads(path: Path):
    loaded = load_spec(path)
    assert loaded.name == path.stem
    assert loaded.fingerprint() == load_spec(path).fingerprint()


def test_builtin_specs_are_the_five_vendors():
    assert [p.stem for p in builtin_spec_paths()] == ["datatalks", "salesmanago", "salestrekker", "trackstar", "trakor"]


def test_builtin_facts():
    trackstar = load_spec(SPEC_DIR / "trackstar.yaml")
    assert trackstar.errors.unsupported_statuses == [501, 403]  # 401 (a revoked token) is not among them
    assert 428 not in trackstar.retry.retry_statuses
    limits = [(r.requests, r.per_seconds, r.methods, r.scope) for r in trackstar.rate_limits]
    assert limits == [(10, 1, ["GET"], "connection"), (50, 1, ["POST", "PUT", "PATCH", "DELETE"], "connection")]
    salesmanago = load_spec(SPEC_DIR / "salesmanago.yaml")
    assert 428 in salesmanago.retry.retry_statuses and salesmanago.errors.success_field == "success"
    assert salesmanago.rate_limits[0].requests_env == "SALESMANAGO_REQUESTS_PER_HOUR"
    salestrekker = load_spec(SPEC_DIR / "salestrekker.yaml")
    assert salestrekker.errors.graphql and salestrekker.auth.ttl_seconds == 14 * 24 * 3600


def test_fingerprint_changes_with_content():
    doc = copy.deepcopy(RAW["trackstar.yaml"])
    before = parse_spec(doc, "trackstar.yaml").fingerprint()
    doc["streams"]["inventory"]["pagination"]["page_size"] = 500
    assert parse_spec(doc, "trackstar.yaml").fingerprint() != before


def test_specs_are_frozen():
    loaded = load_spec(SPEC_DIR / "trakor.yaml")
    with pytest.raises(Exception):
        loaded.name = "other"  # type: ignore[misc]


# -- the JSON Schema of the spec format -------------------------------------------------------------


def test_spec_json_schema_is_valid_json_schema():
    schema = spec_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_spec_json_schema_describes_the_fields():
    schema = spec_json_schema()
    defs = schema["$defs"]
    top = {f.alias or name for name, f in ConnectorSpec.model_fields.items()}
    assert set(schema["properties"]) == top
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"name", "title", "description", "protocol", "base_url", "auth"}
    assert set(schema["properties"]["auth"]["discriminator"]["mapping"]) == set(AUTH_TYPES.names())
    stream = defs["StreamSpec"]
    assert "schema" in stream["properties"] and "json_schema" not in stream["properties"]
    assert set(stream["properties"]["pagination"]["discriminator"]["mapping"]) == set(PAGINATORS.names())
    assert stream["properties"]["records_path"]["description"]
    assert defs["Secret"]["properties"]["env"]["pattern"] == "^[A-Z][A-Z0-9_]*$"
    assert defs["RateLimitSpec"]["properties"]["methods"]["items"]["enum"] == ["GET", "POST", "PUT", "PATCH", "DELETE"]


@pytest.mark.parametrize("path", builtin_spec_paths(), ids=lambda p: p.stem)
def test_builtin_specs_validate_against_the_json_schema(path: Path):
    jsonschema.validate(yaml.safe_load(path.read_text()), spec_json_schema())


@pytest.mark.parametrize(
    "mutate",
    [
        setp("streams", "inventory", "pagination", "type", "tokn"),
        setp("auth", "type", "oauth2"),
        setp("base_ur", "x"),
        setp("auth", "headers", "x-trackstar-api-key", "env", "lower"),
        setp("rate_limits", 0, "requests", -1),
    ],
    ids=["paginator", "auth", "unknown-field", "env-name", "negative-limit"],
)
def test_json_schema_rejects_what_the_loader_rejects(mutate):
    doc = copy.deepcopy(RAW["trackstar.yaml"])
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, spec_json_schema())
    with pytest.raises(SpecError):
        parse_spec(doc, "trackstar.yaml")


def test_stream_defaults_fill_every_stream_and_a_stream_may_override_one_key():
    base = {
        "name": "acme",
        "title": "Acme",
        "description": "d",
        "protocol": "rest",
        "base_url": {"env": "ACME_BASE_URL", "default": "https://acme.test"},
        "auth": {"type": "none"},
        "stream_defaults": {
            "records_path": "data",
            "primary_key": ["id"],
            "pagination": {"type": "page_number", "page_size": 100},
            "schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
        "streams": {
            "a": {"description": "A", "path": "/a"},
            "b": {"description": "B", "path": "/b", "records_path": "items", "pagination": {"page_size": 10}},
        },
    }
    spec = parse_spec(base, "acme.yaml")
    a, b = spec.streams["a"], spec.streams["b"]
    assert (a.records_path, a.pagination.type, a.pagination.page_size) == ("data", "page_number", 100)
    assert (b.records_path, b.pagination.type, b.pagination.page_size) == ("items", "page_number", 10)
    # A broken default is reported where it is written, once; a stream that merges its own keys into
    # that block is named too (its pagination is its own, with the broken type under it).
    broken = {**base, "stream_defaults": {**base["stream_defaults"], "pagination": {"type": "nope"}}}
    with pytest.raises(SpecError) as info:
        parse_spec(broken, "acme.yaml")
    assert [line.split(": got")[0] for line in str(info.value).splitlines()] == [
        "acme.yaml: stream_defaults.pagination.type",
        "acme.yaml: streams.b.pagination.type",
    ]


def test_a_stream_naming_another_block_type_replaces_the_default_block():
    """A child endpoint that does not page (Trackstar order packs) says ``pagination: {type: single}``: it takes
    none of the default next_token's keys; ``incremental: null`` drops a default block."""
    defaults = {
        "pagination": {"type": "next_token", "token_path": "next_token", "token_param": "page_token"},
        "incremental": {"cursor_field": "updated_date", "start_input": "a", "end_input": "b"},
    }
    merged = _merged(defaults, {"pagination": {"type": "single"}, "incremental": None})
    assert merged == {"pagination": {"type": "single"}, "incremental": None}
    assert _merged(defaults, {"pagination": {"token_param": "t"}})["pagination"] == {
        **defaults["pagination"],
        "token_param": "t",
    }
    packs = load_spec(SPEC_DIR / "trackstar.yaml").streams["order_packs"]
    assert packs.pagination.type == "single" and packs.incremental.start_input == "updated_date[gte]"
