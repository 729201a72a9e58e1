"""Webhooks received: verify that a vendor sent them, then read what they say, by the vendor's ``webhooks`` block.

Two ways of proving the sender, as vendors do it:

- ``svix`` (Trackstar): the svix library checks the ``svix-signature`` over id, timestamp and body with the
  endpoint's ``whsec_`` secret, and refuses a timestamp more than five minutes off (replays of old captures).
  The ``svix-id`` is the event's id: the same delivery retried by Svix is stored once.
- ``path_token`` (Salestrekker, which signs nothing): the URL we gave the vendor carries a secret token,
  compared in constant time. The body has no delivery id and no time (``{id, event}``): the same deal moving
  stage twice sends the same body twice, and a digest of the body as the id would drop the second change. So
  every delivery is its own event (a digest of the body plus a random part); a notice the vendor repeats costs
  at most one more read by id, since applying one re-reads the object and pending notices of one object are
  read once (``engine.read.events``).

``receive`` returns a ``ReceivedEvent`` or raises ``WebhookRejected`` (with the HTTP status to answer); it never
logs or returns the secret, and the body is parsed only after the signature holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from svix.webhooks import Webhook, WebhookVerificationError

from .errors import WebhookRejected
from .spec import ConnectorSpec, WebhooksSpec

#: Largest webhook body accepted (Trackstar truncates bigger payloads itself: ``data_truncated``).
MAX_BODY_BYTES = 1_000_000


@dataclass(frozen=True)
class ReceivedEvent:
    """One verified webhook, as stored: ``stream`` is the stream it changes (``None``: kept, not applied)."""

    connector: str
    event_id: str
    event_type: str
    connection_id: str | None
    stream: str | None
    object_id: str | None
    payload: dict[str, Any]


def receive(
    spec: ConnectorSpec, secret: str, body: bytes, headers: Mapping[str, str], *, path_token: str | None = None
) -> ReceivedEvent:
    """Verify and read one webhook of ``spec``'s vendor. ``secret`` is the value of ``webhooks.verify.secret``."""
    hooks = spec.webhooks
    if hooks is None:
        raise WebhookRejected(f"connector '{spec.name}' takes no webhooks", 404)
    if not secret:
        # A receiver without its secret must refuse everything, not accept everything.
        raise WebhookRejected(f"{spec.name}: {hooks.verify.secret.env} is not set; webhooks are refused", 503)
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected(f"{spec.name}: webhook body over {MAX_BODY_BYTES} bytes", 413)
    lowered = {k.lower(): v for k, v in headers.items()}
    if hooks.verify.type == "svix":
        try:
            Webhook(secret).verify(body, lowered)
        except WebhookVerificationError as exc:
            # The library's reasons ("No matching signature found", "Message timestamp too old") name no secret.
            raise WebhookRejected(f"{spec.name}: webhook refused: {exc}", 401) from None
        event_id = lowered.get("svix-id") or lowered.get("webhook-id") or ""
    else:
        if path_token is None or not hmac.compare_digest(path_token.encode(), secret.encode()):
            raise WebhookRejected(f"{spec.name}: webhook refused: wrong path token", 401)
        event_id = ""
    payload = _json_object(spec.name, body)
    if not event_id:
        event_id = f"sha256:{hashlib.sha256(body).hexdigest()[:32]}:{uuid.uuid4().hex}"
    return _read(spec.name, hooks, event_id, payload)


def _json_object(connector: str, body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected(f"{connector}: webhook body is not JSON", 400) from None
    if not isinstance(payload, dict):
        raise WebhookRejected(f"{connector}: webhook body is not a JSON object", 400)
    return payload


def _read(connector: str, hooks: WebhooksSpec, event_id: str, payload: dict[str, Any]) -> ReceivedEvent:
    event_type = payload.get(hooks.event_type_field)
    if not isinstance(event_type, str) or not event_type:
        raise WebhookRejected(f"{connector}: webhook has no '{hooks.event_type_field}'", 400)
    connection = payload.get(hooks.connection_field) if hooks.connection_field else None
    object_id: Any = None
    if hooks.data_field is not None and isinstance(payload.get(hooks.data_field), dict):
        object_id = payload[hooks.data_field].get("id")
    if hooks.id_field is not None:
        object_id = payload.get(hooks.id_field)
    return ReceivedEvent(
        connector=connector,
        event_id=event_id[:200],
        event_type=event_type[:200],
        connection_id=str(connection) if isinstance(connection, str | int) else None,
        stream=hooks.stream_for(event_type),
        object_id=str(object_id) if isinstance(object_id, str | int) and not isinstance(object_id, bool) else None,
        payload=payload,
    )
