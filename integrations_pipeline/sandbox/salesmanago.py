"""SALESmanago sandbox: a reverse-ETL *target* that keeps what it receives and enforces the documented limits.

One object serves both SALESmanago hosts, because their paths do not clash:

- the classic API (``app.salesmanago.com``, all POST, credentials in the JSON body):
  ``/api/contact/upsert``, ``/api/v3/contact/upsert`` (the seed's v3 form), ``/api/contact/batchupsert``,
  ``/api/contact/delete``, ``/api/contact/basic``, ``/api/v2/contact/addContactExtEvent``,
  ``/api/contact/batchAddContactExtEvent``;
- the v3 product catalog (``api.salesmanago.com``, header ``API-KEY``): ``/v3/product/upsert``,
  ``/v3/product/catalogList``.

Classic credentials come in two forms and both are accepted on every classic path: the long-documented
signed body (``clientId, apiKey, requestTime, sha = SHA1(apiKey + clientId + apiSecret), owner``; the
secret itself must not travel) and seed 001's v3 body (``apiKey, apiSecret, owner``). Classic failures
are HTTP 200 with ``{"success": false, "message": [...]}``, as SALESmanago reports them; the engine's
``errors.success_field`` turns those into errors.

Tests read back ``contacts`` (by lower-cased email), ``events`` (every accepted event, in order, never
de-duplicated so a test can see a replayed event), ``products`` (by ``(catalogId, productId)``),
``deleted`` (emails whose latest operation was a delete), ``write_calls`` and the base ``counts``.

The hourly plan budget (1,000/h Professional, 10,000/h Enterprise) is a rolling hour on the injected
``clock``; ``fail_batch_after(n)`` simulates a crash in the middle of a batch for idempotency tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from .base import VendorSandbox, json_response

# Every contactExtEventType we accept. The classic types come from the public SDKs (the README's
# list and the blabs-dev PHP SDK's EventType constants, which add the loan/app/fulfilment ones);
# LOCATION_ENTRY is the type in seed 001's v3 example, accepted because the seed shows it.
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "PURCHASE", "CART", "VISIT", "PHONE_CALL", "OTHER", "RESERVATION", "CANCELLED", "ACTIVATION",
        "MEETING", "OFFER", "DOWNLOAD", "LOGIN", "TRANSACTION", "CANCELLATION", "RETURN", "SURVEY",
        "APP_STATUS", "APP_TYPE_WEB", "APP_TYPE_MANUAL", "APP_TYPE_RETENTION", "APP_TYPE_UPSALE",
        "LOAN_STATUS", "LOAN_ORDER", "FIRST_LOAN", "REPEATED_LOAN", "PACKED", "PRINTED_OUT",
        "PARTIALLY_REFUNDED", "PENDING", "READY_FOR_PICKUP", "FULLY_REFUNDED", "FULLY_PICKED",
        "PARTIALLY_PICKED", "SENT_COMPLETE", "UPDATE", "ENGAGEMENT",
        "LOCATION_ENTRY",
    }
)  # fmt: skip

MAX_BATCH_EVENTS = 1000  # documented: batchAddContactExtEvent takes at most 1,000 events a call
MAX_BASIC_EMAILS = 50  # documented: /api/contact/basic looks up at most 50 emails a call
# Assumption (not stated in the public docs we have): v3 product upsert takes at most 100 products
# a call. Kept small on purpose so a sink that forgets to chunk fails here, not in production.
MAX_PRODUCTS_PER_CALL = 100
MAX_EVENT_DETAILS = 20  # detail1..detail20
HOUR = 3600.0

# Deliberately loose (one @, a dot in the domain, no spaces): the point is to catch mapping bugs
# such as a name in the email column, not to implement RFC 5322.
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DETAIL_RE = re.compile(r"^detail(\d+)$")
# A date below this many milliseconds (March 1973) is almost surely seconds sent as milliseconds.
_MIN_EVENT_DATE_MS = 10**11
_NS = uuid.UUID("5b1f0c6e-2f0a-4c52-9a53-5a1e5a1e5a1e")


def normalise_email(email: str) -> str:
    """SALESmanago treats emails case-insensitively; the sandbox keys state by the lower-cased form."""
    return email.strip().lower()


def is_email(value: Any) -> bool:
    return isinstance(value, str) and EMAIL_RE.match(value.strip()) is not None


def is_number(value: Any) -> bool:
    """A JSON number, or a plain numeric string ("12.50"); never a bool, NaN or a currency string."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False


def detail_index(key: str) -> int | None:
    """``detail7`` → 7; anything else → None."""
    m = _DETAIL_RE.match(key)
    return int(m.group(1)) if m else None


# Classic answers share BaseResponse {success, message[]} (tomaszcekalo/SalesManago, SalesManago/BaseResponse.cs).
def _ok(**extra: Any) -> httpx.Response:
    return json_response(200, {"success": True, "message": [], **extra})


def _fail(*messages: str, **extra: Any) -> httpx.Response:
    # SALESmanago answers classic-API failures with success=false (BaseResponse above; the official PHP SDK,
    # sanis/salesmanago-api-sso-util, checks that flag). [unconfirmed] that the HTTP status is then 200.
    return json_response(200, {"success": False, "message": list(messages), **extra})


# v3 errors {"problems": [{"reasonCode", "message"}]}: SALESmanago's v3 API reference (shared/vendors/README.md).
def _v3_problems(problems: list[tuple[int, str]]) -> httpx.Response:
    return json_response(400, {"problems": [{"reasonCode": code, "message": msg} for code, msg in problems]})


# The catalog the sandbox environment points the product sink at (created on first upsert).
SANDBOX_CATALOG_ID = "sandbox-catalog"


class SalesmanagoSandbox(VendorSandbox):
    """SALESmanago classic + v3 catalog, as a reverse-ETL target with readable state."""

    name = "salesmanago"

    # Reason codes for v3 answers. SALESmanago's public pages show the shape but not a code table,
    # so these values are the sandbox's own; tests should assert on the HTTP status and the shape.
    REASON_AUTH = 10
    REASON_VALIDATION = 20
    REASON_TOO_MANY = 21
    REASON_RATE = 30

    def __init__(
        self,
        client_id: str = "sandbox-client",
        api_key: str = "sandbox-sm-key",
        api_secret: str = "sandbox-sm-secret",
        owner: str = "owner@sandbox.example",
        v3_api_key: str = "sandbox-sm-v3-key",
        requests_per_hour: int | None = 1000,
        clock: Callable[[], float] = time.time,
        *,
        over_budget_status: int = 429,
        catalogs: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.api_key = api_key
        self.api_secret = api_secret
        self.owner = owner
        self.v3_api_key = v3_api_key
        self.requests_per_hour = requests_per_hour
        self.clock = clock
        # 429 by default; set to 503 to exercise the seed's "retry 503 with exponential backoff".
        self.over_budget_status = over_budget_status
        # None: any catalogId is accepted and registered on first use. A list: only those exist,
        # and an upsert into another catalog is a 400 (as when a catalog was never created).
        self._strict_catalogs = catalogs is not None
        self.catalogs: dict[str, dict[str, Any]] = {}
        for cid in catalogs or ():
            self._register_catalog(cid)

        self.contacts: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.products: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.write_calls = 0

        self._state_lock = threading.RLock()
        self._budget: deque[float] = deque()  # timestamps of accepted requests in the rolling hour
        self._fail_batch_after: int | None = None

        for path, handler, writes in (
            ("/api/contact/upsert", self._contact_upsert, True),
            ("/api/v3/contact/upsert", self._contact_upsert, True),
            ("/api/contact/batchupsert", self._contact_batchupsert, True),
            ("/api/contact/delete", self._contact_delete, True),
            ("/api/contact/basic", self._contact_basic, False),
            ("/api/v2/contact/addContactExtEvent", self._add_event, True),
            ("/api/contact/batchAddContactExtEvent", self._batch_add_events, True),
            ("/v3/product/upsert", self._product_upsert, True),
            ("/v3/product/catalogList", self._catalog_list, False),
        ):
            self.routes[("POST", path)] = self._counting(handler) if writes else handler

    def environment(self, base_url: str) -> dict[str, str]:
        """Env vars pointing the salesmanago connector (signed classic credentials) at this sandbox."""
        env = {
            "SALESMANAGO_BASE_URL": base_url.rstrip("/"),
            "SALESMANAGO_CLIENT_ID": self.client_id,
            "SALESMANAGO_API_KEY": self.api_key,
            "SALESMANAGO_API_SECRET": self.api_secret,
            "SALESMANAGO_OWNER": self.owner,
            # The v3 product catalog: same sandbox, API-KEY header auth, a catalog of its own.
            "SALESMANAGO_V3_BASE_URL": base_url.rstrip("/"),
            "SALESMANAGO_V3_API_KEY": self.v3_api_key,
            "SALESMANAGO_CATALOG_ID": next(iter(self.catalogs), SANDBOX_CATALOG_ID),
        }
        if self.requests_per_hour is not None:
            # The connector paces itself to the plan; tell it the sandbox's plan.
            env["SALESMANAGO_REQUESTS_PER_HOUR"] = str(self.requests_per_hour)
        return env

    # -- fault hooks and budget ----------------------------------------------------------------

    def fail_batch_after(self, n: int) -> None:
        """The next batch call (batchupsert, batchAddContactExtEvent, v3 product upsert) applies only
        its first ``n`` items and then answers 500, like a server crashing mid-batch."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._fail_batch_after = n

    def _take_crash(self) -> int | None:
        with self._state_lock:
            n, self._fail_batch_after = self._fail_batch_after, None
            return n

    def _crash_response(self, applied: int, v3: bool = False) -> httpx.Response:
        self.count("5xx")
        message = f"internal server error after {applied} item(s) (sandbox: fail_batch_after)"
        if v3:
            return json_response(500, {"messages": [message], "reasonCode": 500})
        return json_response(500, {"success": False, "message": [message]})

    def route(self, request: httpx.Request):
        handler = super().route(request)
        if handler is None:
            return None

        def budgeted(req: httpx.Request) -> httpx.Response:
            retry_after = self._take_budget()
            if retry_after is not None:
                return self._over_budget(req, retry_after)
            return handler(req)

        return budgeted

    def _take_budget(self) -> float | None:
        """Count one request in the rolling hour; return seconds until a slot frees if over budget.

        Refused requests are not counted: otherwise a client retrying on 429 could never get back
        under the budget, and ``retry-after`` would not mean "a slot is free then".
        """
        limit = self.requests_per_hour
        if limit is None:
            return None
        with self._state_lock:
            now = self.clock()
            while self._budget and self._budget[0] <= now - HOUR:
                self._budget.popleft()
            if len(self._budget) >= limit:
                return max(1.0, math.ceil(self._budget[0] + HOUR - now))
            self._budget.append(now)
            return None

    def budget_remaining(self) -> int | None:
        """Requests left in the current rolling hour (None when unlimited)."""
        if self.requests_per_hour is None:
            return None
        with self._state_lock:
            now = self.clock()
            used = sum(1 for t in self._budget if t > now - HOUR)
            return max(0, self.requests_per_hour - used)

    def _over_budget(self, request: httpx.Request, retry_after: float) -> httpx.Response:
        self.count("over_budget")
        status = self.over_budget_status
        headers = {
            "retry-after": f"{retry_after:g}",
            "x-ratelimit-limit": str(self.requests_per_hour),
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(self.clock() + retry_after)),
        }
        text = f"API request limit of {self.requests_per_hour} per hour exceeded"
        if status >= 500:
            self.count("5xx")
        if request.url.path.startswith("/v3/"):
            return json_response(status, {"messages": [text], "reasonCode": self.REASON_RATE}, headers)
        return json_response(status, {"success": False, "message": [text]}, headers)

    def rate_limited_response(
        self, retry_after: float, limit: int = 0, reset_epoch: float | None = None
    ) -> httpx.Response:
        # Injected "429" faults answer in SALESmanago's body shape rather than Trackstar's.
        headers = {"retry-after": f"{retry_after:g}", "x-ratelimit-limit": str(limit), "x-ratelimit-remaining": "0"}
        if reset_epoch is not None:
            headers["x-ratelimit-reset"] = str(int(reset_epoch))
        return json_response(429, {"success": False, "message": ["Too many requests"]}, headers)

    def _counting(self, handler: Callable[[httpx.Request], httpx.Response]):
        # write_calls counts every call to a write endpoint that reached the server logic (accepted,
        # rejected by validation or auth, or crashed mid-batch): "attempted to change state". Calls
        # refused by the hourly budget or by an injected transport/status fault are not counted.
        def wrapped(request: httpx.Request) -> httpx.Response:
            return self.run_write(self.record_write_call(), handler, request)

        return wrapped

    def record_write_call(self) -> int:
        """Count one write call (also used by DatatalksSandbox for each operation it forwards); its number."""
        with self._state_lock:
            self.write_calls += 1
            return self.write_calls

    # -- state primitives (also used by DatatalksSandbox when it forwards) -------------------------

    def contact_id_for(self, email: str) -> str:
        """Stable per account and email, so a re-created contact keeps its id across re-runs."""
        return str(uuid.uuid5(_NS, f"{self.client_id}:{normalise_email(email)}"))

    def upsert_contact(
        self,
        contact: dict[str, Any],
        tags: Iterable[str] = (),
        properties: dict[str, Any] | None = None,
        remove_tags: Iterable[str] = (),
    ) -> tuple[str, bool]:
        """Merge ``contact`` into state (fields given overwrite, ``None`` and absent fields keep the old
        value). Returns ``(contactId, created)``. No validation: callers validate."""
        email = normalise_email(contact["email"])
        now_ms = int(self.clock() * 1000)
        with self._state_lock:
            existing = self.contacts.get(email)
            created = existing is None
            record = existing or {
                "contactId": self.contact_id_for(email),
                "email": email,
                "tags": [],
                "properties": {},
                "createdOn": now_ms,
            }
            for key, value in contact.items():
                if key in ("email", "address") or value is None:
                    continue
                record[key] = value
            address = contact.get("address")
            if isinstance(address, dict):
                merged = dict(record.get("address") or {})
                merged.update({k: v for k, v in address.items() if v is not None})
                record["address"] = merged
            for tag in tags:
                if tag not in record["tags"]:
                    record["tags"].append(tag)
            record["tags"] = [t for t in record["tags"] if t not in set(remove_tags)]
            record["properties"].update(properties or {})
            record["modifiedOn"] = now_ms
            self.contacts[email] = record
            self.deleted.discard(email)
            return record["contactId"], created

    def delete_contact(self, email: str) -> bool:
        """Remove the contact; True if it existed. Deleting an unknown email is not an error (a
        reverse-ETL re-run deletes again), but it is still recorded in ``deleted``."""
        email = normalise_email(email)
        with self._state_lock:
            existed = self.contacts.pop(email, None) is not None
            self.deleted.add(email)
            return existed

    def add_event(self, email: str, contact_event: dict[str, Any]) -> dict[str, Any]:
        """Append an event; the contact is created if missing (seed 001: "the system will create a
        new profile automatically"). Returns the stored event."""
        email = normalise_email(email)
        with self._state_lock:
            if email not in self.contacts:
                self.upsert_contact({"email": email})
            event = {k: v for k, v in contact_event.items() if v is not None}
            event.setdefault("date", int(self.clock() * 1000))
            event["email"] = email
            event["contactId"] = self.contacts[email]["contactId"]
            event["eventId"] = str(uuid.uuid4())
            self.events.append(event)
            return event

    def upsert_product(self, catalog_id: str, product: dict[str, Any]) -> bool:
        """Merge one product into ``products[(catalogId, productId)]``; True if it was created."""
        key = (str(catalog_id), str(product["productId"]))
        with self._state_lock:
            self._register_catalog(key[0])
            existing = self.products.get(key)
            record = dict(existing or {"catalogId": key[0]})
            record.update({k: v for k, v in product.items() if v is not None})
            record["productId"] = key[1]
            self.products[key] = record
            return existing is None

    def find_contact(self, email: str) -> dict[str, Any] | None:
        with self._state_lock:
            found = self.contacts.get(normalise_email(email))
            return json.loads(json.dumps(found)) if found is not None else None

    def contact_by_id(self, contact_id: str) -> dict[str, Any] | None:
        with self._state_lock:
            for record in self.contacts.values():
                if record["contactId"] == contact_id:
                    return json.loads(json.dumps(record))
        return None

    def events_by_external_id(self) -> dict[str, list[dict[str, Any]]]:
        """Events grouped by ``externalId``: a list longer than one means the event was sent twice."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self._state_lock:
            for event in self.events:
                out.setdefault(str(event.get("externalId")), []).append(event)
        return out

    def _register_catalog(self, catalog_id: str) -> None:
        self.catalogs.setdefault(
            catalog_id, {"catalogId": catalog_id, "name": catalog_id, "currency": "PLN", "location": "sandbox"}
        )

    # -- request parsing and credentials ---------------------------------------------------------

    @staticmethod
    def _json_object(request: httpx.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _credentials_problem(self, body: dict[str, Any]) -> str | None:
        """None if the body carries valid credentials in either accepted form, else the reason."""
        if "sha" in body:
            # Signed form: the secret must never travel with it (the point of the signature).
            if "apiSecret" in body:
                return "apiSecret must not be sent in a signed request (sha present)"
            for key in ("clientId", "apiKey", "requestTime", "owner"):
                if key not in body:
                    return f"Not authenticated: {key} is missing"
            if not isinstance(body["requestTime"], int) or isinstance(body["requestTime"], bool):
                return "Not authenticated: requestTime must be an integer (milliseconds)"
            if body["clientId"] != self.client_id or body["apiKey"] != self.api_key:
                return "Not authenticated: unknown clientId or apiKey"
            expected = hashlib.sha1((self.api_key + self.client_id + self.api_secret).encode()).hexdigest()
            if not isinstance(body["sha"], str) or not hmac.compare_digest(body["sha"].lower(), expected):
                return "Not authenticated: invalid sha"
        elif "apiSecret" in body:
            # Seed 001's v3 body form: key, secret and owner travel in the body (server to server).
            for key in ("apiKey", "owner"):
                if key not in body:
                    return f"Not authenticated: {key} is missing"
            if body["apiKey"] != self.api_key or not hmac.compare_digest(str(body["apiSecret"]), self.api_secret):
                return "Not authenticated: invalid apiKey or apiSecret"
        else:
            return "Not authenticated: no credentials (expected sha or apiSecret)"
        if not isinstance(body.get("owner"), str) or normalise_email(body["owner"]) != normalise_email(self.owner):
            return "Not authenticated: owner is not a user of this account"
        return None

    def _classic_body(self, request: httpx.Request) -> dict[str, Any] | httpx.Response:
        """The request's JSON object when its credentials hold, else the failure to answer with."""
        body = self._json_object(request)
        if body is None:
            return _fail("Request body must be a JSON object")
        problem = self._credentials_problem(body)
        if problem is not None:
            self.count("auth_failed")
            return _fail(problem)
        return body

    # -- validation ---------------------------------------------------------------------------------

    @staticmethod
    def _contact_problem(contact: Any) -> str | None:
        if not isinstance(contact, dict):
            return "contact is required and must be an object"
        email = contact.get("email")
        if email in (None, ""):
            return "contact.email is required"
        if not is_email(email):
            return f"contact.email is not a valid email address: {email!r}"
        if "address" in contact and contact["address"] is not None and not isinstance(contact["address"], dict):
            return "contact.address must be an object"
        return None

    @staticmethod
    def _tags_problem(item: dict[str, Any]) -> str | None:
        for key in ("tags", "removeTags"):
            tags = item.get(key)
            if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
                return f"{key} must be a list of strings"
        props = item.get("properties")
        if props is not None and not isinstance(props, dict):
            return "properties must be an object"
        return None

    def _apply_upsert_item(self, item: dict[str, Any]) -> tuple[str, bool]:
        return self.upsert_contact(
            item["contact"], item.get("tags") or (), item.get("properties"), item.get("removeTags") or ()
        )

    @staticmethod
    def event_problem(email: Any, event: Any, allowed_types: frozenset[str] = EVENT_TYPES) -> str | None:
        """Why an external event is invalid, or None. Shared with the Datatalks sandbox."""
        if email in (None, ""):
            return "email is required"
        if not is_email(email):
            return f"email is not a valid email address: {email!r}"
        if not isinstance(event, dict):
            return "contactEvent is required and must be an object"
        event_type = event.get("contactExtEventType")
        if event_type in (None, ""):
            return "contactExtEventType is required"
        if event_type not in allowed_types:
            return f"contactExtEventType {event_type!r} is not a valid event type"
        value = event.get("value")
        if value is not None and not is_number(value):
            return f"value must be numeric without a currency symbol, got {value!r}"
        date = event.get("date")
        if date is not None:
            if isinstance(date, bool) or not isinstance(date, int):
                return "date must be an integer timestamp in milliseconds"
            if date < _MIN_EVENT_DATE_MS:
                return f"date {date} looks like seconds; SALESmanago expects milliseconds"
        for key in event:
            n = detail_index(key)
            if n is not None and not 1 <= n <= MAX_EVENT_DETAILS:
                return f"{key} is not allowed: details run from detail1 to detail{MAX_EVENT_DETAILS}"
        return None

    @staticmethod
    def _normalise_seed_event(body: dict[str, Any]) -> tuple[Any, Any]:
        """Return ``(email, contactEvent)`` from either the classic or seed 001's v3 event shape.

        Classic: ``{"email", "contactEvent": {...}}``. Seed 001: ``{"contact": {"email"}, "event":
        {"type", "details", "parameters", ...}}``; mapped onto the classic fields so both land in the
        same ``events`` list.
        """
        if "contactEvent" in body or "event" not in body:
            return body.get("email"), body.get("contactEvent")
        given = body.get("contact")
        contact: dict[str, Any] = given if isinstance(given, dict) else {}
        seed_event = body["event"]
        if not isinstance(seed_event, dict):
            return contact.get("email"), seed_event
        event = {k: v for k, v in seed_event.items() if k not in ("type", "details")}
        event["contactExtEventType"] = seed_event.get("type")
        if "details" in seed_event:
            event["description"] = seed_event["details"]
        return contact.get("email") or body.get("email"), event

    # -- classic handlers -----------------------------------------------------------------------------

    def _contact_upsert(self, request: httpx.Request) -> httpx.Response:
        body = self._classic_body(request)
        if isinstance(body, httpx.Response):
            return body
        problem = self._contact_problem(body.get("contact")) or self._tags_problem(body)
        if problem is not None:
            return _fail(problem)
        contact_id, _created = self._apply_upsert_item(body)
        # {success, message[], contactId}: tomaszcekalo/SalesManago, SalesManago/Responses/ContactIdResponse.cs.
        return _ok(contactId=contact_id)

    def _contact_batchupsert(self, request: httpx.Request) -> httpx.Response:
        body = self._classic_body(request)
        if isinstance(body, httpx.Response):
            return body
        items = body.get("upsertDetails")
        if not isinstance(items, list) or not items:
            return _fail("upsertDetails is required and must be a non-empty list")
        crash_after = self._take_crash()
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        for index, item in enumerate(items):
            if crash_after is not None and index >= crash_after:
                return self._crash_response(crash_after)
            email: str | None
            problem: str | None
            if not isinstance(item, dict):
                problem, email = "item must be an object", None
            else:
                problem = self._contact_problem(item.get("contact")) or self._tags_problem(item)
                contact = item.get("contact")
                email = contact.get("email") if isinstance(contact, dict) else None
            if problem is not None:
                results.append({"email": email, "success": False, "message": problem})
                failures.append(f"upsertDetails[{index}]: {problem}")
                continue
            assert isinstance(email, str)  # _contact_problem found none
            contact_id, created = self._apply_upsert_item(item)
            results.append(
                {"email": normalise_email(email), "success": True, "contactId": contact_id, "created": created}
            )
        if crash_after is not None and crash_after >= len(items):
            return self._crash_response(len(items))
        # The answer as SALESmanago's public clients model it (tomaszcekalo/SalesManago,
        # SalesManago/Responses/ContactIdsResponse.cs: success, message[], contactIds{email: id}): no
        # per-item array; a refused item is simply missing from contactIds, its problem in message.
        return _ok(message=failures, contactIds={r["email"]: r["contactId"] for r in results if r["success"]})

    def _contact_delete(self, request: httpx.Request) -> httpx.Response:
        body = self._classic_body(request)
        if isinstance(body, httpx.Response):
            return body
        email = body.get("email")
        if email is None and isinstance(body.get("contact"), dict):
            email = body["contact"].get("email")
        if email in (None, ""):
            return _fail("email is required")
        if not isinstance(email, str) or not is_email(email):
            return _fail(f"email is not a valid email address: {email!r}")
        self.delete_contact(email)
        # [unconfirmed] the answer: no public client models more than BaseResponse {success, message[]}.
        return _ok()

    def _contact_basic(self, request: httpx.Request) -> httpx.Response:
        body = self._classic_body(request)
        if isinstance(body, httpx.Response):
            return body
        emails = body.get("email")
        if isinstance(emails, str):
            emails = [emails]
        if not isinstance(emails, list) or not emails or not all(isinstance(e, str) for e in emails):
            return _fail("email is required: a list of email addresses")
        if len(emails) > MAX_BASIC_EMAILS:
            return _fail(f"too many emails: {len(emails)} > {MAX_BASIC_EMAILS} per call")
        contacts = [c for c in (self.find_contact(e) for e in emails) if c is not None]
        # {success, message[], contacts[...]}: tomaszcekalo/SalesManago, SalesManago/Responses/ContactBasicExportResponse.cs.
        return _ok(contacts=contacts)

    def _add_event(self, request: httpx.Request) -> httpx.Response:
        body = self._classic_body(request)
        if isinstance(body, httpx.Response):
            return body
        email, event = self._normalise_seed_event(body)
        problem = self.event_problem(email, event)
        if problem is not None:
            return _fail(problem)
        stored = self.add_event(email, event)
        # {success, message[], eventId}: tomaszcekalo/SalesManago, SalesManago/Responses/EventIdResponse.cs.
        return _ok(eventId=stored["eventId"])

    def _batch_add_events(self, request: httpx.Request) -> httpx.Response:
        body = self._classic_body(request)
        if isinstance(body, httpx.Response):
            return body
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return _fail("events is required and must be a non-empty list")
        if len(events) > MAX_BATCH_EVENTS:
            # The documented limit rejects the whole call: nothing is applied.
            return _fail(f"too many events: {len(events)} > {MAX_BATCH_EVENTS} per call")
        crash_after = self._take_crash()
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        for index, item in enumerate(events):
            if crash_after is not None and index >= crash_after:
                return self._crash_response(crash_after)
            email: str | None
            problem: str | None
            if not isinstance(item, dict):
                problem, email, event = "item must be an object", None, None
            else:
                email, event = item.get("email"), item.get("contactEvent")
                problem = self.event_problem(email, event)
            if problem is not None:
                results.append({"email": email, "success": False, "message": problem})
                failures.append(f"events[{index}]: {problem}")
                continue
            assert isinstance(email, str) and isinstance(event, dict)  # event_problem found none
            stored = self.add_event(email, event)
            results.append({"email": stored["email"], "success": True, "eventId": stored["eventId"]})
        if crash_after is not None and crash_after >= len(events):
            return self._crash_response(len(events))
        # The answer as SALESmanago's public clients model it (tomaszcekalo/SalesManago,
        # SalesManago/Responses/BatchAddContactExtEventResponse.cs): counts of created and failed events
        # and the emails whose events failed, no per-item array and no event ids. Each event is judged
        # on its own, so an email can be in failedContacts while another of its events was created.
        failed_contacts: list[str] = []
        for r in results:
            if not r["success"]:
                shown = normalise_email(r["email"]) if isinstance(r["email"], str) else r["email"]
                if shown not in failed_contacts:
                    failed_contacts.append(shown)
        created = sum(1 for r in results if r["success"])
        return _ok(
            message=failures,
            createdAmount=created,
            failedAmount=len(results) - created,
            failedContacts=failed_contacts,
        )

    # -- v3 catalog -------------------------------------------------------------------------------------

    def _v3_auth(self, request: httpx.Request) -> httpx.Response | None:
        key = request.headers.get("API-KEY")
        if key is None or not hmac.compare_digest(key, self.v3_api_key):
            self.count("auth_failed")
            body = {"messages": ["Invalid or missing API-KEY header"], "reasonCode": self.REASON_AUTH}
            return json_response(401, body)
        return None

    def _product_problems(self, index: int, product: Any) -> list[tuple[int, str]]:
        where = f"products[{index}]"
        if not isinstance(product, dict):
            return [(self.REASON_VALIDATION, f"{where}: must be an object")]
        problems: list[tuple[int, str]] = []
        pid = product.get("productId")
        if pid in (None, "") or isinstance(pid, bool) or not isinstance(pid, str | int):
            problems.append((self.REASON_VALIDATION, f"{where}.productId: required (string)"))
        if not isinstance(product.get("name"), str) or not product["name"]:
            problems.append((self.REASON_VALIDATION, f"{where}.name: required (string)"))
        for key in ("price", "discountPrice"):
            if product.get(key) is not None and not is_number(product[key]):
                problems.append((self.REASON_VALIDATION, f"{where}.{key}: must be numeric"))
        quantity = product.get("quantity")
        if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int)):
            problems.append((self.REASON_VALIDATION, f"{where}.quantity: must be an integer"))
        for key in ("available", "active"):
            if product.get(key) is not None and not isinstance(product[key], bool):
                problems.append((self.REASON_VALIDATION, f"{where}.{key}: must be a boolean"))
        return problems

    def _product_upsert(self, request: httpx.Request) -> httpx.Response:
        denied = self._v3_auth(request)
        if denied is not None:
            return denied
        body = self._json_object(request)
        if body is None:
            return _v3_problems([(self.REASON_VALIDATION, "request body must be a JSON object")])
        catalog_id = body.get("catalogId")
        if not isinstance(catalog_id, str) or not catalog_id:
            return _v3_problems([(self.REASON_VALIDATION, "catalogId: required (string)")])
        if self._strict_catalogs and catalog_id not in self.catalogs:
            return _v3_problems([(self.REASON_VALIDATION, f"catalogId: catalog {catalog_id!r} does not exist")])
        products = body.get("products")
        if not isinstance(products, list) or not products:
            return _v3_problems([(self.REASON_VALIDATION, "products: required, a non-empty list")])
        if len(products) > MAX_PRODUCTS_PER_CALL:
            return _v3_problems(
                [(self.REASON_TOO_MANY, f"products: {len(products)} > {MAX_PRODUCTS_PER_CALL} per call")]
            )
        # All or nothing: one bad product rejects the call, every problem listed, nothing applied.
        problems = [p for i, product in enumerate(products) for p in self._product_problems(i, product)]
        if problems:
            return _v3_problems(problems)
        crash_after = self._take_crash()
        applied: list[str] = []
        for index, product in enumerate(products):
            if crash_after is not None and index >= crash_after:
                return self._crash_response(crash_after, v3=True)
            self.upsert_product(catalog_id, product)
            applied.append(str(product["productId"]))
        if crash_after is not None:
            return self._crash_response(len(products), v3=True)
        # [unconfirmed] the 2xx shape: the C# client's ProductIdsResponse.cs ({productIds}) is the nearest
        # public model; the engine reads nothing from it but the status.
        return json_response(200, {"catalogId": catalog_id, "productIds": applied})

    def _catalog_list(self, request: httpx.Request) -> httpx.Response:
        denied = self._v3_auth(request)
        if denied is not None:
            return denied
        with self._state_lock:
            return json_response(200, {"catalogs": [dict(c) for c in self.catalogs.values()]})
