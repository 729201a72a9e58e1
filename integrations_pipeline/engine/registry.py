"""Name → implementation registries for auth and paginator types.

A spec names its auth or paginator by a snake_case ``type``. Each registered type pairs a frozen
config model (what the YAML may say) with the runtime class built from it, as dlt's rest_api does.
An unknown name fails with "got X, expected one of [...]" so a typo is found at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

C = TypeVar("C")


@dataclass(frozen=True)
class Registered(Generic[C]):
    name: str
    config: type[BaseModel]
    runtime: type[C]


class Registry(Generic[C]):
    """An ordered mapping of type names to (config model, runtime class)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Registered[C]] = {}

    def register(self, name: str, config: type[BaseModel]):
        """Class decorator: ``@PAGINATORS.register("next_token", NextTokenPagination)``."""

        def deco(runtime: type[C]) -> type[C]:
            if name in self._entries:
                raise ValueError(f"{self.kind} type '{name}' is registered twice")
            self._entries[name] = Registered(name, config, runtime)
            return runtime

        return deco

    def names(self) -> list[str]:
        return list(self._entries)

    def configs(self) -> tuple[type[BaseModel], ...]:
        return tuple(e.config for e in self._entries.values())

    def get(self, name: str) -> Registered[C]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"got '{name}', expected one of {self.names()}") from None

    def build(self, config: BaseModel, **kwargs) -> C:
        """Instantiate the runtime class registered for ``config.type``."""
        return self.get(config.type).runtime(config, **kwargs)  # type: ignore[attr-defined,call-arg]
