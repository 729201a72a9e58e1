"""Field paths and record keys on the write side: one way to read a path, one way to normalise a key.

Sink records are nested the way the vendor nests them (SALESmanago's ``{"contact": {"email": ...}}``)
and a sink names its fields by dotted path (``contact.email``). Every module of the write side reads
fields through ``get_path`` and keys through ``KeyReader``, so the planner, the writer, the answer
readers and the ledger can never disagree on which record a key belongs to.

A key is tracked as text: the vendors store ids as strings, so ``1``, ``1.0`` and ``"1"`` are one key.
A sink whose target compares keys ignoring case (``key_case: insensitive``: SALESmanago and Datatalks
emails) also folds case and surrounding spaces: ``Case@Shop.test`` and ``case@shop.test `` are one
contact in the target, so they are one key here, one delivery, one row of delivered state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]

MISSING: Any = object()
"""What ``get_path`` returns for a path that is absent (distinct from an explicit ``null``)."""

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split(".")) if path else ()


def get_path(record: Any, path: str | tuple[str, ...]) -> Any:
    """The value at a dotted path through nested dicts, or ``MISSING``; ``""`` is the record itself."""
    node = record
    for part in split_path(path) if isinstance(path, str) else path:
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def put_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating the parents."""
    *parents, leaf = path.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def key_text(value: Any, *, case_insensitive: bool = False) -> str | None:
    """A key as the text it is tracked by; None for a missing key.

    Strings stay as they are; ``1``/``1.0`` → ``"1"``; ``True`` → ``"true"``; anything else as
    canonical JSON. ``case_insensitive`` also strips surrounding spaces and lower-cases (what
    SALESmanago does to an email: ``str.lower``, not ``casefold``, which would turn ``ß`` into ``ss``).
    """
    if value is None or value is MISSING:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = _CANONICAL(value)
    return text.strip().lower() if case_insensitive else text


class KeyReader:
    """Reads one field of a record as key text: ``KeyReader("contact.email", case_insensitive=True)``.

    Built once per sink and called per record (a push may hold a million records): the path is split
    once, and a plain string key takes the shortest route.
    """

    __slots__ = ("case_insensitive", "path", "_parts")

    def __init__(self, path: str, *, case_insensitive: bool = False):
        self.path = path
        self.case_insensitive = case_insensitive
        self._parts = split_path(path)

    def __call__(self, record: Any) -> str | None:
        node = record
        for part in self._parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        if type(node) is str and not self.case_insensitive:
            return node
        return key_text(node, case_insensitive=self.case_insensitive)

    @classmethod
    def for_sink(cls, sink: Any) -> KeyReader:
        """The reader of a ``SinkSpec``'s key (its ``key`` path and ``key_case``)."""
        return cls(sink.key, case_insensitive=sink.key_case == "insensitive")


def text_matcher(case_insensitive: bool) -> Callable[[Any], str | None]:
    """Normalises values an answer lists (emails in SALESmanago's ``failedContacts``) like keys."""
    return lambda value: key_text(value, case_insensitive=case_insensitive)


__all__ = ["MISSING", "Record", "KeyReader", "get_path", "key_text", "put_path", "split_path", "text_matcher"]
