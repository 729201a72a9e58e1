"""A local Salestrekker: a real GraphQL API (graphql-core) over lazily generated CRM data.

``POST /graphql`` with ``{"query", "variables", "operationName"?}``. The schema (``SDL`` below) holds
what Salestrekker documents — ``authenticate``, ``ticket(id)``, ``contact(id)``, ``workflow(id)``,
``workflows``, ``labels`` and the ticket/contact fields — plus the list queries this project
assumes (Salestrekker documents none; see ``connectors/salestrekker.yaml``):

    tickets(limit: Int!, after: String, updatedFrom: String, updatedTo: String)
        { items { ... } pageInfo { endCursor hasNextPage } }      # and the same for contacts

Windows are ``updatedFrom <= updatedAt < updatedTo`` (any ISO 8601 form; naive = UTC), items come
in ``(updatedAt, id)`` order, ``limit`` is 1..500, ``endCursor`` is opaque and ``null`` on the last
page (``hasNextPage: false``). A cursor used with a different window is an error.

Auth, as the seed describes: ``mutation { authenticate(apiKey: ...) { token } }`` or
``authenticate(email: ..., password: ...)``; then ``Authorization: Bearer <token>`` on everything
else. Tokens last ``token_ttl_seconds`` (14 days) on the injected ``clock``. Every GraphQL-level
failure is HTTP 200 with an ``errors`` array, as GraphQL servers answer: bad credentials and
missing/unknown/expired tokens carry ``extensions.code = "UNAUTHENTICATED"``, bad arguments
``BAD_USER_INPUT``; syntax and validation errors are graphql-core's own.

Webhooks (seed 000 "Webhooks"; the body as public integration code reads it): after a change the sandbox
posts ``{"id": <ticket id>, "event": <name>}``, unsigned, to the URL ``webhooks.subscribe`` gave it, at least
once (``WebhookOutbox``): ``DealCreated`` on ``add``, ``DealChangesStage`` when ``touch`` or ``change_deal``
moves a deal to its next stage (the last stage wins and settles it), and [unconfirmed] ``DealUpdated`` for
another edit. The receiver then reads ``ticket(id: ID!)`` (public integration code queries
``ticket(id: "...")`` and reads ``data.ticket``), which answers the deal or ``null`` for an id that names none.
``counts`` has ``"graphql <root field>"`` per operation and ``"ticket <id>"`` per read by id.

Records hold exactly the fields the YAML queries select, so ``truth()`` equals what a sync with the
shipped queries should store. ``Ticket.contacts``, ``Ticket.workflow`` and ``Ticket.stage`` are
extra resolvable fields for users who edit the queries.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    build_schema,
    execute,
    get_operation_ast,
    parse,
    validate,
)

from integrations_pipeline.sandbox.base import VendorSandbox, WebhookOutbox, json_response
from integrations_pipeline.sandbox.data import (
    Key,
    LazyStore,
    Window,
    decode_token,
    encode_token,
    fake_email,
    fake_person,
    fake_phone,
    fingerprint,
    iso,
    mix64,
    parse_iso_lenient,
    to_epoch,
)

SDL = """
schema { query: Query mutation: Mutation }

type Query {
  "Tickets (deals) updated in [updatedFrom, updatedTo), ordered by (updatedAt, id). limit 1..500."
  tickets(limit: Int!, after: String, updatedFrom: String, updatedTo: String): TicketPage!
  "Contacts updated in [updatedFrom, updatedTo), ordered by (updatedAt, id). limit 1..500."
  contacts(limit: Int!, after: String, updatedFrom: String, updatedTo: String): ContactPage!
  ticket(id: ID!): Ticket
  contact(id: ID!): Contact
  workflow(id: ID!): Workflow
  workflows: [Workflow!]!
  labels: [Label!]!
}

type Mutation {
  "Log in with the organisation API key (admin) or a user's email and password."
  authenticate(apiKey: String, email: String, password: String): Authentication
}

type Authentication { token: String! }

type PageInfo { endCursor: String hasNextPage: Boolean! }
type TicketPage { items: [Ticket!]! pageInfo: PageInfo! }
type ContactPage { items: [Contact!]! pageInfo: PageInfo! }

type TicketValues { onceOff: Float }

type Ticket {
  id: ID!
  idOwner: ID
  isActive: Boolean
  timeStamp: String
  updatedAt: String!
  ref: String
  idWorkflow: ID
  idStage: ID
  idClients: [ID!]
  idContacts: [ID!]
  idLabels: [ID!]
  name: String
  description: String
  values: TicketValues
  isWon: Boolean
  isLost: Boolean
  isSettled: Boolean
  wonAt: String
  lostAt: String
  settledAt: String
  contacts: [Contact!]!
  workflow: Workflow
  stage: Stage
}

type PersonInformation { firstName: String familyName: String }
"email: primary email; primary: primary (mobile) phone; phone: another phone, often null."
type PersonContact { email: String primary: String phone: String }
type Person { information: PersonInformation contact: PersonContact }

type Contact {
  id: ID!
  idOwner: ID
  isActive: Boolean
  updatedAt: String!
  person: Person
}

type Stage { id: ID! name: String }
type Workflow { id: ID! name: String stages: [Stage!] }
type Label { id: ID! name: String }
"""

DEFAULT_SIZES = {"deals": 800, "contacts": 1000, "workflows": 4}
MAX_LIMIT = 500
DUPLICATE_OVERLAP = 3

_WORKFLOWS = (
    (
        "Home Loans",
        (
            "New lead",
            "Initial contact",
            "Fact find",
            "Lodged",
            "Conditional approval",
            "Unconditional approval",
            "Settled",
        ),
    ),
    ("Commercial Lending", ("Enquiry", "Needs analysis", "Credit proposal", "Submitted", "Approved", "Settled")),
    ("Asset Finance", ("New lead", "Quote sent", "Application", "Approved", "Settled")),
    ("Refinance", ("Review requested", "Rate comparison", "Lodged", "Approved", "Settled")),
    ("Personal Loans", ("New lead", "Application", "Assessment", "Approved", "Settled")),
)
_LABELS = ("Hot lead", "First home buyer", "Investor", "Referral", "Self-employed", "VIP")
_DEAL_KINDS = (
    "Home loan",
    "Refinance",
    "Investment loan",
    "Construction loan",
    "Car loan",
    "Equipment finance",
    "Bridging loan",
)
_SUBURBS = (
    "Parramatta",
    "Bondi",
    "Fitzroy",
    "Southbank",
    "Fremantle",
    "Newstead",
    "Glenelg",
    "Manly",
    "Carlton",
    "Subiaco",
)


def _uuid(key: int, kind: str, i: int) -> str:
    """UUID-shaped id whose last group is the index: generated on demand, decoded without a map."""
    h = f"{mix64(key, kind, i):016x}{mix64(key, kind, ~i):016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{i:012d}"


def _uuid_index(record_id: str) -> int | None:
    tail = record_id.rsplit("-", 1)[-1]
    return int(tail) if len(tail) == 12 and tail.isdigit() else None


class _GraphQLFailure(Exception):
    """A request-level GraphQL error (HTTP 200, ``data: null``)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SalestrekkerSandbox(VendorSandbox):
    """Salestrekker's GraphQL API v2 for one tenant: tickets (deals), contacts, workflows."""

    name = "salestrekker"

    def __init__(
        self,
        seed: int = 0,
        sizes: dict[str, int] | None = None,
        api_key: str = "sandbox-st-key",
        email: str = "ops@sandbox.example",
        password: str = "sandbox-pass",
        token_ttl_seconds: float = 14 * 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        unknown = set(sizes or {}) - set(DEFAULT_SIZES)
        if unknown:
            raise ValueError(
                f"got sizes for unknown streams {sorted(unknown)}, expected some of {sorted(DEFAULT_SIZES)}"
            )
        self.seed = seed
        self.sizes = {**DEFAULT_SIZES, **(sizes or {})}
        self.api_key = api_key
        self.email = email
        self.password = password
        self.token_ttl_seconds = token_ttl_seconds
        self.clock = clock
        self.key = mix64(seed, "salestrekker")
        self.tokens: dict[str, float] = {}  # token -> expiry on ``clock``
        self._issued = 0
        self._token_lock = threading.Lock()
        self.owners = [_uuid(self.key, "user", u) for u in range(6)]
        self.labels = [{"id": _uuid(self.key, "label", n), "name": name} for n, name in enumerate(_LABELS)]
        self.workflows: list[dict[str, Any]] = [self._workflow(w) for w in range(self.sizes["workflows"])]
        self._workflow_renames = 0
        self.stores: dict[str, LazyStore] = {
            "deals": LazyStore(
                size=self.sizes["deals"],
                key=mix64(self.key, "deals"),
                generate=self._ticket,
                id_of=lambda i: _uuid(self.key, "ticket", i),
                index_of=_uuid_index,
                cursor_field="updatedAt",
                created_field="timeStamp",
            ),
            "contacts": LazyStore(
                size=self.sizes["contacts"],
                key=mix64(self.key, "contacts"),
                generate=self._contact,
                id_of=lambda i: _uuid(self.key, "contact", i),
                index_of=_uuid_index,
                cursor_field="updatedAt",
                created_field=None,
            ),
        }
        self.schema: GraphQLSchema = build_schema(SDL)
        self._wire_resolvers()
        self._documents: OrderedDict[str, tuple[DocumentNode | None, list[GraphQLError]]] = OrderedDict()
        self.routes[("POST", "/graphql")] = self._graphql
        # Webhooks (seed 000 "Webhooks"): {"id": <ticket id>, "event": "DealCreated" | "DealChangesStage" | ...}
        # posted to the URL pasted in Settings/API, with no signature (so the URL carries our secret token).
        self.webhooks = WebhookOutbox(sign=lambda msg_id, body: {})
        self.webhook_token = "sandbox-st-webhook-token"  # the secret end of the URL pasted into Settings/API
        self._events = 0

    # -- data -----------------------------------------------------------------------------------

    def _workflow(self, w: int) -> dict[str, Any]:
        name, stages = _WORKFLOWS[w % len(_WORKFLOWS)]
        if w >= len(_WORKFLOWS):
            name = f"{name} {w // len(_WORKFLOWS) + 1}"
        return {
            "id": _uuid(self.key, "workflow", w),
            "name": name,
            "stages": [{"id": _uuid(self.key, f"stage-{w}", s), "name": stage} for s, stage in enumerate(stages)],
        }

    def _ticket(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "ticket", i))
        workflow = self.workflows[int(r.random() * len(self.workflows))] if self.workflows else None
        stages = workflow["stages"] if workflow else []
        stage_pos = int(r.random() * len(stages)) if stages else 0
        n_contacts = self.sizes["contacts"]
        contacts = sorted({int(r.random() * n_contacts) for _ in range(1 + int(r.random() * 3))}) if n_contacts else []
        contact_ids = [_uuid(self.key, "contact", c) for c in contacts]
        last_stage = bool(stages) and stage_pos == len(stages) - 1
        is_lost = not last_stage and r.random() < 0.12
        is_won = last_stage or (not is_lost and stage_pos >= len(stages) - 2 and r.random() < 0.5)
        is_settled = last_stage
        family = fake_person(random.Random(mix64(self.key, "contact", contacts[0])))[1] if contacts else "Client"
        kind = r.choice(_DEAL_KINDS)
        between = lambda: iso(created + int(r.random() * max(1, ts - created)))  # noqa: E731 - a moment in [created, updated)
        return {
            "id": _uuid(self.key, "ticket", i),
            "idOwner": self.owners[int(r.random() * len(self.owners))],
            "isActive": not is_lost,
            "timeStamp": iso(created),
            "updatedAt": iso(ts),
            "ref": f"D-{10000 + i + 1}",
            "idWorkflow": workflow["id"] if workflow else None,
            "idStage": stages[stage_pos]["id"] if stages else None,
            "idClients": contact_ids[:1],
            "idContacts": contact_ids,
            "idLabels": [label["id"] for label in self.labels if r.random() < 0.15],
            "name": f"{kind} – {family}",
            "description": f"{kind} for a property in {r.choice(_SUBURBS)}" if r.random() < 0.7 else None,
            "values": {"onceOff": round(r.uniform(5_000, 1_500_000), 2)},
            "isWon": is_won,
            "isLost": is_lost,
            "isSettled": is_settled,
            "wonAt": between() if is_won else None,
            "lostAt": between() if is_lost else None,
            "settledAt": iso(ts) if is_settled else None,
        }

    def _contact(self, i: int, ts: int, created: int) -> dict[str, Any]:
        r = random.Random(mix64(self.key, "contact", i))
        first, last = fake_person(r)
        return {
            "id": _uuid(self.key, "contact", i),
            "idOwner": self.owners[int(r.random() * len(self.owners))],
            "isActive": r.random() < 0.93,
            "updatedAt": iso(ts),
            "person": {
                "information": {"firstName": first, "familyName": last},
                "contact": {
                    "email": fake_email(first, last, i + 1),
                    "primary": fake_phone(r, "AU"),
                    "phone": f"+61 2 {r.randrange(8000, 9999)} {r.randrange(1000, 9999)}" if r.random() < 0.3 else None,
                },
            },
        }

    # -- test helpers ---------------------------------------------------------------------------

    def _stream(self, stream: str) -> str:
        stream = {"tickets": "deals"}.get(stream, stream)
        if stream not in DEFAULT_SIZES:
            raise KeyError(f"got stream '{stream}', expected one of {sorted(DEFAULT_SIZES)}")
        return stream

    def touch(self, stream: str, n: int, at: datetime, connection_id: str | None = None) -> list[str]:
        """Change ``n`` records visibly (deals: the next stage, won at the last, else the value, each with its
        webhook; contacts: phone; workflows: name) and set ``updatedAt = at`` (workflows have no cursor).
        ``connection_id`` is ignored (one tenant)."""
        stream = self._stream(stream)
        if stream == "workflows":
            with self._lock:
                self._workflow_renames += 1
                r = random.Random(mix64(self.key, "rename", self._workflow_renames))
            picked = sorted(r.sample(range(len(self.workflows)), n))
            for w in picked:
                self.workflows[w]["name"] = (
                    f"{self.workflows[w]['name'].split(' (')[0]} ({r.choice(('2027', 'new', 'broker', 'priority'))} {self._workflow_renames})"
                )
            return [self.workflows[w]["id"] for w in picked]
        if stream == "contacts":
            return self.stores[stream].touch(n, at, _touch_contact)
        events: dict[str, str] = {}
        ids = self.stores[stream].touch(
            n, at, lambda record, r: events.update({record["id"]: self._touch_deal(record, r, at)})
        )
        for ticket_id in ids:
            self.announce(ticket_id, events[ticket_id])
        return ids

    def change_deal(self, ticket_id: str, at: datetime) -> str:
        """Change one deal as ``touch`` does (the next stage, won at the last; else the value), ``updatedAt = at``,
        and post its webhook; returns the event name."""
        store = self.stores["deals"]
        with store.lock:
            index = _uuid_index(ticket_id)
            current = store.by_id(ticket_id)
            if index is None or current is None:
                raise KeyError(f"no deal '{ticket_id}'")
            record = copy.deepcopy(current)
            event = self._touch_deal(record, random.Random(mix64(self.key, "change", ticket_id, iso(to_epoch(at)))), at)
            record["updatedAt"] = iso(to_epoch(at))
            if record["timeStamp"] and record["timeStamp"] > record["updatedAt"]:
                record["timeStamp"] = record["updatedAt"]  # as LazyStore.touch: never created after its update
            store.set_record(index, record)
        self.announce(ticket_id, event)
        return event

    def announce(self, ticket_id: str, event: str) -> None:
        """Post ``{"id": ticket_id, "event": event}`` as Salestrekker does after an action (to a subscriber)."""
        with self._lock:
            self._events += 1
            n = self._events
        self.webhooks.put(f"st-{n}", {"id": ticket_id, "event": event})

    def _touch_deal(self, record: dict[str, Any], r: random.Random, at: datetime) -> str:
        """Move the deal to its workflow's next stage (the last one wins and settles it, as generated deals at the
        last stage are) or, when it cannot move, raise its value. Returns the webhook's event name: the
        documented ``DealChangesStage`` for a move; [unconfirmed] ``DealUpdated`` for another edit."""
        workflow = next((w for w in self.workflows if w["id"] == record["idWorkflow"]), None)
        stage_ids = [s["id"] for s in workflow["stages"]] if workflow else []
        if (
            record["idStage"] in stage_ids
            and stage_ids.index(record["idStage"]) < len(stage_ids) - 1
            and not record["isLost"]
        ):
            record["idStage"] = stage_ids[stage_ids.index(record["idStage"]) + 1]
            if record["idStage"] == stage_ids[-1]:
                when = iso(to_epoch(at))
                record.update(isWon=True, isSettled=True, settledAt=when, wonAt=record["wonAt"] or when)
            return "DealChangesStage"
        record["values"] = {"onceOff": round((record["values"] or {}).get("onceOff", 0) + r.uniform(1_000, 50_000), 2)}
        return "DealUpdated"

    def add(self, stream: str, n: int, at: datetime, connection_id: str | None = None) -> list[str]:
        """Create ``n`` records at ``at`` (workflows: appended, ``at`` unused); their ids."""
        stream = self._stream(stream)
        if stream == "workflows":
            start = len(self.workflows)
            self.workflows.extend(self._workflow(w) for w in range(start, start + n))
            return [w["id"] for w in self.workflows[start:]]
        ids = self.stores[stream].add(n, at)
        if stream == "deals":
            for ticket_id in ids:
                self.announce(ticket_id, "DealCreated")
        return ids

    def truth(self, stream: str, connection_id: str | None = None) -> list[dict[str, Any]]:
        """Every current record (deep copies) sorted by id, exactly as the YAML queries select it."""
        stream = self._stream(stream)
        if stream == "workflows":
            return sorted(copy.deepcopy(self.workflows), key=lambda w: w["id"])
        return sorted(self.stores[stream].all(), key=lambda rec: rec["id"])

    def expire_tokens(self) -> None:
        """Invalidate every issued token (as when 14 days pass): the next call must log in again."""
        with self._token_lock:
            self.tokens.clear()

    def environment(self, base_url: str) -> dict[str, str]:
        """Env vars pointing the salestrekker connector at this sandbox (its spec appends /graphql)."""
        return {
            "SALESTREKKER_GRAPHQL_URL": base_url,
            "SALESTREKKER_API_KEY": self.api_key,
            "SALESTREKKER_EMAIL": self.email,
            "SALESTREKKER_PASSWORD": self.password,
            "SALESTREKKER_WEBHOOK_TOKEN": self.webhook_token,
        }

    def rate_limited_response(
        self, retry_after: float, limit: int = 0, reset_epoch: float | None = None
    ) -> httpx.Response:
        response = super().rate_limited_response(retry_after, limit, reset_epoch)
        body = {"errors": [{"message": "Too many requests", "extensions": {"code": "RATE_LIMITED"}}]}
        return json_response(
            429, body, {k: v for k, v in response.headers.items() if k.startswith(("retry-after", "x-ratelimit"))}
        )

    # -- GraphQL --------------------------------------------------------------------------------

    def _wire_resolvers(self) -> None:
        fields = self.schema.type_map["Ticket"].fields  # type: ignore[attr-defined]  # Ticket is an object type
        contacts = self.stores["contacts"]
        fields["contacts"].resolve = lambda t, _info: [
            c for c in (contacts.by_id(cid) for cid in t.get("idContacts") or []) if c
        ]
        fields["workflow"].resolve = lambda t, _info: self._find_workflow(t.get("idWorkflow"))
        fields["stage"].resolve = lambda t, _info: next(
            (
                s
                for s in (self._find_workflow(t.get("idWorkflow")) or {}).get("stages", [])
                if s["id"] == t.get("idStage")
            ),
            None,
        )

    def _find_workflow(self, workflow_id: str | None) -> dict[str, Any] | None:
        return next((w for w in self.workflows if w["id"] == workflow_id), None)

    def _document(self, query: str) -> tuple[DocumentNode | None, list[GraphQLError]]:
        """Parse + validate once per query text (engines send the same text for every page)."""
        cached = self._documents.get(query)
        if cached is not None:
            return cached
        try:
            document: DocumentNode | None = parse(query)
            errors = validate(self.schema, document)  # type: ignore[arg-type]
        except GraphQLError as exc:
            document, errors = None, [exc]
        with self._lock:
            self._documents[query] = (document, errors)
            while len(self._documents) > 64:
                self._documents.popitem(last=False)
        return document, errors

    @staticmethod
    def _needs_auth(document: DocumentNode, operation_name: str | None) -> bool:
        """Everything but a mutation made only of ``authenticate`` (and ``__typename``) needs a token."""
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation != OperationType.MUTATION:
            return True
        selections = operation.selection_set.selections
        return not all(isinstance(s, FieldNode) and s.name.value in ("authenticate", "__typename") for s in selections)

    def _check_token(self, request: httpx.Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _GraphQLFailure("Not authenticated: send Authorization: Bearer <token>", "UNAUTHENTICATED")
        with self._token_lock:
            expiry = self.tokens.get(token.strip())
        if expiry is None:
            raise _GraphQLFailure("Invalid or expired token", "UNAUTHENTICATED")
        if self.clock() >= expiry:
            with self._token_lock:
                self.tokens.pop(token.strip(), None)
            raise _GraphQLFailure("Token expired", "UNAUTHENTICATED")

    def _graphql(self, request: httpx.Request) -> httpx.Response:
        try:
            payload = json.loads(request.content or b"null")
        except ValueError:
            return json_response(400, {"errors": [{"message": 'Body must be JSON: {"query", "variables"}'}]})
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return json_response(400, {"errors": [{"message": "Body must be a JSON object with a 'query' string"}]})
        variables = payload.get("variables") or {}
        operation_name = payload.get("operationName")
        document, errors = self._document(payload["query"])
        if errors or document is None:
            return json_response(200, {"errors": [e.formatted for e in errors]})
        operation = get_operation_ast(document, operation_name)
        for selection in operation.selection_set.selections if operation else ():
            if isinstance(selection, FieldNode):
                # Per root field ("graphql ticket", "graphql tickets"): tests tell a read by id from a list read.
                self.count(f"graphql {selection.name.value}")
        if self._needs_auth(document, operation_name):
            try:
                self._check_token(request)
            except _GraphQLFailure as exc:
                return json_response(
                    200, {"data": None, "errors": [{"message": exc.message, "extensions": {"code": exc.code}}]}
                )
        result = execute(
            self.schema,
            document,
            root_value=self._root(request),
            variable_values=variables,
            operation_name=operation_name,
        )
        assert isinstance(result, ExecutionResult)  # every resolver here is synchronous
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        return json_response(200, body)

    def _root(self, request: httpx.Request) -> dict[str, Any]:
        """Root resolvers (graphql-core calls a callable root field with ``(info, **args)``)."""
        path = request.url.path
        return {
            "authenticate": self._authenticate,
            "tickets": lambda _info, **args: self._page("deals", path, **args),
            "contacts": lambda _info, **args: self._page("contacts", path, **args),
            "ticket": lambda _info, id: self._ticket_by_id(id),  # noqa: A006 - GraphQL arg name
            "contact": lambda _info, id: self.stores["contacts"].by_id(id),  # noqa: A006
            "workflow": lambda _info, id: self._find_workflow(id),  # noqa: A006
            "workflows": lambda _info: self.workflows,
            "labels": lambda _info: self.labels,
        }

    def _ticket_by_id(self, ticket_id: str) -> dict[str, Any] | None:
        """``ticket(id)``: the deal, or null for an id that names none (GraphQL's answer for a missing nullable
        object; [unconfirmed] that Salestrekker answers a deleted ticket so and not with an error)."""
        self.count(f"ticket {ticket_id}")
        return self.stores["deals"].by_id(ticket_id)

    def _authenticate(
        self, _info: Any, apiKey: str | None = None, email: str | None = None, password: str | None = None
    ) -> dict[str, str]:  # noqa: N803 - GraphQL arg name
        if apiKey is None and (email is None or password is None):
            raise GraphQLError("Provide apiKey, or email and password", extensions={"code": "BAD_USER_INPUT"})
        ok = (apiKey is not None and apiKey == self.api_key) or (
            apiKey is None and email is not None and email.lower() == self.email.lower() and password == self.password
        )
        if not ok:
            self.count("login_failures")
            raise GraphQLError("Invalid credentials", extensions={"code": "UNAUTHENTICATED"})
        with self._token_lock:
            self._issued += 1
            token = f"st-{self._issued}-{mix64(self.seed, 'token', self._issued):016x}"
            self.tokens[token] = self.clock() + self.token_ttl_seconds
        self.count("logins")
        return {"token": token}

    def _page(
        self,
        stream: str,
        path: str,
        limit: int,
        after: str | None = None,
        updatedFrom: str | None = None,
        updatedTo: str | None = None,
    ) -> dict[str, Any]:  # noqa: N803
        if not 1 <= limit <= MAX_LIMIT:
            raise GraphQLError(
                f"limit must be between 1 and {MAX_LIMIT}, got {limit}", extensions={"code": "BAD_USER_INPUT"}
            )
        window = Window()
        for name, value in (("updatedFrom", updatedFrom), ("updatedTo", updatedTo)):
            if value is None:
                continue
            ts = parse_iso_lenient(value)
            if ts is None:
                raise GraphQLError(
                    f"{name} must be an ISO 8601 date-time, got {value!r}", extensions={"code": "BAD_USER_INPUT"}
                )
            if name == "updatedFrom":
                window.low = ts
            else:
                window.high = ts
        fp = fingerprint(stream, window.low, window.high)
        start: Key | None = None
        previous: Key | None = None
        if after is not None:
            decoded = decode_token(after)
            if decoded is None or decoded[2] != fp:
                raise GraphQLError(
                    "Invalid cursor for this query: repeat the same updatedFrom/updatedTo",
                    extensions={"code": "BAD_USER_INPUT"},
                )
            start, previous, _ = decoded
        store = self.stores[stream]
        items, last, more = store.page(window, start, limit)
        end_cursor = encode_token(last, start, fp) if more and last is not None else None
        if self.faults.take(("duplicate",), path):
            # As for Trackstar: the previous page's first records come again; the cursor is unchanged.
            self.count("duplicate")
            if after is not None:
                again, _, _ = store.page(window, previous, DUPLICATE_OVERLAP)
                items = [*again, *items]
            else:
                items = [*items, *items[:DUPLICATE_OVERLAP]]
        return {"items": items, "pageInfo": {"endCursor": end_cursor, "hasNextPage": more}}


def _touch_contact(record: dict[str, Any], r: random.Random) -> None:
    contact = record["person"]["contact"]
    old = contact["primary"]
    while contact["primary"] == old:
        contact["primary"] = fake_phone(r, "AU")


__all__ = ["SDL", "SalestrekkerSandbox"]
