"""Exceptions of the domain model."""

from core.errors import AtpError


class InvalidEvent(AtpError):
    """An event that decodes but breaks the contract; ``reason`` is a small fixed vocabulary."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
