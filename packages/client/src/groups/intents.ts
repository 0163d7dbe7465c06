import type { DeviceContext } from "../context.js";
import type { CommitIntent } from "../store/schemas.js";
import { syncHubInbox } from "./inbox.js";
import {
  buildAdd,
  buildProposalsCommit,
  buildRemove,
  buildReadd,
  buildRemoveDevices,
  buildUpdate,
  type AddReport,
} from "./changes.js";
import { runCommit, type CommitBuilder, type PipelineDeps } from "./commitPipeline.js";

// An intent (add, remove, update, commit proposals) is what the user — or the group's hygiene — asked
// for; the commit is how it is carried out on whatever state the group is in when it is (re)built.
// Intents are what survives a lost race or a crash.

export function emptyReport(): AddReport {
  return { added: [], refused: [] };
}

export function builderFor(
  ctx: DeviceContext,
  groupId: string,
  intent: CommitIntent,
  report: AddReport,
): CommitBuilder {
  // The group this one re-creates, named in every Welcome of ours (D21): read when the commit is built.
  const replaces = () => ctx.groups.get(groupId)?.record.replaces;
  switch (intent.kind) {
    case "add":
      return (state) =>
        buildAdd(
          ctx,
          state,
          intent.accts,
          report,
          intent.claimId,
          intent.allowUnverified === true,
          replaces(),
        );
    case "remove":
      return (state) => buildRemove(ctx, state, intent.accts);
    case "remove-devices":
      return (state) => buildRemoveDevices(ctx, state, intent.deviceIds);
    case "readd":
      return (state) => buildReadd(ctx, state, intent, report, replaces());
    case "update":
      return (state) => buildUpdate(ctx, state);
    case "proposals":
      return (state) => buildProposalsCommit(ctx, state, ctx.group(groupId).record.leaving);
  }
}

/** The pipeline's view of the rest of the device: catching up with a hub, re-running a lost intent. */
export function pipelineDeps(ctx: DeviceContext): PipelineDeps {
  const deps: PipelineDeps = {
    syncHub: (hub) => syncHubInbox(ctx, hub),
    rerun: async (groupId, intent) => {
      if (ctx.groups.get(groupId)?.record.status !== "active") return;
      await runCommit(ctx, deps, groupId, intent, builderFor(ctx, groupId, intent, emptyReport()));
    },
  };
  return deps;
}

export async function runIntent(
  ctx: DeviceContext,
  deps: PipelineDeps,
  groupId: string,
  intent: CommitIntent,
  report: AddReport = emptyReport(),
): Promise<void> {
  await runCommit(ctx, deps, groupId, intent, builderFor(ctx, groupId, intent, report));
}
