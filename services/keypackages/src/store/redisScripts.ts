import { LuaScript } from "./luaScript.js";

// The store's multi-step operations, each one atomic on the Redis server. Times are seconds passed in
// by the caller (one clock for both stores, and testable); a KeyPackage whose not_after is at or before
// `now` is dropped, never served.

/** Seconds a key outlives the last not_after it holds: room for clock skew between us and Redis. */
export const KEY_EXPIRY_MARGIN_SECONDS = 3600;

/**
 * prune: drops expired ordinary KeyPackages and forgets expired spent refs; returns how many it dropped.
 * keep_until: gives a key a TTL reaching at least `at` (+ margin), so a key whose contents all expired
 * disappears by itself even if its device is never touched again. Every KeyPackage key has a TTL.
 */
const PRUNE = `
local function prune(pool, kps, spent, now)
  local expired = redis.call('ZRANGEBYSCORE', pool, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', pool, '-inf', now)
    redis.call('HDEL', kps, unpack(expired))
  end
  redis.call('ZREMRANGEBYSCORE', spent, '-inf', now)
  return #expired
end
local function keep_until(key, at, now)
  local want = math.floor(tonumber(at) - now) + ${KEY_EXPIRY_MARGIN_SECONDS}
  if want <= 0 then return end
  local ttl = redis.call('TTL', key)
  if ttl == -1 or ttl < want then redis.call('EXPIRE', key, want) end
end
`;

/**
 * retire: keeps a replaced last-resort KeyPackage for the memo window (field ref → "<until>:<kp>"; base64url
 * has no colon), forgetting those whose window is over. A memo made while it was current ends before that,
 * so every memo naming it finds it. The key lives as long as its newest entry.
 */
const RETIRE = `
local function retire(retired, ref, kp, now, memo_ttl)
  local held = redis.call('HGETALL', retired)
  for i = 1, #held, 2 do
    local at = tonumber(string.match(held[i + 1], '^(%d+):'))
    if not at or at <= now then redis.call('HDEL', retired, held[i]) end
  end
  redis.call('HSET', retired, ref, (now + memo_ttl) .. ':' .. kp)
  redis.call('EXPIRE', retired, memo_ttl)
end
`;

/**
 * list_is: a guarded write (registration, upload) goes ahead only while the account's device list is the
 * version it was checked against ('' = unguarded; 0 = no list yet).
 */
const LIST_IS = `
local function list_is(devicelist, expected)
  if expected == '' then return true end
  local v = redis.call('HGET', devicelist, 'version')
  return tonumber(v or '0') == tonumber(expected)
end
`;

/**
 * KEYS: devices hash, device list. ARGV: device id, certificate, sig key, registered_at, device limit,
 * expected list version ('' unguarded).
 * A device id is only ever re-registered with the same signature key; the first registration time stays.
 */
export const putDeviceScript = new LuaScript(`${LIST_IS}
if not list_is(KEYS[2], ARGV[6]) then return 'list_changed' end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local rec = cjson.decode(current)
  if rec.sig_key ~= ARGV[3] then return 'key_mismatch' end
  if rec.certificate == ARGV[2] then return 'unchanged' end
  rec.certificate = ARGV[2]
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
  return 'replaced'
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 'device_limit' end
redis.call('HSET', KEYS[1], ARGV[1],
  cjson.encode({certificate = ARGV[2], sig_key = ARGV[3], registered_at = tonumber(ARGV[4])}))
return 'created'
`);

/**
 * KEYS: devices, pool, kps, spent, last-resort, device list, retired last-resort. ARGV: device id, now,
 * cap, expected list version ('' unguarded), memo seconds, n, then n × (ref, not_after, kp), then
 * optionally (ref, not_after, kp) of a new last-resort KeyPackage.
 * Returns {'ok', stored, count, has_last_resort} or {reason}. Nothing is written unless everything fits.
 * A replaced last-resort KeyPackage is kept for the memo window: memos name it instead of copying it.
 */
export const addKeyPackagesScript = new LuaScript(`${PRUNE}${LIST_IS}${RETIRE}
local now = tonumber(ARGV[2])
if not list_is(KEYS[6], ARGV[4]) then return {'list_changed'} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {'unknown_device'} end
prune(KEYS[2], KEYS[3], KEYS[4], now)
local memo_ttl = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local fresh, seen = {}, {}
for i = 0, n - 1 do
  local ref = ARGV[7 + 3 * i]
  if not seen[ref] and tonumber(ARGV[8 + 3 * i]) > now
      and not redis.call('ZSCORE', KEYS[2], ref) and not redis.call('ZSCORE', KEYS[4], ref) then
    seen[ref] = true
    fresh[#fresh + 1] = 7 + 3 * i
  end
end
if redis.call('ZCARD', KEYS[2]) + #fresh > tonumber(ARGV[3]) then return {'key_package_limit'} end
local latest = 0
for _, at in ipairs(fresh) do
  redis.call('ZADD', KEYS[2], ARGV[at + 1], ARGV[at])
  redis.call('HSET', KEYS[3], ARGV[at], ARGV[at + 2])
  latest = math.max(latest, tonumber(ARGV[at + 1]))
end
if latest > 0 then
  keep_until(KEYS[2], latest, now)
  keep_until(KEYS[3], latest, now)
end
local stored = #fresh
local lr = 7 + 3 * n
if ARGV[lr] and redis.call('HGET', KEYS[5], 'ref') ~= ARGV[lr] then
  local old = redis.call('HMGET', KEYS[5], 'ref', 'not_after', 'kp')
  if old[1] and old[3] and tonumber(old[2]) > now and memo_ttl > 0 then
    retire(KEYS[7], old[1], old[3], now, memo_ttl)
  end
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[5], 'ref', ARGV[lr], 'not_after', ARGV[lr + 1], 'kp', ARGV[lr + 2])
  keep_until(KEYS[5], ARGV[lr + 1], now)
  stored = stored + 1
end
local lrAfter = redis.call('HGET', KEYS[5], 'not_after')
local hasLr = 0
if lrAfter and tonumber(lrAfter) > now then hasLr = 1 end
return {'ok', stored, redis.call('ZCARD', KEYS[2]), hasLr}
`);

/** KEYS: pool, last-resort. ARGV: now. Read-only: returns {count, has_last_resort}. */
export const countScript = new LuaScript(`
local now = tonumber(ARGV[1])
local count = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local lrAfter = redis.call('HGET', KEYS[2], 'not_after')
local hasLr = 0
if lrAfter and tonumber(lrAfter) > now then hasLr = 1 end
return {count, hasLr}
`);

/**
 * claim_one: one device's claim, the whole of DirectoryStore.claim. pool, kps, spent, last-resort,
 * retired (last-resort ones replaced within the memo window), memo (of this requester and claim id for
 * this device) are that device's keys; memo_ttl 0: no memo is read or written; last_resort_only: the
 * target account's claim budget is spent, so no ordinary KeyPackage is taken (a memo is still repeated).
 * A memo of an ordinary KeyPackage holds its bytes (they left kps); one of the last-resort KeyPackage
 * holds only its ref, so that a claim naming many devices with a fresh claim id copies no KeyPackage.
 * Returns kp, last_resort ('0'|'1'), replayed (0|1), or false when the device has nothing to give.
 */
const CLAIM_ONE = `
local function claim_one(pool, kps, spent, lastresort, retired, memo, now, memo_ttl, last_resort_only)
  if memo_ttl > 0 then
    local m = redis.call('HMGET', memo, 'kp', 'last_resort', 'not_after', 'until', 'ref')
    if m[3] and tonumber(m[3]) > now and tonumber(m[4]) > now then
      if m[1] then return m[1], m[2], 1 end
      if m[5] then
        local current = redis.call('HMGET', lastresort, 'ref', 'kp')
        if current[1] == m[5] and current[2] then return current[2], '1', 1 end
        local kept = redis.call('HGET', retired, m[5])
        local bytes = kept and string.match(kept, '^%d+:(.+)$')
        if bytes then return bytes, '1', 1 end
      end
    end
  end
  prune(pool, kps, spent, now)
  local kp, lr, notAfter, lrRef
  while not last_resort_only do
    local popped = redis.call('ZPOPMIN', pool)
    if #popped == 0 then break end
    local bytes = redis.call('HGET', kps, popped[1])
    redis.call('HDEL', kps, popped[1])
    if bytes then
      redis.call('ZADD', spent, popped[2], popped[1])
      keep_until(spent, popped[2], now)
      kp, lr, notAfter = bytes, '0', popped[2]
      break
    end
  end
  if not kp then
    local last = redis.call('HMGET', lastresort, 'kp', 'not_after', 'ref')
    if last[1] and tonumber(last[2]) > now then kp, lr, notAfter, lrRef = last[1], '1', last[2], last[3] end
  end
  if not kp then return false end
  if memo_ttl > 0 then
    if lrRef then
      redis.call('HSET', memo, 'ref', lrRef, 'last_resort', lr, 'not_after', notAfter, 'until', now + memo_ttl)
    else
      redis.call('HSET', memo, 'kp', kp, 'last_resort', lr, 'not_after', notAfter, 'until', now + memo_ttl)
    end
    redis.call('EXPIRE', memo, memo_ttl)
  end
  return kp, lr, 0
end
`;

/**
 * KEYS: pool, kps, spent, last-resort, retired last-resort, memo (of this requester and claim id for this
 * device).
 * ARGV: now, memo seconds (0: no memo is read or written), last-resort only ('1').
 * The whole claim is this one script, so no KeyPackage is handed out twice however many claims race.
 * Returns {kp, last_resort '0'|'1', replayed 0|1} or nil when the device has nothing to give.
 */
export const claimScript = new LuaScript(`${PRUNE}${CLAIM_ONE}
local kp, lr, replayed = claim_one(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1')
if not kp then return false end
return {kp, lr, replayed}
`);

/**
 * What claimAccountScript would find, taking nothing. KEYS: devices, device list. ARGV: the requester's
 * device id when it is of this account (else ''), '1' when an account needs a device list to be claimed.
 * Returns -1 for no devices, else how many devices but the requester's.
 */
export const claimTargetsScript = new LuaScript(`
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local n = redis.call('HLEN', KEYS[1])
if n == 0 then return -1 end
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then n = n - 1 end
return n
`);

/**
 * A whole claim of one account (DirectoryStore.claimAccount), in one round trip: its registered devices
 * and claim_one for each device but the requester's.
 * KEYS: devices, device list. ARGV: the account's key base (RedisKeys.account), now, memo seconds (0:
 * none), memo suffix (`<requester>.<claim id>`), the requester's device id when it is of this account
 * (else ''), '1' when an account needs a device list to be claimed, '1' when the account's `target`
 * budget is spent (counted by the caller: last-resort KeyPackages only).
 * The per-device keys are derived here from the account's base, the layout of RedisKeys: they carry the
 * same hash tag as KEYS, so the script still touches the one slot of the account.
 * Returns {'no_devices'} or {'ok', then per device: id, registered_at, kp ('' when it has nothing),
 * last_resort, replayed}.
 */
export const claimAccountScript = new LuaScript(`${PRUNE}${CLAIM_ONE}
local now = tonumber(ARGV[2])
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return {'no_devices'} end
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 then return {'no_devices'} end
local out = {'ok'}
local base, memo_ttl, last_resort_only = ARGV[1], tonumber(ARGV[3]), ARGV[7] == '1'
for i = 1, #all, 2 do
  local id = all[i]
  if id ~= ARGV[5] then
    local d = base .. ':'
    local kp, lr, replayed = claim_one(d .. 'pool:' .. id, d .. 'kps:' .. id, d .. 'spent:' .. id,
      d .. 'lastresort:' .. id, d .. 'retired:' .. id, d .. 'memo:' .. id .. ':' .. ARGV[4], now, memo_ttl,
      last_resort_only)
    out[#out + 1] = id
    -- Only registered_at is needed, not the certificate beside it: read it without decoding the record.
    local at = string.match(all[i + 1], '"registered_at":(%d+)')
    out[#out + 1] = tonumber(at or cjson.decode(all[i + 1]).registered_at) or 0
    out[#out + 1] = kp or ''
    out[#out + 1] = lr or '0'
    out[#out + 1] = replayed or 0
  end
end
return out
`);

/**
 * The sweep, per device. KEYS: pool, kps, spent. ARGV: now.
 * Returns {ordinary KeyPackages left, expired ones dropped}.
 */
export const sweepDeviceScript = new LuaScript(`${PRUNE}
local now = tonumber(ARGV[1])
local dropped = prune(KEYS[1], KEYS[2], KEYS[3], now)
return {redis.call('ZCARD', KEYS[1]), dropped}
`);

/** The sweep, per last-resort KeyPackage. KEYS: last-resort. ARGV: now. Returns 1 if kept, 0 if dropped. */
export const sweepLastResortScript = new LuaScript(`
local notAfter = redis.call('HGET', KEYS[1], 'not_after')
if not notAfter then return -1 end
if tonumber(notAfter) > tonumber(ARGV[1]) then return 1 end
redis.call('DEL', KEYS[1])
return 0
`);

/** KEYS: device list, rotations. Returns {list, version, rotation…} or false before the first list. */
export const getDeviceListScript = new LuaScript(`
local d = redis.call('HMGET', KEYS[1], 'list', 'version')
if not d[1] then return false end
local out = {d[1], d[2]}
for _, r in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = r end
return out
`);

/**
 * The compare-and-set replacement of an account's device list (DeviceListReplacement).
 * KEYS: device list, rotations, devices, then per removed device: pool, kps, last-resort.
 * ARGV: expected version, new version, list, rotation ('' none), rotations kept, n seen, then n × (device
 * id, certificate) of the registrations the caller saw, then the removed device ids (one per key triple).
 * Returns 'ok', or 'changed' with nothing written when the version or the registrations moved on.
 * Spent refs, memos and retired last-resort KeyPackages of removed devices stay until their TTLs (they
 * are never consulted for a device that is not registered).
 */
export const putDeviceListScript = new LuaScript(`
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) or tonumber(ARGV[2]) <= current then return 'changed' end
local nSeen = tonumber(ARGV[6])
local seen = {}
for i = 0, nSeen - 1 do seen[ARGV[7 + 2 * i]] = ARGV[8 + 2 * i] end
local registered = redis.call('HGETALL', KEYS[3])
if #registered ~= 2 * nSeen then return 'changed' end
for i = 1, #registered, 2 do
  if seen[registered[i]] ~= cjson.decode(registered[i + 1]).certificate then return 'changed' end
end
redis.call('HSET', KEYS[1], 'list', ARGV[3], 'version', ARGV[2])
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
end
local first = 7 + 2 * nSeen
for r = 0, (#KEYS - 3) / 3 - 1 do
  redis.call('HDEL', KEYS[3], ARGV[first + r])
  redis.call('DEL', KEYS[4 + 3 * r], KEYS[5 + 3 * r], KEYS[6 + 3 * r])
end
return 'ok'
`);
