"""What every command shares: the consoles, the one error path, logging, options, the database.

Output for people goes through ``console`` (stdout) and ``err_console`` (stderr). Neither
wraps lines: under journald, cron or a pipe rich would otherwise break every line at
80 columns, and an error message must stay one line a log search can find.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from robodensity.core.errors import ConfigError, RoboDensityError
from robodensity.core.settings import Settings, load_settings

if TYPE_CHECKING:
    import psycopg

console = Console(width=None if Console().is_terminal else 120, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="Settings file (TOML); see deploy/robodensity.example.toml.",
    envvar="ROBODENSITY_CONFIG",
)
SchemaOpt = typer.Option("robodensity", "--schema", help="Database schema holding every RoboDensity object.")
LogFormatOpt = typer.Option("text", "--log-format", help="text for a terminal, json for journald and log shippers.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Log what every part is doing.")


def print_error(message: str) -> None:
    """``error: message`` on stderr, each line of the message as it is (no markup, no wrapping)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True, highlight=False)


def friendly(fn: F) -> F:
    """Turn a RoboDensityError into ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RoboDensityError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    """Log to stderr: json, rich text on a terminal, or plain one-line text elsewhere (never wrapped)."""
    if fmt not in ("text", "json"):
        raise ConfigError(f"--log-format must be one of text, json; got {fmt!r}")
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif err_console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=err_console, show_path=False)
    else:  # rich's log layout pads and wraps to a width; a pipe gets plain lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[handler],
        force=True,
    )
    for noisy in ("asyncua", "opcua"):  # its warnings repeat per connection; ours say what matters
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


def database_url(settings: Settings) -> str:
    if settings.database.url is None:
        raise ConfigError(
            "database.url is not set: set [database] url in the settings file or "
            "ROBODENSITY_DATABASE__URL (postgresql://user@host:port/db)"
        )
    return settings.database.url.get_secret_value()


def broker_url(settings: Settings) -> str:
    if settings.broker.url is None:
        raise ConfigError(
            "broker.url is not set: set [broker] url in the settings file or "
            "ROBODENSITY_BROKER__URL (mqtts://host:8883)"
        )
    return settings.broker.url


def open_db(config: Path | None, schema: str) -> psycopg.Connection:
    """The one way a command finds its database: database.url from --config or the environment."""
    from robodensity.storage.db import connect

    return connect(database_url(load_settings(config)), schema)
