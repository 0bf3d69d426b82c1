"""The Redis side of the throttle: key layout, the Lua scripts, and Redis errors as one type.

Every check is one Lua script, so "count the holders, compare with the limit, take a slot"
and "read the theoretical arrival time, compare, advance it" cannot interleave between
workers. Scripts read Redis' own clock (`TIME`), so worker clocks never matter; this needs
Redis >= 5 (scripts replicate their effects, not their source).

Keys for a throttle called NAME (`storage.provider_keys` names them, for the API's reader
too: `speechbatch:throttle:{provider:fp}`, whose braces are a Cluster hash tag so a script's
keys share one slot):

    NAME:slots   ZSET   holder token -> lease expiry (µs, server time); expired = free
    NAME:tat     STRING GCRA theoretical arrival time (µs); expires once in the past
    NAME:adapt   HASH   limit, rate (effective values after 429s), ok and rl (successes and
                        429s in the current window), cut_at (µs of the last decrease);
                        gone = configured values and no 429 to weigh
    NAME:wanted ZSET    waiting process -> µs it was last refused a slot; a slot granted
                        while another process was refused one is `contended`
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from storage.provider_keys import ThrottleKeys as Keys

__all__ = [
    "ADMITTED",
    "NO_SLOT",
    "OVER_RATE",
    "Adaptation",
    "Grant",
    "Keys",
    "Scripts",
    "ThrottleUnavailable",
    "redis_errors",
]

ADMITTED, OVER_RATE, NO_SLOT = 0, 1, 2

_PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- The adaptive values, never above what is configured now (config may have been lowered).
local function effective(adapt, max_limit, max_rate)
  local v = redis.call('HMGET', adapt, 'limit', 'rate')
  return math.min(tonumber(v[1]) or max_limit, max_limit),
         math.min(tonumber(v[2]) or max_rate, max_rate)
end
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
"""

# KEYS slots, tat, adapt, wanted; ARGV token ('' = rate only), max_limit, max_rate (0 = none),
# burst, lease_us, wanted_us, process. Returns {0, now_us, adapted, contended} admitted,
# {1, wait_us, adapted, 0} over the rate, {2, 0, adapted, 1} no free slot; adapted is 1 while
# the adaptive limits have 429s to weigh (lowered limits, or a window still counting after a
# 429); contended is 1 when another process was refused a slot in the last wanted_us (a
# refusal records its process). Else nothing is written unless both checks pass.
_ACQUIRE = (
    _PRELUDE
    + """
local now = now_us()
local token = ARGV[1]
local limit, rate = effective(KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]))
local adapted = redis.call('EXISTS', KEYS[3])
if token ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= limit then
    redis.call('ZADD', KEYS[4], now, ARGV[7])
    redis.call('PEXPIRE', KEYS[4], math.ceil(tonumber(ARGV[6]) / 1000))
    return {2, 0, adapted, 1}
  end
end
if rate > 0 then
  local interval = 1000000 / rate
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or now), now)
  local wait = tat + interval - tonumber(ARGV[4]) * interval - now
  if wait > 0 then return {1, math.ceil(wait), adapted, 0} end
  tat = tat + interval
  redis.call('SET', KEYS[2], string.format('%.3f', tat), 'PX',
             math.ceil((tat - now) / 1000) + 1000)
end
if token ~= '' then
  local lease = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[1], now + lease, token)
  keep_for(KEYS[1], math.ceil(lease / 1000) + 1000)
end
local others = 0
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
  others = redis.call('ZCARD', KEYS[4])
  if redis.call('ZSCORE', KEYS[4], ARGV[7]) then others = others - 1 end
end
return {0, now, adapted, others > 0 and 1 or 0}
"""
)

# KEYS slots, adapt; ARGV token ('' = none), outcome, acquired_us, max_limit, max_rate,
# min_window, decrease_factor, floor_share, rate_step, idle_ms, cut_share. Returns 1 if the
# token held a slot. The limits move per WINDOW of outcomes, as TCP moves per round trip:
# a window is max(limit, min_window) successes and 429s (other failures say nothing about
# the limits). A window that ends with at most `cut_share` of it 429s adds 1 slot and
# `rate_step` of the configured rate; once more than `cut_share` of a window are 429s, limit
# and rate are cut by `decrease_factor`, never below `floor_share` of the configured values
# (issue 9: random 429s unrelated to our concurrency pinned a x0.5-per-429 limit at 1 slot).
# Only calls admitted after the last cut count towards the next one (one cut per overload).
# At the configured values with no 429 seen there is nothing to count: no write at all.
_RELEASE = (
    _PRELUDE
    + """
local removed = 0
if ARGV[1] ~= '' then removed = redis.call('ZREM', KEYS[1], ARGV[1]) end
local outcome = ARGV[2]
if outcome ~= 'success' and outcome ~= 'rate_limited' then return removed end
if outcome == 'success' and redis.call('EXISTS', KEYS[2]) == 0 then return removed end
local max_limit, max_rate = tonumber(ARGV[4]), tonumber(ARGV[5])
local limit, rate = effective(KEYS[2], max_limit, max_rate)
local v = redis.call('HMGET', KEYS[2], 'ok', 'rl', 'cut_at')
local ok, rl, cut_at = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
if tonumber(ARGV[3]) < cut_at then return removed end
if outcome == 'rate_limited' then rl = rl + 1 else ok = ok + 1 end
local window = math.max(limit, tonumber(ARGV[6]))
local share = tonumber(ARGV[11])
if rl > share * window then
  local factor, floor_share = tonumber(ARGV[7]), tonumber(ARGV[8])
  limit = math.max(math.max(1, math.floor(max_limit * floor_share)), math.floor(limit * factor))
  if max_rate > 0 then rate = math.max(max_rate * floor_share, rate * factor) end
  redis.call('HSET', KEYS[2], 'limit', limit, 'rate', rate, 'ok', 0, 'rl', 0, 'cut_at', now_us())
  redis.call('PEXPIRE', KEYS[2], ARGV[10])
  return removed
end
if ok + rl >= window then
  limit = math.min(max_limit, limit + 1)
  if max_rate > 0 then rate = math.min(max_rate, rate + max_rate * tonumber(ARGV[9])) end
  ok, rl = 0, 0
  if limit >= max_limit and rate >= max_rate then
    redis.call('DEL', KEYS[2])
    return removed
  end
end
redis.call('HSET', KEYS[2], 'limit', limit, 'rate', rate, 'ok', ok, 'rl', rl)
redis.call('PEXPIRE', KEYS[2], ARGV[10])
return removed
"""
)

# KEYS slots; ARGV token, lease_us. 1 if the token still holds its slot (lease extended).
# An expired entry not yet pruned still counts as held: nobody else can have taken it.
_RENEW = (
    _PRELUDE
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now_us() + lease, ARGV[1])
keep_for(KEYS[1], math.ceil(lease / 1000) + 1000)
return 1
"""
)

_IN_USE = (
    _PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us())
return redis.call('ZCARD', KEYS[1])
"""
)


class ThrottleUnavailable(Exception):
    """Redis did not answer, so no permit can be granted; the caller decides what to do."""


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise ThrottleUnavailable(
            f"Could not {action}: Redis failed ({type(exc).__name__}: {exc})."
        ) from exc


@dataclass(frozen=True)
class Adaptation:
    """How the shared limits move: per window of outcomes, up by one step when a window had
    few 429s, down by `decrease_factor` when too many of one were 429s (see `_RELEASE`)."""

    decrease_factor: float = 0.5
    cut_share: float = 0.2  # more than this share of one window answered 429: cut
    min_window: int = 8  # outcomes per window even at a small limit, so one 429 is no trend
    floor_share: float = 0.25  # of the configured cap and rate: never cut below (at least 1)
    rate_step: float = 0.1  # fraction of the configured rate added per window
    idle_s: float = 600.0  # a throttled-down limit left alone this long resets


class Grant(NamedTuple):
    """One acquire's answer: ADMITTED (value: server µs), OVER_RATE (value: µs to wait) or
    NO_SLOT; adapted while the adaptive limits have 429s to weigh; contended when another
    process was refused a slot a moment ago (see `_ACQUIRE`)."""

    state: int
    value: int
    adapted: bool
    contended: bool


class Scripts:
    """The scripts registered on one client; each method is one round trip."""

    def __init__(self, client: redis.Redis[Any]) -> None:
        self.client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._in_use = client.register_script(_IN_USE)

    def acquire(
        self,
        keys: Keys,
        token: str,
        *,
        limit: int,
        rate: float,
        burst: int,
        lease_s: float,
        wanted_s: float = 1.0,
        process: str = "",
    ) -> Grant:
        """One try for a slot and a rate token (see `_ACQUIRE`); a refusal records `process`
        as waiting for `wanted_s`."""
        args = [token, limit, rate, burst, math.ceil(lease_s * 1e6), math.ceil(wanted_s * 1e6)]
        args.append(process)
        with redis_errors("check the provider throttle"):
            state, value, adapted, contended = self._acquire(
                keys=[keys.slots, keys.tat, keys.adapt, keys.wanted], args=args
            )
        return Grant(int(state), int(value), bool(adapted), bool(contended))

    def release(
        self,
        keys: Keys,
        token: str,
        outcome: str,
        acquired_us: int,
        *,
        limit: int,
        rate: float,
        adaptation: Adaptation,
    ) -> bool:
        a = adaptation
        args = [
            token,
            outcome,
            acquired_us,
            limit,
            rate,
            a.min_window,
            a.decrease_factor,
            a.floor_share,
            a.rate_step,
            math.ceil(a.idle_s * 1000),
            a.cut_share,
        ]
        with redis_errors("release a throttle permit"):
            return bool(self._release(keys=[keys.slots, keys.adapt], args=args))

    def renew(self, keys: Keys, token: str, lease_s: float) -> bool:
        with redis_errors("renew a throttle permit"):
            return bool(self._renew(keys=[keys.slots], args=[token, math.ceil(lease_s * 1e6)]))

    def in_use(self, keys: Keys) -> int:
        with redis_errors("count throttle slots"):
            return int(self._in_use(keys=[keys.slots]))

    def effective(self, keys: Keys, *, limit: int, rate: float) -> tuple[int, float]:
        """The limit and rate in force now (the configured ones unless a 429 lowered them)."""
        with redis_errors("read the adaptive limit"):
            stored = self.client.hmget(keys.adapt, ["limit", "rate"])
        return (
            min(int(float(stored[0])), limit) if stored[0] is not None else limit,
            min(float(stored[1]), rate) if stored[1] is not None else rate,
        )
