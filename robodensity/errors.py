"""The error hierarchy. Library exceptions are wrapped once, in the adapter that
calls the library; the CLI turns a RoboDensityError into one line and exit code 2."""


class RoboDensityError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RoboDensityError):
    """A setting is missing or has a bad value; the message names the key."""


class ServiceError(RoboDensityError):
    """An embedded service (PostgreSQL, Mosquitto) could not be started or reached."""


class EdgeError(RoboDensityError):
    pass


class SourceError(EdgeError):
    pass


class SourceConnectError(SourceError):
    pass


class OutboxFull(EdgeError):
    pass


class UplinkError(EdgeError):
    pass


class CollectorError(RoboDensityError):
    pass


class DatabaseError(RoboDensityError):
    pass


class RegistryError(RoboDensityError):
    """A registry file has bad rows; ``problems`` lists (line, reason) for each."""

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        shown = "; ".join(f"line {n}: {why}" for n, why in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} bad row(s), nothing imported: {shown}{more}")
        self.problems = problems
