"""A Sparkplug B edge node (spBv1.0) that publishes robots as its devices.

On connect the node subscribes to its NCMD topic, then publishes an NBIRTH (with
``bdSeq`` and ``Node Control/Rebirth``) and one DBIRTH per robot, naming every metric
with an alias: the identity (``Identification/Manufacturer``, ``.../SerialNumber``),
``Robot/State`` and ``Robot/Cycles``. A state change is a DDATA that uses aliases
only. Its NDEATH, with the same ``bdSeq``, is the MQTT will and is also published on
a clean stop. An NCMD ``Node Control/Rebirth = true`` makes it send every BIRTH again.

For tests it can misbehave on purpose: skip sequence numbers (:meth:`inject_gap`),
publish DATA of a device it never announced (:meth:`send_data_before_birth`), start
without any BIRTH (``birth=False``), or vanish so the broker sends its will
(:meth:`drop`).
"""

from __future__ import annotations

import asyncio
import enum
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from robodensity.core import sparkplug_b_pb2 as pb
from robodensity.core.mqtt import connect, make_client
from robodensity.core.settings import BrokerSettings
from robodensity.core.wire import State
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes

# Facts of the Eclipse Sparkplug B 3.0 specification, written here rather than taken from
# the edge's Sparkplug host, so that the host's reading of the specification is tested.
NAMESPACE = "spBv1.0"
"""The topic namespace: ``spBv1.0/{group}/{message type}/{edge node}[/{device}]``."""
BDSEQ_METRIC = "bdSeq"
"""The birth/death sequence metric of NBIRTH and NDEATH (UInt64)."""
REBIRTH_METRIC = "Node Control/Rebirth"
"""The Boolean node control metric a host sets true in an NCMD to ask for every BIRTH again."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DataType(enum.IntEnum):
    """Metric datatype codes (Sparkplug B 3.0, section 6.4.16) of the metrics published here."""

    INT64 = 4
    UINT32 = 7
    UINT64 = 8
    BOOLEAN = 11
    STRING = 12


def to_ms(ts: datetime) -> int:
    """A Sparkplug timestamp: whole milliseconds since the Unix epoch (UTC)."""
    return (ts - _EPOCH) // timedelta(milliseconds=1)


def topic_for(group: str, message_type: str, edge_node: str, device: str | None = None) -> str:
    """``spBv1.0/{group}/{message_type}/{edge_node}``, ``/{device}`` for the D* message types."""
    return "/".join((NAMESPACE, group, message_type, edge_node, *((device,) if device is not None else ())))


MANUFACTURER_METRIC = "Identification/Manufacturer"
SERIAL_METRIC = "Identification/SerialNumber"
STATE_METRIC = "Robot/State"
CYCLES_METRIC = "Robot/Cycles"
# Aliases of each device's metrics (aliases are per device, so every device uses the same ones)
ALIASES = {MANUFACTURER_METRIC: 1, SERIAL_METRIC: 2, STATE_METRIC: 3, CYCLES_METRIC: 4}
NODE_ALIASES = {BDSEQ_METRIC: 0, REBIRTH_METRIC: 1}


def device_id_for(robot_key: str) -> str:
    """``ACME/SN 1`` -> ``ACME_SN_1``: a Sparkplug id has no / + # (nor spaces, for readability)."""
    return re.sub(r"[/+#\s]", "_", robot_key)


class SparkplugRobots:
    """One Sparkplug B edge node publishing many robots (devices) of one group.

    ``state_codes`` publishes states as integers (UInt32) instead of their names.
    ``identity_metrics=False`` leaves the identity out of the DBIRTHs, so a host must
    derive it from the device id (see :func:`device_id_for`).
    """

    def __init__(
        self,
        broker_url: str,
        group_id: str,
        node_id: str,
        robot_keys: Sequence[str],
        *,
        bd_seq: int = 0,
        birth: bool = True,
        initial: Mapping[str, tuple[datetime, State]] | None = None,
        state_codes: Mapping[State, int] | None = None,
        identity_metrics: bool = True,
        qos: int = 0,
    ) -> None:
        self.broker_url = broker_url
        self.group_id = group_id
        self.node_id = node_id
        self.robot_keys = list(robot_keys)
        self.devices = {key: device_id_for(key) for key in self.robot_keys}
        self.bd_seq = bd_seq % 256
        self.birth_on_connect = birth
        self.state_codes = dict(state_codes) if state_codes else None
        self.identity_metrics = identity_metrics
        self.qos = qos
        now = datetime.now(UTC)
        self.current: dict[str, tuple[datetime, State]] = {k: (now, State.IDLE) for k in self.robot_keys}
        self.current.update(initial or {})
        self.cycles = dict.fromkeys(self.robot_keys, 0)
        self.published = 0
        self.births = 0
        """NBIRTHs sent so far (the first, and one per rebirth)."""
        self.rebirth_requests = 0
        """NCMD Node Control/Rebirth requests received."""
        self.connected = threading.Event()
        self._seq = 0
        self._lock = threading.RLock()  # paho's thread (NCMD, connect) and the caller's both publish
        self._client: mqtt.Client | None = None
        self._last: mqtt.MQTTMessageInfo | None = None

    # -- life

    def __enter__(self) -> SparkplugRobots:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 10.0) -> None:
        broker = BrokerSettings.model_validate({"url": self.broker_url})
        client = make_client(broker, self.broker_url, f"sim-spb-{uuid.uuid4().hex[:8]}")
        client.will_set(topic_for(self.group_id, "NDEATH", self.node_id), self._ndeath(), qos=1)
        ncmd = topic_for(self.group_id, "NCMD", self.node_id)

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                return
            # NCMD before NBIRTH, so no rebirth request is missed; QoS 1 so none is lost
            c.subscribe(ncmd, qos=1)

        def on_subscribe(*_: object) -> None:
            if self.birth_on_connect:
                self.publish_births()
            self.connected.set()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if msg.topic == ncmd:
                self._on_ncmd(bytes(msg.payload))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        self._client = client  # before connecting: on_subscribe publishes through it
        connect(client, broker, self.broker_url, clean_start=True)
        if not self.connected.wait(timeout_s):
            self._stop_client()
            raise TimeoutError(f"Sparkplug simulator could not connect to {self.broker_url}")

    def stop(self) -> None:
        """A clean stop: publish NDEATH ourselves (a clean disconnect sends no will), then disconnect."""
        if self._client is None:
            return
        with self._lock:
            self._last = self._client.publish(topic_for(self.group_id, "NDEATH", self.node_id), self._ndeath(), qos=1)
        self.flush()
        self._stop_client()

    def drop(self) -> None:
        """Vanish without a goodbye: the broker publishes the NDEATH will (MQTT 5 reason 0x04)."""
        if self._client is None:
            return
        self.flush()
        self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        self._client.loop_stop()
        self._client = None
        self.connected.clear()

    def _stop_client(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
            self.connected.clear()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything published so far has left (QoS 0) or been acknowledged (QoS 1)."""
        last = self._last
        if last is not None:
            last.wait_for_publish(timeout_s)

    # -- births and data

    def publish_births(self) -> None:
        """NBIRTH (seq 0) and one DBIRTH per robot with current values: the answer to a rebirth."""
        with self._lock:
            now = datetime.now(UTC)
            self._seq = 0
            p = pb.Payload(timestamp=to_ms(now), seq=self._next_seq())
            p.metrics.add(
                name=BDSEQ_METRIC,
                alias=NODE_ALIASES[BDSEQ_METRIC],
                timestamp=to_ms(now),
                datatype=DataType.UINT64,
                long_value=self.bd_seq,
            )
            p.metrics.add(
                name=REBIRTH_METRIC,
                alias=NODE_ALIASES[REBIRTH_METRIC],
                timestamp=to_ms(now),
                datatype=DataType.BOOLEAN,
                boolean_value=False,
            )
            self._publish(topic_for(self.group_id, "NBIRTH", self.node_id), p)
            self.births += 1
            for key in self.robot_keys:
                self._dbirth(key, now)

    def _dbirth(self, key: str, now: datetime) -> None:
        manufacturer, serial = key.split("/", 1)
        since, state = self.current[key]
        p = pb.Payload(timestamp=to_ms(now), seq=self._next_seq())
        if self.identity_metrics:
            for name, text in ((MANUFACTURER_METRIC, manufacturer), (SERIAL_METRIC, serial)):
                p.metrics.add(
                    name=name, alias=ALIASES[name], timestamp=to_ms(now), datatype=DataType.STRING, string_value=text
                )
        self._add_state(p.metrics.add(name=STATE_METRIC), state, since)
        p.metrics.add(
            name=CYCLES_METRIC,
            alias=ALIASES[CYCLES_METRIC],
            timestamp=to_ms(since),
            datatype=DataType.INT64,
            long_value=self.cycles[key],
        )
        self._publish(topic_for(self.group_id, "DBIRTH", self.node_id, self.devices[key]), p)

    def _add_state(self, m: pb.Payload.Metric, state: State, ts: datetime) -> None:
        m.alias = ALIASES[STATE_METRIC]
        m.timestamp = to_ms(ts)
        if self.state_codes is not None:
            m.datatype = DataType.UINT32
            m.int_value = self.state_codes[state]
        else:
            m.datatype = DataType.STRING
            m.string_value = state.value

    def publish_state(self, robot_key: str, state: State, ts: datetime) -> None:
        """A DDATA with the new state (by alias only), and the cycle count when a cycle ends."""
        with self._lock:
            _, before = self.current[robot_key]
            self.current[robot_key] = (ts, state)
            self._publish(
                topic_for(self.group_id, "DDATA", self.node_id, self.devices[robot_key]),
                self._ddata(robot_key, state, ts, cycle_ended=before is State.EXECUTING),
            )

    def _ddata(self, robot_key: str, state: State, ts: datetime, cycle_ended: bool = False) -> pb.Payload:
        p = pb.Payload(timestamp=to_ms(datetime.now(UTC)), seq=self._next_seq())
        self._add_state(p.metrics.add(), state, ts)
        if cycle_ended:
            self.cycles[robot_key] += 1
            p.metrics.add(
                alias=ALIASES[CYCLES_METRIC],
                timestamp=to_ms(ts),
                datatype=DataType.INT64,
                long_value=self.cycles[robot_key],
            )
        return p

    def publish_device_death(self, robot_key: str) -> None:
        """DDEATH: this robot's device is gone (the node lives on)."""
        with self._lock:
            p = pb.Payload(timestamp=to_ms(datetime.now(UTC)), seq=self._next_seq())
            self._publish(topic_for(self.group_id, "DDEATH", self.node_id, self.devices[robot_key]), p)

    # -- misbehaviour on purpose

    def inject_gap(self, missing: int = 1) -> None:
        """Skip ``missing`` sequence numbers: the next message shows a gap to every host."""
        with self._lock:
            self._seq = (self._seq + missing) % 256

    def send_data_before_birth(self, robot_key: str, state: State, ts: datetime, device_id: str | None = None) -> None:
        """A DDATA (aliases only) for a device that was not born; ``device_id`` defaults to the robot's."""
        with self._lock:
            self.current[robot_key] = (ts, state)
            device = device_id or self.devices[robot_key]
            self._publish(topic_for(self.group_id, "DDATA", self.node_id, device), self._ddata(robot_key, state, ts))

    # -- replay

    async def replay(self, schedules: Mapping[str, Schedule], clock: SimClock) -> None:
        """Publish each change when its simulated time comes; returns after the last one."""
        async for t, key, state in due_changes(schedules, clock):
            self.publish_state(key, state, t)
        await asyncio.to_thread(self.flush)

    # -- internals

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    def _publish(self, topic: str, payload: pb.Payload) -> None:
        assert self._client is not None, "use `with SparkplugRobots(...)` first"
        self._last = self._client.publish(topic, payload.SerializeToString(), qos=self.qos)
        self.published += 1

    def _ndeath(self) -> bytes:
        p = pb.Payload(timestamp=to_ms(datetime.now(UTC)))
        p.metrics.add(name=BDSEQ_METRIC, datatype=DataType.UINT64, long_value=self.bd_seq)
        return p.SerializeToString()

    def _on_ncmd(self, data: bytes) -> None:
        try:
            payload = pb.Payload.FromString(data)
        except Exception:  # a bad command is not the simulator's problem
            return
        for m in payload.metrics:
            named = m.name == REBIRTH_METRIC or (not m.HasField("name") and m.alias == NODE_ALIASES[REBIRTH_METRIC])
            if named and m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                self.rebirth_requests += 1
                self.publish_births()
                return
