"""Secrets stay out of settings files, and the files that hold keys stay private.

A TOML settings file is copied, mailed, checked into configuration repositories and shown
on screens; a password in it is a password leaked. So a settings file that holds one (any
key named like ``password`` other than a ``*_file`` path, or a database URL with a password
in it) is refused with the file, the line, the key and where the password goes instead:
the environment or a file only the service can read.

The edge agent also says once (one log line) when its settings file, its private keys or
its password files can be read by the group or by others (``chmod 600`` fixes it).
"""

from __future__ import annotations

import logging
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from robodensity.core.errors import ConfigError

log = logging.getLogger(__name__)


def _walk(doc: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted key, last key, value) of every leaf; list items as ``key[i]``."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict | list):
                yield from _walk(value, path)
            else:
                yield path, key, value
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _walk(value, f"{prefix}[{i}]")


def _url_password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return parts.password
    found = parse_qs(parts.query).get("password")
    return found[0] if found else None


def _where_instead(key: str) -> str:
    if key == "database.url":
        return (
            "leave it out of the URL and put it in a libpq password file (~/.pgpass, or the file PGPASSFILE "
            "names, mode 0600), or set the whole URL in the environment as ROBODENSITY_DATABASE__URL"
        )
    if key == "broker.password":
        return "set ROBODENSITY_BROKER__PASSWORD in the environment, or broker.password_file to a file (mode 0600)"
    section = key.rsplit(".", 1)[0]
    return f"put it in a file only the service can read (mode 0600) and set {section}.password_file to its path"


def _line_of(text: str, last: str, secret: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(last)}\s*=", line) and secret in line:
            return number
    return None


def refuse_secrets_in_file(path: Path) -> None:
    """ConfigError when the TOML file ``path`` holds a password; nothing when it cannot be parsed
    (the settings loader reports that)."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    for key, last, value in _walk(doc):
        if not isinstance(value, str) or not value:
            continue
        if "password" in last.lower() and not last.lower().endswith("_file"):
            secret: str | None = value
        elif last == "url":
            secret = _url_password(value)
        else:
            continue
        if secret:
            line = _line_of(text, last, secret)
            where = f"{path}:{line}" if line else str(path)
            raise ConfigError(f"{where}: {key} holds a password; a settings file must not: {_where_instead(key)}")


def _private_files(settings: Any) -> Iterator[Path]:
    """Key and password files the settings name (broker, factory brokers, OPC UA sources)."""
    clients = [settings.broker, *settings.edge.mqtt_json, *settings.edge.sparkplug, *settings.edge.opcua]
    for client in clients:
        for name in ("key_file", "password_file", "private_key"):
            value = getattr(client, name, None)
            if isinstance(value, Path):
                yield value


def warn_readable_by_others(settings: Any, settings_file: Path | None) -> list[Path]:
    """Log one warning naming the settings file and key/password files that the group or others can
    read; returns them."""
    exposed: list[tuple[Path, int]] = []
    for path in ([settings_file] if settings_file else []) + list(_private_files(settings)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            exposed.append((path, mode))
    if exposed:
        names = ", ".join(f"{p} ({m:04o})" for p, m in exposed)
        log.warning("readable by group or others: %s; run chmod 600 on them (owner: the service's user)", names)
    return [p for p, _ in exposed]
