"""API keys: who may read what, how often.

The value types live here; ``keyfile`` stores keys (hashes only), ``keyring`` looks tokens up in a
running API, ``limiter`` holds each key to its rate, and ``middleware`` puts them in front of every
route. docs/security.md says what is and is not protected.
"""

from __future__ import annotations

from dataclasses import dataclass

AVAILABILITY_READ, DRIFT_READ, METRICS_READ, ADMIN = "availability:read", "drift:read", "metrics:read", "admin"
SCOPES = (AVAILABILITY_READ, DRIFT_READ, METRICS_READ, ADMIN)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the API sees it once its token is verified (never the token itself)."""

    name: str
    scopes: frozenset[str]
    locations: frozenset[str] | None = None  # None: every location
    groups: frozenset[str] | None = None  # None: every group its locations allow
    rate: float = 0.0  # requests per second; 0: unlimited
    burst: float = 0.0  # the bucket's size (requests that may come at once)
    expires_ms: int | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def sees(self, location: str) -> bool:
        return self.locations is None or location in self.locations

    def sees_group(self, group: str, members: list[str]) -> bool:
        """A group: named in the key's groups when it has a list, else every member is one of its locations."""
        if self.groups is not None:
            return group in self.groups
        return all(self.sees(m) for m in members)
