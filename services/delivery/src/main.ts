import { ConfigError } from "@mastodon-mls/service-kit";
import { createDelivery, loadDeliveryConfig } from "./index.js";

// The process entry: read the config, start, stop cleanly on SIGTERM/SIGINT.
try {
  const delivery = await createDelivery(loadDeliveryConfig(process.env));
  const url = await delivery.listen();
  delivery.context.log.info({ url }, "delivery service listening");
  const stop = () => {
    delivery.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} catch (e) {
  console.error(e instanceof ConfigError ? e.message : e);
  process.exit(1);
}
