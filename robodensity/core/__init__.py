"""Ground layer: the wire contract, settings, errors, clock and time zone, the MQTT client factory.

Imports nothing else of RoboDensity. Standard library and pydantic only, except
:mod:`robodensity.core.wire`, whose fast decoder uses msgspec, and
:mod:`robodensity.core.mqtt`, which wraps paho-mqtt for every process that speaks MQTT.
"""
