"""Config dataclasses read from the environment.

Each service has one frozen dataclass. Every field is declared with `env_field`, which records
the variable name and a one-line description, so `load_env` can read it and the Kubernetes parity
test can list the variables a service understands.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A variable is missing or malformed. The message names the variable."""


def env_field(env: str, default: Any, help: str, *, required: bool = False) -> Any:
    """A config field read from variable `env`; `help` is its one-line description."""
    return dataclasses.field(default=default, metadata={"env": env, "help": help, "required": required})


def env_vars(cls: type) -> dict[str, str]:
    """Maps each variable `cls` reads to its description."""
    return {f.metadata["env"]: f.metadata["help"] for f in dataclasses.fields(cls) if "env" in f.metadata}


def load_env(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Builds `cls` from the environment; `overrides` win over variables (used by tests)."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides.pop(f.name)
            continue
        env = f.metadata.get("env")
        raw = environ.get(env) if env else None
        if raw is None or raw == "":
            if f.metadata.get("required"):
                raise ConfigError(f"{env} is required: {f.metadata['help']}")
            continue
        values[f.name] = _parse(raw, hints[f.name], env)
    if overrides:
        raise TypeError(f"unknown config fields: {sorted(overrides)}")
    return cls(**values)


def _parse(raw: str, tp: Any, env: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        inner = [a for a in args if a is not type(None)]
        return _parse(raw, inner[0], env)
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if origin is tuple:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        return raw
    except ValueError:
        raise ConfigError(f"{env}={raw!r} is not a valid {getattr(tp, '__name__', tp)}") from None


@dataclasses.dataclass(frozen=True)
class CommonConfig:
    """Fields every service has; each service's config names its own variables for them."""

    host: str
    port: int
    metrics_port: int
    shutdown_grace_s: float
