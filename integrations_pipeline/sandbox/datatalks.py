"""Datatalks sandbox: the SALESmanago proxy on AWS API Gateway, as a reverse-ETL target.

Seed 002 gives the operations and fields; every body is ``{"data": ..., "group_key": "..."}``. Each
endpoint is served under both the new base path ``/v1`` (``https://api.datatalks.se/v1``) and the
deprecated API Gateway stage ``/Production``, including the two the seed only lists on the deprecated
host (``DELETE /contacts``, ``GET /contact/{sm_id}``):

- ``POST /contacts`` upsert, ``DELETE /contacts`` delete, ``POST /events`` external event,
  ``POST /products`` product feed, ``GET /contact/{sm_id}``, ``GET /contact_by_email?email=``.

Requests must carry an AWS Signature V4 (service ``execute-api``) made with the configured key pair;
the sandbox recomputes it with httpx-auth's own canonicalisation, so a request signed by
``httpx_auth.AWS4Auth`` verifies byte for byte, and anything else (wrong key, wrong secret, a changed
body, an ``x-amz-date`` more than 15 minutes away from the sandbox clock) is a 403 in API Gateway's
``{"message": ...}`` form.

With ``forward_to=SalesmanagoSandbox(...)`` accepted operations land in that sandbox's state, as the
real proxy forwards to SALESmanago; otherwise a private SALESmanago store keeps them. Either way the
same attribute names read back state: ``contacts``, ``events``, ``products``, ``deleted``, and this
proxy's own ``write_calls``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import httpx_auth
from httpx_auth import _aws as aws_signing  # httpx-auth's SigV4 helpers: pinned in pyproject (0.23.1)

from .base import VendorSandbox, json_response
from .salesmanago import SalesmanagoSandbox, detail_index, is_email, is_number

PREFIXES = ("/v1", "/Production")

# Seed 002's event types: 13 of SALESmanago's, the proxy accepts no others.
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "PURCHASE", "CART", "VISIT", "PHONE_CALL", "OTHER", "RESERVATION", "CANCELLED", "ACTIVATION",
        "MEETING", "OFFER", "DOWNLOAD", "LOGIN", "TRANSACTION",
    }
)  # fmt: skip

# Seed 002's product fields: name → (required, kind, max length). Kinds: "str" (length in
# characters), "int" (JSON integer; an integral float such as 3.0 is accepted), "decimal" (JSON number
# or numeric string, since decimals are often serialised as strings). Any other field is accepted as is.
PRODUCT_FIELDS: dict[str, tuple[bool, str, int | None]] = {
    "id": (True, "str", 32),
    "name": (True, "str", 100),
    "description": (True, "str", 1024),
    "category": (True, "str", 255),
    "sub_category": (False, "str", 512),
    "brand": (True, "str", 512),
    "sex": (False, "int", None),
    "price": (False, "decimal", None),
    "special_price": (False, "decimal", None),
    **{f"detail{i}": (False, "str", 512) for i in range(1, 6)},
    "url": (True, "str", 512),
    "image_url": (True, "str", 512),
    "image2_url": (False, "str", 128),
    "stock_available": (False, "int", None),
    "color": (False, "str", 40),
    "season": (False, "str", 40),
}

CONTACT_FIELDS = ("email", "fax", "name", "phone", "company", "streetAddress", "zipCode", "city", "country")
_ADDRESS_FIELDS = ("streetAddress", "zipCode", "city", "country")
EVENT_STRING_FIELDS = ("description", "products", "location", "externalId", "shopDomain")

MAX_CLOCK_SKEW = 15 * 60  # SigV4: x-amz-date must be within 15 minutes of the server's clock
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit
AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-fA-F]+)\s*$"
)
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)


# API Gateway's error body {"message"} (AWS API Gateway docs, "Gateway responses"); the 400 bodies below
# reuse it [unconfirmed]: Datatalks documents no error body.
def _forbidden(message: str) -> httpx.Response:
    return json_response(403, {"message": message})


def _bad_request(message: str, **extra: Any) -> httpx.Response:
    return json_response(400, {"message": message, **extra})


def sigv4_signature(
    request: httpx.Request, signed_headers: list[str], secret_key: str, region: str, service: str
) -> str:
    """The Signature V4 that ``httpx_auth.AWS4Auth`` would put on ``request`` at its ``x-amz-date``.

    AWS4Auth stamps the current time inside ``auth_flow``, so it cannot re-sign at the client's
    date; instead this rebuilds the request from the headers the client listed and runs the same
    httpx-auth helpers AWS4Auth runs (header canonicalisation, canonical request, string to sign,
    signing key). The payload hash is computed from the body actually received, not taken from the
    client's ``x-amz-content-sha256``, so a body changed after signing fails.
    """
    body = request.content
    listed = httpx.Headers({name: request.headers[name] for name in signed_headers})
    # Canonical headers from the client's values as received (a changed x-amz-content-sha256 counts)...
    canonical_headers, signed = aws_signing.canonical_and_signed_headers(listed, set(signed_headers))
    rebuilt = httpx.Request(request.method, request.url, headers=listed, content=body)
    # ...but the payload line of the canonical request hashes the body actually received.
    rebuilt.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    signer = httpx_auth.AWS4Auth(access_id="-", secret_key=secret_key, region=region, service=service)
    canonical_request = signer._canonical_request(rebuilt, canonical_headers, signed)
    date = request.headers["x-amz-date"]
    scope = f"{date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = aws_signing._string_to_sign(rebuilt, canonical_request, scope)
    key = aws_signing._signing_key(secret_key, region, service, date[:8])
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _email_problem(email: object) -> str | None:
    """Why ``data.email`` is unusable for a contact call, or None."""
    if email in (None, ""):
        return "data.email is required"
    if not is_email(email):
        return f"data.email is not a valid email address: {email!r}"
    return None


class DatatalksSandbox(VendorSandbox):
    """Datatalks v1 + deprecated stage; SigV4-verified; forwards to a SalesmanagoSandbox if given."""

    name = "datatalks"

    def __init__(
        self,
        access_key_id: str = "AKIASANDBOXDATATALKS",
        secret_access_key: str = "sandbox-dt-secret",
        region: str = "eu-west-1",
        group_keys: Iterable[str] = frozenset({"sandbox-group"}),
        forward_to: SalesmanagoSandbox | None = None,
        *,
        service: str = "execute-api",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.service = service
        self.group_keys = set(group_keys)
        self.clock = clock  # SigV4 freshness is judged against this clock
        self.forward_to = forward_to
        # Without a target the proxy keeps state in a private SALESmanago store (no budget), so both
        # modes share one implementation and one set of attribute names.
        self._store = forward_to if forward_to is not None else SalesmanagoSandbox(requests_per_hour=None, clock=clock)
        self.write_calls = 0
        self._write_lock = threading.Lock()
        self._fail_batch_after: int | None = None

        for prefix in PREFIXES:
            self.routes[("POST", f"{prefix}/contacts")] = self._signed(self._upsert_contact, write=True)
            self.routes[("DELETE", f"{prefix}/contacts")] = self._signed(self._delete_contact, write=True)
            self.routes[("POST", f"{prefix}/events")] = self._signed(self._create_event, write=True)
            self.routes[("POST", f"{prefix}/products")] = self._signed(self._create_products, write=True)
            self.routes[("GET", f"{prefix}/contact_by_email")] = self._signed(self._contact_by_email)
        self._get_by_id = self._signed(self._contact_by_id)

    def environment(self, base_url: str) -> dict[str, str]:
        """Env vars pointing the datatalks connector (new ``/v1`` base path) at this sandbox."""
        return {
            "DATATALKS_BASE_URL": base_url.rstrip("/") + "/v1",
            "DATATALKS_AWS_ACCESS_KEY_ID": self.access_key_id,
            "DATATALKS_AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "DATATALKS_GROUP_KEY": sorted(self.group_keys)[0],
        }

    # -- state, read back through the store (the forward target or the private one) --------------

    @property
    def contacts(self) -> dict[str, dict[str, Any]]:
        return self._store.contacts

    @property
    def events(self) -> list[dict[str, Any]]:
        return self._store.events

    @property
    def products(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self._store.products

    @property
    def deleted(self) -> set[str]:
        return self._store.deleted

    def fail_batch_after(self, n: int) -> None:
        """The next ``POST /products`` applies only its first ``n`` products and then answers 500."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._fail_batch_after = n

    # -- routing ----------------------------------------------------------------------------------

    def route(self, request: httpx.Request):
        handler = super().route(request)
        if handler is not None or request.method != "GET":
            return handler
        for prefix in PREFIXES:
            head = f"{prefix}/contact/"
            if request.url.path.startswith(head) and len(request.url.path) > len(head):
                return self._get_by_id
        return None

    def _signed(self, handler: Callable[[httpx.Request], httpx.Response], write: bool = False):
        def wrapped(request: httpx.Request) -> httpx.Response:
            denied = self.verify_signature(request)
            if denied is not None:
                self.count("auth_failed")
                return denied
            if write:
                # Counted after authentication: API Gateway refuses unsigned calls before the proxy
                # sees them, so those never "attempted to change state".
                with self._write_lock:
                    self.write_calls += 1
                    number = self.write_calls
                return self.run_write(number, handler, request)
            return handler(request)

        return wrapped

    # -- SigV4 -------------------------------------------------------------------------------------

    def verify_signature(self, request: httpx.Request) -> httpx.Response | None:
        """None if ``request`` carries a valid SigV4 for this key pair, else API Gateway's 403."""
        authorization = request.headers.get("authorization")
        if not authorization:
            return _forbidden("Missing Authentication Token")
        m = _AUTH_RE.match(authorization)
        if m is None:
            return _forbidden("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.")
        parts = m.group("cred").split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            return _forbidden("Credential should be of the form <key id>/<date>/<region>/<service>/aws4_request.")
        key_id, scope_date, region, service, _ = parts
        if not hmac.compare_digest(key_id, self.access_key_id):
            return _forbidden("The security token included in the request is invalid.")
        if region != self.region:
            return _forbidden(f"Credential should be scoped to a valid region, not '{region}'.")
        if service != self.service:
            return _forbidden(f"Credential should be scoped to correct service: '{self.service}'.")
        signed_headers = m.group("signed").split(";")
        if "host" not in signed_headers or "x-amz-date" not in signed_headers:
            return _forbidden("'Host' and 'X-Amz-Date' must be signed headers.")
        missing = [h for h in signed_headers if h not in request.headers]
        if missing:
            return _forbidden(f"Signed header(s) not present in the request: {', '.join(missing)}.")
        amz_date = request.headers["x-amz-date"]
        try:
            signed_at = dt.datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            return _forbidden(f"Invalid X-Amz-Date '{amz_date}', expected yyyyMMddTHHmmssZ.")
        if scope_date != amz_date[:8]:
            return _forbidden("Credential date does not match X-Amz-Date.")
        now = self.clock()
        if signed_at < now - MAX_CLOCK_SKEW:
            earliest = _amz(now - MAX_CLOCK_SKEW)
            return _forbidden(f"Signature expired: {amz_date} is now earlier than {earliest} ({_amz(now)} - 15 min.)")
        if signed_at > now + MAX_CLOCK_SKEW:
            latest = _amz(now + MAX_CLOCK_SKEW)
            return _forbidden(
                f"Signature not yet current: {amz_date} is still later than {latest} ({_amz(now)} + 15 min.)"
            )
        expected = sigv4_signature(request, signed_headers, self.secret_access_key, self.region, self.service)
        if not hmac.compare_digest(expected, m.group("sig").lower()):
            return _forbidden(SIGNATURE_MISMATCH)
        return None

    # -- envelope -----------------------------------------------------------------------------------

    def _envelope(self, request: httpx.Request, data_kind: type) -> tuple[Any, str | None, httpx.Response | None]:
        """Parse ``{"data": ..., "group_key": ...}``; returns (data, group_key, error response)."""
        if len(request.content) > MAX_PAYLOAD_BYTES:
            return None, None, json_response(413, {"message": "Request Too Long"})
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            return None, None, _bad_request("Invalid request body: not JSON")
        if not isinstance(body, dict):
            return None, None, _bad_request('Invalid request body: expected {"data": ..., "group_key": ...}')
        group_key = body.get("group_key")
        if not isinstance(group_key, str) or not group_key:
            return None, None, _bad_request("group_key is required")
        # A well-formed but unknown group key is an authorisation failure (this key pair may not write
        # to that SALESmanago account), hence 403 rather than 400.
        if group_key not in self.group_keys:
            return None, None, _forbidden(f"Unknown group_key '{group_key}'")
        data = body.get("data")
        if not isinstance(data, data_kind):
            expected = "a list of products" if data_kind is list else "an object"
            return None, None, _bad_request(f"data is required and must be {expected}")
        return data, group_key, None

    @staticmethod
    def _string_problems(data: dict[str, Any], fields: Iterable[str]) -> str | None:
        for name in fields:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                return f"data.{name} must be a string"
        return None

    # -- handlers -------------------------------------------------------------------------------------

    def _upsert_contact(self, request: httpx.Request) -> httpx.Response:
        data, _group, error = self._envelope(request, dict)
        if error is not None:
            return error
        email = data.get("email")
        if (problem := _email_problem(email)) is not None:
            return _bad_request(problem)
        if problem := self._string_problems(data, CONTACT_FIELDS):
            return _bad_request(problem)
        # Seed 002's contact is flat; SALESmanago nests the address. Fields beyond the seed's list
        # ("some additional fields are available") travel as SALESmanago contact properties.
        contact = {k: data[k] for k in ("email", "name", "phone", "fax", "company") if data.get(k) is not None}
        address = {k: data[k] for k in _ADDRESS_FIELDS if data.get(k) is not None}
        if address:
            contact["address"] = address
        extra = {k: v for k, v in data.items() if k not in CONTACT_FIELDS}
        contact_id, created = self._store.upsert_contact(contact, properties=extra)
        self._count_forwarded_write()
        # [unconfirmed] the answer: seed 002 documents requests only; SALESmanago's fields, as forwarded.
        return json_response(200, {"success": True, "message": [], "contactId": contact_id, "created": created})

    def _delete_contact(self, request: httpx.Request) -> httpx.Response:
        data, _group, error = self._envelope(request, dict)
        if error is not None:
            return error
        email = data.get("email")
        if (problem := _email_problem(email)) is not None:
            return _bad_request(problem)
        existed = self._store.delete_contact(email)
        self._count_forwarded_write()
        # [unconfirmed] the answer (seed 002 documents the request only).
        return json_response(200, {"success": True, "message": [], "existed": existed})

    def _create_event(self, request: httpx.Request) -> httpx.Response:
        data, _group, error = self._envelope(request, dict)
        if error is not None:
            return error
        event = {k: v for k, v in data.items() if k != "email"}
        problem = SalesmanagoSandbox.event_problem(data.get("email"), event, EVENT_TYPES)
        if problem is None:
            problem = self._string_problems(data, EVENT_STRING_FIELDS)
        if problem is None:
            # Seed 002: "Up to 20 details can be added to an event" (its field list stops at detail10);
            # event_problem already refused numbers outside 1..20, and details must be strings.
            details = [k for k in data if detail_index(k) is not None]
            problem = self._string_problems(data, details)
        if problem is not None:
            return _bad_request(problem if problem.startswith("data.") else f"data.{problem}")
        stored = self._store.add_event(data["email"], event)
        self._count_forwarded_write()
        # [unconfirmed] the answer (seed 002 documents the request only).
        answer = {"success": True, "message": [], "eventId": stored["eventId"], "contactId": stored["contactId"]}
        return json_response(200, answer)

    @staticmethod
    def product_errors(index: int, product: Any) -> list[dict[str, Any]]:
        """Every problem with one product, as ``{"index", "field", "reason"}`` entries."""
        if not isinstance(product, dict):
            return [{"index": index, "field": None, "reason": "must be an object"}]
        errors: list[dict[str, Any]] = []
        for name, (required, kind, max_len) in PRODUCT_FIELDS.items():
            value = product.get(name)
            if value is None or (kind == "str" and value == ""):
                if required:
                    errors.append({"index": index, "field": name, "reason": "required"})
                continue
            if kind == "str":
                if not isinstance(value, str):
                    errors.append({"index": index, "field": name, "reason": "must be a string"})
                elif max_len is not None and len(value) > max_len:
                    reason = f"longer than {max_len} characters ({len(value)})"
                    errors.append({"index": index, "field": name, "reason": reason})
            elif kind == "int":
                integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
                if isinstance(value, bool) or not integral:
                    errors.append({"index": index, "field": name, "reason": "must be an integer"})
            elif kind == "decimal" and not is_number(value):
                errors.append({"index": index, "field": name, "reason": "must be a decimal number"})
        return errors

    def _create_products(self, request: httpx.Request) -> httpx.Response:
        data, group_key, error = self._envelope(request, list)
        if error is not None:
            return error
        if not data:
            return _bad_request("data must list at least one product")
        # Choice (the seed is silent): the call is all or nothing. Every product is validated first and
        # one bad product rejects the call with a 400 that lists every problem (index, field, reason),
        # so nothing half-applies and the sink can drop or fix exactly the listed rows and resend.
        errors = [e for i, product in enumerate(data) for e in self.product_errors(i, product)]
        if errors:
            return _bad_request(f"{len({e['index'] for e in errors})} invalid product(s)", errors=errors)
        with self._write_lock:
            crash_after, self._fail_batch_after = self._fail_batch_after, None
        applied: list[str] = []
        for index, product in enumerate(data):
            if crash_after is not None and index >= crash_after:
                break
            # SALESmanago keys products by (catalogId, productId); the group key selects the account's
            # catalog, so it stands in for the catalog id.
            self._store.upsert_product(str(group_key), {**product, "productId": product["id"]})
            applied.append(product["id"])
        self._count_forwarded_write()
        if crash_after is not None:
            self.count("5xx")
            return json_response(500, {"message": f"Internal server error after {len(applied)} product(s)"})
        # [unconfirmed] the answers of this endpoint, 2xx, 400 and 500 alike (seed 002 documents the request).
        return json_response(200, {"success": True, "message": [], "productIds": applied})

    def _contact_by_email(self, request: httpx.Request) -> httpx.Response:
        email = request.url.params.get("email")
        if not email:
            return _bad_request("query parameter email is required")
        return self._contact_answer(self._store.find_contact(email))

    def _contact_by_id(self, request: httpx.Request) -> httpx.Response:
        # Seed 002 "Get information about a Salesmanago contact": [GET] .../Production/contact/sm_id, the
        # SALESmanago contact id (contactId) in the path; served under /v1 too [unconfirmed], as the others.
        sm_id = request.url.path.rsplit("/", 1)[-1]
        return self._contact_answer(self._store.contact_by_id(sm_id))

    def _contact_answer(self, contact: dict[str, Any] | None) -> httpx.Response:
        # [unconfirmed] 404 for an unknown contact and the {data: ...} wrapper: seed 002 shows neither.
        if contact is None:
            return json_response(404, {"message": "Contact not found"})
        return json_response(200, {"data": contact})

    def _count_forwarded_write(self) -> None:
        # The proxy makes one SALESmanago call per accepted operation: the target counts it.
        if self.forward_to is not None:
            self.forward_to.record_write_call()


def _amz(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime(AMZ_DATE)
