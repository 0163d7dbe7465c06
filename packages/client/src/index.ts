export {
  MlsDmClient,
  type ClientOptions,
  type AddOptions,
  type OpenOptions,
  type RestoreOptions,
  type GroupSummary,
  type Member,
  type SendResult,
  type SyncOptions,
  type HistoryItem,
  type RecreateOptions,
  type RecreateReport,
} from "./client.js";
export type { GroupCondition, GroupHealth, ForkInfo } from "./groups/forks.js";
export type { CreateDeviceOptions, DeviceSetupOptions } from "./setup.js";
export type { IdentityOptions } from "./identity/verifier.js";
export type { AccountDevice, VerifyResult } from "./identity/members.js";
export { DevicePinStore } from "./identity/pins.js";
export type { DmEvent, DmEventType, ForkParty } from "./events.js";
export type { AddReport, Refusal } from "./groups/changes.js";
export { ClientError, ServiceRefusedError, ServiceUnavailableError, type ClientErrorCode } from "./errors.js";
export type { StoreProtection } from "./store/cipher.js";
export type { ChangeProtectionOptions, ProtectionChange } from "./store/rekey.js";
export { DEFAULT_KDF, type KdfParams, type KdfPolicy } from "./crypto/kdf.js";
export {
  createAccountKeyBackup,
  openAccountKeyBackup,
  inspectBackup,
  parseRecoveryKey,
  formatRecoveryKey,
  type BackupInfo,
  type BackupProtection,
  type RestoredAccountKey,
} from "./backup.js";
export {
  StaticResolver,
  WellKnownResolver,
  type ServiceResolver,
  type ServiceUrls,
  type DevServiceUrls,
} from "./transport/resolver.js";
export { DirectoryClient } from "./transport/directoryClient.js";
export { DeliveryClient } from "./transport/deliveryClient.js";
export { InboxStream, type InboxStreamOptions, type StreamStatus } from "./transport/inboxStream.js";
export { buildCreateNote } from "./cleartext.js";
export { DEFAULT_RETRY, type RetryPolicy } from "./util/backoff.js";
export { StoreFormatError } from "./store/records.js";
