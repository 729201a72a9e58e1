"""Cross-system mappings: how a source stream's records become a target sink's records, as data.

A sync spec (``integrations_pipeline/syncs/*.yaml``) names a source stream (``trackstar/orders``), a
target sink (``salesmanago/events_batch``) and, for every target field (dotted path into the sink's
item shape), exactly one way to fill it:

- ``from: ship_to_address.email_address`` — a source path; ``line_items[].sku`` maps over a list;
- ``value: PURCHASE`` — a constant;
- ``template: "{person.information.firstName} {person.information.familyName}"`` — text from paths;
- ``cases: [{when: {isWon: true}, value: PURCHASE}, ...]`` with ``default`` — the first matching case.

Then optional ``transform: [strip, lower]`` steps (registered by snake_case name, an unknown name says
"got X, expected one of [...]"), ``join: ","`` for list values, ``default`` for a missing value and
``truncate: N``. A value that is still missing is left out of the record, so the sink's own rules
reject the record with a reason instead of sending a guess.

``column_lineage`` tells which source columns feed each target field, for Dagster's
``dagster/column_lineage`` metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .errors import SpecError
from .models import Frozen
from .spec import SNAKE, ConnectorSpec, _format_error

_MISSING = object()
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


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


# -- spec models ------------------------------------------------------------------------------------


class Case(Frozen):
    when: dict[str, Any] = Field(min_length=1, description="Source path → value that must be equal (all must hold).")
    value: Any


class FieldMap(Frozen):
    """How one target field is filled. Exactly one of ``from``, ``value``, ``template``, ``cases``."""

    from_: str | None = Field(default=None, alias="from", description="Source path; 'a[].b' maps over a list.")
    value: Any = None
    template: str | None = None
    cases: list[Case] | None = None
    default: Any = None
    transform: list[str] = Field(default_factory=list)
    join: str | None = Field(default=None, description="Join a list value into one string with this separator.")
    truncate: int | None = Field(default=None, gt=0, description="Cut strings to this many characters.")

    @field_validator("transform")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in TRANSFORMS:
                raise ValueError(f"got '{name}', expected one of {list(TRANSFORMS)}")
        return names

    @model_validator(mode="after")
    def _one_source(self) -> FieldMap:
        given = [k for k, v in (("from", self.from_), ("template", self.template), ("cases", self.cases)) if v is not None]
        if "value" in self.model_fields_set:
            given.append("value")
        if len(given) != 1:
            raise ValueError(f"give exactly one of from, value, template, cases (got {given or 'none'})")
        return self


class SyncSpec(Frozen):
    """One cross-system sync: source stream → target sink, field by field."""

    name: str = Field(pattern=SNAKE)
    description: str
    source: str = Field(pattern=r"^[a-z][a-z0-9_]*/[a-z][a-z0-9_]*$", description="Source asset: '<connector>/<stream>'.")
    target: str = Field(pattern=r"^[a-z][a-z0-9_]*/[a-z][a-z0-9_]*$", description="Target: '<connector>/<sink>'.")
    fields: dict[str, FieldMap] = Field(min_length=1, description="Target field (dotted path) → how to fill it.")
    where: dict[str, Any] = Field(default_factory=dict, description="Only source records whose paths equal these.")

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
    """Value at a dotted path; ``a[].b`` collects ``b`` from every element of list ``a``."""
    head, sep, rest = path.partition("[].")
    node = record
    for part in head.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    if not sep:
        return node
    if not isinstance(node, list):
        return _MISSING
    values = [read_path(item, rest) for item in node]
    return [v for v in values if v is not _MISSING and v is not None]


def _matches(record: Any, when: Mapping[str, Any]) -> bool:
    return all(read_path(record, path) == expected for path, expected in when.items())


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
    if fm.join is not None and isinstance(value, list):
        value = fm.join.join(str(v) for v in value)
    if fm.truncate is not None and isinstance(value, str):
        value = value[: fm.truncate]
    return value


def put_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating the parents."""
    *parents, leaf = path.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def map_record(sync: SyncSpec, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The target record for one source record, or None when ``where`` excludes it.

    A field whose value cannot be computed (missing path, failing transform) is left out: the sink's
    validation then rejects the record with a reason naming the field.
    """
    if sync.where and not _matches(record, sync.where):
        return None
    out: dict[str, Any] = {}
    for path, fm in sync.fields.items():
        try:
            value = _evaluate(fm, record)
        except (ValueError, TypeError):
            continue
        if value is not _MISSING:
            put_path(out, path, value)
    return out


def column_lineage(sync: SyncSpec) -> dict[str, list[str]]:
    """Target field → the top-level source columns it is computed from (empty for constants)."""
    lineage: dict[str, list[str]] = {}
    for path, fm in sync.fields.items():
        paths: list[str] = []
        if fm.from_ is not None:
            paths = [fm.from_]
        elif fm.template is not None:
            paths = _PLACEHOLDER.findall(fm.template)
        elif fm.cases is not None:
            paths = [p for c in fm.cases for p in c.when]
        lineage[path] = list(dict.fromkeys(p.split(".")[0].split("[]")[0] for p in paths))
    return lineage


# -- loading ----------------------------------------------------------------------------------------


def parse_sync(data: Any, source: str, connectors: Mapping[str, ConnectorSpec]) -> SyncSpec:
    """Validate one sync document and check it against the connectors it names."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"the document must be a mapping, got {type(data).__name__}"])
    try:
        sync = SyncSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_format_error(e) for e in exc.errors(include_url=False)]) from None
    problems: list[str] = []
    src = connectors.get(sync.source_connector)
    if src is None or sync.source_stream not in src.streams:
        streams = sorted(f"{c.name}/{s}" for c in connectors.values() for s in c.streams)
        problems.append(f"source: got '{sync.source}', expected one of {streams}")
    tgt = connectors.get(sync.target_connector)
    if tgt is None or sync.target_sink not in tgt.sinks:
        sinks = sorted(f"{c.name}/{s}" for c in connectors.values() for s in c.sinks)
        problems.append(f"target: got '{sync.target}', expected one of {sinks}")
    else:
        sink = tgt.sinks[sync.target_sink]
        if not sink.allow_extra_fields:
            for path in sync.fields:
                if path not in sink.fields:
                    problems.append(f"fields.{path}: not a field of sink '{sync.target}', expected one of {list(sink.fields)}")
        missing = [p for p, rule in sink.fields.items() if rule.required and p not in sync.fields]
        if missing:
            problems.append(f"fields: sink '{sync.target}' requires {missing}, which this mapping does not fill")
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
