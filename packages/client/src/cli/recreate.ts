import type { GroupSummary } from "../client.js";
import { Cli, canonicalAcctArgs, resolveGroup } from "./context.js";
import { formatEvent } from "./format.js";
import { UsageError, safeText, withProgress } from "./io.js";

// mls-dm recreate: the way on after a fork (DESIGN §6, docs/decisions.md D10) — a new group with the same
// people but the sender of the commit that forked it. Only when the user asks.

export interface RecreateCliOptions {
  without?: string[];
  json?: boolean;
  allowUnverified?: boolean;
}

export const RECREATE_HELP = `
By default the accounts whose commit forked the group (a member could not process it) are left out; give
--without to choose (it replaces the default). An account the hub alone names as such a sender (the
commit's signature did not verify, or this device did not see that commit) is not left out by default: it
is listed as kept, for you to decide. The old group stays as it is: leave it (mls-dm leave) once
everyone has moved. Works from a device stuck in the forked group too.

Examples:
  mls-dm recreate 3fQk                        # without the sender of the commit that forked it
  mls-dm recreate 3fQk --without @bob@a.example --without @eve@b.example`;

/** One line describing what is wrong with a group (for `groups`, `members`), or undefined when nothing is. */
export function conditionLine(g: GroupSummary): string | undefined {
  if (g.condition === "ok" || g.advice === undefined) return undefined;
  const label = { forked: "FORKED", stuck: "STUCK", needs_readd: "NEEDS RE-ADD" }[g.condition];
  return `${label}: ${safeText(g.advice)}`;
}

export async function recreate(cli: Cli, group: string, opts: RecreateCliOptions): Promise<void> {
  const without = opts.without === undefined ? undefined : canonicalAcctArgs(opts.without);
  const { client } = await cli.openClient();
  // Fetch first: the fork notice decides who is left out by default.
  const events = await withProgress(cli.io, "Fetching new messages", () => client.sync());
  for (const e of events) {
    const line = formatEvent(e);
    if (line !== undefined) cli.io.err(line);
  }
  const id = resolveGroup(client, group);
  const before = client.groups().find((g) => g.groupId === id)!;
  if (before.status !== "active") {
    throw new UsageError(`this device is no longer in group ${id}: it has no member list to re-create`);
  }
  if (without === undefined && before.condition === "ok") {
    cli.io.err(`Group ${id} has not forked: re-creating it with the same members.`);
  }
  const result = await withProgress(cli.io, "Creating the new group, verifying and adding members", () =>
    client.recreateGroup(id, {
      ...(without === undefined ? {} : { without }),
      allowUnverified: opts.allowUnverified === true,
    }),
  );
  if (opts.json === true) {
    cli.io.out(JSON.stringify(result));
    return;
  }
  cli.io.out(`Re-created group ${id} as ${result.groupId}`);
  if (result.without.length > 0) cli.io.out(`  without ${result.without.join(", ")}`);
  for (const a of result.keptUnproven) {
    cli.io.out(
      `  kept ${a}: the hub says they sent a commit that forked the group, which this device cannot confirm ` +
        `(to leave them out: --without ${a})`,
    );
  }
  for (const a of result.added) cli.io.out(`  added ${a.acct} (device ${a.deviceId.slice(0, 12)})`);
  for (const r of result.refused) cli.io.err(`  NOT added ${r.acct}: ${safeText(r.reason)}`);
  cli.io.out(
    `The old group stays as it is; leave it once everyone has moved: ${cli.cmd(`leave ${id.slice(0, 8)}`)}`,
  );
}
