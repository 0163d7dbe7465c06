// One delivery replica under test, in its own process: configured from the environment exactly as
// services/delivery/src/main.ts is. Prints one JSON line with its URL once listening; on SIGUSR2 runs a
// full GC (when started with --expose-gc) and prints {"gc": true}, so that the orchestrator reads a
// settled RSS; closes on SIGTERM.
import { createDelivery, loadDeliveryConfig } from "@mastodon-mls/delivery";

const delivery = await createDelivery(loadDeliveryConfig(process.env));
process.on("SIGUSR2", () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  console.log(
    JSON.stringify({ gc: gc !== undefined, heap: m.heapUsed, external: m.external + m.arrayBuffers }),
  );
});
// Handlers first: the orchestrator may signal as soon as it reads the line below.
process.once("SIGTERM", () => {
  delivery.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
const url = await delivery.listen();
console.log(JSON.stringify({ listening: url, pid: process.pid }));
