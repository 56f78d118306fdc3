"""paho-mqtt clients built one way for every process: MQTT 5, TLS when the URL says mqtts."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from robodensity.errors import ConfigError
from robodensity.settings import BrokerSettings


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host:port or mqtts://host:port."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"broker.url must be mqtt://host:port or mqtts://host:port; got {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


def make_client(broker: BrokerSettings, url: str, client_id: str, manual_ack: bool = False) -> mqtt.Client:
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
        password = broker.password.get_secret_value() if broker.password else None
        client.username_pw_set(broker.username, password)
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
    broker: BrokerSettings,
    url: str,
    clean_start: bool,
    receive_maximum: int | None = None,
    session_expiry_s: int | None = None,
) -> None:
    """Start connecting in paho's own thread; paho reconnects by itself afterwards."""
    host, port, _ = broker_address(url)
    client.connect_async(
        host,
        port,
        keepalive=broker.keepalive_s,
        clean_start=clean_start,
        properties=connect_properties(
            broker.session_expiry_s if session_expiry_s is None else session_expiry_s, receive_maximum
        ),
    )
    client.loop_start()
