"""Guardrails from configuration.

`DDNRAG_LLM_GATEWAY_GUARDS` holds a JSON list of remote guards, run beside the built-in one::

    [
      {"kind": "nemo", "url": "http://guardrails:8000", "config_id": "content_safety"},
      {"kind": "content_safety", "url": "http://nemoguard:8000/v1",
       "model": "nvidia/llama-3.1-nemoguard-8b-content-safety", "stages": ["input", "output"]},
      {"kind": "moderation", "url": "https://api.openai.com/v1", "model": "omni-moderation-latest",
       "api_key_env": "OPENAI_API_KEY", "stages": ["input"]}
    ]

Keys: `kind`, `url`, `name` (default the kind), `stages` (default both), `api_key_env` or
`api_key_file`, and `config_id` (nemo) or `model` (content_safety, moderation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kernel.config import ConfigError
from kernel.httpjson import read_api_key

from .base import FAIL_MODES, STAGES, Guard, Guardrails
from .builtin import BuiltinGuard
from .remote import ContentSafetyGuard, ModerationGuard, NemoGuard

KINDS = {"nemo": NemoGuard, "content_safety": ContentSafetyGuard, "moderation": ModerationGuard}
VAR = "DDNRAG_LLM_GATEWAY_GUARDS"


def build_guardrails(
    spec: str,
    *,
    fail_mode: str = "closed",
    timeout_s: float = 5.0,
    deny: Sequence[str] = (),
    max_question_chars: int = 4096,
    max_answer_chars: int = 0,
) -> Guardrails:
    if fail_mode not in FAIL_MODES:
        raise ConfigError(f"DDNRAG_LLM_GATEWAY_GUARD_FAIL_MODE must be one of {FAIL_MODES}, got {fail_mode!r}")
    guards: list[Guard] = [
        BuiltinGuard(max_question_chars=max_question_chars, max_answer_chars=max_answer_chars, deny=deny)
    ]
    try:
        entries = json.loads(spec) if spec.strip() else []
    except ValueError as err:
        raise ConfigError(f"{VAR} is not valid JSON: {err}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{VAR} must be a JSON list of guards")
    names = {"builtin"}
    for i, e in enumerate(entries):
        guards.append(_one(i, e, names, timeout_s))
    return Guardrails(guards, fail_mode=fail_mode, timeout_s=timeout_s)


def _one(i: int, e: Any, names: set[str], timeout_s: float) -> Guard:
    where = f"{VAR}[{i}]"
    if not isinstance(e, dict):
        raise ConfigError(f"{where} must be an object")
    kind = e.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {sorted(KINDS)}, got {kind!r}")
    url = e.get("url", "")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url must be an http(s) URL, got {url!r}")
    name = str(e.get("name") or kind)
    if name in names:
        raise ConfigError(f"{where}.name {name!r} is used twice")
    names.add(name)
    stages = tuple(e.get("stages") or STAGES)
    if not stages or any(s not in STAGES for s in stages):
        raise ConfigError(f"{where}.stages must list 'input' and/or 'output', got {list(stages)}")
    key = read_api_key(str(e.get("api_key_env") or ""), str(e.get("api_key_file") or ""), what=where)
    common: dict[str, Any] = {"api_key": key, "stages": stages, "timeout_s": timeout_s}
    if kind == "nemo":
        if not e.get("config_id"):
            raise ConfigError(f"{where}.config_id is required for a NeMo Guardrails server")
        return NemoGuard(name, url, config_id=str(e["config_id"]), **common)
    if kind == "content_safety":
        if not e.get("model"):
            raise ConfigError(f"{where}.model is required for a content-safety model")
        return ContentSafetyGuard(name, url, model=str(e["model"]), **common)
    return ModerationGuard(name, url, model=str(e.get("model") or ""), **common)
