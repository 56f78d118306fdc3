"""The uplink: MQTT 5 to the central broker, outbound only.

Persistent session (clean_start false, session expiry from settings), QoS 1, a
retained status message ("online") with a last will ("offline"). Acks from the
collector arrive on the agent's ack topic and are handed to the event loop; an ack of
another wire version, or the collector's refusal of ours, is logged once (naming both
versions) and shown as the health gauge uplink_wire_version_mismatch. A publish
the broker refuses (an MQTT 5 reason code such as 135 Not authorized) is counted and
logged as an error, and its events stay in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from robodensity.core import wire
from robodensity.core.errors import UplinkError
from robodensity.core.mqtt import connect, make_client
from robodensity.core.settings import Settings

log = logging.getLogger(__name__)


class Uplink:
    def __init__(
        self,
        settings: Settings,
        broker_url: str,
        loop: asyncio.AbstractEventLoop,
        on_ack: Callable[[wire.Ack], None],
        on_refused: Callable[[int], None],
    ) -> None:
        edge = settings.edge
        self.settings = settings
        self.broker_url = broker_url
        self.factory, self.agent = edge.factory_id, edge.agent_id
        self.loop = loop
        self.on_ack = on_ack
        self.on_refused = on_refused
        self.connected = threading.Event()
        self.reconnects = 0
        self.refused = 0
        self.version_mismatch: str | None = None
        """Why the last ack could not be read as this agent's wire version (None when it could)."""
        self._stopping = False
        self.client = make_client(settings.broker, broker_url, f"edge-{self.factory}-{self.agent}")
        status = wire.status_topic(self.factory, self.agent)
        self.client.will_set(status, b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    def start(self) -> None:
        connect(self.client, self.settings.broker, self.broker_url, clean_start=False)

    def stop(self) -> None:
        self._stopping = True
        if self.connected.is_set():
            self.client.publish(wire.status_topic(self.factory, self.agent), b"offline", qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, payload: bytes) -> int:
        """Queue one batch for QoS 1 delivery; returns paho's message id."""
        info = self.client.publish(wire.uplink_topic(self.factory, self.agent), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise UplinkError(f"publish not queued: {mqtt.error_string(info.rc)}")
        return info.mid

    # -- paho thread ---------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker %s refused the edge agent: %s", self.broker_url, reason)
            return
        client.subscribe(wire.ack_topic(self.factory, self.agent), qos=1)
        client.publish(wire.status_topic(self.factory, self.agent), b"online", qos=1, retain=True)
        self.connected.set()
        log.info("uplink connected to %s", self.broker_url)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if self.connected.is_set() and not self._stopping:
            self.reconnects += 1
            log.warning("uplink lost (%s); paho reconnects", reason)
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = wire.decode_ack(bytes(msg.payload))
        except wire.WireError as exc:
            if exc.field != "v":
                log.error("ignoring a malformed ack on %s: %s", msg.topic, exc)
            elif self.version_mismatch != exc.reason:  # said once, not at every re-send
                log.error("wire version mismatch on %s: %s; the events stay in the outbox", msg.topic, exc.reason)
            if exc.field == "v":
                self.version_mismatch = exc.reason
            return
        self.version_mismatch = None
        self.loop.call_soon_threadsafe(self.on_ack, ack)

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            self.refused += 1
            log.error(
                "broker refused uplink message %d: %s (check the broker ACL for factory %s)",
                mid,
                reason,
                self.factory,
            )
            self.loop.call_soon_threadsafe(self.on_refused, mid)
