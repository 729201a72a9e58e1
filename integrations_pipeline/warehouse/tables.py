"""Table layout of one stream in the warehouse, derived from its connector spec.

A stream ``inventory`` of vendor ``trackstar`` becomes the table ``trackstar.inventory``. Its data
columns follow the stream's JSON Schema in order; per-connection connectors (Trackstar) get a
leading ``_connection_id`` that is also part of the primary key. Every table additionally holds two
meta columns the warehouse maintains itself: ``_extra`` (JSON: top-level record fields that are not
data columns, null when none) and ``_synced_at`` (when the row was last written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.engine.spec import ConnectorSpec

ColumnType = Literal["string", "integer", "number", "boolean", "timestamp", "json"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)

CONNECTION_COLUMN = "_connection_id"
EXTRA_COLUMN = "_extra"
SYNCED_AT_COLUMN = "_synced_at"
#: Names the warehouse uses for its own columns; a spec may not declare them.
RESERVED_COLUMNS = frozenset({EXTRA_COLUMN, SYNCED_AT_COLUMN})


@dataclass(frozen=True)
class Column:
    """One data column: a record's top-level field and the warehouse type that holds it."""

    name: str
    type: ColumnType
    #: What the vendor documents about the field (the JSON Schema property's ``description``): shown in the UI,
    #: never part of a table's identity.
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name:
            raise ValueError(f"column name must be a non-empty string, got {self.name!r}")
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"column '{self.name}': got type '{self.type}', expected one of {list(COLUMN_TYPES)}")


@dataclass(frozen=True)
class TableSpec:
    """Where and how one stream is stored: ``<schema>.<name>``, its columns, key and cursor."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    cursor_field: str | None

    def __post_init__(self) -> None:
        # Accept lists for convenience; store tuples so the spec stays hashable and immutable.
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "primary_key", tuple(self.primary_key))
        for label, value in (("schema", self.schema), ("name", self.name)):
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError(f"table {label} must be a non-empty string, got {value!r}")
        names = [c.name for c in self.columns]
        if not names:
            raise ValueError(f"table {self.full_name}: needs at least one column")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table {self.full_name}: duplicate columns {duplicates}")
        reserved = sorted(RESERVED_COLUMNS.intersection(names))
        if reserved:
            raise ValueError(f"table {self.full_name}: column names {reserved} are reserved for the warehouse")
        if not self.primary_key:
            raise ValueError(f"table {self.full_name}: primary_key must name at least one column")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise ValueError(f"table {self.full_name}: primary_key columns {missing} are not columns")
        if len(set(self.primary_key)) != len(self.primary_key):
            raise ValueError(f"table {self.full_name}: primary_key repeats a column")
        if self.cursor_field is not None and self.cursor_field not in names:
            raise ValueError(f"table {self.full_name}: cursor_field '{self.cursor_field}' is not a column")

    @property
    def full_name(self) -> str:
        """``schema.name`` (unquoted, for messages)."""
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.full_name} has no column '{name}'")

    @property
    def per_connection(self) -> bool:
        """True when rows carry a ``_connection_id`` (per-connection connectors such as Trackstar)."""
        return CONNECTION_COLUMN in self.column_names


def column_type_for(prop: Any) -> ColumnType:
    """Map one JSON-Schema property to a column type.

    ``string`` with ``format: date-time`` → timestamp; ``string``/``integer``/``number``/``boolean``
    as such; ``object``, ``array``, an unknown or missing type, or several non-null types → json.
    ``"null"`` in a type list only makes the column nullable (every data column is).
    """
    if not isinstance(prop, dict):
        return "json"
    declared = prop.get("type")
    if isinstance(declared, str):
        types = [declared]
    elif isinstance(declared, list):
        types = [t for t in declared if isinstance(t, str)]
    else:
        types = []
    non_null = [t for t in dict.fromkeys(types) if t != "null"]
    if len(non_null) != 1:
        return "json"
    kind = non_null[0]
    if kind == "string":
        return "timestamp" if prop.get("format") == "date-time" else "string"
    if kind in ("integer", "number", "boolean"):
        return kind  # type: ignore[return-value]
    return "json"


def table_spec_for(connector: ConnectorSpec, stream: str) -> TableSpec:
    """The table of ``connector``'s ``stream``: schema = connector name, table = stream name."""
    try:
        spec = connector.streams[stream]
    except KeyError:
        raise ConfigError(
            f"connector '{connector.name}' has no stream '{stream}'; expected one of {sorted(connector.streams)}"
        ) from None
    properties: dict[str, Any] = spec.json_schema.get("properties") or {}
    columns: list[Column] = []
    primary_key: tuple[str, ...] = tuple(spec.primary_key)
    if connector.connections is not None:
        columns.append(
            Column(
                CONNECTION_COLUMN,
                "string",
                f"The {connector.title} connection (one customer's account) the row was read through; part of the key.",
            )
        )
        primary_key = (CONNECTION_COLUMN, *(k for k in spec.primary_key if k != CONNECTION_COLUMN))
    for name, prop in properties.items():
        if connector.connections is not None and name == CONNECTION_COLUMN:
            continue  # already the leading column
        description = prop.get("description") if isinstance(prop, dict) else None
        columns.append(Column(name, column_type_for(prop), description if isinstance(description, str) else ""))
    cursor = spec.incremental.cursor_field if spec.incremental else None
    try:
        return TableSpec(
            schema=connector.name, name=stream, columns=tuple(columns), primary_key=primary_key, cursor_field=cursor
        )
    except ValueError as exc:
        raise ConfigError(f"{connector.name}.yaml: streams.{stream}: {exc}") from None
