import { createHash } from "node:crypto";
import type { Redis } from "@mastodon-mls/service-kit";

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
// closing one is an append and the script needs no JSON.

/** KEYS: meta roster leaves mship. ARGV: at, creatorDevice, creatorJson. */
export const CREATE_GROUP = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', 0, 'seq', 0, 'created', ARGV[1])
redis.call('HSET', KEYS[2], '0', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], '0')
redis.call('HSET', KEYS[4], ARGV[2], '0:')
return 1
`);

/**
 * The commit step (DESIGN §6): epoch compare-and-set, sequence number, log, roster change, Welcome.
 * KEYS: meta roster leaves mship log welcome props wins.
 * ARGV: expectedEpoch, entryJson, hash, welcome ('' for none), nRemoves, leaf…, nAdds, (leaf, device, memberJson)…
 */
export const COMMIT = new LuaScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'unknown_group'} end
if epoch ~= ARGV[1] then
  return {'wrong_epoch', epoch, redis.call('HGET', KEYS[8], ARGV[1]) or ''}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[5], ARGV[2])
local nextEpoch = tonumber(epoch) + 1
redis.call('HSET', KEYS[1], 'epoch', nextEpoch)
redis.call('HSET', KEYS[8], ARGV[1], ARGV[3])
redis.call('DEL', KEYS[7])
local i = 5
local nRemoves = tonumber(ARGV[i])
for _ = 1, nRemoves do
  i = i + 1
  local leaf = ARGV[i]
  local member = redis.call('HGET', KEYS[2], leaf)
  if member then
    local device = cjson.decode(member).d
    redis.call('HDEL', KEYS[2], leaf)
    redis.call('HDEL', KEYS[3], device)
    local stretches = redis.call('HGET', KEYS[4], device)
    if stretches and string.sub(stretches, -1) == ':' then
      redis.call('HSET', KEYS[4], device, stretches .. seq)
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
return {'ok', seq, nextEpoch}
`);

/**
 * A proposal or an application message. KEYS: meta leaves log props wins.
 * ARGV: kind ('proposal'|'application'), msgEpoch, device, leaf, entryJson, ref, proposalJson, window.
 */
export const APPEND = new LuaScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'unknown_group'} end
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return {'not_a_member'} end
local current = tonumber(epoch)
local msgEpoch = tonumber(ARGV[2])
if ARGV[1] == 'proposal' then
  if msgEpoch ~= current then
    return {'wrong_epoch', epoch, redis.call('HGET', KEYS[5], ARGV[2]) or ''}
  end
  if redis.call('HSETNX', KEYS[4], ARGV[6], ARGV[7]) == 0 then return {'duplicate_proposal'} end
else
  if msgEpoch > current then return {'wrong_epoch', epoch, ''} end
  if msgEpoch < current - tonumber(ARGV[8]) then return {'stale_epoch', epoch} end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[3], ARGV[5])
return {'ok', seq, current}
`);

/** KEYS: groups next. ARGV: groupId… */
export const INDEX_DEVICE_GROUPS = new LuaScript(`
for _, id in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('HSET', KEYS[1], id, redis.call('INCR', KEYS[2]))
  end
end
return 1
`);

/** KEYS: cursor. ARGV: (stream, position)… — raises, never lowers. */
export const ADVANCE_CURSOR = new LuaScript(`
for i = 1, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > old then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
`);
