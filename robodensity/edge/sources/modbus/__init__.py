"""Modbus TCP: robots read by polling holding/input registers and coils through a profile.

- :mod:`.profile`: register-map profiles (TOML, built-ins in ``profiles/``), their check;
- :mod:`.source`: :class:`ModbusSource`, one connection and its robots, polled with jitter;
- :mod:`.discover`: which unit ids answer and who they are, as a settings section.
"""

from robodensity.edge.sources.modbus.profile import Profile, ProfileError, check_profile, format_table, load_profile

__all__ = ["Profile", "ProfileError", "check_profile", "format_table", "load_profile"]
