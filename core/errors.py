"""The root of the project's exception tree."""


class AtpError(Exception):
    """Base of every error atp-stream raises on purpose; messages tell an operator what to do."""


class ConfigError(AtpError):
    """Settings are missing, malformed or inconsistent."""


class StackError(AtpError):
    """The embedded local stack (broker, Redis) could not be started or reached."""
