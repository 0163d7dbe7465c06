export {
  createDevMastodon,
  type AccountInfo,
  type DevMastodon,
  type IssueTokenInput,
  type ReceivedStatus,
} from "./devMastodon.js";
export type { DevMastodonOptions, LogLevel } from "./options.js";
export type { FaultMode, FaultOptions } from "./http/faults.js";
export type { RateLimitOptions, ThrottleOptions } from "./http/rateLimit.js";
export type { NewLocalAccount, NewRemoteAccount } from "./state/accounts.js";
