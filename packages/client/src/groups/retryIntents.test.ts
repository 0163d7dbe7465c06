import { describe, expect, it } from "vitest";
import type { DeviceContext, GroupHandle } from "../context.js";
import { ServiceRefusedError, ServiceUnavailableError } from "../errors.js";
import type { DmEvent } from "../events.js";
import type { CommitIntent } from "../store/schemas.js";
import type { PipelineDeps } from "./commitPipeline.js";
import { retryLostIntents } from "./followUp.js";

// Which failures keep a change to make again (retryIntents) for the next follow-up: the group's hub not
// answering, failing or asking to wait — nothing can be committed there meanwhile, and the changes after
// it wait too. Another service failing (an invitee's directory that is down) drops the change with its
// error, as the same change asked for directly would fail; kept, it was tried every follow-up, and held up
// every change queued after it, for as long as that service stayed down (found by a review).

const HUB = "https://hub.example";
const DIRECTORY = "https://dm.elsewhere.example";
const add: CommitIntent = { kind: "add", accts: ["carol@elsewhere.example"] };
const update: CommitIntent = { kind: "update" };

function setUp(fail: (intent: CommitIntent) => Error | undefined) {
  const events: DmEvent[] = [];
  const saved: CommitIntent[][] = [];
  const g = {
    record: { groupId: "G", status: "active", hub: HUB, retryIntents: [add, update] },
  } as unknown as GroupHandle;
  const ctx = {
    groups: new Map([["G", g]]),
    emit: (e: DmEvent) => events.push(e),
    delivery: (url: string) => ({ baseUrl: url }),
    saveGroup: async (h: GroupHandle) => {
      saved.push([...(h.record.retryIntents ?? [])]);
    },
  } as unknown as DeviceContext;
  const tried: string[] = [];
  const deps = {
    syncHub: async () => undefined,
    rerun: async (_groupId: string, intent: CommitIntent) => {
      tried.push(intent.kind);
      const e = fail(intent);
      if (e !== undefined) throw e;
    },
  } as PipelineDeps;
  return { ctx, deps, g, events, saved, tried };
}

describe("retryLostIntents", () => {
  it("keeps the change, and those after it, when the group's hub does not answer or asks to wait", async () => {
    for (const e of [
      new ServiceUnavailableError("delivery service", HUB, "no answer"),
      new ServiceRefusedError("delivery service", HUB, "rate_limited", "slow down"),
    ]) {
      const t = setUp((i) => (i.kind === "add" ? e : undefined));
      await retryLostIntents(t.ctx, t.deps, t.g);
      expect(t.tried).toEqual(["add"]);
      expect(t.g.record.retryIntents).toEqual([add, update]);
      expect(t.events).toMatchObject([
        { type: "error", operation: "retry add after losing the epoch (tried again later)" },
      ]);
    }
  });

  it("drops a change another service fails, with its error, and goes on with the next", async () => {
    for (const e of [
      new ServiceUnavailableError("directory", DIRECTORY, "no answer"),
      new ServiceRefusedError("directory", DIRECTORY, "rate_limited", "slow down"),
    ]) {
      const t = setUp((i) => (i.kind === "add" ? e : undefined));
      await retryLostIntents(t.ctx, t.deps, t.g);
      expect(t.tried).toEqual(["add", "update"]);
      expect(t.g.record.retryIntents).toEqual([]);
      expect(t.saved).toEqual([[update], []]);
      expect(t.events).toMatchObject([{ type: "error", operation: "retry add after losing the epoch" }]);
    }
  });
});
