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
    """Registry files have problems; ``problems`` holds each as ``file:line: column: problem``.

    The message is a summary line, then one line per problem (the first 50).
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        more = [f"(and {len(problems) - 50} more)"] if len(problems) > 50 else []
        summary = f"{source}: {len(problems)} problem(s), nothing imported:"
        super().__init__("\n".join([summary, *problems[:50], *more]))
        self.problems = problems
