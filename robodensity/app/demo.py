"""The demo: a simulated province measured end to end on embedded defaults.

Starts what settings leave unconfigured (PostgreSQL, Mosquitto), imports the
province's registry, runs one OPC UA controller per OPC UA factory and MQTT
publishers for the others, one edge agent per factory, and the collector; replays
``hours`` of simulated robot life at ``speed`` times wall time; computes metrics;
writes the dashboards and the month's bulletin (``out/bulletin.html``, a picture of the
result without a Grafana server); tears everything down, except PostgreSQL when ``keep``
is set (a Grafana can then be pointed at it). ``run_demo`` returns the density rows and
the simulator's ground truth so the end-to-end test can check the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from robodensity.app import metrics_follow, metrics_job
from robodensity.app.embedded import EmbeddedPostgres, embedded_mosquitto, embedded_postgres
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.app.report import density_report
from robodensity.collector.consume import Collector
from robodensity.core.errors import RoboDensityError
from robodensity.core.settings import MqttJsonSourceSettings, OpcUaSourceSettings, Settings
from robodensity.edge.agent import EdgeAgent
from robodensity.simulators.behaviour import PROFILES, Schedule, SimClock, seconds_in_state, state_schedule
from robodensity.simulators.mqtt_robot import MqttRobots, topic_for
from robodensity.simulators.province import Factory, Province, ProvinceSpec, generate, write_registry_csv
from robodensity.storage.db import DEFAULT_SCHEMA, connect, migrate
from robodensity.storage.registry import import_registry, load_reference_targets

log = logging.getLogger(__name__)
Step = Callable[[str, float], None]
"""Progress callback: (what is happening, fraction done 0..1)."""


@dataclass
class DemoResult:
    province: Province
    start: datetime
    end: datetime
    rows: list[dict[str, Any]]
    truth: dict[str, dict[Any, float]] = field(default_factory=dict)
    """Ground truth seconds in state per robot key over [start, end)."""
    out_dir: Path | None = None
    dashboards: list[Path] = field(default_factory=list)
    events_stored: int = 0
    bulletin: Path | None = None
    """The month's bulletin (HTML; a PDF beside it when Chromium is installed)."""
    db_url: str = ""
    kept: EmbeddedPostgres | None = None
    """The embedded PostgreSQL left running by ``keep=True`` (stop it with ``kept.stop()``)."""


@contextlib.contextmanager
def services(settings: Settings, keep: list[EmbeddedPostgres] | None = None) -> Iterator[tuple[str, str]]:
    """(database URL, broker URL): configured ones, else embedded ones started here.

    With ``keep`` (a list), an embedded PostgreSQL is started but not stopped: it is appended to ``keep``.
    """
    with contextlib.ExitStack() as stack:
        db = settings.database.url.get_secret_value() if settings.database.url else None
        if not db and keep is not None:
            pg = EmbeddedPostgres()
            pg.init()
            pg.start()
            keep.append(pg)
            db = pg.url
        db = db or stack.enter_context(embedded_postgres())
        broker = settings.broker.url or stack.enter_context(embedded_mosquitto())
        try:
            yield db, broker
        except BaseException:
            for pg in keep or []:  # a failed demo keeps nothing
                pg.stop()
                pg.remove()
            raise


def schedules_for(province: Province, seed: int, start: datetime, end: datetime) -> dict[str, Schedule]:
    return {
        r.key: state_schedule(seed, r.key, start, end, PROFILES.get(r.application, PROFILES["handling"]))
        for r in province.robots
    }


def run_demo(
    settings: Settings,
    out_dir: Path,
    spec: ProvinceSpec = ProvinceSpec(),
    seed: int = 1,
    hours: float = 8.0,
    replay_s: float = 30.0,
    schema: str = DEFAULT_SCHEMA,
    step: Step = lambda _m, _f: None,
    keep: bool = False,
) -> DemoResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    province = generate(spec, seed)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=hours)
    schedules = schedules_for(province, seed, start, end)
    step("starting services", 0.02)
    kept: list[EmbeddedPostgres] = []
    with services(settings, kept if keep else None) as (db_url, broker_url):
        step("migrating the database", 0.05)
        migrate(db_url, schema)
        with connect(db_url, schema) as conn:
            load_reference_targets(conn)
            import_registry(conn, write_registry_csv(province, out_dir / "registry")[0].parent)
            conn.commit()
        run_settings = settings.model_copy(
            update={"collector": settings.collector.model_copy(update={"share_group": f"demo{seed}"})}
        )
        collector = Collector(run_settings, db_url, broker_url, schema)
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, args=(stop,), name="collector", daemon=True)
        thread.start()
        following = contextlib.ExitStack()  # the 15-minute blocks follow the fleet (metrics compute --follow)
        following.enter_context(metrics_follow.following(db_url, schema, interval_s=5.0, start=start))
        try:
            asyncio.run(
                _fleet(
                    run_settings,
                    province,
                    schedules,
                    broker_url,
                    out_dir,
                    start,
                    end,
                    replay_s,
                    step,
                    lambda: _stored_through(db_url, schema, schedules),
                )
            )
        finally:
            following.close()
            stop.set()
            thread.join(30)
        step("computing metrics", 0.9)
        with connect(db_url, schema) as conn:
            metrics_job.compute(conn, start, end)
            rows = density_report(conn, province.code)
            stored = conn.execute("SELECT count(*) FROM events").fetchone()
        step("writing dashboards and the bulletin", 0.95)
        from robodensity.dashboards.build import write_dashboards

        paths = write_dashboards(out_dir / "dashboards")
        bulletin = write_month_bulletin(db_url, schema, province.code, end, out_dir / "bulletin.html")
    truth = {key: seconds_in_state(s, start, end) for key, s in schedules.items()}
    stored_n = int(stored[0]) if stored else 0
    result = DemoResult(province, start, end, rows, truth, out_dir, paths, stored_n, bulletin, db_url)
    result.kept = kept[0] if kept else None
    return result


def write_month_bulletin(db_url: str, schema: str, region: str, at: datetime, out: Path) -> Path:
    """The bulletin of the month (China Standard Time) holding ``at``, to date; computes the month's densities."""
    from robodensity.dashboards.bulletin import write_bulletin

    local = at.astimezone(LOCAL_TZ)
    first = datetime(local.year, local.month, 1, tzinfo=LOCAL_TZ)
    nxt = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=LOCAL_TZ)
    with connect(db_url, schema) as conn:
        metrics_job.compute(conn, first, nxt)
        conn.commit()
        write_bulletin(conn, region, f"{first:%Y-%m}", out)
    return out


def _stored_through(db_url: str, schema: str, schedules: dict[str, Schedule]) -> bool:
    """True once every robot's last scheduled change is in the database."""
    with connect(db_url, schema) as conn:
        latest: dict[str, datetime] = dict(
            conn.execute(
                "SELECT r.manufacturer || '/' || r.serial, max(e.ts) FROM events e JOIN robots r USING (robot_id) "
                "WHERE e.type = 'state' GROUP BY 1"
            ).fetchall()
        )
    return all(latest.get(k) is not None and latest[k] >= s[-1][0] for k, s in schedules.items())


async def _fleet(
    settings: Settings,
    province: Province,
    schedules: dict[str, Schedule],
    broker_url: str,
    out_dir: Path,
    start: datetime,
    end: datetime,
    replay_s: float,
    step: Step,
    all_stored: Callable[[], bool],
) -> None:
    """Simulators and edge agents for every factory, replaying the schedules once."""
    async with contextlib.AsyncExitStack() as stack:
        step("starting simulated controllers", 0.08)
        agents: list[tuple[Factory, EdgeAgent]] = []
        replays = []
        for factory in province.factories:
            keys = [r.key for r in province.robots_of(factory.id)]
            initial = {k: schedules[k][:1] for k in keys}
            rest = {k: schedules[k][1:] for k in keys}
            if factory.protocol == "opcua":
                from robodensity.simulators.opcua_controller import OpcUaController, SimRobot

                ctrl = await stack.enter_async_context(
                    OpcUaController(
                        [SimRobot(r.manufacturer, r.serial, r.model) for r in province.robots_of(factory.id)],
                        name=factory.id,
                    )
                )
                for k, [(t, s)] in initial.items():
                    await ctrl.set_state(k, s, t)
                sources: dict[str, Any] = {"opcua": [OpcUaSourceSettings(url=ctrl.url)]}
                replays.append((ctrl.replay, rest))
            else:
                robots = stack.enter_context(MqttRobots(broker_url, factory.id, keys))
                robots.clear_retained()
                stack.callback(robots.clear_retained)  # leave no retained state on a shared broker
                for k, [(t, s)] in initial.items():
                    robots.publish_state(k, s, t)
                robots.flush()
                sources = {"mqtt_json": [MqttJsonSourceSettings(url=broker_url, topic=topic_for(factory.id))]}
                replays.append((robots.replay, rest))
            edge = settings.edge.model_copy(
                update={
                    "agent_id": f"edge-{factory.id}",
                    "factory_id": factory.id,
                    "batch_linger_ms": 50,
                    "outbox_path": out_dir / "edge" / f"{factory.id}.sqlite",
                    **sources,
                }
            )
            agents.append((factory, EdgeAgent(settings.model_copy(update={"edge": edge}), broker_url)))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(agent.run(stop)) for _, agent in agents]
            try:
                step("edge agents reading the robots", 0.12)
                await _until(
                    lambda: all(len(a.stats.robots_seen) >= len(province.robots_of(f.id)) for f, a in agents),
                    60,
                    "every robot's first state at its edge agent",
                )
                clock = SimClock(start, time.monotonic(), (end - start).total_seconds() / replay_s)
                replay = asyncio.gather(*(fn(rest, clock) for fn, rest in replays))
                while not replay.done():
                    done = min(1.0, (time.monotonic() - clock.wall_start) / replay_s)
                    step(
                        f"replaying {(end - start).total_seconds() / 3600:.0f} simulated hours",
                        0.15 + 0.6 * done,
                    )
                    await asyncio.wait([replay], timeout=0.5)
                await replay
                step("waiting for the collector to commit everything", 0.8)
                await _until(lambda: all(a.backlog() == 0 for _, a in agents), 120, "edge outboxes to drain")
                await _until(all_stored, 60, "every robot's last state in the database")
            finally:
                stop.set()
        for task in tasks:
            task.result()


async def _until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait for ``cond``; it runs in a thread (it may query PostgreSQL or SQLite), never on the loop."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(cond):
        if time.monotonic() > deadline:
            raise RoboDensityError(f"demo: timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
