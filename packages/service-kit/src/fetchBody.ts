/** Thrown when an answer's body is larger than the caller allows. */
export class BodyTooLargeError extends Error {
  constructor(readonly max: number) {
    super(`the answer is larger than ${max} bytes`);
    this.name = "BodyTooLargeError";
  }
}

/**
 * A fetch answer's body as UTF-8, read until `max` bytes and no further: a service asking another
 * (Mastodon, a directory) must not hold whatever that one chooses to send.
 */
export async function readBodyCapped(res: Response, max: number): Promise<string> {
  const reader = res.body?.getReader();
  if (reader === undefined) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw new BodyTooLargeError(max);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString("utf8");
}
