"""The OPC UA source against real simulated controllers (asyncua servers on free ports)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from robodensity.core.errors import ConfigError, SourceConnectError, SourceError
from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import Counter, EventType, Quality, Reading, RobotId, State
from robodensity.edge.normalise import ON_PATH
from robodensity.edge.sources.opcua import OpcUaSource, discover
from robodensity.simulators.behaviour import Profile, SimClock, state_schedule
from robodensity.simulators.opcua_controller import (
    APPLICATION_URI,
    VENDOR_MAPPING_TOML,
    OpcUaController,
    SimRobot,
    _free_port,
)
from tests.helpers import collect_until

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROBOTS = [
    SimRobot("KUKA", "KR-0001", "KR 16 R2010", "0000-123-456", "ARTICULATED_ROBOT"),
    SimRobot("FANUC", "F-77", "M-20iD/25", "A05B-1329", "ARTICULATED_ROBOT"),
    SimRobot("EPSON", "E 3", "LS6-B", "", "SCARA_ROBOT"),
]


STATE_ROBOT = SimRobot("YASKAWA", "Y-STATES", "GP25")
COUNTER_ROBOT = SimRobot("YASKAWA", "Y-COUNTERS", "GP25")
BAD_ROBOT = SimRobot("YASKAWA", "Y-BAD", "GP25")
CELL = [*ROBOTS, STATE_ROBOT, COUNTER_ROBOT, BAD_ROBOT]
"""The shared cell: each test that changes a robot has a robot of its own."""
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cell() -> AsyncIterator[OpcUaController]:
    """One OPC 40010 controller for the tests that need no special server (start-up ~2 s)."""
    async with OpcUaController(CELL, name="cell-7") as ctl:
        yield ctl


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vendor_cell() -> AsyncIterator[OpcUaController]:
    async with OpcUaController(ROBOTS, variant="vendor") as ctl:
        yield ctl


def settings(url: str, **kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings(url=url, **kw)  # type: ignore[arg-type]


def states_of(readings: list[Reading], robot: RobotId) -> list[Reading]:
    return [r for r in readings if r.type is EventType.STATE and r.robot == robot]


def rid(robot: SimRobot) -> RobotId:
    return RobotId(robot.manufacturer, robot.serial)


async def initial_states(it: AsyncIterator[Reading], robots: list[SimRobot]) -> list[Reading]:
    want = {rid(r) for r in robots}
    return await collect_until(it, lambda got: want <= {r.robot for r in got if r.type is EventType.STATE})


# -- settings and discovery ------------------------------------------------------------


@shared_loop
async def test_discovery_finds_every_robot_with_its_identification(cell: OpcUaController) -> None:
    found = await discover(settings(cell.url))
    assert len(found) == len(CELL)
    assert {(d.manufacturer, d.serial, d.model, d.product_code, d.category) for d in found} == {
        (r.manufacturer, r.serial, r.model, r.product_code, r.category) for r in CELL
    }
    assert all(d.node_path == f"Objects/DeviceSet/cell-7/MotionDevices/{d.serial}" for d in found)


async def test_discovery_of_an_unreachable_server_raises_connect_error() -> None:
    url = f"opc.tcp://127.0.0.1:{_free_port('127.0.0.1')}"
    with pytest.raises(SourceConnectError) as info:
        await discover(settings(url, watchdog_s=1.0))
    assert info.value.__cause__ is not None


@shared_loop
async def test_discovery_without_opc_40010_raises_no_robots_found(vendor_cell: OpcUaController) -> None:
    with pytest.raises(SourceError, match="no robots found"):
        await discover(settings(vendor_cell.url))


# -- states, counters, quality ---------------------------------------------------------


@shared_loop
async def test_every_state_written_is_read_back_as_that_state(cell: OpcUaController) -> None:
    ctl = cell
    async with OpcUaSource(settings(ctl.url, publishing_interval_ms=50)) as src:
        it = aiter(src)
        first = await initial_states(it, CELL)
        assert [r.state for r in states_of(first, rid(STATE_ROBOT))] == [State.IDLE]
        robot = STATE_ROBOT
        ts = T0
        for state in [State.EXECUTING, State.FAULT, State.IDLE, State.OUT_OF_SERVICE, State.EXECUTING, State.OFFLINE]:
            ts += timedelta(minutes=7)
            await ctl.set_state(robot.key, state, ts)
            got = await collect_until(it, lambda g: bool(states_of(g, rid(robot))))
            (reading,) = states_of(got, rid(robot))
            assert (reading.state, reading.ts) == (state, ts)
            # OFFLINE is expressed by Bad status codes on every signal
            assert reading.quality is (Quality.BAD if state is State.OFFLINE else Quality.GOOD)


@shared_loop
async def test_counters_are_read_as_seconds_and_watt_hours(cell: OpcUaController) -> None:
    async with OpcUaSource(settings(cell.url, publishing_interval_ms=50)) as src:
        it = aiter(src)
        await initial_states(it, CELL)
        await cell.set_counters(COUNTER_ROBOT.key, T0, power_on_s=12_345.5, energy_wh=678.25)
        mine = rid(COUNTER_ROBOT)

        def both(got: list[Reading]) -> bool:
            changed = {r.counter for r in got if r.robot == mine and r.value not in (0.0, None)}
            return changed >= {Counter.POWER_ON_S, Counter.ENERGY_WH}

        got = await collect_until(it, both)
        values = {r.counter: (r.value, r.ts) for r in got if r.type is EventType.COUNTER and r.robot == mine}
        assert values == {Counter.POWER_ON_S: (12_345.5, T0), Counter.ENERGY_WH: (678.25, T0)}


@shared_loop
async def test_a_bad_status_gives_a_bad_quality_reading_not_a_crash(cell: OpcUaController) -> None:
    async with OpcUaSource(settings(cell.url, publishing_interval_ms=50)) as src:
        it = aiter(src)
        robot = rid(BAD_ROBOT)
        await initial_states(it, CELL)
        await cell.set_state(BAD_ROBOT.key, State.EXECUTING, T0)
        await collect_until(it, lambda g: bool(states_of(g, robot)))
        await cell.set_bad(BAD_ROBOT.key, ON_PATH, T0 + timedelta(seconds=5))
        (bad,) = states_of(await collect_until(it, lambda g: bool(states_of(g, robot))), robot)
        # OnPath unknown: not provably executing, and flagged
        assert (bad.state, bad.quality, bad.ts) == (State.IDLE, Quality.BAD, T0 + timedelta(seconds=5))
        await cell.set_state(BAD_ROBOT.key, State.EXECUTING, T0 + timedelta(seconds=9))
        (good,) = states_of(await collect_until(it, lambda g: bool(states_of(g, robot))), robot)
        assert (good.state, good.quality) == (State.EXECUTING, Quality.GOOD)


# -- replay and reconnect --------------------------------------------------------------


@pytest.mark.slow
async def test_high_speed_replay_delivers_every_change_in_order() -> None:
    robots = [SimRobot("ABB", f"IRB-{i:03d}", "IRB 6700") for i in range(50)]
    start, end = T0, T0 + timedelta(hours=1)
    # busier than any real robot: many changes of one robot inside one 250 ms publishing interval
    busy = Profile(executing_s=120, idle_s=60, fault_s=60, out_of_service_s=120, min_s=5)
    schedules = {r.key: state_schedule(42, r.key, start, end, busy) for r in robots}
    async with OpcUaController(robots) as ctl, OpcUaSource(settings(ctl.url)) as src:
        it = aiter(src)
        await initial_states(it, robots)
        # a known state that no schedule starts with, so every scheduled change is a change
        for r in robots:
            await ctl.set_state(r.key, State.OUT_OF_SERVICE, start - timedelta(hours=1))
        await collect_until(it, lambda g: len({x.robot for x in g if x.state is State.OUT_OF_SERVICE}) == 50)

        last = {rid(r): schedules[r.key][-1] for r in robots}
        seen: dict[RobotId, list[tuple[datetime, State]]] = defaultdict(list)

        def complete(got: list[Reading]) -> bool:
            r = got[-1]
            if r.type is EventType.STATE:
                seen[r.robot].append((r.ts, r.state))  # type: ignore[arg-type]
            return all(seen[k] and seen[k][-1] == v for k, v in last.items())

        clock = SimClock(start, time.monotonic() + 0.2, speed=1000.0)
        replay = asyncio.create_task(ctl.replay(schedules, clock))
        await collect_until(it, complete, timeout=30.0)
        await replay
        assert time.monotonic() - clock.wall_at(end) < 5.0, "the simulator could not keep up"
    for r in robots:
        assert seen[rid(r)] == schedules[r.key], r.key
    assert sum(len(s) for s in schedules.values()) > 1000


@pytest.mark.slow
async def test_a_server_restart_gives_offline_then_a_fresh_state() -> None:
    port = _free_port("127.0.0.1")
    cfg = settings(f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=50, reconnect_max_s=0.5, watchdog_s=2.0)
    ctl = OpcUaController(ROBOTS, port=port)
    await ctl.start()
    try:
        async with OpcUaSource(cfg) as src:
            it = aiter(src)
            await initial_states(it, ROBOTS)
            await ctl.set_state(ROBOTS[0].key, State.EXECUTING, T0)
            await collect_until(it, lambda g: bool(states_of(g, rid(ROBOTS[0]))))

            await ctl.stop()
            before = datetime.now(UTC)
            got = await collect_until(it, lambda g: len([r for r in g if r.state is State.OFFLINE]) == len(ROBOTS))
            offline = [r for r in got if r.state is State.OFFLINE]
            assert {r.robot for r in offline} == {rid(r) for r in ROBOTS}
            assert all(r.ts >= before - timedelta(seconds=1) for r in offline)  # the local clock, by design

            ctl = OpcUaController(ROBOTS, port=port)
            await ctl.start()
            await ctl.set_state(ROBOTS[2].key, State.FAULT, T0 + timedelta(hours=1))
            fresh = await initial_states(it, ROBOTS)
            states = {r.robot: (r.state, r.ts) for r in fresh if r.type is EventType.STATE}
            assert states[rid(ROBOTS[2])] == (State.FAULT, T0 + timedelta(hours=1))
            assert states[rid(ROBOTS[0])][0] is State.IDLE  # the restarted controller's own state
            assert src.stats["losses"] == 1 and src.stats["connects"] == 2
    finally:
        await ctl.stop()


# -- security ----------------------------------------------------------------------------


def make_certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate for an OPC UA application, PEM files in ``folder``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                          data_encipherment=True, key_agreement=False, key_cert_sign=True, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.mark.slow
async def test_basic256sha256_sign_and_encrypt_with_a_trusted_server(tmp_path: Path) -> None:
    server_cert, server_key = make_certificate(tmp_path, "controller", APPLICATION_URI)
    client_cert, client_key = make_certificate(tmp_path, "edge", "urn:robodensity:edge")
    trusted, untrusted = tmp_path / "trusted", tmp_path / "untrusted"
    trusted.mkdir()
    untrusted.mkdir()
    (trusted / "controller.pem").write_bytes(server_cert.read_bytes())
    (untrusted / "someone-else.pem").write_bytes(client_cert.read_bytes())
    async with OpcUaController(ROBOTS[:1], certificate=server_cert, private_key=server_key) as ctl:
        secure = dict(security_policy="Basic256Sha256", certificate=client_cert, private_key=client_key)
        found = await discover(settings(ctl.url, trust_dir=trusted, **secure))
        assert [d.serial for d in found] == [ROBOTS[0].serial]
        with pytest.raises(SourceConnectError) as info:  # the server's certificate is not in this trust list
            await discover(settings(ctl.url, trust_dir=untrusted, **secure))
        assert "BadCertificateUntrusted" in repr(info.value.__cause__)
        with pytest.raises(SourceConnectError):  # the server offers no unsecured endpoint
            await discover(settings(ctl.url))


# -- vendor variables and a mapping file --------------------------------------------------


@shared_loop
async def test_a_mapping_file_reads_robots_that_expose_vendor_variables(
    tmp_path: Path, vendor_cell: OpcUaController
) -> None:
    mapping = tmp_path / "vendor.toml"
    mapping.write_text(VENDOR_MAPPING_TOML, encoding="utf-8")
    ctl = vendor_cell
    cfg = settings(ctl.url, mapping_file=mapping, publishing_interval_ms=50)
    found = await discover(cfg)
    assert {(d.manufacturer, d.serial, d.model) for d in found} == {(r.manufacturer, r.serial, r.model) for r in ROBOTS}
    assert {d.node_path for d in found} == {f"Objects/Cell/Robot_{r.serial}" for r in ROBOTS}
    async with OpcUaSource(cfg) as src:
        it = aiter(src)
        assert {r.state for r in await initial_states(it, ROBOTS)} == {State.IDLE}
        robot, ts = ROBOTS[0], T0
        for state in [State.EXECUTING, State.FAULT, State.OUT_OF_SERVICE, State.IDLE, State.OFFLINE]:
            ts += timedelta(minutes=3)
            await ctl.set_state(robot.key, state, ts)
            (reading,) = states_of(await collect_until(it, lambda g: bool(states_of(g, rid(robot)))), rid(robot))
            assert (reading.state, reading.ts) == (state, ts)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("[identity]\nmanufacturer", "[identity]\nmanufacturer_x"), "identity.manufacturer"),
        (('state = "FAULT"', 'state = "BROKEN"'), "rules[0].state must be one of"),
        (("when = { Fault = true }", "when = { Smoke = true }"), "Smoke, not in [signals]"),
        (("robots = ", "robots_x = "), "robots must be"),
        (("[signals]", "[signals"), "mapping file"),
    ],
)
def test_a_bad_mapping_file_is_a_config_error_naming_the_key(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    mapping = tmp_path / "vendor.toml"
    mapping.write_text(VENDOR_MAPPING_TOML.replace(*change, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        OpcUaSource(settings("opc.tcp://127.0.0.1:4840", mapping_file=mapping))
    assert complaint in str(info.value)
