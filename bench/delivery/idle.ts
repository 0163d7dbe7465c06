// Opens BENCH_IDLE authenticated WebSocket streams to BENCH_URL, each of a device of its own, and holds
// them idle until SIGTERM. Prints {"opened": n, "failed": n} once all are ready (run.ts measures the
// replica's RSS before and after).
import WebSocket from "ws";
import { fromBase64url } from "@mastodon-mls/protocol";
import { authorization, makeDevice } from "./common.js";

const URL_ = process.env.BENCH_URL ?? "";
const ORIGIN = process.env.BENCH_ORIGIN ?? "";
const N = Number(process.env.BENCH_IDLE ?? 10_000);
const BATCH = 200;

const sockets: WebSocket[] = [];

function open(i: number): Promise<boolean> {
  const device = makeDevice(`idle${i}@bench.test`);
  return new Promise((resolve) => {
    const socket = new WebSocket(`${URL_.replace(/^http/, "ws")}/v1/stream`, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
    });
    sockets.push(socket);
    const timer = setTimeout(() => resolve(false), 30_000);
    socket.on("error", () => resolve(false));
    socket.on("message", (data: Buffer) => {
      const frame = JSON.parse(data.toString("utf8")) as { type: string; challenge?: string };
      if (frame.type === "challenge") {
        socket.send(
          JSON.stringify({
            type: "auth",
            authorization: authorization(device, {
              method: "GET",
              origin: ORIGIN,
              path: "/v1/stream",
              body: fromBase64url(frame.challenge!),
            }),
          }),
        );
      } else if (frame.type === "ready") {
        clearTimeout(timer);
        resolve(true);
      }
    });
  });
}

let opened = 0;
let failed = 0;
for (let i = 0; i < N; i += BATCH) {
  const results = await Promise.all(Array.from({ length: Math.min(BATCH, N - i) }, (_, j) => open(i + j)));
  for (const ok of results) {
    if (ok) opened++;
    else failed++;
  }
}
console.log(JSON.stringify({ opened, failed }));
process.once("SIGTERM", () => {
  for (const s of sockets) s.terminate();
  process.exit(0);
});
