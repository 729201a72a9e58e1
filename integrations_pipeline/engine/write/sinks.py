"""Send planned records to a sink, one call at a time, and read from each answer what became of each.

A sink (``SinkSpec`` in the vendor's YAML) is one write endpoint. ``SinkWriter.send(items)`` makes ONE
call (``plan.Plan.batches()`` gives the items of each) and returns a ``CallResult`` with one outcome
per item: ``sent`` (the answer proves it delivered), ``rejected`` (the vendor refused it, with its
reason) or ``in_doubt`` (the vendor may or may not have applied it). What decided, by answer shape
(each sink's ``response`` block names its public source):

- a single-record endpoint: a 2xx delivers the record (fields named in ``response.keep`` are kept:
  Trakor ``id``/``sku``/``created``); a 4xx refusing the record rejects it;
- ``item_results_path``: a per-item array aligned with the records (``[i].success``);
- ``failed``: a list in the answer naming failed items by a record field (SALESmanago
  ``batchAddContactExtEvent`` answers ``failedContacts`` — emails — with ``createdAmount`` and
  ``failedAmount``): every record matching is rejected with the answer's message, the rest delivered.
  When the counts show that only some of a failed email's events failed, nobody can tell which: those
  records are in doubt;
- ``applied``: a list or map naming the items applied (SALESmanago ``batchupsert`` answers
  ``contactIds``, email → contact id): a record missing from it is rejected, not delivered;
- ``counts``: totals in the answer that must agree with the above, or the whole call is in doubt;
- ``item_errors_path``: an all-or-nothing 4xx listing the bad items (Datatalks ``errors``, SALESmanago
  v3 ``problems``) applied nothing: those are rejected and the rest are sent again once, in a second
  call of the same ``send``.

A 2xx whose answer does not have the shape the spec declares is in doubt, never a silent success or a
silent re-send. So is any failure after the request may have reached the vendor when the sink is not
idempotent (``mode: append``: SALESmanago does not de-duplicate events): the client does not retry it
(``VendorClient.call(idempotent=False)``). Idempotent sinks retry as the retry policy says.

A failure that applied nothing (401/403, SALESmanago's HTTP-200 "Not authenticated", a call the vendor
refuses as a whole, retries exhausted on an idempotent call) ends the call with ``CallResult.error``;
the caller records what the result holds, then raises it.

This module only sends: it never plans and never records. ``push.push`` is the reverse-ETL write path
(plan, then intent → send → record per call); ``push.send_unrecorded`` plans with no delivered state and
sends every batch with no bookkeeping, for one-off sends and the conformance suite.

Secrets stay out of outcomes and errors: reasons are built from field names, types, lengths and the
vendor's own (redacted) messages, never from request bodies or headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from ..auth import Credentials, dig
from ..client import VendorClient
from ..errors import AuthError, OutcomeUnknownError, RequestRejectedError, SyncError
from ..models import Secret
from ..spec import RECORD, RECORDS, ConnectorSpec, ItemListSpec, SinkSpec
from .keys import MISSING, Record, get_path, key_text
from .plan import Item

# Statuses with which a single-record endpoint refuses *the record* (bad field, conflict; SALESmanago's
# success=false comes with 200). Others (404 no such path, 405, 413, ...) are a broken setup: they raise.
RECORD_REJECTION_STATUSES = frozenset({200, 400, 409, 422})


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


# -- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one record. ``index`` is its position in the records planned (or given to
    ``write``); ``key`` its normalised key.

    ``stage`` says who decided: ``validation`` (never sent) or ``vendor``; ``response`` holds the fields
    the sink's ``response.keep`` names (Trakor id/sku/created, SALESmanago contact id).
    """

    index: int
    key: str | None
    status: Literal["sent", "rejected", "in_doubt"]
    reason: str | None = None
    response: dict[str, Any] | None = None
    stage: Literal["validation", "vendor"] | None = None


@dataclass
class CallResult:
    """The outcome of each item of one ``send`` (in item order), the calls made (2 when an all-or-nothing
    400 named some items and the rest went again), the client's retries, and ``error`` when the call
    failed as a whole without applying anything (see the module docstring)."""

    outcomes: list[Outcome] = field(default_factory=list)
    calls: int = 0
    retries: int = 0
    error: SyncError | None = None

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]


@dataclass
class WriteReport:
    """Outcomes of one ``push.send_unrecorded`` (one per record kept after de-duplication, in input order), the write
    calls made (logical calls; ``retries`` counts the client's extra attempts) and how many records a
    later record with the same key superseded."""

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

    @property
    def in_doubt(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "in_doubt"]

    def by_key(self) -> dict[Any, Outcome]:
        return {o.key: o for o in self.outcomes if o.key is not None}


# -- the writer --------------------------------------------------------------------------------


class SinkEndpoint:
    """One sink of one connector and the client its calls go through; shared by ``SinkWriter`` and
    ``engine.write.reads.SinkReader``, so the write and the read side of a sink reach the same host with
    the same credentials.

    ``client`` is the sink's client, built by ``ClientFactory.sink`` (with the sink's own host and auth when
    it names them: SALESmanago's v3 catalog); the endpoint owns it: closing the endpoint, or failing to
    make one, closes it.
    """

    def __init__(self, client: VendorClient, connector_spec: ConnectorSpec, sink_name: str):
        try:
            self._check(client, connector_spec, sink_name)
        except Exception:
            client.close()
            raise
        self.spec = connector_spec
        self.name = sink_name
        self.sink = connector_spec.sinks[sink_name]
        self.client = client

    def _check(self, client: VendorClient, connector_spec: ConnectorSpec, sink_name: str) -> None:
        if sink_name not in connector_spec.sinks:
            raise KeyError(
                f"connector '{connector_spec.name}' has no sink '{sink_name}'; "
                f"expected one of {sorted(connector_spec.sinks)}"
            )
        if client.config != connector_spec.client_config(sink_name):
            # A connector's client sent to a sink with its own host would carry the wrong credentials there.
            raise ValueError(
                f"{connector_spec.name} sink '{sink_name}': the client is not configured for this sink; "
                "build it with ClientFactory.sink(spec, sink_name)"
            )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _auth_refused(self, exc: SyncError, what: str = "sink") -> AuthError:
        """An ``AuthError`` naming this sink, from the client's (already redacted) error."""
        refused = AuthError(
            f"{self.spec.name} {what} '{self.name}': credentials refused: {self.client.redact(str(exc))}"
        )
        refused.status, refused.path = exc.status, exc.path  # kept for callers, not repeated
        return refused


class _InDoubt(Exception):
    """An answer the spec cannot read: every pending item of the call is in doubt, for this reason."""


class SinkWriter(SinkEndpoint):
    """Sends records to one sink of one connector (client handling: ``SinkEndpoint``)."""

    # -- public ------------------------------------------------------------------------------

    def send(self, items: Sequence[Item]) -> CallResult:
        """One call carrying ``items`` (at most ``batch_size``); see the module docstring."""
        if len(items) > self.sink.batch_size:
            raise ValueError(
                f"{self.spec.name} sink '{self.name}': {len(items)} items in one call, batch_size is {self.sink.batch_size}"
            )
        result = CallResult()
        retries_before = self.client.stats.retries
        outcomes: dict[int, Outcome] = {}
        try:
            self._send(list(items), outcomes, result)
        except SyncError as exc:
            result.error = exc
        finally:
            result.outcomes = [outcomes[i.index] for i in items if i.index in outcomes]
            result.retries = self.client.stats.retries - retries_before
        return result

    def pace(self) -> None:
        """Wait for this sink's next rate-limit slot (the next ``send`` then does not wait again)."""
        self.client.pace(self.sink.method)
        self._paced = True

    # -- internals ---------------------------------------------------------------------------

    _paced = False

    def _send(self, pending: list[Item], outcomes: dict[int, Outcome], result: CallResult) -> None:
        for attempt in range(2):  # the call, then one resend of what an all-or-nothing 400 did not list
            result.calls += 1
            paced, self._paced = self._paced, False
            try:
                body = self.client.call(
                    self.sink.method,
                    self.sink.path,
                    json_body=render_body(self.sink, [i.record for i in pending], self.client.credentials),
                    idempotent=self.sink.idempotent,
                    paced=paced,
                )
            except OutcomeUnknownError as exc:
                for item in pending:
                    outcomes[item.index] = self._outcome(item, "in_doubt", self.client.redact(str(exc)))
                return
            except RequestRejectedError as exc:
                message = str(exc)
                if any(m in message for m in self.sink.response.auth_messages):
                    raise self._auth_refused(exc) from None
                if self.sink.batch_size == 1 and exc.status in RECORD_REJECTION_STATUSES:
                    outcomes[pending[0].index] = self._outcome(pending[0], "rejected", self.client.redact(message))
                    return
                bad = self._item_errors(exc, len(pending))
                if not bad or attempt == 1:
                    raise
                for position, reason in bad.items():
                    outcomes[pending[position].index] = self._outcome(pending[position], "rejected", reason)
                pending = [item for position, item in enumerate(pending) if position not in bad]
                if not pending:
                    return
                continue
            try:
                self._accept(pending, body, outcomes)
            except _InDoubt as doubt:
                for item in pending:
                    outcomes[item.index] = self._outcome(item, "in_doubt", str(doubt))
            return

    def _outcome(
        self,
        item: Item,
        status: Literal["sent", "rejected", "in_doubt"],
        reason: str | None = None,
        response: dict[str, Any] | None = None,
    ) -> Outcome:
        # Item messages come from bodies the client did not raise on: mask credentials here too.
        shown = self.client.redact(reason) if reason is not None else None
        return Outcome(item.index, item.key, status, shown, response, stage="vendor" if status == "rejected" else None)

    def _where(self) -> str:
        return f"{self.spec.name} sink '{self.name}'"

    def _accept(self, pending: list[Item], body: Any, outcomes: dict[int, Outcome]) -> None:
        """Read a 2xx answer into outcomes; raise ``_InDoubt`` when it does not have the declared shape."""
        r = self.sink.response
        if r.item_results_path is not None:
            self._accept_item_results(pending, body, outcomes)
        elif r.failed is not None or r.applied is not None:
            self._accept_listed(pending, body, outcomes)
        else:
            # Single-record answers carry the kept fields; batch answers without item results have none.
            kept = self._keep(body) if self.sink.batch_size == 1 else None
            for item in pending:
                outcomes[item.index] = self._outcome(item, "sent", response=kept)

    def _accept_item_results(self, pending: list[Item], body: Any, outcomes: dict[int, Outcome]) -> None:
        r = self.sink.response
        results = dig(body, r.item_results_path or "")
        if not isinstance(results, list) or len(results) != len(pending):
            got = len(results) if isinstance(results, list) else "no"
            raise _InDoubt(
                f"{self._where()}: expected {len(pending)} item results at '{r.item_results_path}', got {got}; "
                "which records were applied is unknown"
            )
        for item, answer in zip(pending, results, strict=True):
            if isinstance(answer, dict) and answer.get(r.item_success_field) is False:
                reason = str(answer.get(r.item_message_field) or "rejected by the vendor (no message)")
                outcomes[item.index] = self._outcome(item, "rejected", reason)
            else:
                outcomes[item.index] = self._outcome(item, "sent", response=self._keep(answer))

    def _accept_listed(self, pending: list[Item], body: Any, outcomes: dict[int, Outcome]) -> None:
        """``failed`` / ``applied`` lists, checked against ``counts``; see the module docstring."""
        r = self.sink.response
        listed_spec: ItemListSpec = r.failed or r.applied  # type: ignore[assignment]
        raw = get_path(body, listed_spec.path) if isinstance(body, dict) else MISSING
        counts = {name: get_path(body, path) if isinstance(body, dict) else MISSING for name, path in r.counts.items()}
        counts = {name: value for name, value in counts.items() if value is not MISSING}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise _InDoubt(f"{self._where()}: '{r.counts[name]}' in the answer is not a count: {value!r}")
        if raw is MISSING or raw is None:
            if r.failed is not None and counts:
                raw = []  # no failures listed; the counts below must then agree that none failed
            else:
                raise _InDoubt(
                    f"{self._where()}: the answer has no '{listed_spec.path}'; which records were applied is unknown"
                )
        if not isinstance(raw, list | dict):
            raise _InDoubt(
                f"{self._where()}: '{listed_spec.path}' in the answer is a {type(raw).__name__}, expected a list or map"
            )
        insensitive = listed_spec.case == "insensitive"
        listed = {key_text(v, case_insensitive=insensitive): (raw[v] if isinstance(raw, dict) else None) for v in raw}
        match = [key_text(get_path(i.record, listed_spec.match), case_insensitive=insensitive) for i in pending]
        message = self._answer_message(body) or (
            f"listed in '{listed_spec.path}' by the vendor"
            if r.failed is not None
            else f"not in the answer's '{listed_spec.path}'"
        )
        if r.applied is not None:
            flagged = [i for i, m in enumerate(match) if m not in listed]
        else:
            flagged = [i for i, m in enumerate(match) if m in listed]
        delivered_count, rejected_count = counts.get("delivered"), counts.get("rejected")
        if (
            delivered_count is not None
            and rejected_count is not None
            and delivered_count + rejected_count != len(pending)
        ):
            raise _InDoubt(
                f"{self._where()}: the answer counts {delivered_count} + {rejected_count} items for the {len(pending)} sent"
            )
        if rejected_count is None and delivered_count is not None:
            rejected_count = len(pending) - delivered_count
        in_doubt_flagged = False
        if rejected_count is not None and rejected_count != len(flagged):
            if r.failed is not None and 0 <= rejected_count < len(flagged):
                # Some events of a failed email were applied, and the answer does not say which.
                in_doubt_flagged = True
            else:
                raise _InDoubt(
                    f"{self._where()}: the answer counts {rejected_count} failed items but its '{listed_spec.path}' "
                    f"accounts for {len(flagged)}"
                )
        flagged_set = set(flagged)
        for position, item in enumerate(pending):
            if position not in flagged_set:
                kept = None
                if r.applied is not None and listed_spec.keep_value_as:
                    kept = {listed_spec.keep_value_as: listed.get(match[position])}
                outcomes[item.index] = self._outcome(item, "sent", response=kept)
            elif in_doubt_flagged:
                outcomes[item.index] = self._outcome(
                    item,
                    "in_doubt",
                    f"{self._where()}: {rejected_count} of the {len(flagged)} items listed in '{listed_spec.path}' failed "
                    f"and the answer does not say which: {message}",
                )
            else:
                outcomes[item.index] = self._outcome(item, "rejected", message)

    def _answer_message(self, body: Any) -> str | None:
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(message, list):
            text = "; ".join(str(m) for m in message if m not in (None, ""))
        else:
            text = str(message) if message not in (None, "") else ""
        return text or None

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
            bad.setdefault(position, []).append(self.client.redact(text) or "rejected by the vendor (no message)")
        return {position: "; ".join(reasons) for position, reasons in bad.items()}
