import { ConfigError } from "@mastodon-mls/service-kit";
import { createDelivery, loadDeliveryConfig } from "./index.js";

// The process entry: read the config, start, stop cleanly on SIGTERM/SIGINT.
try {
  const delivery = await createDelivery(loadDeliveryConfig(process.env));
  const url = await delivery.listen();
  delivery.context.log.info({ url }, "delivery service listening");
  // `on`, not `once`: a second signal while closing must not fall back to Node's default, which ends the
  // process at once and drops in-flight requests and the WebSockets' closing handshakes.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    delivery.close().then(
      () => process.exit(0),
      (err: unknown) => {
        delivery.context.log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} catch (e) {
  console.error(e instanceof ConfigError ? e.message : e);
  process.exit(1);
}
