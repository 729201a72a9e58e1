"""The write side: validate, pack and send records to a connector's sinks, with an outcome per record.

A sink (``SinkSpec`` in the vendor's YAML) is one write endpoint. This module is the runtime, with no
notion of what was delivered before: the diff layer above decides *which* records to write and hands
them here. ``SinkWriter.write(records)``:

1. de-duplicates by the sink's key, keeping the last occurrence (a later record for a key supersedes
   an earlier one in the same run; sending both would waste a call and, for events, double one);
2. validates every record against the sink's field rules: a record that fails is rejected with its
   reasons (``name: longer than 255 characters (300)``) and the rest still go;
3. packs the valid records into ⌈n / batch_size⌉ calls and renders each body from the template;
4. reads per-record outcomes from each answer: SALESmanago batch ``result[i].success``; an
   all-or-nothing 400 that lists the bad items (Datatalks ``errors``, SALESmanago v3 ``problems``)
   rejects exactly those and resends the rest once; a single-record endpoint's 4xx rejects its record;
   fields named in ``response.keep`` (Trakor ``id``/``sku``/``created``) are kept on the outcome.

Retriable failures (429, 5xx, SALESmanago 503) are retried by ``VendorClient``. Fatal call-level
failures (401/403, SALESmanago's HTTP-200 "Not authenticated", a batch the vendor refuses as a whole,
exhausted retries) raise the client's error at once; ``exc.partial_report`` then holds the outcomes
of the calls that completed, so a caller can record what was delivered before the failure.

Secrets stay out of outcomes and errors: reasons are built from field names, types, lengths and the
vendor's own (redacted) messages, never from request bodies or headers.

Item-level errors of an all-or-nothing 400 are in the response body, which ``VendorClient`` keeps on
``RequestRejectedError.body``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import httpx

from ..auth import Credentials, dig
from ..client import VendorClient
from ..errors import AuthError, FatalError, RequestRejectedError, SyncError
from ..models import Secret
from ..spec import RECORD, RECORDS, ConnectorSpec, FieldRule, SinkSpec

Record = dict[str, Any]

_JSON_TYPES: dict[str, str] = {
    "str": "string",
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "dict": "object",
    "list": "array",
    "NoneType": "null",
}
# Statuses with which a single-record endpoint refuses *the record* (bad field, conflict; SALESmanago's
# success=false comes with 200). Others (404 no such path, 405, 413, ...) are a broken setup: they raise.
RECORD_REJECTION_STATUSES = frozenset({200, 400, 409, 422})
_ENUM_SHOWN = 15  # longer enums (SALESmanago: 37 event types) are summarised in reasons, not listed


# -- validation --------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value).__name__, type(value).__name__)


def _type_problem(rule: FieldRule, value: Any) -> str | None:
    """Why ``value`` is not of the rule's JSON type, or None."""
    kind = rule.type
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "integer":
        # An integral float (3.0) is an integer in JSON; bool is not a number even though Python says so.
        ok = not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    elif kind == "number":
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        if ok and not math.isfinite(value):
            return f"expected a finite number, got {value}"
    elif kind == "object":
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, list)
    return None if ok else f"expected {kind}, got {_json_type(value)}"


def _enum_text(values: list[Any]) -> str:
    if len(values) <= _ENUM_SHOWN:
        return "one of [" + ", ".join(str(v) for v in values) + "]"
    return f"one of the {len(values)} values listed in the sink spec"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_MISSING = object()


def _get(record: Any, path: str) -> Any:
    """The value at a dotted path, or ``_MISSING`` (distinct from an explicit null)."""
    node = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def validate_record(sink: SinkSpec, record: Any) -> list[str]:
    """Every reason ``record`` cannot be sent to ``sink``, each ``<field path>: <reason>``; [] if valid."""
    if not isinstance(record, dict):
        return [f"record: expected object, got {_json_type(record)}"]
    reasons: list[str] = []
    for path, rule in sink.fields.items():
        value = _get(record, path)
        if value is _MISSING or value is None:
            if rule.required:
                reasons.append(f"{path}: required field is missing")
            continue
        if rule.required and value == "":
            reasons.append(f"{path}: required field is empty")
            continue
        problem = _type_problem(rule, value)
        if problem:
            reasons.append(f"{path}: {problem}")
            continue
        if rule.max_length is not None and len(value) > rule.max_length:
            unit = "characters" if rule.type == "string" else "items"
            reasons.append(f"{path}: longer than {rule.max_length} {unit} ({len(value)})")
        if rule.enum is not None and value not in rule.enum:
            reasons.append(f"{path}: got {_shown(value)}, expected {_enum_text(rule.enum)}")
    if not sink.allow_extra_fields:
        reasons.extend(_unknown_fields(sink, record))
    return reasons


def _unknown_fields(sink: SinkSpec, record: dict[str, Any], prefix: str = "") -> list[str]:
    """Reasons for record paths that are neither a declared field nor on the way to one."""
    reasons: list[str] = []
    for name, value in record.items():
        path = f"{prefix}{name}"
        if path in sink.fields:
            continue
        if any(p.startswith(path + ".") for p in sink.fields):
            # An object implied by declared sub-fields (``contact`` for ``contact.email``).
            if isinstance(value, dict):
                reasons.extend(_unknown_fields(sink, value, path + "."))
            elif value is not None:
                reasons.append(f"{path}: expected object, got {_json_type(value)}")
            continue
        reasons.append(f"{path}: unknown field (not declared by the sink)")
    return reasons


# -- keys and packing --------------------------------------------------------------------------


def record_key(sink: SinkSpec, record: Any) -> Any:
    """The record's key value (``None`` if missing)."""
    if not isinstance(record, dict):
        return None
    value = _get(record, sink.key)
    return None if value is _MISSING else value


def _dedupe(sink: SinkSpec, indexed: Iterable[tuple[int, Any]]) -> tuple[list[tuple[int, Any]], int]:
    """Last occurrence per key wins, placed where that last occurrence was; keyless records all stay
    (validation rejects them). Keys compare as strings: the vendors store ids as text (1 == "1")."""
    items = list(indexed)
    last: dict[str, int] = {}
    for position, (_, record) in enumerate(items):
        key = record_key(sink, record)
        if key is not None:
            last[str(key)] = position
    kept = [
        (i, r)
        for position, (i, r) in enumerate(items)
        if (k := record_key(sink, r)) is None or last[str(k)] == position
    ]
    return kept, len(items) - len(kept)


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def pack(sink: SinkSpec, records: Iterable[Record]) -> list[list[Record]]:
    """The calls that would send ``records``: de-duplicated by key (last wins), then ⌈n / batch_size⌉
    chunks in order. Validation is separate (``validate_record``); ``SinkWriter`` does both."""
    kept, _ = _dedupe(sink, enumerate(records))
    return _chunks([r for _, r in kept], sink.batch_size)


# -- bodies ------------------------------------------------------------------------------------


def fill_template(template: Any, credentials: Credentials, values: Mapping[str, Any]) -> Any:
    """``template`` with every ``{env: NAME}`` (a ``Secret``) resolved and every string that is a key of
    ``values`` (a placeholder: ``$record``, ``$keys``, ...) replaced by its value. Values are inserted
    as they are, never searched for placeholders themselves (a record may hold the text "$record")."""

    def fill(node: Any) -> Any:
        if isinstance(node, Secret):
            return credentials.get(node.env)
        if isinstance(node, str) and node in values:
            return values[node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    return fill(template)


def render_body(sink: SinkSpec, records: Sequence[Record], credentials: Credentials) -> Any:
    """The request body for ``records``: ``$record``/``$records`` replaced, ``{env: NAME}`` resolved."""
    if sink.batch_size == 1:
        if len(records) != 1:
            raise ValueError(f"a single-record sink takes exactly one record per call, got {len(records)}")
        return fill_template(sink.body, credentials, {RECORD: records[0]})
    return fill_template(sink.body, credentials, {RECORDS: list(records)})


# -- reports -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one record. ``index`` is its position in the records given to ``write``.

    ``stage`` says who rejected it: ``validation`` (never sent) or ``vendor`` (the API refused it);
    ``response`` holds the fields the sink's ``response.keep`` names (Trakor id/sku/created).
    """

    index: int
    key: Any
    status: Literal["sent", "rejected"]
    reason: str | None = None
    response: dict[str, Any] | None = None
    stage: Literal["validation", "vendor"] | None = None


@dataclass
class WriteReport:
    """Outcomes of one ``write`` (one per record kept after de-duplication, in input order),
    the write calls made (logical calls; ``retries`` counts the client's extra attempts) and how
    many records a later record with the same key superseded."""

    sink: str
    outcomes: list[Outcome] = field(default_factory=list)
    calls: int = 0
    retries: int = 0
    superseded: int = 0

    @property
    def sent(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "sent"]

    @property
    def rejected(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "rejected"]

    def by_key(self) -> dict[Any, Outcome]:
        return {o.key: o for o in self.outcomes if o.key is not None}


# -- clients -----------------------------------------------------------------------------------


def sink_spec_for_client(spec: ConnectorSpec, sink: SinkSpec) -> ConnectorSpec:
    """The connector spec a sink's calls use: the sink's own auth and base URL, when it has them."""
    update: dict[str, Any] = {}
    if sink.auth is not None:
        update["auth"] = sink.auth
    if sink.base_url is not None:
        update["base_url"] = sink.base_url
    return spec.model_copy(update=update) if update else spec


# -- the writer --------------------------------------------------------------------------------


class SinkEndpoint:
    """One sink of one connector and the client its calls go through; shared by ``SinkWriter`` and
    ``engine.reads.SinkReader``, so the write and the read side of a sink reach the same host with the
    same credentials.

    ``client`` is the connector's client. A sink with its own ``auth``/``base_url`` (SALESmanago's v3
    catalog) gets a ``VendorClient`` of its own, built from the derived spec with ``client``'s
    credentials, clock, rng and log plus ``transport``/``environ`` (both default to the real ones);
    ``close()`` closes only a client made here.
    """

    def __init__(
        self,
        client: VendorClient,
        connector_spec: ConnectorSpec,
        sink_name: str,
        *,
        transport: httpx.BaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
    ):
        if sink_name not in connector_spec.sinks:
            raise KeyError(
                f"connector '{connector_spec.name}' has no sink '{sink_name}'; "
                f"expected one of {sorted(connector_spec.sinks)}"
            )
        self.spec = connector_spec
        self.name = sink_name
        self.sink = connector_spec.sinks[sink_name]
        if self.sink.auth is not None or self.sink.base_url is not None:
            self.client: VendorClient = VendorClient(
                sink_spec_for_client(connector_spec, self.sink),
                client.credentials,
                transport=transport,
                clock=client.clock,
                environ=dict(os.environ if environ is None else environ),
                rng=client.rng,
                log=client.log,
            )
            self._owns_client = True
        else:
            self.client = client
            self._owns_client = False

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _auth_refused(self, exc: SyncError, what: str = "sink") -> AuthError:
        """An ``AuthError`` naming this sink, from the client's (already redacted) error."""
        refused = AuthError(f"{self.spec.name} {what} '{self.name}': credentials refused: {self.client.redact(str(exc))}")
        refused.status, refused.path = exc.status, exc.path  # kept for callers, not repeated
        return refused


class SinkWriter(SinkEndpoint):
    """Sends records to one sink of one connector (client handling: ``SinkEndpoint``)."""

    # -- public ------------------------------------------------------------------------------

    def write(self, records: Iterable[Record]) -> WriteReport:
        """Validate, pack and send ``records``; see the module docstring for the rules."""
        report = WriteReport(sink=self.name)
        retries_before = self.client.stats.retries
        kept, report.superseded = _dedupe(self.sink, enumerate(records))
        outcomes: dict[int, Outcome] = {}
        valid: list[tuple[int, Record]] = []
        for index, record in kept:
            reasons = validate_record(self.sink, record)
            if reasons:
                outcomes[index] = Outcome(
                    index, record_key(self.sink, record), "rejected", "; ".join(reasons), stage="validation"
                )
            else:
                valid.append((index, record))
        try:
            for chunk in _chunks(valid, self.sink.batch_size):
                self._send(chunk, outcomes, report)
        except SyncError as exc:
            # What completed before the failure was delivered: the caller may record it.
            exc.partial_report = report  # type: ignore[attr-defined]
            raise
        finally:
            report.outcomes = [outcomes[i] for i in sorted(outcomes)]
            report.retries = self.client.stats.retries - retries_before
        return report

    # -- internals ---------------------------------------------------------------------------

    def _send(self, chunk: list[tuple[int, Record]], outcomes: dict[int, Outcome], report: WriteReport) -> None:
        pending = chunk
        for attempt in range(2):  # the call, then one resend of what an all-or-nothing 400 did not list
            report.calls += 1
            try:
                body = self.client.call(
                    self.sink.method,
                    self.sink.path,
                    json_body=render_body(self.sink, [r for _, r in pending], self.client.credentials),
                )
            except RequestRejectedError as exc:
                message = str(exc)
                if any(m in message for m in self.sink.response.auth_messages):
                    raise self._auth_refused(exc) from None
                if self.sink.batch_size == 1 and exc.status in RECORD_REJECTION_STATUSES:
                    index, record = pending[0]
                    outcomes[index] = self._rejected(index, record, message)
                    return
                bad = self._item_errors(exc, len(pending))
                if not bad or attempt == 1:
                    raise
                for position, reason in bad.items():
                    index, record = pending[position]
                    outcomes[index] = self._rejected(index, record, reason)
                pending = [p for position, p in enumerate(pending) if position not in bad]
                if not pending:
                    return
                continue
            self._accept(pending, body, outcomes)
            return

    def _rejected(self, index: int, record: Record, reason: str) -> Outcome:
        # Item messages come from bodies the client did not raise on: mask credentials here too.
        return Outcome(index, record_key(self.sink, record), "rejected", self.client.redact(reason), stage="vendor")

    def _accept(self, pending: list[tuple[int, Record]], body: Any, outcomes: dict[int, Outcome]) -> None:
        r = self.sink.response
        if r.item_results_path is None:
            # Single-record answers carry the kept fields; batch answers without item results have none.
            kept = self._keep(body) if self.sink.batch_size == 1 else None
            for index, record in pending:
                outcomes[index] = Outcome(index, record_key(self.sink, record), "sent", response=kept)
            return
        results = dig(body, r.item_results_path)
        if not isinstance(results, list) or len(results) != len(pending):
            got = len(results) if isinstance(results, list) else "no"
            raise FatalError(
                f"{self.spec.name} sink '{self.name}': expected {len(pending)} item results at "
                f"'{r.item_results_path}', got {got}; which records were applied is unknown",
                path=self.sink.path,
            )
        for (index, record), item in zip(pending, results, strict=True):
            key = record_key(self.sink, record)
            if isinstance(item, dict) and item.get(r.item_success_field) is False:
                reason = str(item.get(r.item_message_field) or "rejected by the vendor (no message)")
                outcomes[index] = self._rejected(index, record, reason)
            else:
                outcomes[index] = Outcome(index, key, "sent", response=self._keep(item))

    def _keep(self, body: Any) -> dict[str, Any] | None:
        if not self.sink.response.keep:
            return None
        return {name: dig(body, path) for name, path in self.sink.response.keep.items()}

    def _item_errors(self, exc: RequestRejectedError, count: int) -> dict[int, str]:
        """Position in the sent chunk → reason, from the 4xx body's item-error list; {} if none apply."""
        r = self.sink.response
        body = getattr(exc, "body", None)
        if r.item_errors_path is None or body is None:
            return {}
        errors = dig(body, r.item_errors_path)
        if not isinstance(errors, list):
            return {}
        pattern = re.compile(r.item_index_pattern) if r.item_index_pattern else None
        bad: dict[int, list[str]] = {}
        for error in errors:
            if not isinstance(error, dict):
                continue
            text = ": ".join(str(error[f]) for f in r.item_error_fields if error.get(f) not in (None, ""))
            if pattern is not None:
                match = pattern.search(text)
                raw = match.group(1) if match else None
            else:
                raw = error.get(r.item_index_field or "")
            try:
                position = int(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return {}  # an error about the call itself (catalogId, ...): not an item problem
            if not 0 <= position < count:
                return {}
            bad.setdefault(position, []).append(text or "rejected by the vendor (no message)")
        return {position: "; ".join(reasons) for position, reasons in bad.items()}
