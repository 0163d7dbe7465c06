import net from "node:net";
import { describe, expect, it } from "vitest";
import { freePort } from "./ports.js";
import { encodeCommand, parseReply, RespError } from "./resp.js";
import { deferred, waitFor, WaitForTimeoutError, withTimeout } from "./util.js";

describe("waitFor", () => {
  it("resolves with the first truthy value", async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? `done after ${n}` : undefined), { intervalMs: 1 })).resolves.toBe(
      "done after 3",
    );
  });

  it("treats throwing predicates as not yet, and reports the message and last error on timeout", async () => {
    const err = await waitFor(
      () => {
        throw new Error("still booting");
      },
      { timeoutMs: 60, intervalMs: 5, message: () => "the widget to be ready" },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitForTimeoutError);
    expect((err as Error).message).toMatch(/timed out after 60 ms .*the widget to be ready.*still booting/);
  });

  it("bounds a predicate that never settles", async () => {
    const started = Date.now();
    await expect(waitFor(() => new Promise<boolean>(() => undefined), { timeoutMs: 50 })).rejects.toThrow(
      WaitForTimeoutError,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("stops when its signal aborts", async () => {
    const controller = new AbortController();
    const waiting = waitFor(() => false, { timeoutMs: 5000, signal: controller.signal });
    controller.abort(new Error("gave up"));
    await expect(waiting).rejects.toThrow("gave up");
  });
});

describe("deferred / withTimeout", () => {
  it("exposes resolve and settled", async () => {
    const d = deferred<number>();
    expect(d.settled).toBe(false);
    d.resolve(7);
    expect(d.settled).toBe(true);
    await expect(d.promise).resolves.toBe(7);
  });

  it("withTimeout rejects with its message", async () => {
    await expect(withTimeout(deferred().promise, 20, "never")).rejects.toThrow(
      "timed out after 20 ms: never",
    );
    await expect(withTimeout(Promise.resolve(1), 20, "now")).resolves.toBe(1);
  });
});

describe("RESP codec", () => {
  it("encodes commands and parses every reply type, including partial input", () => {
    expect(encodeCommand(["SET", "k", "é"]).toString()).toBe("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n");
    const buf = Buffer.from("+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n");
    const values = [];
    let offset = 0;
    for (let i = 0; i < 6; i++) {
      const parsed = parseReply(buf, offset);
      if (parsed === undefined) throw new Error("incomplete");
      values.push(parsed.value);
      offset = parsed.next;
    }
    expect(values[0]).toBe("OK");
    expect(values[1]).toBeInstanceOf(RespError);
    expect(values.slice(2)).toEqual([42, "abc", null, ["a", 1]]);
    expect(parseReply(Buffer.from("$5\r\nab"))).toBeUndefined();
    expect(parseReply(Buffer.from("*2\r\n:1\r\n"))).toBeUndefined();
  });
});

describe("freePort", () => {
  it("returns a port that can be bound", async () => {
    const port = await freePort();
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    await new Promise((resolve) => server.close(resolve));
  });
});
