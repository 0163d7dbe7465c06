import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { AS_CONTEXT, type Activity } from "@mastodon-mls/protocol";
import type { HistoryEntry } from "../store/schemas.js";
import { idAuthorsOf } from "../store/historyIds.js";
import { checkIdOwnership, checkTargetAuthor } from "./authorship.js";

const urn = () => `urn:uuid:${randomUUID()}`;
const at = new Date().toISOString();
const base = (actor: string) => ({
  "@context": AS_CONTEXT as typeof AS_CONTEXT,
  v: 1 as const,
  id: urn(),
  actor: `acct:${actor}`,
  published: at,
});

function created(author: string, noteId: string): HistoryEntry {
  const activity: Activity = {
    ...base(author),
    type: "Create",
    object: { type: "Note", id: noteId, attributedTo: `acct:${author}`, published: at, content: "hi" },
  };
  return {
    v: 1,
    seq: 1,
    at,
    from: author,
    deviceId: "d".repeat(43),
    own: false,
    content: { kind: "activity", activity },
  };
}

describe("TXT-5: only a note's author edits, deletes or undoes", () => {
  const noteId = urn();
  const entries = [created("alice@a.test", noteId)];
  const history = idAuthorsOf(entries);

  it("lets the author delete and update their note", () => {
    expect(
      checkTargetAuthor({ ...base("alice@a.test"), type: "Delete", object: noteId }, "alice@a.test", history),
    ).toBeUndefined();
    const update: Activity = {
      ...base("alice@a.test"),
      type: "Update",
      object: {
        type: "Note",
        id: noteId,
        attributedTo: "acct:alice@a.test",
        published: at,
        content: "edited",
      },
    };
    expect(checkTargetAuthor(update, "alice@a.test", history)).toBeUndefined();
  });

  it("refuses bob deleting or updating alice's note, and undoing her activity", () => {
    expect(
      checkTargetAuthor({ ...base("bob@a.test"), type: "Delete", object: noteId }, "bob@a.test", history),
    ).toMatch(/only alice@a.test may delete/);
    const update: Activity = {
      ...base("bob@a.test"),
      type: "Update",
      object: { type: "Note", id: noteId, attributedTo: "acct:bob@a.test", published: at, content: "forged" },
    };
    expect(checkTargetAuthor(update, "bob@a.test", history)).toMatch(/only alice@a.test may update/);
    const create = entries[0]!.content;
    const activityId = create.kind === "activity" ? create.activity.id : "";
    expect(
      checkTargetAuthor({ ...base("bob@a.test"), type: "Undo", object: activityId }, "bob@a.test", history),
    ).toMatch(/only alice@a.test may undo/);
  });

  it("lets through targets this device never saw, and other activity types", () => {
    expect(
      checkTargetAuthor({ ...base("bob@a.test"), type: "Delete", object: urn() }, "bob@a.test", history),
    ).toBeUndefined();
    expect(
      checkTargetAuthor({ ...base("bob@a.test"), type: "Like", object: noteId }, "bob@a.test", history),
    ).toBeUndefined();
  });
});

describe("TXT-6: a note id and an activity id are their first author's", () => {
  const noteId = urn();
  const entries = [created("alice@a.test", noteId)];
  const known = idAuthorsOf(entries);
  const create = (author: string, id: string, activityId?: string): Activity => ({
    ...base(author),
    ...(activityId === undefined ? {} : { id: activityId }),
    type: "Create",
    object: { type: "Note", id, attributedTo: `acct:${author}`, published: at, content: "copy" },
  });

  it("refuses another member's note or activity under an id already used", () => {
    expect(checkIdOwnership(create("bob@a.test", noteId), "bob@a.test", known)).toMatch(
      /note id is already alice@a.test's/,
    );
    const first = entries[0]!.content;
    const activityId = first.kind === "activity" ? first.activity.id : "";
    expect(checkIdOwnership(create("bob@a.test", urn(), activityId), "bob@a.test", known)).toMatch(
      /activity id is already alice@a.test's/,
    );
  });

  it("lets the first author use the id again (a resend), and anyone use a new one", () => {
    expect(checkIdOwnership(create("alice@a.test", noteId), "alice@a.test", known)).toBeUndefined();
    expect(checkIdOwnership(create("bob@a.test", urn()), "bob@a.test", known)).toBeUndefined();
  });
});
