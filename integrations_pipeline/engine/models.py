"""Shared pydantic building blocks for spec models: the frozen base and environment references."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base of every spec model: immutable, and unknown keys are errors (typos fail at load)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Secret(Frozen):
    """A credential, always read from an environment variable; the spec never holds the value."""

    env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="Environment variable holding the secret.")


class Setting(Frozen):
    """A non-secret value that an environment variable may override (base URLs, plan limits)."""

    env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    default: str | None = Field(default=None, description="Used when the variable is unset.")
