"""The state store on Redis or Valkey, shared by every host that names the same server:
the semantics of state_store.py, each request one Lua script (atomic on the server).

Layout under the prefix (default `wasinn:state:`): `k:KEY`, a hash with the value `v`,
its version `ver`, fencing token `ft` and creator `own`, with the key's own expiry;
`o:OWNER`, a sorted set of the keys an operator created scored by their expiry (ms),
which counts its live keys; `b:OWNER`, a hash of the byte sizes of their values (field
`:KEY`) and their sum (field `#`, which no key's field can be: an operator's key `#` had
reset its own count, and stored 189,001 bytes under a 10,000-byte limit); and
`version`, the last version the store issued.
"""
from __future__ import annotations

import os
import time

from ...errors import WasinnError
from .clock import HybridClock, Timestamp
from .state_store import (StateError, StateUnavailable, decode_version, encode_version, too_many_bytes,
                          too_many_keys)

_FENCING = """
-- the version: the writer's, or one count past the last the store issued (KEYS[2])
local function stamp(proposed, node)
  local last = redis.call('GET', KEYS[2])
  local ver = proposed
  if last and last >= proposed then
    ver = string.sub(last, 1, 20) .. '.' .. string.format('%020d', tonumber(string.sub(last, 22, 41)) + 1)
          .. '.' .. node
  end
  redis.call('SET', KEYS[2], ver)
  return ver
end
local function fencing(stored, given)
  if stored and stored ~= '' then
    if given == '' then return 'the key is protected by a fencing token; the request carries none' end
    if given < stored then return "the request's fencing token is older than the key's" end
  end
  return nil
end
"""
# KEYS: hash, last version; ARGV: value, condition, ttl ms ('' none), token ('' none),
# proposed version, owner, now ms, max keys, key, owner-set prefix, node id, max bytes,
# owner-sizes prefix. The key stays counted against its creator.
_SET = _FENCING + """
local cur = redis.call('HMGET', KEYS[1], 'v', 'ft', 'own')
local exists = cur[1] ~= false
local refusal = fencing(cur[2], ARGV[4])
if refusal then return {'err', refusal} end
if exists and (ARGV[2] == 'only-if-does-not-exist' or
               (ARGV[2] == 'only-if-equal-or-does-not-exist' and cur[1] ~= ARGV[1])) then
  return {'no'}
end
local now = tonumber(ARGV[7])
local creator = exists and cur[3] or ARGV[6]
local owned = ARGV[10] .. creator
local sizes = ARGV[13] .. creator
-- only an operator's writes (the host's own carry no quotas) are counted
local quotas = tonumber(ARGV[8]) > 0 or tonumber(ARGV[12]) > 0
if quotas then
  -- what expired leaves the creator's counts first
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', owned, '-inf', now)) do
    local n = redis.call('HGET', sizes, ':' .. gone)
    if n then
      redis.call('HINCRBY', sizes, '#', -tonumber(n))
      redis.call('HDEL', sizes, ':' .. gone)
    end
  end
  redis.call('ZREMRANGEBYSCORE', owned, '-inf', now)
end
if not exists and tonumber(ARGV[8]) > 0 then
  if redis.call('ZCARD', owned) >= tonumber(ARGV[8]) then return {'full'} end
end
if tonumber(ARGV[12]) > 0 then
  local grows = string.len(ARGV[1]) - tonumber(redis.call('HGET', sizes, ':' .. ARGV[9]) or '0')
  local held = tonumber(redis.call('HGET', sizes, '#') or '0')
  if grows > 0 and held + grows > tonumber(ARGV[12]) then
    return {'bytes', tostring(held), tostring(grows), creator}
  end
  redis.call('HINCRBY', sizes, '#', grows)
  redis.call('HSET', sizes, ':' .. ARGV[9], string.len(ARGV[1]))
end
local token = ARGV[4]
if token == '' and cur[2] then token = cur[2] end
local ver = stamp(ARGV[5], ARGV[11])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', ver, 'ft', token, 'own', creator)
if ARGV[3] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
if quotas then
  redis.call('ZADD', owned, ARGV[3] ~= '' and now + tonumber(ARGV[3]) or '+inf', ARGV[9])
end
return {'ok', ver}
"""
# KEYS: hash, last version; ARGV: token ('' none), value to match (with ARGV[3] == '1'),
# match (1/0), owner-set prefix, key, proposed version, node id, owner-sizes prefix
_DEL = _FENCING + """
local cur = redis.call('HMGET', KEYS[1], 'v', 'ft', 'own')
if cur[1] == false then return {'0'} end
local refusal = fencing(cur[2], ARGV[1])
if refusal then return {'err', refusal} end
if ARGV[3] == '1' and cur[1] ~= ARGV[2] then return {'-1'} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[4] .. cur[3], ARGV[5])
local sizes = ARGV[8] .. cur[3]
local n = redis.call('HGET', sizes, ':' .. ARGV[5])
if n then
  redis.call('HINCRBY', sizes, '#', -tonumber(n))
  redis.call('HDEL', sizes, ':' .. ARGV[5])
end
return {'1', stamp(ARGV[6], ARGV[7])}
"""


class RedisStore:
    """A state store on the Redis (or Valkey) server at `url` (redis://HOST:PORT/DB)."""

    def __init__(self, url: str, *, prefix: str = "wasinn:state:", node_id: str | None = None,
                 timeout: float = 5.0):
        try:
            import redis  # the serve extra; only for a Redis store
        except ImportError:
            raise WasinnError("the Redis state store needs the redis package: pip install 'wasinn[serve]'") from None
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.url = url
        self.prefix = prefix.encode()
        self.clock = HybridClock(node_id or f"redis-{os.uname().nodename}-{os.getpid()}")
        self._last = self.prefix + b"version"
        self._set = self._client.register_script(_SET)
        self._del = self._client.register_script(_DEL)

    def _run(self, call):
        try:
            return call()
        except self._errors as e:
            raise StateUnavailable(f"state store {self.url}: {e}") from None

    def get(self, key: bytes) -> tuple[bytes | None, Timestamp | None]:
        value, version = self._run(lambda: self._client.hmget(self.prefix + b"k:" + key, "v", "ver"))
        return (None, None) if value is None else (value, decode_version(version))

    def set(self, owner: str, key: bytes, value: bytes, *, condition: str = "unconditional",
            expires: float | None = None, fencing: Timestamp | None = None,
            max_keys: int = 0, max_bytes: int = 0) -> tuple[bool, Timestamp | None]:
        ttl = "" if expires is None else str(max(1, round(expires * 1000)))
        token = "" if fencing is None else encode_version(fencing)
        args = [value, condition, ttl, token, encode_version(self.clock.now()), owner, time.time_ns() // 1_000_000,
                max_keys, key, self.prefix + b"o:", self.clock.node_id, max_bytes, self.prefix + b"b:"]
        out = self._run(lambda: self._set(keys=[self.prefix + b"k:" + key, self._last], args=args))
        status = out[0].decode()
        if status == "err":
            raise StateError(out[1].decode())
        if status == "full":
            raise StateError(too_many_keys(owner, max_keys))
        if status == "bytes":
            raise StateError(too_many_bytes(out[3].decode(), int(out[1]), int(out[2]), max_bytes))
        return (True, self._issued(out[1])) if status == "ok" else (False, None)

    def delete(self, key: bytes, *, value: bytes | None = None,
               fencing: Timestamp | None = None) -> tuple[int, Timestamp | None]:
        token = "" if fencing is None else encode_version(fencing)
        args = [token, value or b"", "0" if value is None else "1", self.prefix + b"o:", key,
                encode_version(self.clock.now()), self.clock.node_id, self.prefix + b"b:"]
        out = self._run(lambda: self._del(keys=[self.prefix + b"k:" + key, self._last], args=args))
        if out[0] == b"err":
            raise StateError(out[1].decode())
        count = int(out[0])
        return count, (self._issued(out[1]) if count == 1 else None)

    def persistence_warning(self) -> str | None:
        """What a restart of the server would lose, or None: without its append-only file
        the keys written since its last snapshot (staged windows among them) are gone.
        None too where the server will not say (CONFIG is often disabled on managed ones)."""
        import redis
        try:
            appendonly = self._client.config_get("appendonly").get("appendonly")
            save = self._client.config_get("save").get("save")
        except (redis.RedisError, OSError):
            return None
        if appendonly == "yes":
            return None
        kept = f"snapshots only (save {save!r})" if save else "no persistence (appendonly no, save '')"
        return (f"the state store {self.url} has {kept}: a restart of it loses what was written since its last "
                "snapshot, open windows' messages among them; configure appendonly yes (pipelines/README.md)")

    def _issued(self, text: bytes) -> Timestamp:
        """A version the store issued; this host's clock moves past it (HLC receive)."""
        version = decode_version(text)
        self.clock.receive(version)
        return version

    def close(self) -> None:
        self._client.close()
