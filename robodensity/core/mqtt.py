"""paho-mqtt clients built one way for every process: MQTT 5, TLS when the URL says mqtts.

The central broker's clients (uplink, collector) and the factory brokers' clients (MQTT JSON
and Sparkplug B sources) all come from :func:`make_client`, given a ``MqttClientSettings``;
the settings were validated when loaded, so nothing here second-guesses them.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from robodensity.core.settings import MqttClientSettings, mqtt_address

broker_address = mqtt_address  # (host, port, tls) of a URL the settings have validated


def make_client(broker: MqttClientSettings, url: str, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    """A paho client for ``url`` with ``broker``'s TLS files and credentials (not connected yet).

    Raises ConfigError when the password file can no longer be read.
    """
    _host, _, tls = broker_address(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if tls:
        client.tls_set(
            ca_certs=str(broker.ca_file) if broker.ca_file else None,
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if broker.username:
        client.username_pw_set(broker.username, broker.read_password())
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_properties(session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def connect(
    client: mqtt.Client,
    broker: MqttClientSettings,
    url: str,
    clean_start: bool,
    receive_maximum: int | None = None,
    session_expiry_s: int | None = None,
) -> None:
    """Start connecting in paho's own thread; paho reconnects by itself afterwards.

    ``session_expiry_s`` unset: the settings' own (``broker.session_expiry_s``), or 0 when they have none.
    """
    if session_expiry_s is None:
        session_expiry_s = int(getattr(broker, "session_expiry_s", 0))
    host, port, _ = broker_address(url)
    client.connect_async(
        host,
        port,
        keepalive=broker.keepalive_s,
        clean_start=clean_start,
        properties=connect_properties(session_expiry_s, receive_maximum),
    )
    client.loop_start()
