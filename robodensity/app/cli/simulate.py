"""``robodensity simulate ...``: simulated controllers and provinces for demos and tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from robodensity.app.cli.common import console, friendly
from robodensity.core.errors import ConfigError

app = typer.Typer(help="Simulated controllers and provinces.", no_args_is_help=True)


@app.command("province")
@friendly
def simulate_province(
    out: Path = typer.Option(Path("registry"), help="Folder for the registry CSV files."),
    spec: Path | None = typer.Option(None, help="Province spec (TOML): code, name, robots, [[cities]] ..."),
    seed: int = typer.Option(1, help="Same seed, same province."),
) -> None:
    """Generate a synthetic province and write its registry as CSV for `registry import`.

    Example: robodensity simulate province --out ./registry --seed 7
    """
    from robodensity.simulators.province import ProvinceSpec, generate, load_spec, write_registry_csv

    province = generate(load_spec(spec) if spec else ProvinceSpec(), seed)
    paths = write_registry_csv(province, out)
    console.print(
        f"{len(province.factories)} factories, {len(province.robots)} robots: " + ", ".join(str(p) for p in paths)
    )


@app.command("opcua")
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
    clock_offset_s: float = typer.Option(
        0.0,
        help="How far the controller's clock runs off real time [s] (3600: an hour fast); "
        "its SourceTimestamps carry it.",
    ),
) -> None:
    """Run a simulated robot controller (asyncua server with the OPC Foundation nodesets).

    Every robot lives through a deterministic schedule of states; point an edge agent or
    `robodensity edge discover` at the printed URL.

    Example: robodensity simulate opcua --port 4840 --robots 20 --speed 600
    """
    import time

    from robodensity.simulators.behaviour import SimClock, state_schedule
    from robodensity.simulators.opcua_controller import OpcUaController, SimRobot

    if variant not in ("robotics", "robotics10", "vendor"):
        raise ConfigError(f"--variant must be one of robotics, robotics10, vendor; got {variant!r}")
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    sims = [SimRobot("SIMROBOT", f"SR{seed:02d}{i + 1:05d}", "SR-10") for i in range(robots)]
    schedules = {r.key: state_schedule(seed, r.key, start, end) for r in sims}

    async def main() -> None:
        ctrl = OpcUaController(sims, port=port, variant=variant, clock_offset_s=clock_offset_s)  # type: ignore[arg-type]
        async with ctrl:
            for key, sched in schedules.items():
                await ctrl.set_state(key, sched[0][1], sched[0][0])
            console.print(f"serving {robots} robots at {ctrl.url}; replaying {hours:g} h at {speed:g}x")
            rest = {k: s[1:] for k, s in schedules.items()}
            await ctrl.replay(rest, SimClock(start, time.monotonic(), speed))

    asyncio.run(main())


@app.command("mqtt")
@friendly
def simulate_mqtt(
    broker: str = typer.Option(..., help="mqtt://HOST:PORT of the factory broker."),
    factory: str = typer.Option("factory-1", help="Factory id used in the topics plant/FACTORY/robots/+/state."),
    robots: int = typer.Option(10, min=1, help="Robots to simulate."),
    hours: float = typer.Option(8.0, help="Simulated hours to replay."),
    speed: float = typer.Option(60.0, help="Simulated seconds per wall second."),
    seed: int = typer.Option(1, help="Same seed, same robots doing the same things."),
) -> None:
    """Publish simulated robot states as plain JSON on a broker.

    Example: robodensity simulate mqtt --broker mqtt://127.0.0.1:1883 --robots 20 --speed 600
    """
    import time

    from robodensity.simulators.behaviour import SimClock, state_schedule
    from robodensity.simulators.mqtt_robot import MqttRobots

    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    keys = [f"SIM/{factory}-{i + 1:04d}" for i in range(robots)]
    schedules = {k: state_schedule(seed, k, start, end) for k in keys}
    with MqttRobots(broker, factory, keys) as sim:
        asyncio.run(sim.replay(schedules, SimClock(start, time.monotonic(), speed)))
        console.print(f"published {sim.published} state changes")
