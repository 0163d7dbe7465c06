import { createHash } from "node:crypto";
import type { Redis } from "@mastodon-mls/service-kit";
import { LIMITS } from "@mastodon-mls/protocol";
import { FORK_RECORDS } from "./types.js";

/** A Lua script run by EVALSHA, loaded with EVAL the first time a server has not seen it. */
export class LuaScript {
  private readonly sha: string;

  constructor(private readonly source: string) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  async run(redis: Redis, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith("NOSCRIPT")) throw e;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

// Memberships are kept per device as "from:until,from:until,from:" — an open stretch ends in ":", so
// closing one is an append and the scripts need no JSON. Log entries are JSON that starts with `{"t":<ms>`
// (read by pattern when trimming by age). Retention: meta `base` is the seq of the last deleted entry; the
// entry of seq n sits at list index n - base - 1.
//
// Every script that appends to a log publishes the event announcing it (`head .. seq .. tail`) to the
// given channels in the same atomic step, so replicas hear of each entry once, in seq order, and an
// accepted message is never left unannounced by a crash between two commands.

/** Publishes `ARGV[i] .. seq .. ARGV[i + 1]` to the channels named in ARGV[i + 2 …]. */
const ANNOUNCE = `
local function announce(seq, i)
  if ARGV[i] == '' then return end
  local payload = ARGV[i] .. seq .. ARGV[i + 1]
  for j = i + 2, #ARGV do redis.call('PUBLISH', ARGV[j], payload) end
end
`;

/**
 * The winner of an epoch (`wins`) answers a 409 for that epoch and names the commit a fork report is
 * about; both concern commits members can still read. So a winner is forgotten once its commit has left
 * the log (retention: seq <= base) and it is not among the last `keep` epochs' winners. Winners go
 * oldest first from meta `wlow` (the lowest epoch that may still have one), at most 100 per call, so
 * that a group that kept every winner before this rule catches up a little at each step. An epoch's fork
 * record goes with its winner: a fork is about a commit, and could not be reported once the winner went.
 */
const FORGET_WINS = `
local function forget_wins(metaKey, winsKey, forksKey, epoch, keep)
  local meta = redis.call('HMGET', metaKey, 'base', 'wlow')
  local base = tonumber(meta[1] or '0')
  local low = tonumber(meta[2] or '0')
  local start = low
  while low < epoch - keep and low - start < 100 do
    local win = redis.call('HGET', winsKey, low)
    if win then
      if tonumber(string.match(win, '^%S+ (%d+)')) > base then break end
      redis.call('HDEL', winsKey, low)
      redis.call('HDEL', forksKey, low)
    end
    low = low + 1
  end
  if low ~= start then redis.call('HSET', metaKey, 'wlow', low) end
end
`;

/** KEYS: meta roster leaves mship. ARGV: at, creatorDevice, creatorJson. */
export const CREATE_GROUP = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', 0, 'seq', 0, 'base', 0, 'created', ARGV[1])
redis.call('HSET', KEYS[2], '0', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], '0')
redis.call('HSET', KEYS[4], ARGV[2], '0:')
return 1
`);

/**
 * The commit step (DESIGN §6): epoch compare-and-set, sequence number, log, roster change, Welcome,
 * announcement, and forgetting winners (and fork records) no longer needed. The sender must still sit at
 * the leaf it was screened at (it may have departed meanwhile). KEYS: meta roster leaves mship log welcome
 * props wins forks. ARGV: expectedEpoch, entryJson, hash, welcome ('' for none), sender, keep, senderLeaf,
 *       nRemoves, leaf…, nAdds, (leaf, device, memberJson)…, head, tail, channel…
 */
export const COMMIT = new LuaScript(`${ANNOUNCE}${FORGET_WINS}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'unknown_group'} end
if redis.call('HGET', KEYS[3], ARGV[5]) ~= ARGV[7] then return {'not_a_member'} end
if epoch ~= ARGV[1] then
  local win = redis.call('HGET', KEYS[8], ARGV[1])
  return {'wrong_epoch', epoch, win and string.match(win, '^%S+') or ''}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[5], ARGV[2])
local nextEpoch = tonumber(epoch) + 1
redis.call('HSET', KEYS[1], 'epoch', nextEpoch)
redis.call('HSET', KEYS[8], ARGV[1], ARGV[3] .. ' ' .. seq .. ' ' .. ARGV[5])
redis.call('DEL', KEYS[7])
forget_wins(KEYS[1], KEYS[8], KEYS[9], nextEpoch, tonumber(ARGV[6]))
local i = 8
local nRemoves = tonumber(ARGV[i])
for _ = 1, nRemoves do
  i = i + 1
  local leaf = ARGV[i]
  local member = redis.call('HGET', KEYS[2], leaf)
  if member then
    local device = cjson.decode(member).d
    redis.call('HDEL', KEYS[2], leaf)
    -- A departed device's leaf: the device left already, and the group has forgotten its stretches.
    if redis.call('HGET', KEYS[3], device) == leaf then
      redis.call('HDEL', KEYS[3], device)
      local stretches = redis.call('HGET', KEYS[4], device)
      if stretches and string.sub(stretches, -1) == ':' then
        redis.call('HSET', KEYS[4], device, stretches .. seq)
      end
    end
  end
end
i = i + 1
local nAdds = tonumber(ARGV[i])
for _ = 1, nAdds do
  local leaf, device, member = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 3
  redis.call('HSET', KEYS[2], leaf, member)
  redis.call('HSET', KEYS[3], device, leaf)
  local stretches = redis.call('HGET', KEYS[4], device)
  if stretches then
    redis.call('HSET', KEYS[4], device, stretches .. ',' .. seq .. ':')
  else
    redis.call('HSET', KEYS[4], device, seq .. ':')
  end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[6], seq, ARGV[4]) end
announce(seq, i + 1)
return {'ok', seq, nextEpoch}
`);

/**
 * A proposal or an application message. KEYS: meta leaves log props wins.
 * ARGV: kind ('proposal'|'application'), msgEpoch, deviceJson, leaf ('' = wherever it sits), at,
 *       textJson, ref, window, eventTail ('' = announce nothing), withMessage ('1' or ''), channel…
 * deviceJson and textJson are JSON strings (quoted): the message travels once, and the log entry
 * (entryJson in redis.ts) and the announcement (events.ts) are put together here, byte for byte as
 * JSON.stringify would make them.
 */
export const APPEND = new LuaScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'unknown_group'} end
local device = cjson.decode(ARGV[3])
local leaf = redis.call('HGET', KEYS[2], device)
if not leaf or (ARGV[4] ~= '' and leaf ~= ARGV[4]) then return {'not_a_member'} end
local current = tonumber(epoch)
local msgEpoch = tonumber(ARGV[2])
if ARGV[1] == 'proposal' then
  if msgEpoch ~= current then
    local win = redis.call('HGET', KEYS[5], ARGV[2])
    return {'wrong_epoch', epoch, win and string.match(win, '^%S+') or ''}
  end
  if redis.call('HEXISTS', KEYS[4], ARGV[7]) == 1 then return {'duplicate_proposal'} end
  -- SCR-19 in the same step as the write: proposals submitted together cannot pass the bound together.
  if redis.call('HLEN', KEYS[4]) >= ${LIMITS.proposalsPerEpoch} then return {'too_many_proposals'} end
  redis.call('HSET', KEYS[4], ARGV[7], '{"l":' .. leaf .. ',"m":' .. ARGV[6] .. '}')
else
  if msgEpoch > current then return {'wrong_epoch', epoch, ''} end
  if msgEpoch < current - tonumber(ARGV[8]) then return {'stale_epoch', epoch} end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[3], '{"t":' .. ARGV[5] .. ',"e":' .. ARGV[2] .. ',"d":' .. ARGV[3] .. ',"m":' .. ARGV[6] .. '}')
if ARGV[9] ~= '' then
  local payload = '{"seq":' .. seq .. ARGV[9]
  if ARGV[10] == '1' then payload = payload .. ',"message":' .. ARGV[6] end
  payload = payload .. '}'
  for j = 11, #ARGV do redis.call('PUBLISH', ARGV[j], payload) end
end
return {'ok', seq, current}
`);

/**
 * A fork report: once per epoch, a notice in the log; at most FORK_RECORDS records (beyond, the oldest
 * other epoch's goes).
 * KEYS: meta leaves wins forks log.
 * ARGV: reporter, epoch, commitHash, reason, at, groupId, channel…
 * Every field is base64url, decimal or a checked reason code: no JSON escaping is needed.
 */
export const REPORT_FORK = new LuaScript(`
local current = redis.call('HGET', KEYS[1], 'epoch')
if not current then return {'unknown_group'} end
if not redis.call('HGET', KEYS[2], ARGV[1]) then return {'not_a_member'} end
local win = redis.call('HGET', KEYS[3], ARGV[2])
if not win then return {'unknown_commit'} end
local hash, commitSeq, sender = string.match(win, '^(%S+) (%d+) (%S+)$')
if hash ~= ARGV[3] then return {'unknown_commit'} end
local existing = redis.call('HGET', KEYS[4], ARGV[2])
if existing then return {'exists', existing} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local record = '{"seq":' .. seq .. ',"epoch":' .. ARGV[2] .. ',"commitHash":"' .. hash ..
  '","commitSeq":' .. commitSeq .. ',"sender":"' .. sender .. '","reporter":"' .. ARGV[1] ..
  '","reason":"' .. ARGV[4] .. '"}'
redis.call('HSET', KEYS[4], ARGV[2], record)
if redis.call('HLEN', KEYS[4]) > ${FORK_RECORDS} then
  local oldest
  for _, e in ipairs(redis.call('HKEYS', KEYS[4])) do
    local n = tonumber(e)
    if e ~= ARGV[2] and (not oldest or n < oldest) then oldest = n end
  end
  redis.call('HDEL', KEYS[4], oldest)
end
redis.call('RPUSH', KEYS[5], '{"t":' .. ARGV[5] .. ',"e":' .. current .. ',"d":"' .. ARGV[1] ..
  '","m":"","f":' .. record .. '}')
local payload = '{"seq":' .. seq .. ',"kind":"group","groupId":"' .. ARGV[6] .. '","epoch":' .. current ..
  ',"sender":"' .. ARGV[1] .. '","at":' .. ARGV[5] .. ',"notice":true}'
for j = 7, #ARGV do redis.call('PUBLISH', ARGV[j], payload) end
return {'ok', record}
`);

/** KEYS: meta log. ARGV: from, to. → {base, entry…} for base < seq, from <= seq <= to. */
export const READ_LOG = new LuaScript(`
local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
local from = math.max(tonumber(ARGV[1]), base + 1)
local to = tonumber(ARGV[2])
if to < from then return {base} end
local entries = redis.call('LRANGE', KEYS[2], from - base - 1, to - base - 1)
table.insert(entries, 1, base)
return entries
`);

/**
 * `floor`, lowered to the lowest position a device still has to read in its stretches "from:until,…"
 * (from just before the Welcome; a stretch acknowledged past its `removed` notice, at until + 1, holds
 * nothing back). A stretch's acknowledgement is "device#from" (types.ts StretchAck).
 */
const SCAN = `
local function unread_floor(acks, device, text, floor)
  for fromText, untilText in string.gmatch(text, '(%d+):(%d*)') do
    local from = tonumber(fromText)
    local ack = acks[device .. '#' .. fromText] or -1
    local start = from
    if from > 0 then start = from - 1 end
    if ack < start then ack = start end
    if (untilText == '' or ack < tonumber(untilText) + 1) and ack < floor then floor = ack end
  end
  return floor
end
`;

/** Deletes entries up to `target` and the Welcomes with them. */
const TRIM = `
local function trim(metaKey, logKey, welcomeKey, base, target)
  if target <= base then return 0 end
  redis.call('LTRIM', logKey, target - base, -1)
  redis.call('HSET', metaKey, 'base', target)
  for _, s in ipairs(redis.call('HKEYS', welcomeKey)) do
    if tonumber(s) <= target then redis.call('HDEL', welcomeKey, s) end
  end
  return target - base
end
local function oldest(logKey)
  local first = redis.call('LINDEX', logKey, 0)
  if not first then return '' end
  return string.match(first, '^{"t":(%d+)')
end
`;

/**
 * A group forgets a device's stretches (`text`, as in mship) and their acknowledgements; then retention by acknowledgement
 * (needs SCAN, TRIM and FORGET_WINS): deletes what every device with a stretch has read. `keys` are
 * ACK_GROUP's KEYS.
 */
const READ_RETENTION = `
local function forget_stretches(mshipKey, acksKey, device, text)
  redis.call('HDEL', mshipKey, device)
  for fromText in string.gmatch(text, '(%d+):') do redis.call('HDEL', acksKey, device .. '#' .. fromText) end
end
local function trim_read(keys, acks, seq, base, epoch, keep)
  local floor = seq
  local all = redis.call('HGETALL', keys[2])
  for j = 1, #all, 2 do
    floor = unread_floor(acks, all[j], all[j + 1], floor)
  end
  local trimmed = trim(keys[1], keys[4], keys[5], base, floor)
  if trimmed > 0 then forget_wins(keys[1], keys[6], keys[7], epoch, keep) end
  return trimmed
end
`;

/**
 * Acknowledgements in a group, then retention by acknowledgement. KEYS: meta mship acks log welcome wins
 * forks.
 * ARGV: device, keep, (stretch's from, position)… → {done, trimmed, oldest ('' when the log is empty),
 * the froms of the stretches the group does not hold ("f,f,…")}. The device's first stretches that it
 * has read to their `removed` are forgotten (all of them: done), so a device removed and added back again
 * and again keeps no more than what it has not read. A stretch named that the device does not have (any
 * more: stretch names are never reused) is ignored, and returned with those forgotten: its position is
 * of no use.
 */
export const ACK_GROUP = new LuaScript(`${SCAN}${TRIM}${FORGET_WINS}${READ_RETENTION}
local device = ARGV[1]
local mine = redis.call('HGET', KEYS[2], device) or ''
local froms = {}
for fromText in string.gmatch(mine, '(%d+):') do froms[fromText] = true end
local gone = {}
for i = 3, #ARGV, 2 do
  if froms[ARGV[i]] then
    local field = device .. '#' .. ARGV[i]
    local old = tonumber(redis.call('HGET', KEYS[3], field) or '-1')
    if tonumber(ARGV[i + 1]) > old then redis.call('HSET', KEYS[3], field, ARGV[i + 1]) end
  else
    table.insert(gone, ARGV[i])
  end
end
if mine == '' then return {0, 0, '', table.concat(gone, ',')} end
local acks = {}
local flat = redis.call('HGETALL', KEYS[3])
for j = 1, #flat, 2 do acks[flat[j]] = tonumber(flat[j + 1]) end
local meta = redis.call('HMGET', KEYS[1], 'seq', 'base', 'epoch')
local seq = tonumber(meta[1])
local base = tonumber(meta[2] or '0')
local kept = {}
for fromText, untilText in string.gmatch(mine, '(%d+):(%d*)') do
  local field = device .. '#' .. fromText
  local ack = acks[field] or -1
  if #kept == 0 and untilText ~= '' and ack >= tonumber(untilText) + 1 then
    table.insert(gone, fromText)
    redis.call('HDEL', KEYS[3], field)
    acks[field] = nil
  else
    table.insert(kept, fromText .. ':' .. untilText)
  end
end
local done = #kept == 0
if done then
  redis.call('HDEL', KEYS[2], device)
elseif #gone > 0 then
  redis.call('HSET', KEYS[2], device, table.concat(kept, ','))
end
local trimmed = trim_read(KEYS, acks, seq, base, tonumber(meta[3]), tonumber(ARGV[2]))
return {done and 1 or 0, trimmed, trimmed > 0 and oldest(KEYS[4]) or '', table.concat(gone, ',')}
`);

/**
 * The device leaves the group at the hub (store types.ts `depart`): out of `leaves`, its roster entry
 * marked departed (`"x":1`) in its place, its stretches and acknowledgements forgotten, then retention
 * by acknowledgement as in ACK_GROUP. KEYS: meta mship acks log welcome wins forks roster leaves.
 * ARGV: device, keep → {'unknown_group'} or {'ok', leaf ('' for none), trimmed, oldest, froms forgotten}.
 */
export const DEPART = new LuaScript(`${SCAN}${TRIM}${FORGET_WINS}${READ_RETENTION}
local meta = redis.call('HMGET', KEYS[1], 'seq', 'base', 'epoch')
if not meta[1] then return {'unknown_group'} end
local device = ARGV[1]
local leaf = redis.call('HGET', KEYS[9], device)
if leaf then
  redis.call('HDEL', KEYS[9], device)
  local member = redis.call('HGET', KEYS[8], leaf)
  if member and not string.find(member, '"x":1', 1, true) then
    redis.call('HSET', KEYS[8], leaf, string.sub(member, 1, -2) .. ',"x":1}')
  end
end
local mine = redis.call('HGET', KEYS[2], device)
if not mine then return {'ok', leaf or '', 0, '', ''} end
forget_stretches(KEYS[2], KEYS[3], device, mine)
local gone = {}
for fromText in string.gmatch(mine, '(%d+):') do table.insert(gone, fromText) end
local acks = {}
local flat = redis.call('HGETALL', KEYS[3])
for j = 1, #flat, 2 do acks[flat[j]] = tonumber(flat[j + 1]) end
local trimmed = trim_read(KEYS, acks, tonumber(meta[1]), tonumber(meta[2] or '0'), tonumber(meta[3]),
  tonumber(ARGV[2]))
return {'ok', leaf or '', trimmed, trimmed > 0 and oldest(KEYS[4]) or '', table.concat(gone, ',')}
`);

/**
 * Retention by age. KEYS: meta log welcome wins forks. ARGV: cutoff (ms), max, keep.
 * → {deleted (-1: no such group), oldest remaining ('' when empty)}.
 */
export const SWEEP_GROUP = new LuaScript(`${TRIM}${FORGET_WINS}
local meta = redis.call('HMGET', KEYS[1], 'seq', 'base', 'epoch')
if not meta[1] then return {-1, ''} end
local base = tonumber(meta[2] or '0')
local cutoff = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local n = 0
local stop = false
while not stop and n < max do
  local chunk = redis.call('LRANGE', KEYS[2], n, n + 99)
  if #chunk == 0 then break end
  for _, entry in ipairs(chunk) do
    if n >= max or tonumber(string.match(entry, '^{"t":(%d+)')) >= cutoff then
      stop = true
      break
    end
    n = n + 1
  end
end
trim(KEYS[1], KEYS[2], KEYS[3], base, base + n)
if n > 0 then forget_wins(KEYS[1], KEYS[4], KEYS[5], tonumber(meta[3]), tonumber(ARGV[3])) end
return {n, oldest(KEYS[2])}
`);

/** KEYS: inv invbase. ARGV: cutoff, max. → {deleted, oldest remaining ('' when empty)}. */
export const SWEEP_INVITATIONS = new LuaScript(`
local cutoff = tonumber(ARGV[1])
local n = 0
while n < tonumber(ARGV[2]) do
  local first = redis.call('LINDEX', KEYS[1], 0)
  if not first or tonumber(string.match(first, '^{"t":(%d+)')) >= cutoff then break end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
if n > 0 then redis.call('INCRBY', KEYS[2], n) end
local first = redis.call('LINDEX', KEYS[1], 0)
return {n, first and string.match(first, '^{"t":(%d+)') or ''}
`);

/**
 * Retention by acknowledgement: deletes invitations up to seq `upTo`, never past the last queued one.
 * KEYS: inv invbase. ARGV: upTo. → {deleted, oldest remaining ('' when empty)}.
 */
export const TRIM_INVITATIONS = new LuaScript(`
local base = tonumber(redis.call('GET', KEYS[2]) or '0')
local n = math.min(tonumber(ARGV[1]) - base, redis.call('LLEN', KEYS[1]))
if n <= 0 then return {0, ''} end
redis.call('LTRIM', KEYS[1], n, -1)
redis.call('INCRBY', KEYS[2], n)
local first = redis.call('LINDEX', KEYS[1], 0)
return {n, first and string.match(first, '^{"t":(%d+)') or ''}
`);

/**
 * KEYS: inv invbase. ARGV: invitationJson, max. → its seq, or 0 (nothing queued) when `max` invitations
 * are waiting already: the count and the append in one step, so concurrent senders cannot overfill it.
 */
export const QUEUE_INVITATION = new LuaScript(`
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
return tonumber(redis.call('GET', KEYS[2]) or '0') + length
`);

/** KEYS: inv invbase. ARGV: after, max. → {base, invitation…} with seq > max(after, base). */
export const READ_INVITATIONS = new LuaScript(`
local base = tonumber(redis.call('GET', KEYS[2]) or '0')
local from = math.max(tonumber(ARGV[1]), base)
local max = tonumber(ARGV[2])
local items = redis.call('LRANGE', KEYS[1], from - base, from - base + max - 1)
table.insert(items, 1, from)
return items
`);

/** KEYS: groups next. ARGV: groupId… → how many were not indexed yet. */
export const INDEX_DEVICE_GROUPS = new LuaScript(`
local added = 0
for _, id in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('HSET', KEYS[1], id, redis.call('INCR', KEYS[2]))
    added = added + 1
  end
end
return added
`);

/**
 * Milliseconds from ARGV's `now` when a caller gives one (tests move a clock of their own), else from
 * Redis's TIME: every replica's marks then come from one clock, whatever the replicas' clocks say.
 */
const NOW_MS = `
local function now_ms(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

// A device's adds in flight, per group g, in its `adds` hash: "p:<g>" lists them as "token@ms …" (each
// request's own token, and when it began), "v:<g>" counts every add begun and ended, so that a settle
// that read it before and finds it changed knows an add ran meanwhile. Both go with the group's entry.
const MARK_IN_FLIGHT = `${NOW_MS}
local function mark_in_flight(addsKey, g, token, now, ttl)
  local marks = {}
  for entry, at in string.gmatch(redis.call('HGET', addsKey, 'p:' .. g) or '', '(%S+@(%d+))') do
    if tonumber(now) - tonumber(at) < tonumber(ttl) then table.insert(marks, entry) end
  end
  table.insert(marks, token .. '@' .. string.format('%.0f', now))
  redis.call('HSET', addsKey, 'p:' .. g, table.concat(marks, ' '))
  redis.call('HINCRBY', addsKey, 'v:' .. g, 1)
end
`;

/**
 * KEYS: groups next adds. ARGV: groupId, token, now ("" for Redis's TIME), PENDING_ADD_MS, max. → 1
 * indexed now, 0 indexed already, -1 full: not indexed and the device has `max` groups (nothing written;
 * the budget is checked in the same step as the place is taken). Unless full, marks the add (lapsed
 * marks go).
 */
export const BEGIN_ADD = new LuaScript(`${MARK_IN_FLIGHT}
local g = ARGV[1]
local reply = 0
if redis.call('HEXISTS', KEYS[1], g) == 0 then
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return -1 end
  redis.call('HSET', KEYS[1], g, redis.call('INCR', KEYS[2]))
  reply = 1
end
mark_in_flight(KEYS[3], g, ARGV[2], now_ms(ARGV[3]), ARGV[4])
return reply
`);

/** KEYS: adds. ARGV: groupId, token. Ends this add's mark (nothing if it is gone: its entry went). */
export const END_ADD = new LuaScript(`
local g = ARGV[1]
local p = redis.call('HGET', KEYS[1], 'p:' .. g)
if not p then return 0 end
local left = {}
local found = false
local mine = ARGV[2] .. '@'
for entry in string.gmatch(p, '%S+') do
  if string.sub(entry, 1, #mine) == mine then found = true else table.insert(left, entry) end
end
if not found then return 0 end
if #left == 0 then
  redis.call('HDEL', KEYS[1], 'p:' .. g)
else
  redis.call('HSET', KEYS[1], 'p:' .. g, table.concat(left, ' '))
end
redis.call('HINCRBY', KEYS[1], 'v:' .. g, 1)
return 1
`);

/**
 * KEYS: groups adds cursor. ARGV: groupId, number read, version read ("" for none), 1 if the group has
 * stretches of the device (read after them), now ("" for Redis's TIME), PENDING_ADD_MS.
 * → "moved" (the entry is no longer the one read), "deleted" or "kept". A deleted entry takes the
 * device's positions in the number's streams with it: no stretch can come under that number again.
 */
export const SETTLE_INDEX = new LuaScript(`${NOW_MS}
local g = ARGV[1]
if redis.call('HGET', KEYS[1], g) ~= ARGV[2] then return 'moved' end
if ARGV[4] == '1' then return 'kept' end
if (redis.call('HGET', KEYS[2], 'v:' .. g) or '') ~= ARGV[3] then return 'kept' end
local now = now_ms(ARGV[5])
for at in string.gmatch(redis.call('HGET', KEYS[2], 'p:' .. g) or '', '@(%d+)') do
  if now - tonumber(at) < tonumber(ARGV[6]) then return 'kept' end
end
redis.call('HDEL', KEYS[1], g)
redis.call('HDEL', KEYS[2], 'v:' .. g, 'p:' .. g)
local prefix = ARGV[2] .. '.'
for _, stream in ipairs(redis.call('HKEYS', KEYS[3])) do
  if string.sub(stream, 1, #prefix) == prefix then redis.call('HDEL', KEYS[3], stream) end
end
return 'deleted'
`);

/** KEYS: cursor. ARGV: (stream, position)… — raises, never lowers. */
export const ADVANCE_CURSOR = new LuaScript(`
for i = 1, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > old then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
`);
