"""Customer connections: the link flow that creates them, the vault that keeps their tokens, reconciling.

An integrator's customers each connect their own system (a WMS, through Trackstar's link flow) and get their
own access token. The vendor's ``connections.link`` block says which calls do it, so this module knows no
vendor:

- ``LinkFlow.link_token()``: a short-lived token the front end opens the vendor's link widget with;
- ``LinkFlow.exchange(auth_code, customer_id)``: the code the widget hands back becomes a ``LinkedConnection``
  (its id, system name, available actions and access token, as a ``SecretStr``);
- ``LinkFlow.listed()``: every connection the vendor knows, for ``reconcile``;
- ``usable_connections``: what a run reads, stored connections first and the fallback variable after, each
  with the actions the vendor lists for it when the registry kept them.

Tokens are stored sealed by ``TokenVault`` (Fernet through ``cryptography``'s ``MultiFernet``: AES-128-CBC
with an HMAC, keys rotate by putting a new key first). The engine never reads the environment: the keys
are handed in by the caller (``INTEGRATIONS_PIPELINE_SECRET_KEY`` in the service and the Dagster layer).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from .auth import Credentials, dig
from .client import Connection, VendorClient, parse_connections
from .errors import ConfigError, MissingCredentialError, ResponseFormatError
from .spec import ConnectorSpec, LinkSpec
from .webhooks import ReceivedEvent


class TokenVault:
    """Seals and opens connection tokens with one or more Fernet keys (the first seals; all open).

    ``keys`` are url-safe base64 32-byte keys (``Fernet.generate_key()``); ``source`` names where they came
    from, for messages (never the keys themselves).
    """

    def __init__(self, keys: Sequence[str | SecretStr], *, source: str = "the secret key"):
        raw = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys]
        raw = [k.strip() for k in raw if k and k.strip()]
        if not raw:
            raise ConfigError(f"{source} is not set: connection tokens are stored encrypted and need a key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in raw])
        except (ValueError, TypeError):
            raise ConfigError(
                f"{source} is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            ) from None
        self.source = source

    @classmethod
    def from_setting(cls, value: str | SecretStr | None, *, source: str) -> TokenVault:
        """Keys from one setting: comma-separated, newest first (``new,old`` while rotating)."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
        return cls(text.split(","), source=source)

    def seal(self, token: SecretStr) -> str:
        return self._fernet.encrypt(token.get_secret_value().encode()).decode()

    def open(self, sealed: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(sealed.encode()).decode())
        except InvalidToken:
            raise ConfigError(
                f"a stored connection token does not open with {self.source}: the key changed without the old "
                "one kept after it (new,old)"
            ) from None

    def rotate(self, sealed: str) -> str:
        """The same token sealed with the newest key."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigError(f"a stored connection token does not open with {self.source}") from None

    def __repr__(self) -> str:
        return f"TokenVault(source={self.source!r})"


@dataclass(frozen=True)
class LinkedConnection:
    """A connection as the vendor describes it; ``token`` only right after an exchange (lists never carry it)."""

    connection_id: str
    integration_name: str | None
    available_actions: tuple[str, ...]
    customer_id: str | None = None
    token: SecretStr | None = field(default=None, repr=False)

    def as_connection(self) -> Connection:
        return Connection(self.connection_id, self.token, frozenset(self.available_actions) or None)


class LinkFlow:
    """The link calls of one connector, through its client (organisation auth only, no connection token)."""

    def __init__(self, client: VendorClient):
        spec = client.config.connections
        if spec is None or spec.link is None:
            raise ConfigError(f"connector '{client.config.connector}' declares no connections.link block")
        self.client = client
        self.link: LinkSpec = spec.link

    def link_token(self) -> str:
        body = self.client.call("POST", self.link.token_path, json_body={})
        token = dig(body, self.link.token_field)
        if not isinstance(token, str) or not token:
            raise ResponseFormatError(
                f"{self.client.config.connector}: {self.link.token_path} answered no '{self.link.token_field}'",
                path=self.link.token_path,
            )
        return token

    def exchange(self, auth_code: str, customer_id: str | None) -> LinkedConnection:
        body: dict[str, Any] = {self.link.code_field: auth_code}
        if customer_id is not None:
            body[self.link.customer_field] = customer_id
        # An auth code is spent by its first exchange: a retry after a lost answer would only be refused.
        answer = self.client.call("POST", self.link.exchange_path, json_body=body, idempotent=False)
        token = dig(answer, self.link.access_token_field) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ResponseFormatError(
                f"{self.client.config.connector}: {self.link.exchange_path} answered no "
                f"'{self.link.access_token_field}'",
                path=self.link.exchange_path,
            )
        self.client.add_secret(token)  # from here on, a vendor message quoting it is masked
        return self._connection(answer, self.link.exchange_path, token=SecretStr(token), customer_id=customer_id)

    def listed(self) -> list[LinkedConnection]:
        """Every connection of the organisation, following ``next_token`` pages if the answer has them."""
        found: list[LinkedConnection] = []
        params: dict[str, Any] = {}
        seen_tokens: set[str] = set()
        while True:
            answer = self.client.call("GET", self.link.list_path, params=params)
            rows = dig(answer, self.link.list_records_path)
            if not isinstance(rows, list):
                raise ResponseFormatError(
                    f"{self.client.config.connector}: {self.link.list_path} answered no list at "
                    f"'{self.link.list_records_path}'",
                    path=self.link.list_path,
                )
            found += [self._connection(r, self.link.list_path) for r in rows]
            # [unconfirmed] GET /connections takes page_token (openapi.json) and, like the lists, answers next_token.
            token = answer.get("next_token") if isinstance(answer, dict) else None
            if not token or token in seen_tokens:
                return found
            seen_tokens.add(token)
            params = {"page_token": token}

    def _connection(
        self, row: Any, path: str, *, token: SecretStr | None = None, customer_id: str | None = None
    ) -> LinkedConnection:
        conn_id = dig(row, self.link.id_field) if isinstance(row, dict) else None
        if not isinstance(conn_id, str) or not conn_id:
            raise ResponseFormatError(
                f"{self.client.config.connector}: {path} answered a connection without '{self.link.id_field}'",
                path=path,
            )
        actions = dig(row, self.link.actions_field)
        name = dig(row, self.link.name_field)
        customer = row.get(self.link.customer_field) if isinstance(row, dict) else None
        return LinkedConnection(
            connection_id=conn_id,
            integration_name=name if isinstance(name, str) else None,
            available_actions=tuple(a for a in actions if isinstance(a, str)) if isinstance(actions, list) else (),
            customer_id=customer_id if customer_id is not None else (customer if isinstance(customer, str) else None),
            token=token,
        )


@dataclass(frozen=True)
class Reconciliation:
    """What reconciling the stored connections with the vendor's list changes."""

    added: tuple[LinkedConnection, ...]  # listed, never stored: they have no token here (see ``missing_token``)
    deactivated: tuple[str, ...]  # stored as active, no longer listed
    refreshed: tuple[LinkedConnection, ...]  # listed and stored: name and actions as listed now


def reconcile(stored: Mapping[str, str], listed: Iterable[LinkedConnection]) -> Reconciliation:
    """``stored``: connection id → status. A connection the vendor no longer lists is deactivated; one it lists
    that we never stored is added without a token (its token only ever came through an exchange, so it can be
    read only once someone supplies it: the fallback variable, or linking again)."""
    listed = list(listed)
    ids = {c.connection_id for c in listed}
    return Reconciliation(
        added=tuple(c for c in listed if c.connection_id not in stored),
        deactivated=tuple(sorted(i for i, status in stored.items() if status == "active" and i not in ids)),
        refreshed=tuple(c for c in listed if c.connection_id in stored),
    )


#: A stored connection as the registry hands it over: ``(connection_id, status, token_sealed)``, optionally
#: followed by its ``available_actions`` as the vendor last listed them.
StoredRow = tuple[str, str, str | None] | tuple[str, str, str | None, Collection[str] | None]


def stored_actions(row: StoredRow) -> frozenset[str] | None:
    """The actions a stored row lists, or ``None`` (unknown: every stream is read) when it has none. An empty
    list counts as unknown too: a row stored before actions were kept, or from an answer without the field,
    must not silence every stream of the connection."""
    actions = row[3] if len(row) > 3 else None
    return frozenset(actions) if actions else None


def usable_connections(
    spec: ConnectorSpec,
    credentials: Credentials,
    stored: Sequence[StoredRow],
    vault: TokenVault | None,
) -> list[Connection]:
    """The connections a run reads: the stored ones that are active (their tokens opened with ``vault``), then
    those of the fallback variable (``connections.token``) that the registry does not know. ``stored`` holds
    ``(connection_id, status, token_sealed)`` or ``(connection_id, status, token_sealed, available_actions)``:
    with the actions, a stream whose action the connection lacks is skipped without a call (``load_stream``);
    the fallback variable's connections have none (unknown). A stored connection that is deleted or revoked is
    not read, even when the variable still names it: the vendor (or its 401) said it is gone."""
    if spec.connections is None:
        return parse_connections(spec, credentials)
    env = spec.connections.token.env
    found: list[Connection] = []
    for row in stored:
        connection_id, status, sealed = row[0], row[1], row[2]
        if status != "active" or not sealed:
            continue
        if vault is None:
            raise ConfigError(
                f"connector '{spec.name}': connection '{connection_id}' is stored with a sealed token, and no key "
                "to open it is set (INTEGRATIONS_PIPELINE_SECRET_KEY)"
            )
        found.append(Connection(connection_id, vault.open(sealed), stored_actions(row)))
    found += _fallback(spec, credentials, stored)
    if not found:
        hint = "set it, or connect a customer through the link flow (`integrations-pipeline serve`)"
        raise MissingCredentialError(env, spec.name, hint if spec.connections.link else None)
    return found


def known_connection_ids(spec: ConnectorSpec, credentials: Credentials, stored: Sequence[StoredRow]) -> set[str]:
    """The connections whose data a run may hold (``usable_connections``' choice, by id, tokens unopened):
    active stored ones, then the fallback variable's that the registry does not know."""
    active = {row[0] for row in stored if row[1] == "active"}
    return active | {c.id for c in _fallback(spec, credentials, stored)}


def _fallback(spec: ConnectorSpec, credentials: Credentials, stored: Sequence[StoredRow]) -> list[Connection]:
    """The fallback variable's connections the registry does not know, or knows as active with no token (a
    connection reconciling found, whose token only the variable has). A stored token, or a stored deleted or
    revoked status, wins over the variable."""
    assert spec.connections is not None
    if not credentials.has(spec.connections.token.env):
        return []
    known = {row[0] for row in stored if row[1] != "active" or row[2]}
    return [c for c in parse_connections(spec, credentials) if c.id not in known]


# -- connection events (webhooks about a connection itself) -----------------------------------------------------

#: A secret in a stored event body is replaced by ``{SEALED_KEY: <Fernet token>}``, or, with no vault, by
#: ``{DROPPED_KEY: <why>}``: the clear value is never written.
SEALED_KEY = "sealed"
DROPPED_KEY = "dropped"


def seal_event_secrets(spec: ConnectorSpec, payload: dict[str, Any], vault: TokenVault | None) -> dict[str, Any]:
    """A copy of ``payload`` whose secret fields (``webhooks.secret_fields()``) are sealed with ``vault``, or
    dropped when there is none; the input is left unchanged."""
    hooks = spec.webhooks
    paths = hooks.secret_fields() if hooks is not None else []
    if not paths:
        return payload
    copy = json_copy(payload)
    for path in paths:
        *parents, leaf = path.split(".")
        node: Any = copy
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(leaf), str):
            continue
        if vault is None:
            node[leaf] = {DROPPED_KEY: "no INTEGRATIONS_PIPELINE_SECRET_KEY to seal it with"}
        else:
            node[leaf] = {SEALED_KEY: vault.seal(SecretStr(node[leaf]))}
    return copy


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists copied, scalars shared)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


@dataclass(frozen=True)
class ConnectionChange:
    """What one connection event changes: ``kind`` is ``created``, ``deleted`` or ``history_completed``."""

    event_id: str
    kind: str
    connection_id: str
    integration_name: str | None = None
    token_sealed: str | None = None  # created: the token as the receiver sealed it (None: not kept)
    stream: str | None = None  # history_completed: the stream whose history is complete
    oldest: str | None = None  # history_completed: first day (YYYY-MM-DD) the history holds
    newest: str | None = None  # history_completed: last day it holds
    problem: str | None = None  # why the event changes nothing (an unknown resource, no connection id)

    def __repr__(self) -> str:
        return f"ConnectionChange({self.kind!r}, {self.connection_id!r})"


def connection_change(spec: ConnectorSpec, event: ReceivedEvent) -> ConnectionChange | None:
    """The change a connection event makes; None when ``event`` is not about a connection."""
    hooks = spec.webhooks
    ce = hooks.connection_events if hooks is not None else None
    kind = ce.kind(event.event_type) if ce is not None else None
    if ce is None or kind is None:
        return None
    if not event.connection_id:
        return ConnectionChange(event.event_id, kind, "", problem="the event names no connection")
    name = event.payload.get("integration_name")
    change = ConnectionChange(
        event.event_id, kind, event.connection_id, integration_name=name if isinstance(name, str) else None
    )
    if kind == "created" and ce.token_field:
        token = dig(event.payload, ce.token_field)
        sealed = token.get(SEALED_KEY) if isinstance(token, dict) else None
        return replace(change, token_sealed=sealed if isinstance(sealed, str) else None)
    if kind == "history_completed":
        resource = dig(event.payload, ce.resource_field) if ce.resource_field else None
        stream = ce.resource_streams.get(resource) if isinstance(resource, str) else None
        if stream is None:
            return replace(change, problem=f"history of resource {resource!r}, which maps to no stream")
        oldest = dig(event.payload, ce.oldest_field) if ce.oldest_field else None
        newest = dig(event.payload, ce.newest_field) if ce.newest_field else None
        return replace(
            change,
            stream=stream,
            oldest=oldest[:10] if isinstance(oldest, str) and len(oldest) >= 10 else None,
            newest=newest[:10] if isinstance(newest, str) and len(newest) >= 10 else None,
        )
    return change
