import { afterEach, beforeEach, expect, it } from "vitest";
import type { MlsDmClient } from "../client.js";
import { aliceAndBobOnFake } from "../testSupport/fakeGroup.js";
import { FakeServices } from "../testSupport/fakeServices.js";
import { notes } from "../testSupport/history.js";

// A hub that hands back the echo of an own message whose post went unanswered under the number of
// another own message (found by an audit): the outbox entry was settled against that other message's
// history line, and the local copy of the message vanished without a word. The history keeps one line
// per number, so the message is now shown to the user instead.

let fake: FakeServices;
let alice: MlsDmClient;
let groupId: string;
beforeEach(async () => {
  fake = new FakeServices();
  await fake.start();
  ({ alice, groupId } = await aliceAndBobOnFake(fake, "outbox-seq"));
  await alice.sync();
});
afterEach(() => fake.stop());

it("an echo numbered like another own line does not make a sent message vanish silently", async () => {
  const first = await alice.send(groupId, "first");
  // The hub stores "second" (bob gets it) but answers 503.
  fake.script = (s) => (s.isCommit ? "accept" : "accept-then-503");
  await expect(alice.send(groupId, "second")).rejects.toThrow();
  fake.script = () => "accept";
  // It then hands second's echo back under first's number (and first's under second's).
  const log = (fake as unknown as { log: { seq: number; message: string }[] }).log;
  const i = log.findIndex((m) => m.seq === first.seq);
  const [m1, m2] = [log[i]!, log[i + 1]!];
  log[i] = { ...m2, seq: m1.seq };
  log[i + 1] = { ...m1, seq: m2.seq };

  const events = await alice.sync();
  await alice.historyWritten();

  const texts = (await notes(alice, groupId)).map((n) => n.text);
  expect(texts).toContain("first");
  const said = events.filter(
    (e) => e.type === "error" && e.operation === "keeping a sent message in the history",
  );
  expect(
    texts.includes("second") || said.some((e) => e.type === "error" && e.message.includes('"second"')),
  ).toBe(true);
});
