"""What the factory-side MQTT sources share: starting and stopping their paho client."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt

from robodensity.errors import SourceConnectError
from robodensity.mqtt import connect
from robodensity.settings import BrokerSettings


class PahoSource:
    """Owns one paho client; subclasses build it in ``__aenter__`` and call ``_start``."""

    settings: Any  # has .url
    _client: mqtt.Client | None = None

    def _start(self, client: mqtt.Client, broker: BrokerSettings, **connect_options: Any) -> None:
        try:
            connect(client, broker, self.settings.url, **connect_options)
        except OSError as exc:
            raise SourceConnectError(self.settings.url) from exc
        self._client = client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
