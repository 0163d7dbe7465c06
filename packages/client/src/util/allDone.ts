/**
 * Like Promise.all, but settles only once every promise has: a write that fails must not end an operation
 * (and release the directory's lock) while another write of it is still on its way to a rename, which
 * could then land after a later operation's write of the same file. Rejects with the first failure.
 */
export async function allDone(work: readonly (Promise<unknown> | undefined)[]): Promise<void> {
  const outcomes = await Promise.allSettled(work.filter((w): w is Promise<unknown> => w !== undefined));
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
  if (failed !== undefined) throw failed.reason;
}
