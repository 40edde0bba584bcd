"""The Lua scripts of :class:`~portcullis.state.redis_store.RedisStateStore` (one atomic step each).

Exact arithmetic in Lua. Lua numbers are doubles (exact only up to 2^53), and an amount here is a
*scaled integer* (the Decimal times 10^18) of up to 37 digits. So amounts travel as decimal digit
strings and the scripts do their arithmetic on **limbs**: a number is a little-endian array of base
10^7 digits (7 limbs, 49 digits). Summing a key's buckets adds limb by limb without carrying (65
buckets of limbs below 10^7 stay far below 2^53) and carries once at the end; comparison and
subtraction work limb by limb too. Nothing is ever converted to a double except the limbs and the
bucket expiry times, which are doubles in Python as well (their ``repr`` round-trips through Lua's
``tonumber``). Measured and explained in docs/decisions.md ("Redis counters: exact amounts in Lua").

Numbers passed back to Redis commands (scores, ``now``) are the strings the gateway sent, never a Lua
number, so no version's number formatting (Redis 7 prints the shortest exact form; Lua's own ``%.14g`` would
round an epoch time by up to 0.1 ms and could evict a key whose window is still live) can matter.

Keys. ``KEYS[1]`` is the key's hash (field: a bucket's expiry as Python's ``repr``; value: its
scaled total); ``KEYS[2]`` the sorted set of keys with live buckets (score: the key's last expiry),
which bounds the number of keys (``max_keys``) and lets a full table evict expired keys first.
"""

from __future__ import annotations

_LIMBS = r"""
local BASE = 10000000
local N = 7
local function zero() local l = {} for i = 1, N do l[i] = 0 end return l end
local function accumulate(acc, s)
  local i, n = 1, #s
  while n > 0 do
    local st = n - 6
    if st < 1 then st = 1 end
    acc[i] = acc[i] + tonumber(string.sub(s, st, n))
    i = i + 1
    n = st - 1
  end
end
local function parse(s) local l = zero() accumulate(l, s) return l end
local function carry(l)
  local c = 0
  for i = 1, N do
    local v = l[i] + c
    c = math.floor(v / BASE)
    l[i] = v - c * BASE
  end
  if c ~= 0 then error('portcullis: amount overflow') end
  return l
end
local function add(a, b) local r = zero() for i = 1, N do r[i] = a[i] + b[i] end return carry(r) end
local function cmp(a, b)
  for i = N, 1, -1 do
    if a[i] ~= b[i] then if a[i] < b[i] then return -1 end return 1 end
  end
  return 0
end
local function sub0(a, b)
  if cmp(a, b) <= 0 then return zero() end
  local r, borrow = zero(), 0
  for i = 1, N do
    local v = a[i] - b[i] - borrow
    if v < 0 then v = v + BASE borrow = 1 else borrow = 0 end
    r[i] = v
  end
  return r
end
local function tostr(l)
  local top = N
  while top > 1 and l[top] == 0 do top = top - 1 end
  local parts = {string.format('%d', l[top])}
  for i = top - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', l[i]) end
  return table.concat(parts)
end
local function iszero(l) for i = 1, N do if l[i] ~= 0 then return false end end return true end
local function ttl_ms(last, now) return math.ceil((last - now) * 1000) + 60000 end
local function touch_index(index, ttl)
  local p = redis.call('PTTL', index)
  if p < ttl then redis.call('PEXPIRE', index, ttl) end
end
local function make_room(index, now_s, max_keys)
  if redis.call('ZCARD', index) < max_keys then return true end
  local old = redis.call('ZRANGEBYSCORE', index, '-inf', now_s, 'LIMIT', 0, 256)
  for _, k in ipairs(old) do
    redis.call('DEL', k)
    redis.call('ZREM', index, k)
  end
  return redis.call('ZCARD', index) < max_keys
end
"""

# ARGV: now, expires_at (repr), amount (scaled digits), limit (scaled digits), max_keys.
# Returns {accepted (0/1/-1 = full), total_before, total_after, bucket field}.
WINDOW_ADD = _LIMBS + r"""
local now = tonumber(ARGV[1])
local exp_s = ARGV[2]
local exp = tonumber(exp_s)
local amount = parse(ARGV[3])
local limit = parse(ARGV[4])
local h = redis.call('HGETALL', KEYS[1])
local total = zero()
local last, last_s, last_total = nil, nil, nil
local dead = {}
for i = 1, #h, 2 do
  local e = tonumber(h[i])
  if e <= now then
    dead[#dead + 1] = h[i]
  else
    accumulate(total, h[i + 1])
    if last == nil or e > last then last, last_s, last_total = e, h[i], h[i + 1] end
  end
end
carry(total)
local before = tostr(total)
local after = add(total, amount)
if cmp(after, limit) > 0 then return {0, before, before, ''} end
if redis.call('ZSCORE', KEYS[2], KEYS[1]) == false then
  if not make_room(KEYS[2], ARGV[1], tonumber(ARGV[5])) then return {-1, before, before, ''} end
end
if #dead > 0 then redis.call('HDEL', KEYS[1], unpack(dead)) end
local field, bucket = exp_s, amount
if last ~= nil and exp <= last then field, bucket = last_s, add(parse(last_total), amount) end
redis.call('HSET', KEYS[1], field, tostr(bucket))
local newlast, newlast_s = exp, exp_s
if last ~= nil and last > exp then newlast, newlast_s = last, last_s end
redis.call('ZADD', KEYS[2], newlast_s, KEYS[1])
local ttl = ttl_ms(newlast, now)
redis.call('PEXPIRE', KEYS[1], ttl)
touch_index(KEYS[2], ttl)
return {1, before, tostr(after), field}
"""

# ARGV: bucket field, amount (scaled digits). Subtracts (never below zero); drops an emptied key.
WINDOW_REMOVE = _LIMBS + r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == false then return 0 end
local left = sub0(parse(cur), parse(ARGV[2]))
if iszero(left) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], KEYS[1])
  end
else
  redis.call('HSET', KEYS[1], ARGV[1], tostr(left))
end
return 1
"""

# ARGV: now, expires_at (repr), stored text ("<expires_at>|<value>"), max_keys. Returns 1, or -1 when full.
VALUE_SET = _LIMBS + r"""
local now = tonumber(ARGV[1])
local exp = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[2], KEYS[1]) == false then
  if not make_room(KEYS[2], ARGV[1], tonumber(ARGV[4])) then return -1 end
end
local ttl = ttl_ms(exp, now)
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
touch_index(KEYS[2], ttl)
return 1
"""
