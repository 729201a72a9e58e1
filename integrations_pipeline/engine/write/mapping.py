"""Cross-system mappings: how a source stream's records become a target sink's records, as data.

A sync spec (``integrations_pipeline/syncs/*.yaml``) names a source stream (``trackstar/orders``), a
target sink (``salesmanago/events_batch``) and, for every target field (dotted path into the sink's
item shape), exactly one way to fill it:

- ``from: ship_to_address.email_address`` — a source path; ``line_items[].sku`` maps over a list;
- ``value: PURCHASE`` — a constant;
- ``template: "{person.information.firstName} {person.information.familyName}"`` — text from paths;
- ``cases: [{when: {isWon: true}, value: PURCHASE}, ...]`` with ``default`` — the first matching case.

Then optional ``transform: [strip, lower]`` steps (registered by snake_case name, an unknown name says
"got X, expected one of [...]"), ``reduce: count`` (sum, min, max, first, last, any, all) over a list,
``join: ","`` for list values, ``default`` for a missing value and ``truncate: N``. A value that is
still missing is left out of the record, so the sink's own rules reject the record with a reason
instead of sending a guess. Paths may index a list: ``stages[0].id``.

Conditions (``where``, ``cases[].when``) map a path to a value it must equal, or to one operator:
``{not: v}``, ``{in: [..]}``, ``{exists: true}``, ``{same_as: path}``, ``{differs_from: path}``.

**Lookups** join other streams: ``lookups: {contact: {stream: salestrekker/contacts, key: id, match:
"idClients[]"}}`` puts the first contact whose ``id`` is one of the deal's ``idClients`` under the path
``contact``; ``many: true`` puts the list of every match (a contact's deals); ``items: stages[]`` indexes
the elements of a nested list (each stage of every workflow) instead of the records.

**Emit** makes several target records from one source record, each with its own ``where`` and fields
on top of the shared ``fields``: a deal yields a "created" event, a "stage" event and, once won, a
"won" event, each with its own ``externalId``, so each is sent once.

**Routes**: a sync written for a SALESmanago sink can be sent through Datatalks, whose sinks declare
``proxy_for`` (the SALESmanago sinks they forward to and how fields are renamed). ``route(sync, via,
connectors)`` rewrites the sync for that route, so validation, lineage and the IO manager see the
sink actually called.

``column_lineage`` tells which source (or looked-up) columns feed each target field, for Dagster's
``dagster/column_lineage`` metadata.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import SpecError
from ..models import Frozen
from ..spec import SNAKE, ConnectorSpec, _format_error
from .keys import put_path

_MISSING = object()
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_INDEXED = re.compile(r"^(.+)\[(\d+)\]$")


# -- transforms -------------------------------------------------------------------------------------


def _epoch_ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp() * 1000)


def _number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "strip": lambda v: str(v).strip(),
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "string": lambda v: v if isinstance(v, str) else str(v),
    "number": _number,
    "integer": lambda v: int(_number(v)),
    "epoch_ms": _epoch_ms,
    "date": lambda v: str(v)[:10],
    "empty_to_null": lambda v: None if v in ("", [], {}) else v,
}


def _any(values: list[Any]) -> bool:
    return any(bool(v) for v in values)


REDUCERS: dict[str, Callable[[list[Any]], Any]] = {
    "count": len,
    "sum": sum,  # of nothing: 0
    "min": lambda vs: min(vs) if vs else _MISSING,
    "max": lambda vs: max(vs) if vs else _MISSING,
    "first": lambda vs: vs[0] if vs else _MISSING,
    "last": lambda vs: vs[-1] if vs else _MISSING,
    "any": _any,
    "all": lambda vs: all(bool(v) for v in vs),
}

OPERATORS = ("not", "in", "exists", "same_as", "differs_from")


# -- spec models ------------------------------------------------------------------------------------


def _check_conditions(conditions: dict[str, Any]) -> dict[str, Any]:
    for path, expected in conditions.items():
        op = _operator(expected)
        if op is None and isinstance(expected, dict):
            raise ValueError(f"{path}: got operator {sorted(expected)}, expected one of {list(OPERATORS)}")
        if op == "in" and not isinstance(expected["in"], list):
            raise ValueError(f"{path}: 'in' takes a list, got {type(expected['in']).__name__}")
    return conditions


class Case(Frozen):
    when: dict[str, Any] = Field(
        min_length=1, description="Source path → value it must equal, or one operator (all must hold)."
    )
    value: Any

    _conditions = field_validator("when")(classmethod(lambda cls, v: _check_conditions(v)))


class FieldMap(Frozen):
    """How one target field is filled. Exactly one of ``from``, ``value``, ``template``, ``cases``."""

    from_: str | None = Field(default=None, alias="from", description="Source path; 'a[].b' maps over a list.")
    value: Any = None
    template: str | None = None
    cases: list[Case] | None = None
    default: Any = None
    transform: list[str] = Field(default_factory=list)
    reduce: str | None = Field(default=None, description=f"Fold a list value into one: one of {list(REDUCERS)}.")
    join: str | None = Field(default=None, description="Join a list value into one string with this separator.")
    truncate: int | None = Field(default=None, gt=0, description="Cut strings to this many characters.")

    @field_validator("transform")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in TRANSFORMS:
                raise ValueError(f"got '{name}', expected one of {list(TRANSFORMS)}")
        return names

    @field_validator("reduce")
    @classmethod
    def _known_reducer(cls, name: str | None) -> str | None:
        if name is not None and name not in REDUCERS:
            raise ValueError(f"got '{name}', expected one of {list(REDUCERS)}")
        return name

    @model_validator(mode="after")
    def _one_source(self) -> FieldMap:
        given = [
            k for k, v in (("from", self.from_), ("template", self.template), ("cases", self.cases)) if v is not None
        ]
        if "value" in self.model_fields_set:
            given.append("value")
        if len(given) != 1:
            raise ValueError(f"give exactly one of from, value, template, cases (got {given or 'none'})")
        return self


ASSET_REF = r"^[a-z][a-z0-9_]*/[a-z][a-z0-9_]*$"


class Lookup(Frozen):
    """Records of another stream joined onto each source record, under the lookup's name."""

    stream: str = Field(pattern=ASSET_REF, description="The stream looked up: '<connector>/<stream>'.")
    key: str = Field(description="Path in the looked-up records; 'a[]' indexes a record by each element of list a.")
    match: str = Field(description="Path in the source record whose value(s) must equal the key.")
    many: bool = Field(default=False, description="Every match as a list (else the first match).")
    items: str | None = Field(
        default=None, pattern=r"\[\]$", description="Index the elements of this nested list ('stages[]') instead."
    )


class Emit(Frozen):
    """One of several target records made from each source record."""

    name: str = Field(pattern=SNAKE)
    where: dict[str, Any] = Field(default_factory=dict, description="Only when these conditions hold.")
    fields: dict[str, FieldMap] = Field(default_factory=dict, description="Fields on top of the sync's shared fields.")

    _conditions = field_validator("where")(classmethod(lambda cls, v: _check_conditions(v)))


class SyncSpec(Frozen):
    """One cross-system sync: source stream → target sink, field by field."""

    name: str = Field(pattern=SNAKE)
    description: str
    source: str = Field(pattern=ASSET_REF, description="Source asset: '<connector>/<stream>'.")
    target: str = Field(pattern=ASSET_REF, description="Target: '<connector>/<sink>'.")
    via: str | None = Field(
        default=None,
        pattern=SNAKE,
        description="Send through this proxy connector (datatalks) instead of calling the target directly.",
    )
    lookups: dict[str, Lookup] = Field(default_factory=dict, description="Name → records joined from another stream.")
    fields: dict[str, FieldMap] = Field(
        default_factory=dict, description="Target field (dotted path) → how to fill it."
    )
    emit: list[Emit] = Field(default_factory=list, description="Several target records per source record.")
    where: dict[str, Any] = Field(default_factory=dict, description="Only source records meeting these conditions.")
    routed_from: str | None = Field(
        default=None, exclude=True, description="Set by route(): the target this routed sync stands for (not for YAML)."
    )

    _conditions = field_validator("where")(classmethod(lambda cls, v: _check_conditions(v)))

    @model_validator(mode="after")
    def _has_fields(self) -> SyncSpec:
        if not self.fields and not self.emit:
            raise ValueError("give fields (one target record per source record) or emit (several)")
        names = [e.name for e in self.emit]
        if len(set(names)) != len(names):
            raise ValueError(f"emit: names must be unique, got {names}")
        for name in self.lookups:
            if not re.match(SNAKE, name):
                raise ValueError(f"lookups.{name}: lookup name must be snake_case")
        return self

    def variants(self) -> list[tuple[str | None, dict[str, Any], dict[str, FieldMap]]]:
        """``(emit name, where, fields)`` per target record a source record can make."""
        if not self.emit:
            return [(None, {}, dict(self.fields))]
        return [(e.name, e.where, {**self.fields, **e.fields}) for e in self.emit]

    def all_fields(self) -> dict[str, FieldMap]:
        out = dict(self.fields)
        for e in self.emit:
            out.update(e.fields)
        return out

    @property
    def asset_ref(self) -> str:
        """The sync asset, '<target connector>/<name>': also the key its delivered state is kept under.

        A routed sync keeps the asset of the target it stands for (SALESmanago, not Datatalks)."""
        return f"{(self.routed_from or self.target).split('/')[0]}/{self.name}"

    @property
    def source_connector(self) -> str:
        return self.source.split("/")[0]

    @property
    def source_stream(self) -> str:
        return self.source.split("/")[1]

    @property
    def target_connector(self) -> str:
        return self.target.split("/")[0]

    @property
    def target_sink(self) -> str:
        return self.target.split("/")[1]


# -- evaluation -------------------------------------------------------------------------------------


def read_path(record: Any, path: str) -> Any:
    """Value at a dotted path; ``a[].b`` collects ``b`` from every element of list ``a``, ``a[]`` is the
    list itself and ``a[0].b`` reads one element."""
    if path.endswith("[]"):
        path = path[:-2]
    head, sep, rest = path.partition("[].")
    node = record
    for part in head.split("."):
        indexed = _INDEXED.match(part)
        name, index = (indexed.group(1), int(indexed.group(2))) if indexed else (part, None)
        if not isinstance(node, Mapping) or name not in node:
            return _MISSING
        node = node[name]
        if index is not None:
            if not isinstance(node, list) or index >= len(node):
                return _MISSING
            node = node[index]
    if not sep:
        return node
    if not isinstance(node, list):
        return _MISSING
    values = [read_path(item, rest) for item in node]
    return [v for v in values if v is not _MISSING and v is not None]


def _operator(expected: Any) -> str | None:
    if isinstance(expected, dict) and len(expected) == 1:
        (name,) = expected
        return name if name in OPERATORS else None
    return None


def _holds(record: Any, path: str, expected: Any) -> bool:
    value = read_path(record, path)
    op = _operator(expected)
    if op is None:
        return value == expected
    arg = expected[op]
    if op == "exists":
        return (value is not _MISSING and value is not None) == bool(arg)
    if op == "not":
        return value != arg
    if op == "in":
        return value in arg
    other = read_path(record, arg)
    return (value == other) if op == "same_as" else (value != other)


def _matches(record: Any, when: Mapping[str, Any]) -> bool:
    return all(_holds(record, path, expected) for path, expected in when.items())


def _evaluate(fm: FieldMap, record: Any) -> Any:
    if fm.from_ is not None:
        value = read_path(record, fm.from_)
    elif fm.template is not None:
        parts = {p: read_path(record, p) for p in _PLACEHOLDER.findall(fm.template)}
        if any(v is _MISSING or v is None for v in parts.values()):
            value = _MISSING
        else:
            value = _PLACEHOLDER.sub(lambda m: str(parts[m.group(1)]), fm.template)
    elif fm.cases is not None:
        value = next((c.value for c in fm.cases if _matches(record, c.when)), _MISSING)
    else:
        value = fm.value
    if value is _MISSING or value is None:
        value = fm.default if fm.default is not None else _MISSING
    if value is _MISSING:
        return _MISSING
    for name in fm.transform:
        fn = TRANSFORMS[name]
        value = [fn(v) for v in value] if isinstance(value, list) else fn(value)
    if fm.reduce is not None:
        value = REDUCERS[fm.reduce](value if isinstance(value, list) else [value])
        if value is _MISSING:
            value = fm.default if fm.default is not None else _MISSING
            if value is _MISSING:
                return _MISSING
    if fm.join is not None and isinstance(value, list):
        value = fm.join.join(str(v) for v in value)
    if fm.truncate is not None and isinstance(value, str):
        value = value[: fm.truncate]
    return value


def _fill(fields: Mapping[str, FieldMap], record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, fm in fields.items():
        try:
            value = _evaluate(fm, record)
        except (ValueError, TypeError):
            continue
        if value is not _MISSING:
            put_path(out, path, value)
    return out


class LookupIndex:
    """The records of one lookup, indexed by their key value (as text, so ``1`` matches ``"1"``)."""

    def __init__(self, lookup: Lookup, records: Iterable[Mapping[str, Any]]):
        self.lookup = lookup
        self.index: dict[str, list[Any]] = {}
        for record in records:
            items = read_path(record, lookup.items) if lookup.items else [record]
            for item in items if isinstance(items, list) else []:
                keys = read_path(item, lookup.key)
                for key in keys if isinstance(keys, list) else [keys]:
                    if key is not _MISSING and key is not None:
                        self.index.setdefault(str(key), []).append(item)

    def find(self, record: Any) -> Any:
        wanted = read_path(record, self.lookup.match)
        found: list[Any] = []
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if value is not _MISSING and value is not None:
                found.extend(self.index.get(str(value), ()))
        if self.lookup.many:
            return found
        return found[0] if found else None


def map_records(
    sync: SyncSpec, record: Mapping[str, Any], lookups: Mapping[str, LookupIndex] | None = None
) -> list[dict[str, Any]]:
    """Every target record one source record makes: none when ``where`` excludes it, one per matching
    ``emit`` variant (or exactly one without ``emit``).

    ``lookups`` holds a ``LookupIndex`` per name in ``sync.lookups`` (``build_lookups``); each match is
    placed under its name before the fields are filled. A field whose value cannot be computed
    (missing path, failing transform) is left out: the sink's validation then rejects the record with
    a reason naming the field.
    """
    if sync.lookups:
        if lookups is None or set(lookups) != set(sync.lookups):
            raise ValueError(f"sync '{sync.name}' needs lookups {sorted(sync.lookups)}, got {sorted(lookups or {})}")
        record = {**record, **{name: index.find(record) for name, index in lookups.items()}}
    if sync.where and not _matches(record, sync.where):
        return []
    return [_fill(fields, record) for _, where, fields in sync.variants() if not where or _matches(record, where)]


def map_record(
    sync: SyncSpec, record: Mapping[str, Any], lookups: Mapping[str, LookupIndex] | None = None
) -> dict[str, Any] | None:
    """The one target record of a sync without ``emit``, or None when ``where`` excludes it."""
    if sync.emit:
        raise ValueError(f"sync '{sync.name}' emits several records per source record: use map_records")
    out = map_records(sync, record, lookups)
    return out[0] if out else None


def build_lookups(sync: SyncSpec, read: Callable[[str], Iterable[Mapping[str, Any]]]) -> dict[str, LookupIndex]:
    """A ``LookupIndex`` per lookup, from ``read('<connector>/<stream>')`` (the warehouse's records)."""
    cache: dict[str, list[Mapping[str, Any]]] = {}
    out: dict[str, LookupIndex] = {}
    for name, lookup in sync.lookups.items():
        if lookup.stream not in cache:
            cache[lookup.stream] = list(read(lookup.stream))
        out[name] = LookupIndex(lookup, cache[lookup.stream])
    return out


def _field_paths(fm: FieldMap) -> list[str]:
    if fm.from_ is not None:
        return [fm.from_]
    if fm.template is not None:
        return _PLACEHOLDER.findall(fm.template)
    if fm.cases is not None:
        return [p for c in fm.cases for p in c.when]
    return []


def _top(path: str) -> str:
    return _INDEXED.sub(r"\1", path.split(".")[0].split("[]")[0])


def column_lineage(sync: SyncSpec) -> dict[str, list[tuple[str, str]]]:
    """Target field → the ``(stream, top-level column)`` pairs it is computed from (empty for constants).

    The stream is the sync's source, or a lookup's stream for a path under that lookup's name
    (``contact.person.contact.email`` → ``("salestrekker/contacts", "person")``).
    """
    lineage: dict[str, list[tuple[str, str]]] = {}
    for path, fm in ((p, fm) for _, _, fields in sync.variants() for p, fm in fields.items()):
        deps = lineage.setdefault(path, [])
        for p in _field_paths(fm):
            head, _, rest = p.partition(".")
            lookup = sync.lookups.get(_top(head))
            if lookup is not None and rest:
                base = _top(rest)
                if lookup.items:  # a nested element: the column is the list that holds it
                    base = _top(lookup.items)
                deps.append((lookup.stream, base))
            else:
                deps.append((sync.source, _top(p)))
    return {path: list(dict.fromkeys(deps)) for path, deps in lineage.items()}


@dataclass(frozen=True)
class LineageRow:
    """One target field of one target record kind: where its value comes from and how it is made."""

    record: str | None  # the emit name, when a source record makes several kinds of target record
    target: str
    sources: tuple[str, ...]  # '<stream>.<path>' read, with the lookup that joins it ('… via lookup client')
    how: str  # 'from', the transforms, a template, a constant, cases


def _describe(fm: FieldMap) -> str:
    if fm.from_ is not None:
        how = "copied"
    elif fm.template is not None:
        how = f"template {fm.template!r}"
    elif fm.cases is not None:
        how = f"{len(fm.cases)} cases"
    else:
        how = f"constant {fm.value!r}"
    steps = [*fm.transform]
    if fm.reduce:
        steps.append(f"reduce {fm.reduce}")
    if fm.join is not None:
        steps.append(f"join {fm.join!r}")
    if fm.truncate:
        steps.append(f"truncate {fm.truncate}")
    if fm.default is not None:
        steps.append(f"default {fm.default!r}")
    return how + (f", then {', '.join(steps)}" if steps else "")


def lineage_rows(sync: SyncSpec) -> list[LineageRow]:
    """Every target field with its full source paths and how it is computed: what ``integrations-pipeline lineage``
    prints and the sync asset's lineage table shows (the OSS UI does not draw ``dagster/column_lineage``)."""
    rows = []
    # Shared fields once (record None: every kind), then what each emitted kind adds or overrides.
    groups: list[tuple[str | None, dict[str, FieldMap]]] = [(None, dict(sync.fields))]
    groups += [(e.name, dict(e.fields)) for e in sync.emit]
    for emit, fields in groups:
        for target, fm in fields.items():
            sources = []
            for p in _field_paths(fm):
                head, _, rest = p.partition(".")
                lookup = sync.lookups.get(_top(head))
                if lookup is not None:
                    inner = f"{lookup.items}." if lookup.items else ""
                    join = f"{lookup.match} = {lookup.key}"
                    sources.append(f"{lookup.stream}.{inner}{rest or '*'} (lookup {_top(head)}: {join})")
                else:
                    sources.append(f"{sync.source}.{p}")
            rows.append(LineageRow(emit, target, tuple(sources), _describe(fm)))
    return rows


def lineage_markdown(sync: SyncSpec) -> str:
    """``lineage_rows`` as a Markdown table, for the sync asset's metadata."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    kinds = any(r.record for r in lineage_rows(sync))
    head = ["record"] if kinds else []
    lines = [
        "| " + " | ".join([*head, "target field", "←", "source", "how"]) + " |",
        "|" + "---|" * (len(head) + 4),
    ]
    for r in lineage_rows(sync):
        record = [r.record or "all"] if kinds else []
        source = "<br>".join(cell(s) for s in r.sources) or "—"
        lines.append("| " + " | ".join([*record, f"`{cell(r.target)}`", "←", source, cell(r.how)]) + " |")
    return "\n".join(lines)


# -- routes ------------------------------------------------------------------------------------------


def _proxied_name(rename: Mapping[str, str], path: str) -> str | None:
    """``path`` renamed by a proxy's field map; ``properties.*: "*"`` renames every key under a prefix."""
    if path in rename:
        return rename[path]
    for source, target in rename.items():
        if source.endswith(".*") and path.startswith(source[:-1]):
            rest = path[len(source) - 1 :]
            return rest if target == "*" else target[:-1] + rest
    return None


def forwards(proxy: ConnectorSpec | None, target: str) -> bool:
    """Whether ``proxy`` has a sink that forwards to ``target`` ('<connector>/<sink>')."""
    return proxy is not None and any(
        s.proxy_for is not None and target in s.proxy_for.sinks for s in proxy.sinks.values()
    )


def route(sync: SyncSpec, via: str | None, connectors: Mapping[str, ConnectorSpec]) -> SyncSpec:
    """``sync`` rewritten to call ``via``'s proxy sink instead of its target (None: unchanged).

    The proxy connector's sink that declares ``proxy_for`` the sync's target gives the new target and
    the renaming of every field; a field it cannot carry is an error naming it.
    """
    if via is None or via == sync.target_connector:
        return sync
    proxy = connectors.get(via)
    if proxy is None:
        raise SpecError(f"{sync.name}.yaml", [f"via: got '{via}', expected one of {sorted(connectors)}"])
    for sink_name, sink in proxy.sinks.items():  # noqa: B007  (the sink found is used after the loop)
        if sink.proxy_for is not None and sync.target in sink.proxy_for.sinks:
            break
    else:
        proxied = sorted(t for s in proxy.sinks.values() if s.proxy_for for t in s.proxy_for.sinks)
        raise SpecError(
            f"{sync.name}.yaml", [f"via: {via} does not forward to '{sync.target}'; it forwards to {proxied}"]
        )
    names = {p: _proxied_name(sink.proxy_for.fields, p) for p in sync.all_fields()}
    problems = [f"fields.{p}: {via}/{sink_name} has no field for it" for p, n in names.items() if n is None]
    if problems:
        raise SpecError(f"{sync.name}.yaml", problems)
    renamed = lambda fields: {names[p]: fm for p, fm in fields.items()}  # noqa: E731
    return sync.model_copy(
        update={
            "target": f"{via}/{sink_name}",
            "via": None,
            "fields": renamed(sync.fields),
            "emit": [e.model_copy(update={"fields": renamed(e.fields)}) for e in sync.emit],
            "routed_from": sync.target,
        }
    )


# -- loading ----------------------------------------------------------------------------------------


def _target_problems(sync: SyncSpec, connectors: Mapping[str, ConnectorSpec]) -> list[str]:
    tgt = connectors.get(sync.target_connector)
    if tgt is None or sync.target_sink not in tgt.sinks:
        sinks = sorted(f"{c.name}/{s}" for c in connectors.values() for s in c.sinks)
        return [f"target: got '{sync.target}', expected one of {sinks}"]
    sink = tgt.sinks[sync.target_sink]
    problems: list[str] = []
    objects = [p for p, rule in sink.fields.items() if rule.type == "object"]
    if not sink.allow_extra_fields:
        for path in sync.all_fields():
            # 'properties.deals' fills a key inside the object field 'properties'.
            if path not in sink.fields and not any(path.startswith(o + ".") for o in objects):
                problems.append(
                    f"fields.{path}: not a field of sink '{sync.target}', expected one of {list(sink.fields)}"
                )
    for name, _, fields in sync.variants():
        missing = [p for p, rule in sink.fields.items() if rule.required and p not in fields]
        if missing:
            at = "fields" if name is None else f"emit.{name}"
            problems.append(f"{at}: sink '{sync.target}' requires {missing}, which this mapping does not fill")
    return problems


def sync_json_schema() -> dict[str, Any]:
    """JSON Schema of the sync spec format (``integrations-pipeline spec-schema --syncs``), for editors."""
    schema = SyncSpec.model_json_schema(by_alias=True)
    schema["properties"].pop("routed_from", None)  # set by route(), refused in YAML
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "integrations_pipeline sync spec"
    return schema


# -- source paths against the streams' schemas ---------------------------------------------------------


def _walk(schema: Any, path: str, stream: str) -> tuple[Any, str | None]:
    """``(the schema node at path, None)``, or ``(None, why)`` when ``path`` cannot be read from a record of
    ``schema`` (``stream`` names it). Each segment must be one of its object's ``properties``; ``a[]``/``a[0]``
    step into the array's ``items``. Where the schema stops describing (an object without properties, an array
    without items) the node is None and the rest is not checked: nested objects are kept as the vendor sends them."""
    node: Any = schema
    walked: list[str] = []
    for segment in (path[:-2] if path.endswith("[]") else path).split("."):
        listed = segment.endswith("[]") or bool(_INDEXED.match(segment))
        name = _INDEXED.sub(r"\1", segment.removesuffix("[]"))
        props = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(props, Mapping):
            return None, None
        if name not in props:
            if not walked and name.startswith("_"):
                return None, None  # columns the loads add (_connection_id), not the vendor's
            where = f" under '{'.'.join(walked)}'" if walked else ""
            close = difflib.get_close_matches(name, [str(k) for k in props], n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of {sorted(props)}"
            return None, f"'{name}' is not a field of {stream}{where}; {hint}"
        node = props[name]
        walked.append(name)
        if listed:
            node = node.get("items") if isinstance(node, Mapping) else None
    return node, None


def _source_paths(sync: SyncSpec) -> list[tuple[str, str]]:
    """``(where in the sync, path in a source record)`` for every path the sync reads from its source records."""
    out: list[tuple[str, str]] = []

    def conditions(at: str, where: Mapping[str, Any]) -> None:
        for path, expected in where.items():
            out.append((f"{at}.{path}", path))
            op = _operator(expected)
            if op in ("same_as", "differs_from"):  # the operand is a path too
                out.append((f"{at}.{path}.{op}", str(expected[op])))

    def fields(at: str, mapped: Mapping[str, FieldMap]) -> None:
        for target, fm in mapped.items():
            kind = "from" if fm.from_ is not None else "template" if fm.template is not None else "cases"
            for path in _field_paths(fm):
                out.append((f"{at}.{target}.{kind}", path))

    conditions("where", sync.where)
    fields("fields", sync.fields)
    for i, emit in enumerate(sync.emit):
        conditions(f"emit[{i}].where", emit.where)
        fields(f"emit[{i}].fields", emit.fields)
    for name, lookup in sync.lookups.items():
        out.append((f"lookups.{name}.match", lookup.match))
    return out


def source_path_problems(sync: SyncSpec, connectors: Mapping[str, ConnectorSpec]) -> list[str]:
    """Every path the sync reads, checked against the schema of the stream it reads it from (its source, or a
    lookup's stream for a path under the lookup's name): a typo is an error naming the field and the closest
    name, not a run that rejects every record for a "missing required field"."""

    def schema(ref: str) -> dict[str, Any]:
        connector, stream = ref.split("/", 1)
        return connectors[connector].streams[stream].json_schema

    problems = []
    looked_up: dict[str, Any] = {}  # lookup name → the schema of one of its records (an element, with items)
    for name, lookup in sync.lookups.items():
        record: Any = schema(lookup.stream)
        if lookup.items is not None:
            record, why = _walk(record, lookup.items, lookup.stream)
            if why:
                problems.append(f"lookups.{name}.items: '{lookup.items}': {why}")
        _, why = _walk(record, lookup.key, lookup.stream) if record is not None else (None, None)
        if why:
            problems.append(f"lookups.{name}.key: '{lookup.key}': {why}")
        looked_up[name] = record
    for at, path in _source_paths(sync):
        head, _, rest = path.partition(".")
        if _top(head) in sync.lookups:
            name = _top(head)
            record = looked_up[name]
            why = _walk(record, rest, sync.lookups[name].stream)[1] if rest and record is not None else None
        else:
            why = _walk(schema(sync.source), path, sync.source)[1]
        if why:
            problems.append(f"{at}: '{path}': {why}")
    return problems


def parse_sync(data: Any, source: str, connectors: Mapping[str, ConnectorSpec]) -> SyncSpec:
    """Validate one sync document and check it against the connectors it names (and its route)."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"the document must be a mapping, got {type(data).__name__}"])
    if "routed_from" in data:
        raise SpecError(source, ["routed_from: set by the route, not in a sync spec; use via"])
    try:
        sync = SyncSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_format_error(e) for e in exc.errors(include_url=False)]) from None
    problems: list[str] = []
    streams = sorted(f"{c.name}/{s}" for c in connectors.values() for s in c.streams)
    src = connectors.get(sync.source_connector)
    if src is None or sync.source_stream not in src.streams:
        problems.append(f"source: got '{sync.source}', expected one of {streams}")
    else:
        columns = set(src.streams[sync.source_stream].json_schema.get("properties", {}))
        for name, lookup in sync.lookups.items():
            if lookup.stream not in streams:
                problems.append(f"lookups.{name}.stream: got '{lookup.stream}', expected one of {streams}")
            if name in columns:
                problems.append(f"lookups.{name}: '{name}' is a column of {sync.source}; name the lookup otherwise")
        if all(lk.stream in streams for lk in sync.lookups.values()):
            problems += source_path_problems(sync, connectors)
    problems += _target_problems(sync, connectors)
    if not problems and sync.via is not None:
        try:
            routed = route(sync, sync.via, connectors)
        except SpecError as exc:
            problems += exc.problems
        else:
            problems += [f"via {sync.via}: {p}" for p in _target_problems(routed, connectors)]
    if problems:
        raise SpecError(source, problems)
    return sync


def load_sync(path: str | Path, connectors: Mapping[str, ConnectorSpec]) -> SyncSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path.name, [f"invalid YAML: {exc}"]) from None
    sync = parse_sync(data, path.name, connectors)
    if sync.name != path.stem:
        raise SpecError(path.name, [f"name: '{sync.name}' must match the file name '{path.stem}'"])
    return sync
