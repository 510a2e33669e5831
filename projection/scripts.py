"""The Lua of the projection's writes: the version-guarded position write (with the key's lineage
list) and the alert write; the key layout they write is in ``projection.keys``."""

from __future__ import annotations

from projection.codec import HASH_FIELDS, LINEAGE_SIZE, SEP

# Writes any number of positions (or group positions) in one call. Per item j: KEYS[3j-2] its
# hash, KEYS[3j-1] the SKU's location (or group) set, KEYS[3j] its lineage list; ARGV[5j-4] version,
# ARGV[5j-3] location (or group), ARGV[5j-2] the values of HASH_FIELDS joined by SEP, ARGV[5j-1] a
# group's members JSON ("": none), ARGV[5j] the changes behind the position (``codec.lineage_arg``:
# "" none). One packed argument instead of 34 per item, and one command for many items: building,
# sending and parsing commands was most of the client's cost per position (7.0 -> 3.4 us of CPU
# per position at 100 items per call). An item is written only when its version is higher than the
# stored one; of its changes, only those applied after the stored version (a change's second field
# is the key's version that applied it), so a re-emitted batch never lists a change twice. The list
# keeps the newest LINEAGE_SIZE. Returns how many items were written.
GUARDED_WRITE = """
local names = {%s}
local written = 0
for j = 1, #KEYS / 3 do
  local a = 5 * j - 4
  local k = 3 * j - 2
  local cur = redis.call('HGET', KEYS[k], 'version')
  if not (cur and tonumber(cur) >= tonumber(ARGV[a])) then
    local args, n = {}, 0
    for v in string.gmatch(ARGV[a + 2] .. '%s', '([^%s]*)%s') do
      n = n + 1
      args[2 * n - 1] = names[n]
      args[2 * n] = v
    end
    if n ~= #names then
      return redis.error_reply('ATP packed position has ' .. n .. ' values, expected ' .. #names)
    end
    if ARGV[a + 3] ~= '' then
      args[2 * n + 1] = 'members'
      args[2 * n + 2] = ARGV[a + 3]
    end
    redis.call('HSET', KEYS[k], unpack(args))
    redis.call('SADD', KEYS[k + 1], ARGV[a + 1])
    if ARGV[a + 4] ~= '' then
      local after = tonumber(cur) or -1
      for e in string.gmatch(ARGV[a + 4], '[^\\30]+') do
        local seq = tonumber(string.match(e, '^[^\\31]*\\31([^\\31]*)'))
        if seq and seq > after then redis.call('LPUSH', KEYS[k + 2], e) end
      end
      redis.call('LTRIM', KEYS[k + 2], 0, %d)
    end
    written = written + 1
  end
end
return written
""" % (", ".join(f"'{f}'" for f in HASH_FIELDS), SEP, SEP, SEP, LINEAGE_SIZE - 1)  # noqa: UP031 - Lua is full of braces


# Items per call. Redis runs a call's items back to back: about 8 us each (the measured wall time
# beyond the client's CPU), so a call holds it for under 1 ms between other clients' commands.
WRITE_CHUNK = 100


# The latest alert of each kind for one key. KEYS[1] the key's alert hash; ARGV[1] kind, ARGV[2]
# version, ARGV[3] the alert as JSON. A re-delivered older alert never replaces a newer one.
GUARDED_ALERT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1] .. ':version')
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. ':version', ARGV[2])
return 1
"""


ALERT_INDEX_SIZE = 10_000  # newest entries kept in each alert index


def alert_member(kind: str, sku: str, location: str) -> str:
    """An alert index member: the kind and the key (``DRIFT|SKU-1@DC-01``)."""
    return f"{kind}|{sku}@{location}"
