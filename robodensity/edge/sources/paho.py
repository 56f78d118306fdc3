"""What the factory-side MQTT sources share: their paho client, its queue, its start and stop.

The client is built by ``core.mqtt.make_client`` from the source's own settings (URL, TLS
files, username and password file), exactly as the uplink's is. paho's callbacks run on
paho's thread and only hand messages to the event loop through a bounded queue. A broker
that refuses the connection (a wrong password, a user without rights) ends the iteration
with a one-line SourceConnectError; the agent logs it and tries again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import paho.mqtt.client as mqtt

from robodensity.core.errors import SourceConnectError
from robodensity.core.mqtt import connect, make_client
from robodensity.core.settings import MqttJsonSourceSettings, SparkplugSourceSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class PahoSource(Generic[T]):
    """Owns one paho client and the queue its messages arrive in; subclasses call ``_open``."""

    settings: MqttJsonSourceSettings | SparkplugSourceSettings
    subscribed: asyncio.Event
    dropped: int = 0
    _client: mqtt.Client | None = None
    _queue: asyncio.Queue[T] | None = None
    _refused: SourceConnectError | None = None

    def _open(
        self,
        client_id: str,
        topics: list[str],
        item: Callable[[mqtt.MQTTMessage], T],
        queue_max: int,
        manual_ack: bool = False,
        retain_handling: int = 0,
        **connect_options: Any,
    ) -> None:
        """Build the client, subscribe ``topics`` (QoS 1) on every connect, queue ``item(msg)`` per message.

        ``retain_handling`` is MQTT 5's subscription option: 1 has the broker send retained
        messages only for a subscription that is new, not again on every reconnect."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[T] = asyncio.Queue(queue_max)
        self._queue, self._refused = queue, None
        url = self.settings.url
        client = make_client(self.settings, url, client_id, manual_ack=manual_ack)
        kind = type(self).__name__

        def put(value: T) -> None:
            try:
                queue.put_nowait(value)
            except asyncio.QueueFull:
                self.dropped += 1
                log.error("%s queue full: dropped a message (%d so far)", kind, self.dropped)

        def refuse(reason: str) -> None:
            user = f" user {self.settings.username!r}" if self.settings.username else ""
            self._refused = SourceConnectError(f"MQTT broker {url} refused{user}: {reason}")
            if not queue.full():  # wake a waiting reader; a reader with messages to take sees _refused next
                queue.put_nowait(None)  # type: ignore[arg-type]  # never returned: _next raises first

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                loop.call_soon_threadsafe(refuse, str(reason))
            else:
                c.subscribe([(t, mqtt.SubscribeOptions(qos=1, retainHandling=retain_handling)) for t in topics])

        def on_connect_fail(_c: mqtt.Client, _u: object) -> None:
            log.warning("%s cannot reach %s (network, or a TLS handshake that failed); paho retries", kind, url)

        def on_subscribe(*_: object) -> None:
            loop.call_soon_threadsafe(self.subscribed.set)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(put, item(msg))

        client.on_connect = on_connect
        client.on_connect_fail = on_connect_fail
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            connect(client, self.settings, url, **connect_options)
        except OSError as exc:
            raise SourceConnectError(f"MQTT broker {url}: {exc}") from exc
        self._client = client

    async def _next(self) -> T:
        """The next message's item; SourceConnectError once the broker has refused the connection."""
        assert self._queue is not None, "use `async with source:` first"
        if self._refused is None:
            value = await self._queue.get()
            if self._refused is None:
                return value
        raise self._refused

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
