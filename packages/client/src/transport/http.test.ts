import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  MemoryNonceStore,
  generateSigningKeyPair,
  signDeviceCertificate,
  verifyRequest,
  type DeviceSigner,
} from "@mastodon-mls/bridge";
import { ProtocolError } from "@mastodon-mls/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceUnavailableError } from "../errors.js";
import { DeliveryClient } from "./deliveryClient.js";
import { DirectoryClient } from "./directoryClient.js";

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void | Promise<void>;

let server: Server;
let base: string;
let handler: Handler = (_req, _body, res) => {
  res.end();
};
let signer: DeviceSigner;

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => void handler(req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const account = await generateSigningKeyPair();
  const dev = await generateSigningKeyPair();
  const now = Math.floor(Date.now() / 1000);
  const certificate = await signDeviceCertificate(
    {
      identity: "acct:alice@a.test",
      accountKey: account.publicKey,
      sigKey: dev.publicKey,
      notBefore: now - 60,
      notAfter: now + 3600,
    },
    account.signKey,
  );
  signer = { certificate, signKey: dev.signKey };
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

describe("transport", () => {
  it("signs device requests over method, origin, path and query as sent, and the exact body", async () => {
    let verified: string | undefined;
    handler = async (req, body, res) => {
      const cert = await verifyRequest(
        req.headers.authorization,
        { method: req.method!, origin: base, pathAndQuery: req.url!, body },
        { nonces: new MemoryNonceStore() },
      );
      verified = `${cert.acct} ${req.method} ${req.url}`;
      json(res, 200, { items: [], cursor: "c1", more: false });
    };
    const hub = new DeliveryClient(base, signer);
    await hub.inbox("a b/c");
    expect(verified).toBe("alice@a.test GET /v1/inbox?after=a%20b%2Fc");
    handler = async (req, body, res) => {
      await verifyRequest(
        req.headers.authorization,
        { method: req.method!, origin: base, pathAndQuery: req.url!, body },
        { nonces: new MemoryNonceStore() },
      );
      expect(JSON.parse(body.toString())).toEqual({ message: "AAEC", welcome: "Aw" });
      json(res, 201, { seq: 5, epoch: 2 });
    };
    expect(await hub.submit("AAAAAAAAAAAAAAAAAAAAAA", Uint8Array.of(0, 1, 2), Uint8Array.of(3))).toEqual({
      seq: 5,
      epoch: 2,
    });
  });

  it("sends the Mastodon token as a bearer token on directory writes", async () => {
    let auth: string | undefined;
    handler = (req, _body, res) => {
      auth = req.headers.authorization;
      json(res, 200, { acct: "alice@a.test", device_id: "d".repeat(43) });
    };
    await new DirectoryClient(base).registerDevice("d".repeat(43), Uint8Array.of(1), "tok");
    expect(auth).toBe("Bearer tok");
  });

  it("rethrows a service's {error, message} as a ProtocolError with that code and its extra fields", async () => {
    handler = (_req, _body, res) =>
      json(res, 409, { error: "wrong_epoch", message: "Another commit won", epoch: 4, commit_hash: "h" });
    const err = await new DeliveryClient(base, signer)
      .submit("AAAAAAAAAAAAAAAAAAAAAA", Uint8Array.of(1))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as ProtocolError).code).toBe("wrong_epoch");
    expect((err as ProtocolError).message).toBe("Another commit won");
    expect((err as ProtocolError).details).toEqual({ epoch: 4, commit_hash: "h" });
  });

  it("names the service and its URL when the answer is not our protocol", async () => {
    handler = (_req, _body, res) => {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<html>Bad gateway</html>");
    };
    const err = await new DeliveryClient(base, signer).inbox(undefined).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceUnavailableError);
    expect((err as Error).message).toContain(`could not reach the delivery service at ${base}`);
    handler = (_req, _body, res) => json(res, 200, { unexpected: true });
    await expect(new DirectoryClient(base).accountDevices("bob@a.test")).rejects.toThrow(
      `could not reach the directory at ${base}`,
    );
  });

  it("names the service and its URL when nothing listens there", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await expect(new DeliveryClient(url, signer).inbox(undefined)).rejects.toThrow(
      `could not reach the delivery service at ${url}`,
    );
  });

  it("keeps one connection to a service for consecutive requests", async () => {
    const sockets = new Set<unknown>();
    handler = (req, _body, res) => {
      sockets.add(req.socket);
      json(res, 409, { error: "wrong_epoch", message: "Another commit won", epoch: 1, commit_hash: null });
    };
    const hub = new DeliveryClient(base, signer);
    for (let i = 0; i < 3; i++) {
      await expect(hub.submit("AAAAAAAAAAAAAAAAAAAAAA", Uint8Array.of(i))).rejects.toBeInstanceOf(
        ProtocolError,
      );
    }
    expect(sockets.size).toBe(1);
  });
});
