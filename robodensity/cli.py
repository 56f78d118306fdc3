"""The ``robodensity`` command: a thin layer over the Python API.

Each command parses, calls one function, prints. A RoboDensityError becomes one line
on stderr and exit code 2; nothing else is caught, so a bug shows its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from robodensity.errors import ConfigError, RoboDensityError
from robodensity.settings import Settings, load_settings

console = Console(width=None if Console().is_terminal else 120)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="RoboDensity: how many industrial robots really work here, per 10,000 manufacturing "
    "workers, and how hard.\n\nStart with `robodensity demo`, which needs no configuration.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
edge_app = typer.Typer(help="The edge agent a factory runs on its gateway PC.", no_args_is_help=True)
collector_app = typer.Typer(help="The central collector service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
registry_app = typer.Typer(help="The robot registry: regions, factories, headcounts, robots.", no_args_is_help=True)
metrics_app = typer.Typer(help="Compute metrics from stored telemetry.", no_args_is_help=True)
report_app = typer.Typer(help="Reports for economic departments.", no_args_is_help=True)
simulate_app = typer.Typer(help="Simulated controllers and provinces.", no_args_is_help=True)
for sub, name in (
    (edge_app, "edge"),
    (collector_app, "collector"),
    (db_app, "db"),
    (registry_app, "registry"),
    (metrics_app, "metrics"),
    (report_app, "report"),
    (simulate_app, "simulate"),
):
    app.add_typer(sub, name=name)

ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="Settings file (TOML); see deploy/robodensity.example.toml.",
    envvar="ROBODENSITY_CONFIG",
    exists=False,
)
LogFormatOpt = typer.Option("text", "--log-format", help="text for a terminal, json for journald and log shippers.")
SchemaOpt = typer.Option("robodensity", "--schema", help="Database schema holding every RoboDensity object.")


def friendly(fn: F) -> F:
    """Turn a RoboDensityError into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RoboDensityError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
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
    if fmt not in ("text", "json"):
        raise ConfigError(f"--log-format must be one of text, json; got {fmt!r}")
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(console=err_console, show_path=False)
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


def _stop_on_signals(on_stop: Callable[[], None]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: on_stop())


# ------------------------------------------------------------------------- demo


@app.command()
@friendly
def demo(
    config: Path | None = ConfigOpt,
    out: Path = typer.Option(Path("out"), help="Folder for the registry CSV, edge outboxes and dashboards."),
    seed: int = typer.Option(1, help="Seed of the simulated province: same seed, same robots, same day."),
    hours: float = typer.Option(8.0, min=0.5, max=168, help="Simulated hours of robot life to replay."),
    replay_seconds: float = typer.Option(30.0, min=5, help="Wall-clock seconds the replay takes."),
    robots: int = typer.Option(100, min=6, max=5000, help="Robots in the simulated province."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what every part is doing."),
) -> None:
    """Measure a simulated province end to end and print its robot density.

    With no configuration it starts PostgreSQL and Mosquitto on free 127.0.0.1 ports,
    simulated OPC UA and MQTT robot controllers, one edge agent per factory and the
    collector; replays a shift of robot life; computes metrics; writes Grafana
    dashboards to OUT/dashboards; and removes what it started.

    Example: robodensity demo --hours 8 --replay-seconds 30
    """
    from robodensity.demo import run_demo
    from robodensity.report import as_table
    from simulators.province import ProvinceSpec

    setup_logging(verbose)
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    settings = load_settings(config)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=1.0)
        result = run_demo(
            settings,
            out,
            ProvinceSpec(robots=robots),
            seed=seed,
            hours=hours,
            replay_s=replay_seconds,
            step=lambda what, done: progress.update(task, description=what, completed=done),
        )
    period = f"{result.start:%Y-%m-%d %H:%M} – {result.end:%H:%M} UTC"
    console.print(as_table(result.rows, f"Robot density, {period}"))
    console.print(
        f"{len(result.province.robots)} robots in {len(result.province.factories)} factories; "
        f"{result.events_stored} events stored. Density = registered robots per 10,000 employees; "
        "verified = robots that did real work; coverage = share of registered robots reporting; "
        "utilisation = EXECUTING / calendar time."
    )
    console.print(f"Dashboards: {out / 'dashboards'}   Registry CSV: {out / 'registry'}")


# ------------------------------------------------------------------------- edge


@edge_app.command("run")
@friendly
def edge_run(
    config: Path | None = ConfigOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    log_format: str = LogFormatOpt,
) -> None:
    """Read the robots named in the settings and forward their events to the broker.

    Example: robodensity edge run --config /etc/robodensity/edge.toml
    """
    from edge.agent import EdgeAgent

    setup_logging(verbose, log_format)
    settings = load_settings(config)
    url = broker_url(settings)
    agent = EdgeAgent(settings, url)
    if not agent.sources:
        raise ConfigError("edge: no sources configured: add [[edge.opcua]] or [[edge.mqtt_json]] sections")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    asyncio.run(main())


@edge_app.command("discover")
@friendly
def edge_discover(
    url: str = typer.Argument(..., help="opc.tcp://HOST:PORT of a robot controller."),
    security_policy: str | None = typer.Option(
        None, help="Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss; omit for none."
    ),
    certificate: Path | None = typer.Option(None, help="Client certificate (DER or PEM)."),
    private_key: Path | None = typer.Option(None, help="Client private key (PEM)."),
    trust_dir: Path | None = typer.Option(None, help="Folder of trusted server certificates."),
    username: str | None = typer.Option(None),
    password: str | None = typer.Option(
        None, envvar="ROBODENSITY_OPCUA_PASSWORD", help="Prefer the environment variable to the command line."
    ),
) -> None:
    """List the robots an OPC UA server exposes (OPC 40010 MotionDeviceSystem instances).

    Example: robodensity edge discover opc.tcp://192.0.2.10:4840
    """
    from rich.table import Table

    from edge.sources.opcua import discover
    from robodensity.settings import OpcUaSourceSettings

    try:
        settings = OpcUaSourceSettings(
            url=url,
            security_policy=security_policy,
            certificate=certificate,
            private_key=private_key,
            trust_dir=trust_dir,
            username=username,
            password=password,
        )
    except ValueError as exc:
        from robodensity.settings import describe_validation_error

        raise ConfigError(describe_validation_error(exc)) from None  # type: ignore[arg-type]
    robots = asyncio.run(discover(settings))
    table = Table(title=f"Robots at {url}")
    for col in ("Manufacturer", "Model", "Serial number", "Category", "Where"):
        table.add_column(col)
    for r in robots:
        table.add_row(r.manufacturer, r.model, r.serial, r.category, r.node_path)
    console.print(table)


# ------------------------------------------------------------------------- collector and database


@collector_app.command("run")
@friendly
def collector_run(
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    log_format: str = LogFormatOpt,
) -> None:
    """Consume edge uplinks, store them once each, acknowledge what is committed.

    Example: ROBODENSITY_DATABASE__URL=postgresql://collector@db/robodensity robodensity collector run
    """
    from collector.consume import Collector

    setup_logging(verbose, log_format)
    settings = load_settings(config)
    collector = Collector(settings, database_url(settings), broker_url(settings), schema)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    collector.run(stop)


@db_app.command("migrate")
@friendly
def db_migrate(config: Path | None = ConfigOpt, schema: str = SchemaOpt) -> None:
    """Apply the SQL migrations not yet applied and preload the published targets.

    Example: robodensity db migrate --config central.toml
    """
    from collector.db import connect, migrate
    from collector.registry import load_reference_targets

    url = database_url(load_settings(config))
    applied = migrate(url, schema)
    with connect(url, schema) as conn:
        load_reference_targets(conn)
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none needed"
    console.print(f"applied {len(applied)} migration(s): {names}")


@registry_app.command("import")
@friendly
def registry_import(
    source: Path = typer.Argument(
        ...,
        exists=True,
        help="A folder with regions.csv, industries.csv, factories.csv, headcounts.csv, robots.csv, "
        "assignments.csv (any subset), or an XLSX workbook with sheets of those names.",
    ),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Validate every row of the registry files, then import them all or nothing.

    Example: robodensity registry import ./registry   (or: robodensity registry import registry.xlsx)
    """
    from collector.db import connect
    from collector.registry import import_registry

    with connect(database_url(load_settings(config)), schema) as conn:
        counts = import_registry(conn, source)
    console.print(", ".join(f"{n} {t}" for t, n in counts.items()))


# ------------------------------------------------------------------------- metrics and reports


def _day(s: str, name: str) -> datetime:
    try:
        d = date.fromisoformat(s)
    except ValueError:
        raise ConfigError(f"{name} must be a date YYYY-MM-DD; got {s!r}") from None
    from robodensity.metrics_job import LOCAL_TZ

    return datetime.combine(d, time.min, LOCAL_TZ)


@metrics_app.command("compute")
@friendly
def metrics_compute(
    from_: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD (China Standard Time)."),
    to: str = typer.Option(..., "--to", help="Day after the last, YYYY-MM-DD."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Compute daily time in state, utilisation and densities for a period and store them.

    Example: robodensity metrics compute --from 2026-10-01 --to 2026-11-01
    """
    from collector.db import connect
    from robodensity.metrics_job import compute

    start, end = _day(from_, "--from"), _day(to, "--to")
    if end <= start:
        raise ConfigError("--to must be after --from")
    with (
        connect(database_url(load_settings(config)), schema) as conn,
        Progress(console=err_console) as progress,
    ):
        task = progress.add_task("metrics", total=4)
        n = compute(conn, start, end, lambda what: progress.update(task, description=what, advance=1))
    console.print(f"wrote {n} density rows for {from_} .. {to}")


@metrics_app.command("stock")
@friendly
def metrics_stock(
    installations: Path = typer.Option(..., exists=True, dir_okay=False, help="CSV with columns year,installations."),
    service_life: int = typer.Option(12, min=1, max=50, help="Average service life [years] (IFR: 12)."),
) -> None:
    """Operational stock from annual installations, the IFR way (year,operational_stock CSV on stdout).

    Example: robodensity metrics stock --installations china.csv --service-life 12
    """
    import csv

    from metrics.stock import ifr_operational_stock

    years, counts = [], []
    with installations.open(encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or {"year", "installations"} - set(reader.fieldnames):
            raise ConfigError(f"{installations}: needs the columns year,installations")
        for line, row in enumerate(reader, start=2):
            try:
                years.append(int(row["year"]))
                counts.append(float(row["installations"]))
            except ValueError:
                raise ConfigError(f"{installations}: line {line}: year and installations must be numbers") from None
    stock = ifr_operational_stock(years, counts, service_life=service_life)
    sys.stdout.write("year,operational_stock\n")
    for y, s in zip(years, stock, strict=False):
        sys.stdout.write(f"{y},{s:.0f}\n")


@report_app.command("density")
@friendly
def report_density(
    region: str = typer.Option(..., help="GB/T 2260 region code, e.g. 320000 for Jiangsu."),
    at: str | None = typer.Option(None, help="Latest period ending on or before this date (YYYY-MM-DD)."),
    industry: str = typer.Option("*", help="GB/T 4754 code, or * for all manufacturing."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Robot density of a region and its sub-regions, with target, coverage and utilisation.

    Example: robodensity report density --region 320000 --format csv
    """
    from collector.db import connect
    from robodensity.report import as_table, as_text, density_report

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be one of table, csv, json; got {fmt!r}")
    when = _day(at, "--at") + timedelta(days=1) if at else None
    with connect(database_url(load_settings(config)), schema) as conn:
        rows = density_report(conn, region, when, industry)
    if not rows:
        raise RoboDensityError(
            f"no density computed for region {region} (industry {industry}); run `robodensity metrics compute` first"
        )
    if fmt == "table":
        console.print(as_table(rows, f"Robot density, region {region}"))
    else:
        sys.stdout.write(as_text(rows, fmt))  # type: ignore[arg-type]


@report_app.command("targets")
@friendly
def report_targets(
    region: str = typer.Option(..., help="GB/T 2260 region code, e.g. 320000."),
    industry: str = typer.Option("*", help="GB/T 4754 code, or * for all manufacturing."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Progress toward the density target, the trend projected to the due date, and the month
    the trend reaches the target (JSON). Needs densities for several periods.

    Example: robodensity report targets --region 320000
    """
    from collector.db import connect
    from robodensity.report import target_outlook

    with connect(database_url(load_settings(config)), schema) as conn:
        outlook = target_outlook(conn, region, industry)
    if outlook is None:
        raise RoboDensityError(f"no density with a target for region {region}; run `robodensity metrics compute`")
    sys.stdout.write(json.dumps(outlook, ensure_ascii=False, indent=2) + "\n")


@report_app.command("subsidy")
@friendly
def report_subsidy(
    factory: str = typer.Option(..., help="Factory id as registered."),
    since: str = typer.Option(..., help="Day the subsidised robots went in (YYYY-MM-DD)."),
    until: str = typer.Option(..., help="Day to compare with (YYYY-MM-DD)."),
    config: Path | None = ConfigOpt,
    schema: str = SchemaOpt,
) -> None:
    """Subsidy evidence for one factory: density before and after, utilisation of subsidised robots (JSON).

    Example: robodensity report subsidy --factory f320500-005 --since 2026-03-01 --until 2026-11-01
    """
    import json

    from collector.db import connect
    from robodensity.report import subsidy_evidence

    start, end = _day(since, "--since").date(), _day(until, "--until").date()
    with connect(database_url(load_settings(config)), schema) as conn:
        evidence = subsidy_evidence(conn, factory, start, end)
    sys.stdout.write(json.dumps(evidence, ensure_ascii=False, indent=2) + "\n")


# ------------------------------------------------------------------------- simulators


@simulate_app.command("province")
@friendly
def simulate_province(
    out: Path = typer.Option(Path("registry"), help="Folder for the registry CSV files."),
    spec: Path | None = typer.Option(None, help="Province spec (TOML): code, name, robots, [[cities]] ..."),
    seed: int = typer.Option(1, help="Same seed, same province."),
) -> None:
    """Generate a synthetic province and write its registry as CSV for `registry import`.

    Example: robodensity simulate province --out ./registry --seed 7
    """
    from simulators.province import ProvinceSpec, generate, load_spec, write_registry_csv

    province = generate(load_spec(spec) if spec else ProvinceSpec(), seed)
    paths = write_registry_csv(province, out)
    console.print(
        f"{len(province.factories)} factories, {len(province.robots)} robots: " + ", ".join(str(p) for p in paths)
    )


@simulate_app.command("opcua")
@friendly
def simulate_opcua(
    port: int = typer.Option(4840, help="TCP port on 127.0.0.1 (0: any free port)."),
    robots: int = typer.Option(10, min=1, max=5000, help="Motion devices in the simulated controller."),
    hours: float = typer.Option(8.0, help="Simulated hours to replay."),
    speed: float = typer.Option(60.0, help="Simulated seconds per wall second."),
    variant: str = typer.Option(
        "robotics",
        help="robotics: OPC 40010 with state machines; robotics10: signals only (Robotics 1.0 style); "
        "vendor: vendor-named nodes only.",
    ),
    seed: int = typer.Option(1, help="Same seed, same robots doing the same things."),
) -> None:
    """Run a simulated robot controller (asyncua server with the OPC Foundation nodesets).

    Every robot lives through a deterministic schedule of states; point an edge agent or
    `robodensity edge discover` at the printed URL.

    Example: robodensity simulate opcua --port 4840 --robots 20 --speed 600
    """
    import time as _time

    from simulators.behaviour import SimClock, state_schedule
    from simulators.opcua_controller import OpcUaController, SimRobot

    if variant not in ("robotics", "robotics10", "vendor"):
        raise ConfigError(f"--variant must be one of robotics, robotics10, vendor; got {variant!r}")
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    sims = [SimRobot("SIMROBOT", f"SR{seed:02d}{i + 1:05d}", "SR-10") for i in range(robots)]
    schedules = {r.key: state_schedule(seed, r.key, start, end) for r in sims}

    async def main() -> None:
        async with OpcUaController(sims, port=port, variant=variant) as ctrl:  # type: ignore[arg-type]
            for key, sched in schedules.items():
                await ctrl.set_state(key, sched[0][1], sched[0][0])
            console.print(f"serving {robots} robots at {ctrl.url}; replaying {hours:g} h at {speed:g}x")
            rest = {k: s[1:] for k, s in schedules.items()}
            await ctrl.replay(rest, SimClock(start, _time.monotonic(), speed))

    asyncio.run(main())


@simulate_app.command("mqtt")
@friendly
def simulate_mqtt(
    broker: str = typer.Option(..., help="mqtt://HOST:PORT of the factory broker."),
    factory: str = typer.Option("factory-1", help="Factory id used in the topics plant/FACTORY/robots/+/state."),
    robots: int = typer.Option(10, min=1, help="Robots to simulate."),
    hours: float = typer.Option(8.0, help="Simulated hours to replay."),
    speed: float = typer.Option(60.0, help="Simulated seconds per wall second."),
    seed: int = typer.Option(1),
) -> None:
    """Publish simulated robot states as plain JSON on a broker.

    Example: robodensity simulate mqtt --broker mqtt://127.0.0.1:1883 --robots 20 --speed 600
    """
    import time as _time

    from simulators.behaviour import SimClock, state_schedule
    from simulators.mqtt_robot import MqttRobots

    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    keys = [f"SIM/{factory}-{i + 1:04d}" for i in range(robots)]
    schedules = {k: state_schedule(seed, k, start, end) for k in keys}
    with MqttRobots(broker, factory, keys) as sim:
        asyncio.run(sim.replay(schedules, SimClock(start, _time.monotonic(), speed)))
        console.print(f"published {sim.published} state changes")


def _mount_optional() -> None:
    """Sub-commands whose modules other parts of the system own."""
    try:
        from dashboards.cli import app as dashboards_app
        from dashboards.cli import bulletin as bulletin_command
    except ImportError:  # a gateway install has no dashboards extra
        return
    app.add_typer(dashboards_app, name="dashboards", help="Grafana dashboards as code.")
    report_app.command("bulletin")(bulletin_command)


_mount_optional()

if __name__ == "__main__":
    app()
