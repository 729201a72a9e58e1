"""Trakor sandbox: the public push API (seed 004) as a reverse-ETL target.

Two endpoints under ``/api/public/v1``, both idempotent by name:

- ``POST /products {name (required, ≤ 255), description?, price? (default 0)}`` →
  ``{"id", "sku": "PRD-00042", "name", "created"}``;
- ``POST /parties {name (required, ≤ 255), contact_info?}`` → ``{"id", "name", "created"}``.

Seed 004: "re-sending the same record updates nothing and returns the existing entity", and "if a
product with the same name already exists ... the existing record is returned with created: false".
The sandbox takes that literally: a second POST with the same name but a different description or
price returns the existing record unchanged (``created: false``) and changes nothing. A sink that
needs to update a product's price cannot do it through this API.

Names match exactly (case-sensitive, no trimming): the seed gives no normalisation, and an exact
match is the conservative reading. Fields beyond the documented ones are ignored, not refused (the
seed lists none as forbidden). Status codes: 201 when created, 200 when the existing record is
returned; 400 bad JSON or schema (the message names the field), 401 missing/invalid ``X-API-KEY``,
403 organisation frozen, and injected faults from the base (500, timeouts, ...).

Tests read back ``products`` and ``parties`` (by name), ``write_calls`` and the base ``counts``.
"""

from __future__ import annotations

import hmac
import json
import math
import threading
import uuid
from typing import Any

import httpx

from .base import VendorSandbox, json_response

BASE_PATH = "/api/public/v1"
MAX_NAME = 255
_NS = uuid.UUID("0f6b3c58-7a43-4d1e-9f1e-7a4b0c0ffee0")


# [unconfirmed] the error body: seed 004 lists the statuses (400/401/403/500), not a body.
def _error(status: int, message: str) -> httpx.Response:
    return json_response(status, {"error": message})


class TrakorSandbox(VendorSandbox):
    """Trakor organisation: products and parties pushed by name."""

    name = "trakor"

    def __init__(self, api_key: str = "sandbox-trakor-key", frozen: bool = False) -> None:
        super().__init__()
        self.api_key = api_key
        self.frozen = frozen  # settable at any time: a frozen organisation answers 403
        self.products: dict[str, dict[str, Any]] = {}
        self.parties: dict[str, dict[str, Any]] = {}
        self.write_calls = 0
        self._state_lock = threading.Lock()
        self._next_sku = 1
        self.routes[("POST", f"{BASE_PATH}/products")] = self._guarded(self._create_product)
        self.routes[("POST", f"{BASE_PATH}/parties")] = self._guarded(self._create_party)

    def environment(self, base_url: str) -> dict[str, str]:
        """Env vars pointing the trakor connector at this sandbox."""
        return {"TRAKOR_BASE_URL": base_url.rstrip("/") + BASE_PATH, "TRAKOR_API_KEY": self.api_key}

    def _guarded(self, handler):
        def wrapped(request: httpx.Request) -> httpx.Response:
            # Every call that reaches the server logic "attempted to change state", including those
            # refused for auth, a frozen organisation or a bad body.
            with self._state_lock:
                self.write_calls += 1
                number = self.write_calls
            return self.run_write(number, lambda req: self._checked(req, handler), request)

        return wrapped

    def _checked(self, request: httpx.Request, handler) -> httpx.Response:
        """Authentication, the frozen flag and the JSON body, then ``handler``; seed 004 gives the statuses."""
        key = request.headers.get("x-api-key")
        if not key or not hmac.compare_digest(key, self.api_key):
            self.count("auth_failed")
            return _error(401, "Missing, invalid or revoked X-API-KEY")
        if self.frozen:
            return _error(403, "Organisation is frozen")
        try:
            body = json.loads(request.content or b"")
        except ValueError:
            return _error(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return _error(400, "Schema validation failed: body must be a JSON object")
        return handler(body)

    @staticmethod
    def _name_problem(body: dict[str, Any]) -> str | None:
        name = body.get("name")
        if name is None:
            return "name: required"
        if not isinstance(name, str):
            return "name: must be a string"
        if not name.strip():
            return "name: must not be empty"
        if len(name) > MAX_NAME:
            return f"name: at most {MAX_NAME} characters (got {len(name)})"
        return None

    @staticmethod
    def _optional_string_problem(body: dict[str, Any], field: str) -> str | None:
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            return f"{field}: must be a string"
        return None

    def _create_product(self, body: dict[str, Any]) -> httpx.Response:
        problem = self._name_problem(body) or self._optional_string_problem(body, "description")
        price = body.get("price")
        if problem is None and price is not None:
            if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
                problem = "price: must be a number"
        if problem is not None:
            return _error(400, f"Schema validation failed: {problem}")
        name = body["name"]
        with self._state_lock:
            existing = self.products.get(name)
            if existing is not None:
                # Idempotent by name: nothing is updated, even if description or price differ.
                return json_response(200, self._product_answer(existing, created=False))
            record = {
                "id": str(uuid.uuid5(_NS, f"product:{name}")),
                "sku": f"PRD-{self._next_sku:05d}",
                "name": name,
                "description": body.get("description"),
                "price": price if price is not None else 0,
            }
            self._next_sku += 1
            self.products[name] = record
        return json_response(201, self._product_answer(record, created=True))

    @staticmethod
    def _product_answer(record: dict[str, Any], created: bool) -> dict[str, Any]:
        return {"id": record["id"], "sku": record["sku"], "name": record["name"], "created": created}

    def _create_party(self, body: dict[str, Any]) -> httpx.Response:
        problem = self._name_problem(body) or self._optional_string_problem(body, "contact_info")
        if problem is not None:
            return _error(400, f"Schema validation failed: {problem}")
        name = body["name"]
        with self._state_lock:
            existing = self.parties.get(name)
            if existing is not None:
                return json_response(200, {"id": existing["id"], "name": name, "created": False})
            party_id = str(uuid.uuid5(_NS, f"party:{name}"))
            record = {"id": party_id, "name": name, "contact_info": body.get("contact_info")}
            self.parties[name] = record
        return json_response(201, {"id": record["id"], "name": name, "created": True})
