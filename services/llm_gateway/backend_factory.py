"""The backend factory: backends from configuration, a JSON list in failover order.

`DDNRAG_LLM_GATEWAY_BACKENDS` (or the file named by `DDNRAG_LLM_GATEWAY_BACKENDS_FILE`) holds
a list such as::

    [
      {"name": "vllm", "kind": "openai", "base_url": "http://vllm:8000/v1",
       "model": "meta-llama/Llama-3.1-8B-Instruct", "max_concurrency": 32},
      {"name": "nim", "kind": "openai", "base_url": "https://integrate.api.nvidia.com/v1",
       "model": "meta/llama-3.1-8b-instruct", "api_key_env": "NVIDIA_API_KEY"},
      {"name": "ollama", "kind": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "llama3.2"},
      {"name": "extractive", "kind": "extractive"}
    ]

Keys of every entry: `name` (unique), `kind` ("openai", "extractive" or "transformers"), and the
limits `connect_timeout_s`, `first_token_timeout_s`, `idle_timeout_s`, `max_concurrency`,
`retries`, `backoff_s`, `cooldown_s` (see `backend.BackendLimits`).
"openai": `base_url` (up to /v1), `model` (the default), `models` (more served models),
`api_key_env` (the variable holding the key) or `api_key_file` (a file holding it), `headers`
(extra non-secret headers), `include_usage` (default true: ask for usage in the stream).
"extractive": any field of `extractive.Selection` (`min_score`, `margin`, `max_sentences`,
`rank_penalty`, ...); the defaults are that dataclass's.
"transformers": `model_dir`, `device` ("cuda", "cpu"; default cuda when available), `dtype`
("bfloat16", "float16", ...), `model` (the id reported; default the directory name).
Keys are read when the backend is built and never logged; a key named but missing fails at start.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from kernel.config import ConfigError

from .backend import Backend, BackendLimits, BackendSpec
from .extractive import SELECTION, Encoder, ExtractiveBackend, Selection
from .local_transformers import TransformersBackend
from .openai_backend import OpenAIBackend
from .tokens import TokenCounter

KINDS = ("openai", "extractive", "transformers")
_LIMIT_KEYS = {
    "connect_timeout_s": float,
    "first_token_timeout_s": float,
    "idle_timeout_s": float,
    "max_concurrency": int,
    "retries": int,
    "backoff_s": float,
    "cooldown_s": float,
}


def parse_specs(raw: str, *, source: str = "DDNRAG_LLM_GATEWAY_BACKENDS") -> list[BackendSpec]:
    """Parses and checks a JSON backends list; ConfigError names the entry and key at fault."""
    if not raw.strip():
        return []
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(items, list):
        raise ConfigError(f"{source} must be a JSON list of backend objects")
    specs: list[BackendSpec] = []
    for i, item in enumerate(items):
        where = f"{source}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object")
        item = dict(item)
        name = item.pop("name", None)
        kind = item.pop("kind", "openai")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} needs a non-empty string 'name'")
        if kind not in KINDS:
            raise ConfigError(f"{where} ({name}): kind must be one of {', '.join(KINDS)}, got {kind!r}")
        limits: dict[str, Any] = {}
        for key, tp in _LIMIT_KEYS.items():
            if key in item:
                try:
                    limits[key] = tp(item.pop(key))
                except (TypeError, ValueError):
                    raise ConfigError(f"{where} ({name}): {key} must be a number") from None
        lim = BackendLimits(**limits)
        if (
            lim.max_concurrency < 1
            or lim.retries < 0
            or min(lim.connect_timeout_s, lim.first_token_timeout_s, lim.idle_timeout_s) <= 0
        ):
            raise ConfigError(f"{where} ({name}): timeouts and max_concurrency must be > 0, retries >= 0")
        if kind == "openai":
            if not isinstance(item.get("base_url"), str) or not item["base_url"].startswith(("http://", "https://")):
                raise ConfigError(f"{where} ({name}): 'base_url' must be an http(s) URL ending in /v1")
            if not isinstance(item.get("model"), str) or not item["model"]:
                raise ConfigError(f"{where} ({name}): 'model' (the default model) is required")
        if kind == "extractive":
            selection_options(item, SELECTION.min_score, where=f"{where} ({name})")
        if kind == "transformers" and not item.get("model_dir"):
            raise ConfigError(f"{where} ({name}): 'model_dir' is required")
        if any(s.name == name for s in specs):
            raise ConfigError(f"{where}: backend name {name!r} is used twice")
        specs.append(BackendSpec(name, kind, lim, item))
    return specs


def read_api_key(spec: BackendSpec, environ: dict[str, str] | None = None) -> str:
    """The API key from `api_key_env` or `api_key_file`; empty when neither is set."""
    environ = dict(os.environ) if environ is None else environ
    env = spec.options.get("api_key_env")
    path = spec.options.get("api_key_file")
    if env:
        key = environ.get(env, "")
        if not key:
            raise ConfigError(f"backend {spec.name!r}: variable {env} (its API key) is not set")
        return key.strip()
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"backend {spec.name!r}: cannot read api_key_file {path}: {err.strerror}") from None
    return ""


def build_backends(
    specs: list[BackendSpec],
    *,
    encoder: Encoder,
    counter: TokenCounter,
    extractive_fallback: bool = True,
    extractive_min_score: float = SELECTION.min_score,
) -> list[Backend]:
    """Backends in failover order; the extractive generator is appended when no entry names it
    and `extractive_fallback` is on (so an empty list means the extractive generator alone)."""
    out: list[Backend] = []
    for spec in specs:
        if spec.kind == "extractive":
            out.append(
                ExtractiveBackend(
                    encoder,
                    counter,
                    name=spec.name,
                    **selection_options(spec.options, extractive_min_score),
                    limits=spec.limits,
                )
            )
        elif spec.kind == "openai":
            out.append(OpenAIBackend.from_spec(spec, api_key=read_api_key(spec)))
        else:
            out.append(TransformersBackend.from_spec(spec))
    if extractive_fallback and not any(s.kind == "extractive" for s in specs):
        name = "extractive" if not any(s.name == "extractive" for s in specs) else "extractive-fallback"
        out.append(ExtractiveBackend(encoder, counter, name=name, min_score=extractive_min_score))
    return out


def selection_options(
    options: dict[str, Any], min_score: float, *, where: str = "extractive backend"
) -> dict[str, Any]:
    """An extractive entry's selection options, typed as `Selection` declares them; `min_score`
    (from DDNRAG_LLM_GATEWAY_EXTRACTIVE_MIN_SCORE) unless the entry sets its own."""
    types = {f.name: type(getattr(SELECTION, f.name)) for f in dataclasses.fields(Selection)}
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(types)}")
    try:
        return {"min_score": min_score} | {k: types[k](v) for k, v in options.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {', '.join(options)} must be numbers") from None
