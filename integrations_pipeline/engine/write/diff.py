"""Which records a reverse-ETL run must send: the diff of the current records against what was delivered.

``delivered`` maps each key already sent to a sink to the hash of the record as it was sent (the
warehouse's ``_integrations.delivered`` table, ``Warehouse.read_delivered``). ``diff`` compares the
current records to it, one dict lookup per record, so a re-run of unchanged data sends nothing.

What a key already delivered with a *different* hash means depends on the sink's ``mode``:

- ``upsert`` (and ``delete``): resent, as ``updated`` (the target replaces it / deletes it again);
- ``insert_once``: NOT resent (the vendor keeps the first version, Trakor); counted as ``unchanged``
  and listed in ``skipped_insert_once`` so a report can say the change never reached the target;
- ``append``: NOT resent (each send adds another event); counted as ``unchanged``.

Keys compare as text (``key_text``): vendors store ids as strings, so ``1`` and ``"1"`` are one key,
as in ``SinkWriter``'s de-duplication. Within ``records`` the last record for a key wins (as in
``SinkWriter``), and ``superseded`` counts the earlier ones. A record without a key cannot be tracked:
it is listed in ``keyless`` and included in ``to_send``, so the writer rejects it with a reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .sinks import Record, WriteReport
from ..spec import SinkSpec

# Canonical JSON: sorted keys, no whitespace. ASCII escapes keep the text encodable whatever the
# strings hold (lone surrogates included); no circular check (records come from JSON, never cyclic).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode
_sha256 = hashlib.sha256


def record_hash(record: Any) -> str:
    """sha256 hex of the record's canonical JSON: equal dicts hash equally whatever their key order.

    Numbers hash as JSON writes them, so ``1`` and ``1.0`` differ (a vendor may store them differently).
    """
    return _sha256(_CANONICAL(record).encode()).hexdigest()


def key_text(value: Any) -> str | None:
    """A key as the text it is tracked by: strings as they are, ``1``/``1.0`` → ``"1"``, ``True`` → ``"true"``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _CANONICAL(value)


@dataclass
class Diff:
    """The records to send and the keys to leave alone, by category.

    ``created``/``updated`` are records; ``unchanged``, ``skipped_insert_once`` and ``deleted`` are keys.
    ``to_send`` is ``created`` and ``updated`` in first-seen key order, then ``keyless``; ``hashes`` holds the hash of
    every record to send, by key, so the caller records deliveries without hashing again.
    """

    created: list[Record] = field(default_factory=list)
    updated: list[Record] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped_insert_once: list[str] = field(default_factory=list)
    keyless: list[Record] = field(default_factory=list)
    superseded: int = 0
    to_send: list[Record] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "deleted": len(self.deleted),
            "skipped_insert_once": len(self.skipped_insert_once),
            "keyless": len(self.keyless),
            "superseded": self.superseded,
        }


def _key_getter(sink: SinkSpec):
    """``record_key`` without re-splitting the path per record (1M records per run): None if missing."""
    parts = tuple(sink.key.split("."))

    def get(record: Any) -> Any:
        node = record
        for part in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    return get


def diff(sink: SinkSpec, records: Iterable[Record], delivered: Mapping[str, str]) -> Diff:
    """Split ``records`` into what to send to ``sink`` and what not, given ``delivered`` (key → hash)."""
    get_key = _key_getter(sink)
    result = Diff()
    # Last record per key wins; a dict keeps the key's first position, which is fine for ordering.
    latest: dict[str, Record] = {}
    keyless = result.keyless
    seen = 0
    for record in records:
        seen += 1
        key = get_key(record)
        if key is None:
            keyless.append(record)
            continue
        latest[key if type(key) is str else key_text(key)] = record
    result.superseded = seen - len(keyless) - len(latest)

    resend_changed = sink.mode in ("upsert", "delete")
    is_append = sink.mode == "append"
    hashes = result.hashes
    created, updated, unchanged, skipped = result.created, result.updated, result.unchanged, result.skipped_insert_once
    to_send = result.to_send
    lookup = delivered.get
    encode = _CANONICAL
    sha = _sha256
    for key, record in latest.items():
        before = lookup(key)
        if before is not None and is_append:
            unchanged.append(key)  # an event once delivered is never sent again: no need to hash it
            continue
        digest = sha(encode(record).encode()).hexdigest()
        if before is None:
            created.append(record)
        elif before == digest:
            unchanged.append(key)
            continue
        elif resend_changed:
            updated.append(record)
        else:  # insert_once: the vendor keeps the first version, so a change is never sent
            unchanged.append(key)
            skipped.append(key)
            continue
        hashes[key] = digest
        to_send.append(record)
    to_send.extend(keyless)
    # Set difference runs in C; sorted so reports and tests are deterministic.
    result.deleted = sorted(delivered.keys() - latest.keys())
    return result


def outcome_rows(result: Diff, report: WriteReport) -> tuple[list[tuple[str, str, Any]], list[tuple[Any, str, Any]]]:
    """What to record after ``SinkWriter.write(result.to_send)``: delivery rows ``(key, hash, response)``
    for the records sent and reject rows ``(key, reason, record)`` for the refused ones.

    A refused record is not recorded as delivered, so the next diff offers it again. Use
    ``exc.partial_report`` when the write raised: what was sent before the failure is recorded too.
    """
    delivered: list[tuple[str, str, Any]] = []
    rejected: list[tuple[Any, str, Any]] = []
    for outcome in report.outcomes:
        key = key_text(outcome.key)
        if outcome.status == "sent" and key is not None and key in result.hashes:
            delivered.append((key, result.hashes[key], outcome.response))
        elif outcome.status == "rejected":
            rejected.append((key, outcome.reason or "rejected", result.to_send[outcome.index]))
    return delivered, rejected


__all__ = ["Diff", "diff", "key_text", "outcome_rows", "record_hash"]
