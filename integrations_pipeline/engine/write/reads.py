"""The read side of sinks: fetch a target's current records for a list of keys.

A sink whose spec has a ``read`` block (``SinkReadSpec``) can be asked what the target holds now, by
the sink's key: SALESmanago ``POST /api/contact/basic {email: [...]}`` (≤ 50 emails a call), Datatalks
``GET /contact_by_email?email=``; and a sink's ``lookups``, each by another key (Datatalks ``GET
/contact/{sm_id}``, the key one escaped path segment): ``SinkReader(..., lookup="by_sm_id")``.
``SinkReader.read(keys)``:

1. de-duplicates the keys (as text, since the vendors store ids as text: ``1`` and ``"1"`` are one
   key; ignoring case and surrounding spaces too where the sink's ``key_case: insensitive`` says the target does);
2. packs them into ⌈n / batch_size⌉ calls and renders each call's query parameters or body from the
   template (``$key`` / ``$keys``, ``{env: NAME}``), through the same ``VendorClient`` (auth, pacing,
   retries) as the sink's writes, including a sink's own ``auth``/``base_url``;
3. takes the record(s) at ``records_path`` in each answer and matches them to the requested keys by
   the ``key`` path inside each returned record; a key nothing answers is "not found", and so is every
   key of a call answered with one of ``not_found_statuses`` (Datatalks 404);
4. returns a ``ReadReport``: records found by requested key text (every spelling asked for), keys not
   found (in input order), calls made.

Records are returned as the vendor answers them, which need not be the sink's write shape
(SALESmanago answers flat contact fields where the upsert nests them under ``contact``).

Refused credentials fail fast with an ``AuthError`` naming the sink: 401/403, and a rejection whose
message holds one of the sink's ``response.auth_messages`` (SALESmanago answers "Not authenticated"
with HTTP 200 and ``success: false``). Other failures raise the client's error; ``exc.partial_report``
then holds what the completed calls found. An answer without records at ``records_path``, or a
returned record without its key, is a ``FatalError``: a wrong path in the spec must not pass for
"nothing found". Messages come from the client's (redacted) errors and the spec's paths, never from
request parameters or bodies, so they hold no secret.

This lives apart from ``engine.sinks`` (the write runtime: validation, packing records, per-record
outcomes) because reading shares none of that logic; what both sides share, the sink's client
(``SinkEndpoint``) and template rendering (``fill_template``), is imported from there rather than
copied.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..auth import dig
from ..client import VendorClient
from ..errors import AuthError, ConfigError, FatalError, RequestRejectedError, SyncError
from ..spec import KEY, KEYS, ConnectorSpec, SinkReadSpec
from .keys import MISSING, Record, get_path, key_text
from .sinks import SinkEndpoint, fill_template


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class ReadReport:
    """What one ``read`` found.

    ``found`` maps each requested key, as text (``str(key)``), to the record the target holds for it,
    as the vendor returned it; ``not_found`` lists the requested keys (as text, input order, each once)
    the target has no record for; ``calls`` counts logical read calls (``retries`` the client's extra
    attempts).
    """

    sink: str
    found: dict[str, Record] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    calls: int = 0
    retries: int = 0


class SinkReader(SinkEndpoint):
    """Reads the current records of one sink's target by key (client handling: ``SinkEndpoint``).

    Raises ``ConfigError`` when the sink declares no ``read`` block, ``KeyError`` for an unknown sink.
    """

    def _check(self, client: VendorClient, connector_spec: ConnectorSpec, sink_name: str) -> None:
        super()._check(client, connector_spec, sink_name)
        lookups = connector_spec.sinks[sink_name].lookups
        if self.lookup is not None and self.lookup not in lookups:
            raise ConfigError(
                f"connector '{connector_spec.name}' sink '{sink_name}' has no lookup '{self.lookup}'; "
                f"expected one of {sorted(lookups)}"
            )
        if self.lookup is None and connector_spec.sinks[sink_name].read is None:
            readable = sorted(n for n, s in connector_spec.sinks.items() if s.read is not None)
            raise ConfigError(
                f"connector '{connector_spec.name}' sink '{sink_name}' has no read operation "
                f"(no 'read:' block in its spec); sinks that can be read: {readable}"
            )

    def __init__(self, client: VendorClient, connector_spec: ConnectorSpec, sink_name: str, lookup: str | None = None):
        self.lookup = lookup
        super().__init__(client, connector_spec, sink_name)
        if lookup is None:
            assert self.sink.read is not None
            self.read_spec: SinkReadSpec = self.sink.read
        else:
            self.read_spec = self.sink.lookups[lookup]

    # -- public ------------------------------------------------------------------------------

    def read(self, keys: Iterable[Any]) -> ReadReport:
        """The target's current records for ``keys``; see the module docstring for the rules."""
        report = ReadReport(sink=self.name)
        retries_before = self.client.stats.retries
        sent: dict[str, Any] = {}  # match form → the key as first given (what is sent)
        spellings: dict[str, list[str]] = {}  # match form → every requested text for it
        for position, key in enumerate(keys):
            text = self._key_text(position, key)
            form = self._form(text)
            if form not in sent:
                sent[form], spellings[form] = key, []
            if text not in spellings[form]:
                spellings[form].append(text)
        try:
            for chunk in _chunks(list(sent), self.read_spec.batch_size):
                answers = self._fetch([sent[f] for f in chunk], set(chunk), report)
                # Whole calls only: a failed call adds nothing, so a partial report is never half a chunk.
                for form in chunk:
                    if form in answers:
                        report.found.update(dict.fromkeys(spellings[form], answers[form]))
                    else:
                        report.not_found.extend(spellings[form])
        except SyncError as exc:
            exc.partial_report = report  # type: ignore[attr-defined]
            raise
        finally:
            report.retries = self.client.stats.retries - retries_before
        return report

    # -- internals ---------------------------------------------------------------------------

    def _key_text(self, position: int, key: Any) -> str:
        if key is None or isinstance(key, bool | dict | list) or (isinstance(key, str) and not key.strip()):
            # Shown by type only: keys are customer data (emails), not for error messages.
            shown = "an empty string" if isinstance(key, str) else type(key).__name__
            raise ValueError(
                f"{self.spec.name} sink '{self.name}' read: key at position {position} is {shown}; "
                "expected a non-empty string or a number"
            )
        return str(key)

    def _form(self, text: str) -> str:
        # The one key normalisation of the write side: the same text the plan and the ledger use. A lookup's key
        # is not the sink's (a contact id, not an email): compared exactly.
        insensitive = self.lookup is None and self.sink.key_case == "insensitive"
        return key_text(text, case_insensitive=insensitive) or text

    def _fetch(self, keys: list[Any], wanted: set[str], report: ReadReport) -> dict[str, Record]:
        """One call for ``keys``: match form → returned record, for the requested forms answered."""
        r = self.read_spec
        values = {KEY: keys[0]} if r.batch_size == 1 else {KEYS: keys}
        credentials = self.client.credentials
        params = fill_template(r.params, credentials, values) or None
        body = fill_template(r.body, credentials, values) if r.method == "POST" else None
        # A key in the path is one segment, escaped: an id holding '/' or '?' cannot reach another endpoint.
        path = "/".join(quote(str(keys[0]), safe="") if part == KEY else part for part in r.path.split("/"))
        report.calls += 1
        try:
            answer = self.client.call(r.method, path, params=params, json_body=body)
        except AuthError as exc:
            raise self._auth_refused(exc, "sink read") from None
        except RequestRejectedError as exc:
            if any(m in str(exc) for m in self.sink.response.auth_messages):
                raise self._auth_refused(exc, "sink read") from None
            if exc.status in r.not_found_statuses:
                return {}  # the target has none of this call's keys
            raise
        found: dict[str, Record] = {}
        for record in self._records(answer):
            value = get_path(record, r.key)
            if value is MISSING or value is None:
                raise FatalError(
                    f"{self.spec.name} sink '{self.name}' read: a returned record has no '{r.key}'; "
                    "check read.key against the vendor's answer",
                    path=r.path,
                )
            form = self._form(str(value))
            if form in wanted:
                found.setdefault(form, record)  # the first record answering a key wins
        return found

    def _records(self, answer: Any) -> list[Record]:
        r = self.read_spec
        node = dig(answer, r.records_path)
        if isinstance(node, dict):
            node = [node]  # a single-record answer (Datatalks ``data``)
        if not isinstance(node, list) or not all(isinstance(item, dict) for item in node):
            got = "nothing" if node is None else f"a {type(node).__name__}"
            raise FatalError(
                f"{self.spec.name} sink '{self.name}' read: expected a record or a list of records at "
                f"'{r.records_path}', got {got}; check read.records_path against the vendor's answer",
                path=r.path,
            )
        return node
