"""Exceptions of the wire format."""

from core.errors import AtpError


class SchemaError(AtpError):
    """A schema file is missing, malformed or inconsistent."""


class DecodeError(AtpError):
    """A message could not be decoded; ``reason`` is a small fixed vocabulary for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
