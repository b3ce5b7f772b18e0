"""Resolving backend credentials from the environment, a file or a mounted Kubernetes Secret.

Accepted sources:
- an environment prefix: `<PREFIX>_ACCESS_KEY_ID`, `<PREFIX>_SECRET_ACCESS_KEY` (and optional
  `<PREFIX>_SESSION_TOKEN`);
- a file: JSON (`access_key_id`/`secret_access_key`, or the AWS names), `KEY=VALUE` lines, or an
  AWS credentials ini file (its `[default]` section);
- a directory (a mounted Kubernetes Secret): one file per key, named `access_key_id` /
  `secret_access_key` or `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.

Errors name the source, never a value.
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from pathlib import Path

from kernel.errors import ErrorKind, ServiceError

from .model import Credentials

_ID_NAMES = ("access_key_id", "aws_access_key_id", "accesskey", "access_key")
_SECRET_NAMES = ("secret_access_key", "aws_secret_access_key", "secretkey", "secret_key")
_TOKEN_NAMES = ("session_token", "aws_session_token")


def _bad(message: str) -> ServiceError:
    return ServiceError(ErrorKind.FAILED_PRECONDITION, message, reason="CREDENTIALS_UNREADABLE")


def _pick(values: Mapping[str, str], names: tuple[str, ...]) -> str:
    lowered = {k.strip().lower(): v for k, v in values.items()}
    for n in names:
        if lowered.get(n):
            return str(lowered[n]).strip()
    return ""


def _from_mapping(values: Mapping[str, str], source: str) -> Credentials:
    key_id, secret = _pick(values, _ID_NAMES), _pick(values, _SECRET_NAMES)
    if not key_id or not secret:
        raise _bad(f"{source} does not hold both an access key id and a secret access key")
    return Credentials(key_id, secret, _pick(values, _TOKEN_NAMES))


def from_env_prefix(prefix: str, environ: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    key_id = env.get(f"{prefix}_ACCESS_KEY_ID", "")
    secret = env.get(f"{prefix}_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise _bad(f"the variables {prefix}_ACCESS_KEY_ID and {prefix}_SECRET_ACCESS_KEY are not both set")
    return Credentials(key_id, secret, env.get(f"{prefix}_SESSION_TOKEN", ""))


def from_path(path: str) -> Credentials:
    p = Path(path)
    source = f"the credentials path {path!r}"
    if p.is_dir():
        values: dict[str, str] = {}
        for child in p.iterdir():
            # Kubernetes mounts a Secret as files plus ..data symlinks; skip the hidden entries.
            if child.name.startswith(".") or not child.is_file():
                continue
            try:
                values[child.name] = child.read_text().strip()
            except OSError:
                continue
        return _from_mapping(values, source)
    try:
        text = p.read_text()
    except OSError as err:
        raise _bad(f"{source} cannot be read ({err.strerror or type(err).__name__})") from None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            raise _bad(f"{source} is not valid JSON") from None
        if not isinstance(data, dict):
            raise _bad(f"{source} must hold a JSON object")
        return _from_mapping({k: str(v) for k, v in data.items()}, source)
    if stripped.startswith("["):
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text)
        except configparser.Error:
            raise _bad(f"{source} is not a valid credentials ini file") from None
        section = "default" if parser.has_section("default") else (parser.sections() or [""])[0]
        if not section:
            raise _bad(f"{source} has no section")
        return _from_mapping(dict(parser[section]), source)
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        values[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
    return _from_mapping(values, source)
