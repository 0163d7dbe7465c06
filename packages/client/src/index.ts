export {
  MlsDmClient,
  type OpenOptions,
  type GroupSummary,
  type Member,
  type SendResult,
  type HistoryItem,
} from "./client.js";
export type { CreateDeviceOptions } from "./setup.js";
export type { DmEvent, DmEventType } from "./events.js";
export type { AddReport, Refusal } from "./groups/changes.js";
export { ClientError, ServiceUnavailableError, type ClientErrorCode } from "./errors.js";
export {
  StaticResolver,
  WellKnownResolver,
  type ServiceResolver,
  type ServiceUrls,
} from "./transport/resolver.js";
export { DirectoryClient } from "./transport/directoryClient.js";
export { DeliveryClient } from "./transport/deliveryClient.js";
export { InboxStream, type InboxStreamOptions, type StreamStatus } from "./transport/inboxStream.js";
export { buildCreateNote } from "./cleartext.js";
export { DEFAULT_RETRY, type RetryPolicy } from "./util/backoff.js";
export { StoreFormatError } from "./store/records.js";
