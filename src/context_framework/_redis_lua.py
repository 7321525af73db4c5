"""The Lua scripts behind ``RedisContextStore.update`` and ``increment``.

Both run server-side (``EVALSHA``, falling back to ``EVAL`` on ``NOSCRIPT``),
so a read-modify-write of one key is atomic across every client. Neither
script converts the stored JSON with Lua's ``cjson``, which is lossy (numbers
become doubles printed with 14 significant digits, integers above 2**53 are
rounded, key order is lost). Instead they work on the JSON *text*:

* ``members(s)`` splits the top-level object written by
  :func:`context_framework.values.encode_value` into its members, as raw
  texts: the key with its quotes, and the value exactly as written. It skips
  strings (honouring backslash escapes, so quotes and braces inside strings
  are inert) and nested ``{}``/``[]`` by depth counting, with ``string.find``
  jumping from one interesting byte to the next. Nested values are never
  parsed, so they come back byte for byte.
* ``update``: Python sends the patch as ``(key JSON text, value JSON text)``
  pairs. Our encoder is deterministic (the same ``str`` always encodes to the
  same text, inside a dict or alone), so comparing raw key texts literally is
  comparing keys. The merge keeps the order of Python's ``{**old, **patch}``:
  patched keys are replaced in place, new keys are appended in patch order.
* ``increment``: finds the field's member (absent means ``0``). An integer
  text (no ``.``, ``e``, ``E``) plus an integer ``by`` is added exactly in
  decimal, digit by digit (Lua numbers are doubles, and metadata integers go
  up to 2**64 - 1), then checked against ``[-2**63, 2**64)``. If either side
  is a float, the sum is computed in doubles, as Python does, and printed as
  Python's ``repr`` prints it: the shortest ``%.{p}e`` that reads back to the
  same double, laid out with Python's rule (positional for exponents in
  ``[-4, 16)``, with ``.0`` when integral; otherwise ``1e+16`` style). So the
  stored text is byte-identical to what ``encode_value`` would have written.

Replies are arrays ``{code, payload}`` rather than Redis errors, so no
message passes through Redis' error formatting: ``0`` success (the merged
text / the new field text), ``1`` too large (the size in bytes), ``2`` the
stored value is not a JSON object, ``3`` the field is not a number (its raw
text), ``4`` the integer result is out of range (its exact text), ``5`` the
float result is not finite.

Both scripts write with ``SET ... PX ttl`` when the store has a TTL, else
``SET ... KEEPTTL`` (Redis >= 6.0) so that a TTL set with ``expire`` survives
updates and increments. The size limit (``max_value_size``) is checked on the
merged text, in bytes, before anything is written.
"""

from __future__ import annotations

import hashlib

__all__ = ["INCREMENT", "UPDATE", "Script"]

_COMMON = r"""
local byte, find, sub, concat = string.byte, string.find, string.sub, table.concat

-- Index of the closing quote of the JSON string that opens at i (nil if unterminated).
local function str_end(s, i)
  local pos = i + 1
  while true do
    local j = find(s, '["\\]', pos)
    if not j then return nil end
    if byte(s, j) == 92 then pos = j + 2 else return j end
  end
end

-- Index of the last byte of the JSON value that starts at i (nil if malformed).
local function value_end(s, i)
  local c = byte(s, i)
  if c == 34 then return str_end(s, i) end
  if c == 123 or c == 91 then
    local depth, pos = 1, i + 1
    while true do
      local j = find(s, '["{}%[%]]', pos)
      if not j then return nil end
      local d = byte(s, j)
      if d == 34 then
        j = str_end(s, j)
        if not j then return nil end
      elseif d == 123 or d == 91 then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return j end
      end
      pos = j + 1
    end
  end
  local j = find(s, '[,}%]%s]', i)
  if not j or j == i then return nil end
  return j - 1
end

local function skip_ws(s, i)
  local _, e = find(s, '^[ \t\r\n]*', i)
  return e + 1
end

-- The members of the top-level JSON object s as two arrays of raw texts (keys
-- with their quotes, values as written), or nil when s is not a JSON object.
local function members(s)
  local ks, vs, n = {}, {}, 0
  local i = skip_ws(s, 1)
  if byte(s, i) ~= 123 then return nil end
  i = skip_ws(s, i + 1)
  if byte(s, i) == 125 then
    if skip_ws(s, i + 1) <= #s then return nil end
    return ks, vs
  end
  while true do
    if byte(s, i) ~= 34 then return nil end
    local ke = str_end(s, i)
    if not ke then return nil end
    local vstart = skip_ws(s, ke + 1)
    if byte(s, vstart) ~= 58 then return nil end
    vstart = skip_ws(s, vstart + 1)
    local ve = value_end(s, vstart)
    if not ve then return nil end
    n = n + 1
    ks[n] = sub(s, i, ke)
    vs[n] = sub(s, vstart, ve)
    i = skip_ws(s, ve + 1)
    local c = byte(s, i)
    if c == 44 then
      i = skip_ws(s, i + 1)
    elseif c == 125 then
      if skip_ws(s, i + 1) <= #s then return nil end
      return ks, vs
    else
      return nil
    end
  end
end

local function join(ks, vs)
  local parts = {}
  for i = 1, #ks do parts[i] = ks[i] .. ':' .. vs[i] end
  return '{' .. concat(parts, ',') .. '}'
end

-- Write text under KEYS[1]: with a fresh TTL (ms > 0), or keeping the current one.
local function store(text, ttl)
  if ttl > 0 then
    redis.call('SET', KEYS[1], text, 'PX', ttl)
  else
    redis.call('SET', KEYS[1], text, 'KEEPTTL')
  end
end
"""

_UPDATE = r"""
-- KEYS[1]: the key. ARGV[1]: max size in bytes (0: none). ARGV[2]: TTL in ms (0: keep).
-- ARGV[3], ARGV[4], ...: the patch as (key JSON text, value JSON text) pairs.
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local patch, npatch = {}, (#ARGV - 2) / 2
for p = 1, npatch do patch[ARGV[2 * p + 1]] = ARGV[2 * p + 2] end
local ks, vs, n = {}, {}, 0
local current = redis.call('GET', KEYS[1])
if current then
  ks, vs = members(current)
  if not ks then return {2, 'the stored value is not a JSON object'} end
  n = #ks
  for i = 1, n do
    local v = patch[ks[i]]
    if v then
      vs[i] = v
      patch[ks[i]] = false
    end
  end
end
for p = 1, npatch do
  local k = ARGV[2 * p + 1]
  if patch[k] then
    n = n + 1
    ks[n] = k
    vs[n] = patch[k]
    patch[k] = false
  end
end
local text = join(ks, vs)
if limit > 0 and #text > limit then return {1, #text} end
store(text, ttl)
return {0, text}
"""

_INCREMENT = r"""
-- KEYS[1]: the key. ARGV[1]: the field as JSON text. ARGV[2]: by as JSON text.
-- ARGV[3]: 'i' (by is an int) or 'f' (a float). ARGV[4]: max size (0: none).
-- ARGV[5]: TTL in ms (0: keep).
local field, by, kind = ARGV[1], ARGV[2], ARGV[3]
local limit, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])

local function split_sign(s)
  if byte(s, 1) == 45 then return true, sub(s, 2) end
  return false, s
end

local function strip_zeros(m)
  local z = find(m, '[^0]')
  if not z then return '0' end
  return sub(m, z)
end

-- Compare two magnitudes (digit strings without leading zeros).
local function mag_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function reversed_digits(out, n)
  local t = {}
  for k = n, 1, -1 do t[n - k + 1] = out[k] end
  return concat(t)
end

local function mag_add(a, b)
  local out, n, carry, i, j = {}, 0, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + byte(a, i) - 48; i = i - 1 end
    if j > 0 then d = d + byte(b, j) - 48; j = j - 1 end
    if d >= 10 then carry = 1; d = d - 10 else carry = 0 end
    n = n + 1
    out[n] = d
  end
  return reversed_digits(out, n)
end

local function mag_sub(a, b) -- requires a >= b
  local out, n, borrow, i, j = {}, 0, 0, #a, #b
  while i > 0 do
    local d = byte(a, i) - 48 - borrow
    if j > 0 then d = d - (byte(b, j) - 48); j = j - 1 end
    if d < 0 then d = d + 10; borrow = 1 else borrow = 0 end
    n = n + 1
    out[n] = d
    i = i - 1
  end
  while n > 1 and out[n] == 0 do out[n] = nil; n = n - 1 end
  return reversed_digits(out, n)
end

-- The exact sum of two decimal integer texts.
local function int_add(a, b)
  local na, ma = split_sign(a)
  local nb, mb = split_sign(b)
  ma, mb = strip_zeros(ma), strip_zeros(mb)
  local neg, m
  if na == nb then
    neg, m = na, mag_add(ma, mb)
  else
    local c = mag_cmp(ma, mb)
    if c == 0 then return '0' end
    if c > 0 then neg, m = na, mag_sub(ma, mb) else neg, m = nb, mag_sub(mb, ma) end
  end
  if m == '0' then return '0' end
  if neg then return '-' .. m end
  return m
end

-- Whether an integer text lies in [-2**63, 2**64).
local function int_in_range(s)
  local neg, m = split_sign(s)
  if neg then return mag_cmp(m, '9223372036854775808') <= 0 end
  return mag_cmp(m, '18446744073709551615') <= 0
end

-- Python's repr() of a finite double.
local function float_repr(x)
  if x == 0 then
    if 1 / x < 0 then return '-0.0' end
    return '0.0'
  end
  local s
  for p = 0, 16 do
    s = string.format('%.' .. p .. 'e', x)
    if tonumber(s) == x then break end
  end
  local sign, d1, rest, esign, edigits = string.match(s, '^(-?)(%d)%.?(%d*)e([-+])(%d+)$')
  local digits = string.gsub(d1 .. rest, '0+$', '')
  if digits == '' then digits = '0' end
  local e = tonumber(edigits)
  if esign == '-' then e = -e end
  local nd = #digits
  if e >= 16 or e < -4 then
    local m = sub(digits, 1, 1)
    if nd > 1 then m = m .. '.' .. sub(digits, 2) end
    local et = tostring(math.abs(e))
    if #et < 2 then et = '0' .. et end
    if e < 0 then return sign .. m .. 'e-' .. et end
    return sign .. m .. 'e+' .. et
  end
  if e < 0 then
    return sign .. '0.' .. string.rep('0', -e - 1) .. digits
  end
  if nd <= e + 1 then
    return sign .. digits .. string.rep('0', e + 1 - nd) .. '.0'
  end
  return sign .. sub(digits, 1, e + 1) .. '.' .. sub(digits, e + 2)
end

local ks, vs, idx = {}, {}, nil
local current = redis.call('GET', KEYS[1])
if current then
  ks, vs = members(current)
  if not ks then return {2, 'the stored value is not a JSON object'} end
  for i = 1, #ks do
    if ks[i] == field then idx = i end
  end
end
local old = '0'
if idx then old = vs[idx] end
local c = byte(old, 1)
if not (c == 45 or (c >= 48 and c <= 57)) then return {3, old} end
local result
if kind == 'i' and not find(old, '[.eE]') then
  result = int_add(old, by)
  if not int_in_range(result) then return {4, result} end
else
  local x = tonumber(old) + tonumber(by)
  if x ~= x then return {5, 'nan'} end
  if x == math.huge then return {5, 'inf'} end
  if x == -math.huge then return {5, '-inf'} end
  result = float_repr(x)
end
if idx then
  vs[idx] = result
else
  ks[#ks + 1] = field
  vs[#vs + 1] = result
end
local text = join(ks, vs)
if limit > 0 and #text > limit then return {1, #text} end
store(text, ttl)
return {0, result}
"""


class Script:
    """A Lua script with its SHA1, for ``EVALSHA`` (``EVAL`` on ``NOSCRIPT``)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode("utf-8")
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode("ascii")


UPDATE = Script("update", _COMMON + _UPDATE)
INCREMENT = Script("increment", _COMMON + _INCREMENT)
