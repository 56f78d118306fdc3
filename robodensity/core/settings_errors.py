"""How a bad setting is reported: ``where: key.path: problem``, on one line, never echoing a secret.

``where`` is the settings file or the environment variable the bad value came from, so
``/etc/robodensity/edge.toml: edge.opcua[2].certificate: file /x/y.pem does not exist`` and
``environment ROBODENSITY_BROKER__URL: broker.url: must be mqtt://host:port or mqtts://host:port;
got "http://x"`` read the same way. Validators raise ``ValueError("problem")`` without the key:
the key path is added here, once.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource

Loc = tuple[int | str, ...]
Origin = Callable[[Loc], str]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_URL_PASSWORD = re.compile(r"(//[^/:@\s]*):[^@/\s]*@")
_SECRET_KEYS = ("password", "secret", "token")


def key_path(loc: Sequence[int | str]) -> str:
    """``edge.opcua[2].certificate`` for pydantic's ``('edge', 'opcua', 2, 'certificate')``."""
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part != "[key]":  # pydantic marks an error in a dict's key this way
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            key += f".{name}" if key else name
    return key


def _problem(err: Mapping[str, Any]) -> str:
    kind, msg, ctx = err["type"], str(err["msg"]), err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a setting (check its spelling and its section)"
    if kind in ("literal_error", "enum") and "expected" in ctx:
        return "must be one of " + str(ctx["expected"]).replace("'", "").replace(" or ", ", ")
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Input should be "):
        msg = "must be " + msg.removeprefix("Input should be ")
    return msg[0].lower() + msg[1:] if len(msg) > 1 and msg[1].islower() else msg


def _shown(key: str, err: Mapping[str, Any], problem: str) -> str:
    got = err.get("input")
    if err["type"] == "missing" or got is None or isinstance(got, (Mapping, list, tuple, BaseModel)):
        return ""
    if any(word in key.lower() for word in _SECRET_KEYS):
        return ""  # never echo a secret
    if isinstance(got, (str, Path)):
        text = _URL_PASSWORD.sub(r"\1:***@", str(got))
        if text in problem:
            return ""  # "file /x/y.pem does not exist" says it already
        return "; got " + json.dumps(text if len(text) <= 120 else text[:117] + "...", ensure_ascii=False)
    return f"; got {json.dumps(got) if isinstance(got, (bool, int, float)) else repr(got)}"


def describe_validation_error(exc: ValidationError, where: Path | str | Origin | None = None) -> str:
    """One line: ``where: key.path: problem; got "value"`` for each error, joined by " | ".

    ``where`` is a fixed prefix (a file name), or a function giving each error's origin.
    """
    origin: Origin = where if callable(where) else (lambda _loc: str(where) if where else "")
    lines = []
    for err in exc.errors():
        key, problem = key_path(err["loc"]), _problem(err)
        line = f"{key}: {problem}" if key else problem
        src = origin(tuple(err["loc"]))
        lines.append(f"{src}: {line}{_shown(key, err, problem)}" if src else f"{line}{_shown(key, err, problem)}")
    return " | ".join(lines)


def _depth(data: Any, loc: Loc) -> int:
    """How many leading parts of ``loc`` exist in ``data``."""
    n = 0
    for part in loc:
        in_table = isinstance(data, Mapping) and part in data
        if in_table or (isinstance(data, (list, tuple)) and isinstance(part, int) and 0 <= part < len(data)):
            data = data[part]
        elif isinstance(data, BaseModel) and isinstance(part, str) and part in type(data).model_fields:
            data = getattr(data, part)
        else:
            break
        n += 1
    return n


def _env_prefix(settings_cls: type[BaseSettings]) -> tuple[str, str]:
    config = settings_cls.model_config
    return str(config.get("env_prefix") or ""), str(config.get("env_nested_delimiter") or "__")


def _env_variable(settings_cls: type[BaseSettings], loc: Loc) -> str:
    """``environment ROBODENSITY_EDGE__AGENT_ID``: the variable that set ``loc`` (or a parent of it)."""
    prefix, delim = _env_prefix(settings_cls)
    names: list[str] = []
    for part in loc:  # an environment variable names tables, never a list's items
        if not isinstance(part, str):
            break
        names.append(part)
    present = {k.upper() for k in os.environ}
    for i in range(len(names), 0, -1):
        var = (prefix + delim.join(names[:i])).upper()
        if var in present:
            return f"environment {var}"
    return "environment"


def origins_of(settings_cls: type[BaseSettings], path: Path | None, overrides: Mapping[str, Any]) -> Origin:
    """Where each key's value came from: keyword arguments (no prefix), the environment or the file.

    The source that holds the longest part of an error's key path wins; on a tie, the one
    that takes precedence (arguments, then environment, then file).
    """
    env = EnvSettingsSource(settings_cls)()
    toml: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8")) if path else {}
    fallback = str(path) if path else ""

    def origin(loc: Loc) -> str:
        best, depth = fallback, 0
        for label, data in (("", overrides), (None, env), (fallback, toml)):
            d = _depth(data, loc)
            if d > depth:
                best, depth = (_env_variable(settings_cls, loc) if label is None else label), d
        return best

    return origin


def _is_complex(settings_cls: type[BaseModel], names: list[str]) -> bool:
    """Whether the field at ``names`` is read from the environment as JSON (a table or a list)."""
    model: Any = settings_cls
    annotation: Any = None
    for name in names:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or name not in model.model_fields:
            return False
        annotation = model = model.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return typing.get_origin(annotation) in (tuple, list, dict)


def describe_env_parse_error(settings_cls: type[BaseSettings], exc: Exception) -> str:
    """``environment ROBODENSITY_EDGE__OPCUA: edge.opcua: must be JSON (...)`` for a variable that is not."""
    prefix, delim = _env_prefix(settings_cls)
    for var, value in sorted(os.environ.items()):
        if not var.upper().startswith(prefix.upper()):
            continue
        names = var[len(prefix) :].lower().split(delim)
        if not _is_complex(settings_cls, names):
            continue
        try:
            json.loads(value)
        except ValueError as err:
            return f"environment {var}: {'.'.join(names)}: must be JSON (a list or a table): {err}"
    return f"environment: {exc}"
