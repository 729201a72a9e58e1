"""Auth types, registered by snake_case name.

Each type is a frozen config model (what a spec may say) and a runtime class that decorates an
outgoing request. Secrets arrive as ``Credentials`` (environment variable name → ``SecretStr``) and
are unwrapped only at the moment a request is built; no runtime object stores a plain value in an
attribute that a repr or an exception could show.

Types:
- ``static_headers``: fixed headers from environment variables (Trackstar API key, Trakor ``X-API-KEY``,
  SALESmanago v3 ``API-KEY``).
- ``graphql_login``: a login mutation returns a bearer token, cached until its TTL passes or the
  vendor answers with an auth error (Salestrekker: API key or email/password).
- ``body_credentials``: credentials as JSON body fields, with an optional digest of secrets and a request
  time (SALESmanago's classic form ``sha = SHA1(apiKey + clientId + apiSecret)``, where the secret itself
  never travels; and its v3 form, ``apiKey``/``apiSecret``/``owner`` in the body).
- ``aws_sigv4``: AWS Signature V4 (Datatalks), signed by httpx-auth.
- ``none``: no credentials (local tools, tests).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import httpx_auth
from pydantic import BaseModel, Field, SecretStr, model_validator

from .errors import AuthError, MissingCredentialError
from .models import Frozen, Secret
from .registry import Registry


class Credentials:
    """Secret values by environment variable name. ``repr`` never shows a value."""

    def __init__(self, connector: str, values: Mapping[str, SecretStr | str | None]):
        self.connector = connector
        self._values = {
            k: (v if isinstance(v, SecretStr) else SecretStr(v)) for k, v in values.items() if v is not None
        }

    @classmethod
    def from_environ(cls, connector: str, names: list[str], environ: Mapping[str, str]) -> Credentials:
        return cls(connector, {n: environ.get(n) for n in names})

    def has(self, name: str) -> bool:
        return name in self._values and self._values[name].get_secret_value() != ""

    def get(self, name: str) -> str:
        if not self.has(name):
            raise MissingCredentialError(name, self.connector)
        return self._values[name].get_secret_value()

    def all_values(self) -> list[str]:
        """Every secret value, for redaction filters only."""
        return [v.get_secret_value() for v in self._values.values() if v.get_secret_value()]

    def __repr__(self) -> str:
        return f"Credentials({self.connector!r}, names={sorted(self._values)})"


@dataclass
class OutgoingRequest:
    """A request being built; auth types mutate headers or the JSON body before it is sent."""

    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None


# A callable that performs an unauthenticated POST through the engine's client (with its rate
# limiter and retries) and returns the decoded JSON; graphql_login uses it to log in.
LoginSender = Callable[[str, dict[str, Any]], Any]


class Auth:
    """Runtime base: decorate a request; optionally provide an ``httpx.Auth`` for signing."""

    def __init__(self, config: BaseModel, *, credentials: Credentials, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.credentials = credentials
        self.clock = clock

    def apply(self, request: OutgoingRequest, login: LoginSender) -> None:
        return None

    def httpx_auth(self) -> httpx.Auth | None:
        return None

    def invalidate(self) -> bool:
        """Forget cached tokens after an auth error. True if a fresh login may fix it."""
        return False

    def secret_values(self) -> list[str]:
        """Every secret this auth may send (credentials, session tokens): for redaction only."""
        return self.credentials.all_values()


AUTH_TYPES: Registry[Auth] = Registry("auth")


class NoAuthConfig(Frozen):
    type: Literal["none"]


@AUTH_TYPES.register("none", NoAuthConfig)
class NoAuth(Auth):
    pass


class StaticHeadersConfig(Frozen):
    type: Literal["static_headers"]
    headers: dict[str, Secret] = Field(description="Header name → environment variable holding its value.")


@AUTH_TYPES.register("static_headers", StaticHeadersConfig)
class StaticHeaders(Auth):
    config: StaticHeadersConfig

    def apply(self, request: OutgoingRequest, login: LoginSender) -> None:
        for header, secret in self.config.headers.items():
            request.headers[header] = self.credentials.get(secret.env)


class LoginMethod(Frozen):
    mutation: str = Field(description="GraphQL login mutation text.")
    variables: dict[str, Secret] = Field(description="Mutation variable → environment variable.")


class GraphqlLoginConfig(Frozen):
    type: Literal["graphql_login"]
    methods: list[LoginMethod] = Field(
        min_length=1, description="Tried in order; the first whose variables are all set is used."
    )
    token_path: str = Field(description="Dotted path to the token in the login response.")
    header: str = "Authorization"
    scheme: str = "Bearer"
    ttl_seconds: float = Field(default=14 * 24 * 3600, gt=0, description="Renew the token after this long.")


@AUTH_TYPES.register("graphql_login", GraphqlLoginConfig)
class GraphqlLogin(Auth):
    config: GraphqlLoginConfig

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self._token: SecretStr | None = None
        self._expires_at = 0.0

    def _method(self) -> LoginMethod:
        for method in self.config.methods:
            if all(self.credentials.has(s.env) for s in method.variables.values()):
                return method

        # None is complete. The user most likely meant the method they half-configured (email set,
        # password not): name its first missing variable; with nothing set, the first method's.
        def set_count(m: LoginMethod) -> int:
            return sum(self.credentials.has(s.env) for s in m.variables.values())

        meant = max(self.config.methods, key=set_count)  # max keeps the first on ties
        missing = next(s.env for s in meant.variables.values() if not self.credentials.has(s.env))
        raise MissingCredentialError(missing, self.credentials.connector)

    def apply(self, request: OutgoingRequest, login: LoginSender) -> None:
        if self._token is None or self.clock() >= self._expires_at:
            method = self._method()
            variables = {k: self.credentials.get(s.env) for k, s in method.variables.items()}
            body = login(method.mutation, variables)
            token = dig(body, self.config.token_path)
            if not token:
                raise AuthError(f"login response has no token at '{self.config.token_path}'")
            self._token = SecretStr(str(token))
            self._expires_at = self.clock() + self.config.ttl_seconds
        request.headers[self.config.header] = f"{self.config.scheme} {self._token.get_secret_value()}".strip()

    def invalidate(self) -> bool:
        had = self._token is not None
        self._token = None
        return had

    def secret_values(self) -> list[str]:
        token = [self._token.get_secret_value()] if self._token is not None else []
        return super().secret_values() + token


class BodyDigest(Frozen):
    """A hash of secrets sent in place of a secret, e.g. SALESmanago's ``sha = SHA1(apiKey + clientId +
    apiSecret)``: a secret named only here enters the hash and never the wire."""

    field: str = Field(min_length=1, description="Body field that carries the hex digest.")
    algorithm: Literal["sha1", "sha256", "sha512", "md5"]
    of: list[Secret] = Field(min_length=1, description="Secrets concatenated in this order, then hashed.")


class BodyCredentialsConfig(Frozen):
    type: Literal["body_credentials"]
    fields: dict[str, Secret] = Field(min_length=1, description="JSON body field → environment variable.")
    digest: BodyDigest | None = None
    timestamp_ms: str | None = Field(
        default=None, min_length=1, description="Body field given the request time in epoch milliseconds."
    )

    @model_validator(mode="after")
    def _one_writer_per_field(self) -> BodyCredentialsConfig:
        # Two writers of one body field would silently drop a credential: say which field.
        written = list(self.fields)
        written += [self.digest.field] if self.digest else []
        written += [self.timestamp_ms] if self.timestamp_ms else []
        twice = sorted({name for name in written if written.count(name) > 1})
        if twice:
            raise ValueError(f"body field {twice[0]!r} is written twice (fields, digest.field, timestamp_ms)")
        return self


@AUTH_TYPES.register("body_credentials", BodyCredentialsConfig)
class BodyCredentials(Auth):
    """Credentials merged into the JSON body, with an optional digest of secrets and a request time."""

    config: BodyCredentialsConfig

    def apply(self, request: OutgoingRequest, login: LoginSender) -> None:
        c = self.config
        body = dict(request.json or {})
        body.update({name: self.credentials.get(secret.env) for name, secret in c.fields.items()})
        if c.timestamp_ms:
            body[c.timestamp_ms] = int(time.time() * 1000)  # wall-clock time: the vendor compares it to its own
        if c.digest:
            material = "".join(self.credentials.get(secret.env) for secret in c.digest.of)
            body[c.digest.field] = hashlib.new(c.digest.algorithm, material.encode()).hexdigest()
        request.json = body


class AwsSigV4Config(Frozen):
    type: Literal["aws_sigv4"]
    access_key_id: Secret
    secret_access_key: Secret
    region: str = "eu-west-1"
    service: str = "execute-api"


@AUTH_TYPES.register("aws_sigv4", AwsSigV4Config)
class AwsSigV4(Auth):
    """Signature V4 computed by httpx-auth over the final request (method, URL, headers, body)."""

    config: AwsSigV4Config

    def httpx_auth(self) -> httpx.Auth:
        c = self.config
        return httpx_auth.AWS4Auth(
            access_id=self.credentials.get(c.access_key_id.env),
            secret_key=self.credentials.get(c.secret_access_key.env),
            region=c.region,
            service=c.service,
        )


def dig(obj: Any, path: str) -> Any:
    """Follow a dotted path through dicts; ``""`` returns ``obj``. Missing keys give ``None``."""
    if not path:
        return obj
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def secret_env_vars(model: Any) -> list[str]:
    """Every environment variable named by a ``Secret`` anywhere inside a spec model."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Secret):
            found.append(value.env)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(model)
    return list(dict.fromkeys(found))
