"""The Lua scripts of the Redis backend: each one round trip, atomic."""

from __future__ import annotations

_APPEND = """
local ids = {}
for i = FIRST_EVENT, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'v', ARGV[i])
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess > tonumber(ARGV[2]) then
  local removed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
  redis.call('XSETID', KEYS[1], ids[#ids], 'MAXDELETEDID', removed[#removed][1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[1], '')
return ids
"""
APPEND = _APPEND.replace("FIRST_EVENT", "4")
"""Append events, trim, renew, wake: one round trip, atomic. Trimming is done here rather
than by XADD's MAXLEN because Redis records no trace of what MAXLEN trimmed; XSETID's
MAXDELETEDID makes XINFO tell readers the newest id they can no longer read. The stream
is trimmed back to its cap once it is `slack` over, so the cost is paid once per slack."""

APPEND_CLAIMED = """
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return false end
""" + _APPEND.replace("FIRST_EVENT", "5")
"""APPEND, only while the writer (ARGV[4]) holds the session's claim (KEYS[2], which shares
the stream's hash tag): nothing written, and nil, when it does not."""

READ = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {entries, false} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then return {entries, info[i + 1]} end
end
return {entries, '0-0'}
"""
"""Events after an id and the newest id trimmed unread, in one round trip (nil when the
stream does not exist). Cheaper than MULTI/XRANGE/XINFO/EXEC: redis-py spends more time
parsing XINFO's full reply than Redis takes to answer."""


CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
"""Take or renew a session's claim unless another owner holds it."""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

SET_CLAIMED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""
"""Write a session's state only while the writer holds its claim (the claim and the state
share a hash tag, so one script may touch both, on a cluster too)."""
