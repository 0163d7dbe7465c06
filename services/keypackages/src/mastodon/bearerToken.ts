import { ProtocolError } from "@mastodon-mls/protocol";

/** RFC 6750 b64token; Mastodon's own tokens are 43 base64url characters. */
const TOKEN = /^[A-Za-z0-9\-._~+/]{1,1024}=*$/;

/** The token of an `Authorization: Bearer …` header. Malformed ones never reach Mastodon. */
export function bearerToken(header: string | undefined): string {
  if (header === undefined || header.trim() === "") {
    throw new ProtocolError("unauthorized", "A Mastodon access token is required (Authorization: Bearer).");
  }
  const match = /^Bearer +(\S+)$/i.exec(header.trim());
  if (!match || !TOKEN.test(match[1]!)) {
    throw new ProtocolError("invalid_token", "The Authorization header is not a Bearer token.");
  }
  return match[1]!;
}
