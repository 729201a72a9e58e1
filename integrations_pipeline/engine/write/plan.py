"""The plan of a push: which records go to a sink, in which calls, and why the others do not.

``plan(sink, records, delivered, in_doubt)`` is the one place the write side de-duplicates, validates
and diffs (the writer and the push only carry out a plan):

1. **keys**: each record's key is read and normalised once (``keys.KeyReader``: text, case folded
   where the target ignores case); within ``records`` the last record for a key wins and
   ``superseded`` counts the earlier ones;
2. **diff** against ``delivered`` (key → hash of the record as last sent, the ledger's delivered
   state), by the sink's ``mode``:

   - ``upsert``/``delete``: a new key is ``create``, a changed hash ``update``, an equal hash unchanged;
   - ``insert_once``: a changed record is not resent (the vendor keeps the first version, Trakor):
     counted unchanged and listed in ``skipped_insert_once``;
   - ``append``: a key once delivered is never sent again (each send adds another event);

   keys in ``in_doubt`` (a call whose outcome is unknown carried them) are ``held``: never sent until a
   person settles them; keys delivered before that the records no longer hold are ``deleted``
   (reported, never acted on; an event that went away is history, so never for ``append``);
3. **validation** of what is to be sent against the sink's field rules (``sinks.validate_record``):
   a record that fails is rejected with every reason and the rest still go.

``Plan.batches()`` packs ``to_send`` into ⌈n / batch_size⌉ calls, in the order of the records.
Hashes are sha256 of canonical JSON (``record_hash``), so equal records hash equally whatever their
key order; one dict lookup per record, so a re-run of a million unchanged records sends nothing and
costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..spec import FieldRule, SinkSpec
from .keys import MISSING, KeyReader, Record, get_path

# Canonical JSON: sorted keys, no whitespace. ASCII escapes keep the text encodable whatever the
# strings hold (lone surrogates included); no circular check (records come from JSON, never cyclic).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode
_sha256 = hashlib.sha256

PlanAction = Literal["create", "update", "delete", "reject", "in_doubt"]


def record_hash(record: Any) -> str:
    """sha256 hex of the record's canonical JSON: equal dicts hash equally whatever their key order.

    Numbers hash as JSON writes them, so ``1`` and ``1.0`` differ (a vendor may store them differently).
    """
    return _sha256(_CANONICAL(record).encode()).hexdigest()


# -- validation against the sink's field rules ------------------------------------------------

_JSON_TYPES: dict[str, str] = {
    "str": "string",
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "dict": "object",
    "list": "array",
    "NoneType": "null",
}
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


def validate_record(sink: SinkSpec, record: Any) -> list[str]:
    """Every reason ``record`` cannot be sent to ``sink``, each ``<field path>: <reason>``; [] if valid."""
    if not isinstance(record, dict):
        return [f"record: expected object, got {_json_type(record)}"]
    reasons: list[str] = []
    for path, rule in sink.fields.items():
        value = get_path(record, path)
        if value is MISSING or value is None:
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


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One record to send: its position in the planned records, normalised key, hash and action.
    ``encoded`` is the record's canonical JSON, kept from hashing so the intent need not encode it again."""

    index: int
    key: str
    hash: str
    record: Record
    action: Literal["create", "update"] = "create"
    encoded: str | None = None


@dataclass(frozen=True)
class Reject:
    """A record that is not sent: its position, key (None when it has none), reasons and the record."""

    index: int
    key: str | None
    reason: str
    record: Any


@dataclass
class Plan:
    """What a push will do; see the module docstring. Key lists hold normalised key text."""

    sink: SinkSpec
    considered: int = 0
    to_send: list[Item] = field(default_factory=list)
    rejected: list[Reject] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped_insert_once: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    superseded: int = 0

    @property
    def created(self) -> int:
        return sum(1 for i in self.to_send if i.action == "create")

    @property
    def updated(self) -> int:
        return sum(1 for i in self.to_send if i.action == "update")

    def batches(self) -> list[list[Item]]:
        size = self.sink.batch_size
        return [self.to_send[i : i + size] for i in range(0, len(self.to_send), size)]

    def counts(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": len(self.unchanged),
            "rejected": len(self.rejected),
            "deleted": len(self.deleted),
            "held_in_doubt": len(self.held),
            "skipped_insert_once": len(self.skipped_insert_once),
            "superseded": self.superseded,
        }

    def rows(self) -> list[tuple[PlanAction, str | None, str | None, Any]]:
        """A dry run's plan rows ``(action, key, reason, record)``, in record order, then deletes."""
        rows: list[tuple[int, tuple[PlanAction, str | None, str | None, Any]]] = [
            (i.index, (i.action, i.key, None, i.record)) for i in self.to_send
        ]
        rows += [(r.index, ("reject", r.key, r.reason, r.record)) for r in self.rejected]
        ordered = [row for _, row in sorted(rows, key=lambda r: r[0])]
        ordered += [
            ("in_doubt", key, "an earlier call's outcome is unknown: settle it with `in-doubt`", None)
            for key in self.held
        ]
        ordered += [("delete", key, None, None) for key in self.deleted]
        return ordered


def plan(
    sink: SinkSpec,
    records: Iterable[Record],
    delivered: Mapping[str, str],
    in_doubt: Collection[str] = (),
) -> Plan:
    """Split ``records`` into what to send to ``sink`` and what not; see the module docstring."""
    read_key = KeyReader.for_sink(sink)
    result = Plan(sink=sink)
    latest: dict[str, tuple[int, Any]] = {}
    keyless: list[tuple[int, Any]] = []
    seen = 0
    for index, record in enumerate(records):
        seen += 1
        key = read_key(record)
        if key is None:
            keyless.append((index, record))
        else:
            latest[key] = (index, record)  # a dict keeps the key's first position; the index says where it was last
    result.considered = seen
    result.superseded = seen - len(keyless) - len(latest)

    resend_changed = sink.mode in ("upsert", "delete")
    is_append = sink.mode == "append"
    held = set(in_doubt)
    lookup = delivered.get
    encode = _CANONICAL
    sha = _sha256
    to_send: list[Item] = []
    rejected: list[Reject] = []
    unchanged, skipped = result.unchanged, result.skipped_insert_once
    for key, (index, record) in latest.items():
        if key in held:
            result.held.append(key)
            continue
        before = lookup(key)
        if before is not None and is_append:
            unchanged.append(key)  # an event once delivered is never sent again: no need to hash it
            continue
        text = encode(record)
        digest = sha(text.encode()).hexdigest()
        if before is None:
            action: Literal["create", "update"] = "create"
        elif before == digest:
            unchanged.append(key)
            continue
        elif resend_changed:
            action = "update"
        else:  # insert_once: the vendor keeps the first version, so a change is never sent
            unchanged.append(key)
            skipped.append(key)
            continue
        reasons = validate_record(sink, record)
        if reasons:
            rejected.append(Reject(index, key, "; ".join(reasons), record))
        else:
            to_send.append(Item(index, key, digest, record, action, text))
    for index, record in keyless:
        # The key is a required field, so validation names it: "contact.email: required field is missing".
        rejected.append(Reject(index, None, "; ".join(validate_record(sink, record)) or f"{sink.key}: missing", record))
    # Records go in the order they came (by their last occurrence); sorting only what is sent is cheap.
    to_send.sort(key=lambda i: i.index)
    rejected.sort(key=lambda r: r.index)
    result.to_send, result.rejected = to_send, rejected
    if not is_append:
        # Set difference runs in C; sorted so reports and tests are deterministic.
        result.deleted = sorted(delivered.keys() - latest.keys())
    return result


__all__ = ["Item", "Plan", "Reject", "plan", "record_hash", "validate_record"]
