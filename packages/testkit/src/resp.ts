/**
 * A minimal RESP2 client for the harness's own administrative commands (PING, INFO, SHUTDOWN,
 * FLUSHALL). It opens one short-lived connection per call so that no ioredis reconnect logic
 * gets in the way of readiness probes.
 */
import net from "node:net";

export type RespReply = string | number | null | RespError | RespReply[];

export class RespError extends Error {
  override readonly name = "RespError";
}

export interface RespCallOptions {
  timeoutMs?: number;
  /** The server is expected to close the connection instead of replying (SHUTDOWN). */
  expectClose?: boolean;
}

export function encodeCommand(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, "utf8");
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

interface Parsed {
  value: RespReply;
  next: number;
}

/** Parses one reply starting at `offset`; undefined when the buffer holds only part of it. */
export function parseReply(buf: Buffer, offset = 0): Parsed | undefined {
  const lineEnd = buf.indexOf("\r\n", offset);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buf[offset] ?? 0);
  const line = buf.toString("utf8", offset + 1, lineEnd);
  const afterLine = lineEnd + 2;
  switch (type) {
    case "+":
      return { value: line, next: afterLine };
    case "-":
      return { value: new RespError(line), next: afterLine };
    case ":":
      return { value: Number(line), next: afterLine };
    case "$": {
      const len = Number(line);
      if (len < 0) return { value: null, next: afterLine };
      if (buf.length < afterLine + len + 2) return undefined;
      return { value: buf.toString("utf8", afterLine, afterLine + len), next: afterLine + len + 2 };
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return { value: null, next: afterLine };
      const items: RespReply[] = [];
      let pos = afterLine;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, pos);
        if (item === undefined) return undefined;
        items.push(item.value);
        pos = item.next;
      }
      return { value: items, next: pos };
    }
    default:
      throw new Error(`RESP: unexpected reply type ${JSON.stringify(type)}`);
  }
}

/**
 * Sends `commands` over one connection (pipelined) and resolves with one reply per command.
 * Error replies are returned as RespError values, not thrown. Connection problems reject.
 */
export function respCall(
  host: string,
  port: number,
  commands: readonly (readonly string[])[],
  options: RespCallOptions = {},
): Promise<RespReply[]> {
  const { timeoutMs = 2000, expectClose = false } = options;
  return new Promise((resolve, reject) => {
    const replies: RespReply[] = [];
    let buffer = Buffer.alloc(0);
    let settled = false;
    const socket = net.createConnection({ host, port });
    const settle = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(replies);
    };
    const timer = setTimeout(
      () => settle(new Error(`RESP ${host}:${port}: no complete reply within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once("connect", () => socket.write(Buffer.concat(commands.map(encodeCommand))));
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      try {
        for (;;) {
          const parsed = parseReply(buffer);
          if (parsed === undefined) break;
          replies.push(parsed.value);
          buffer = buffer.subarray(parsed.next);
        }
      } catch (err) {
        settle(err as Error);
        return;
      }
      if (!expectClose && replies.length >= commands.length) settle(undefined);
    });
    socket.once("error", (err) => settle(err));
    socket.once("close", () => {
      if (expectClose || replies.length >= commands.length) settle(undefined);
      else settle(new Error(`RESP ${host}:${port}: connection closed before all replies arrived`));
    });
  });
}
