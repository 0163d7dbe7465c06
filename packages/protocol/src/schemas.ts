import { z } from "zod";
import { LIMITS } from "./constants.js";

// Building blocks shared by both services' wire schemas.

/** base64url text, no padding; the decoder (`fromBase64url`) enforces canonical form and size. */
export const b64url = (maxBytes: number) =>
  z
    .string()
    .max(Math.ceil((maxBytes * 4) / 3) + 4)
    .regex(/^[A-Za-z0-9_-]*$/, "must be base64url without padding");

/** A device id: base64url of SHA-256 of the device's MLS signature key (43 characters). */
export const DeviceId = z.string().regex(/^[A-Za-z0-9_-]{43}$/, "must be a 43-character base64url SHA-256");
/** `user@domain` as it appears in URLs and bodies (canonicalised with `parseAcct`). */
export const AcctText = z.string().min(3).max(LIMITS.acctLength);
/** An MLS group id as base64url, 1 to 64 bytes. */
export const GroupId = z.string().regex(/^[A-Za-z0-9_-]{2,86}$/, "must be base64url, 1 to 64 bytes");

export const ErrorBodySchema = z
  .object({ error: z.string(), message: z.string() })
  .catchall(z.unknown())
  .describe("Every error answer");

export const WellKnownServices = z.object({ directory: z.string().url(), delivery: z.string().url() });
export type WellKnownServices = z.infer<typeof WellKnownServices>;

export const Health = z.object({ status: z.enum(["ok", "unavailable"]) });
