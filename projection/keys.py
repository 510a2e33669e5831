"""The Redis projection of positions: key layout, the version-guarded write, and reading back.

Layout (``{sku}`` is a Redis Cluster hash tag, so a SKU's locations share one slot):
- ``<prefix>:pos:{<sku>}:<location>``: hash of every position field;
- ``<prefix>:locs:{<sku>}``: set of the SKU's locations, for the network view;
- ``<prefix>:grp:{<sku>}:<group>``: a location group's summed position, with ``members`` (JSON
  ``[[location, version], ...]``, the member versions summed), and ``<prefix>:grps:{<sku>}``;
- ``<prefix>:alert:{<sku>}:<location>`` and the ``<prefix>:alerts`` indexes: the latest alerts;
- ``<prefix>:expl:{<sku>}:<location>``: the key's lineage, its newest changes (``projection.scripts``);
- ``<prefix>:meta``: hash ``run_id`` (the dataflow run that owns the keyspace), ``state``
  (``ready`` or ``rebuilding``) and ``since`` (epoch ms). No meta key means the keyspace is lost
  or was never written: readers must not trust what they find, and the dataflow re-publishes.
  The dataflow's liveness, when it publishes it: ``flow`` (``running``, ``stopped`` or
  ``crash_loop``) and ``heartbeat`` (epoch ms, rewritten at least every 2 s while it runs); the
  API's /readyz reads them (serving.routes.health).

Writes are at-least-once (Bytewax re-emits after a restart), so a write lands only if its
``version`` is higher than the stored one: a replayed older position never overwrites a newer.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import Settings
from core.contract import DEFAULT_GENERATION as DEFAULT_GENERATION
from core.contract import GENERATION_PATTERN as GENERATION_PATTERN


@dataclass(frozen=True)
class KeySpace:
    """Names of the Redis keys under one prefix."""

    prefix: str = "atp"

    def position(self, sku: str, location: str) -> str:
        return f"{self.prefix}:pos:{{{sku}}}:{location}"

    def locations(self, sku: str) -> str:
        return f"{self.prefix}:locs:{{{sku}}}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    def group(self, sku: str, group: str) -> str:
        """A location group's position of one SKU (the position fields plus ``members``)."""
        return f"{self.prefix}:grp:{{{sku}}}:{group}"

    def groups(self, sku: str) -> str:
        return f"{self.prefix}:grps:{{{sku}}}"

    def lineage(self, sku: str, location: str) -> str:
        """The newest changes behind a key's position (a list, newest applied first; ``GUARDED_WRITE``)."""
        return f"{self.prefix}:expl:{{{sku}}}:{location}"

    def alert(self, sku: str, location: str) -> str:
        return f"{self.prefix}:alert:{{{sku}}}:{location}"

    def alerts(self, location: str | None = None) -> str:
        """Index of the keys' latest alerts, newest ``as_of`` first: all, or one location's."""
        return f"{self.prefix}:alerts" if location is None else f"{self.prefix}:alerts:loc:{location}"


READY = "ready"


REBUILDING = "rebuilding"






@dataclass(frozen=True)
class Generations:
    """Generations of the keyspace under one base prefix, and the pointer that names the current one.

    - ``<base>:current``: the name of the generation the API serves (absent: ``default``);
    - ``default`` lives under ``<base>`` itself (the layout before generations existed), any other
      generation ``NAME`` under ``<base>:gen:NAME``, each with its own meta key.
    A switch is one ``SET`` of the pointer, so a reader sees either the old or the new generation.
    """

    base: str = "atp"

    @property
    def pointer(self) -> str:
        return f"{self.base}:current"

    def keyspace(self, name: str) -> KeySpace:
        return KeySpace(self.base if name == DEFAULT_GENERATION else f"{self.base}:gen:{name}")

    @property
    def meta_pattern(self) -> str:
        return f"{self.base}:gen:*:meta"

    def name_of_meta(self, key: str) -> str:
        """``<base>:gen:NAME:meta`` or ``<base>:meta`` -> the generation's name."""
        if key == f"{self.base}:meta":
            return DEFAULT_GENERATION
        return key[len(self.base) + len(":gen:"):-len(":meta")]


def current_name(raw: bytes | str | None) -> str:
    """The pointer's value as a generation name (no pointer: the default generation)."""
    if raw is None:
        return DEFAULT_GENERATION
    # Bytes that are not UTF-8 (a hand edit) name a generation that does not exist: the readers
    # then answer keyspace_missing instead of failing.
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def generations_of(settings: Settings) -> Generations:
    """The generations under the settings' Redis key prefix."""
    return Generations(settings.redis_key_prefix)


def keyspace_of(settings: Settings) -> KeySpace:
    """The Redis keyspace of the settings' generation (the one a dataflow with them writes)."""
    return generations_of(settings).keyspace(settings.generation)
