"""``robodensity edge ...``: the agent a factory runs on its gateway PC."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from robodensity.app.cli.common import ConfigOpt, LogFormatOpt, VerboseOpt, broker_url, console, friendly, setup_logging
from robodensity.app.cli.edge_modbus import profile_app
from robodensity.core.errors import ConfigError
from robodensity.core.settings import load_settings
from robodensity.core.settings_secrets import warn_readable_by_others

app = typer.Typer(help="The edge agent a factory runs on its gateway PC.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@app.command("run")
@friendly
def edge_run(config: Path | None = ConfigOpt, verbose: bool = VerboseOpt, log_format: str = LogFormatOpt) -> None:
    """Read the robots named in the settings and forward their events to the broker.

    Example: robodensity edge run --config /etc/robodensity/edge.toml
    """
    from robodensity.edge.agent import EdgeAgent

    setup_logging(verbose, log_format)
    settings = load_settings(config)
    warn_readable_by_others(settings, config)  # one line naming the files, if any
    agent = EdgeAgent(settings, broker_url(settings))
    if not agent.sources:
        raise ConfigError("edge: no sources configured: add [[edge.opcua]] or [[edge.mqtt_json]] sections")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    asyncio.run(main())


@app.command("discover")
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
    """List the robots an OPC UA server exposes (OPC 40010 MotionDeviceSystem instances), or the
    robots behind another scheme: modbus://HOST:502?profile=estun&units=1-8 (prints a settings section);
    hses://HOST (Yaskawa), rws://HOST or rws7://HOST (ABB RobotWare 6 / 7), urdash://HOST (UR).

    Example: robodensity edge discover opc.tcp://192.0.2.10:4840
    """
    if url.startswith("modbus://"):
        from robodensity.app.cli.edge_modbus import discover_modbus

        return discover_modbus(url)
    if url.split("://", 1)[0] in ("hses", "rws", "rws7", "urdash"):
        from robodensity.app.cli.edge_native import discover_native

        return discover_native(url, username, password)
    from rich.table import Table

    from robodensity.core.settings import OpcUaSourceSettings, describe_validation_error
    from robodensity.edge.sources.opcua import discover

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
        raise ConfigError(describe_validation_error(exc)) from None  # type: ignore[arg-type]
    robots = asyncio.run(discover(settings))
    table = Table(title=f"Robots at {url}")
    for col in ("Manufacturer", "Model", "Serial number", "Category", "Where"):
        table.add_column(col)
    for r in robots:
        table.add_row(r.manufacturer, r.model, r.serial, r.category, r.node_path)
    console.print(table)


@app.command("bundle")
@friendly
def edge_bundle(
    out: Path = typer.Option(..., "--out", help="New (or empty) folder to write the bundle into."),
    platform: str | None = typer.Option(
        None, "--platform", help="pip platform tag of the gateway, e.g. manylinux2014_aarch64; default: this machine."
    ),
    python_version: str | None = typer.Option(None, "--python-version", help="The gateway's Python, e.g. 3.11."),
) -> None:
    """Write an air-gapped install for a factory gateway: wheels, example settings, systemd unit, install.sh.

    On the gateway, with no internet: `sudo ./install.sh` installs into /opt/robodensity with
    pip --no-index from the bundle's wheels alone. Runs from a source checkout.

    Example: robodensity edge bundle --out /media/usb/robodensity-edge --platform manylinux2014_aarch64
    """
    from robodensity.app.bundle import bundle

    wheels = bundle(out, platform, python_version)
    console.print(f"{out}: {len(wheels)} wheels, edge.example.toml, robodensity-edge.service, install.sh")
