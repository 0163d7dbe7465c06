// Bodies are kept as raw bytes by Fastify and parsed per request, the way Rails parses by content
// type: JSON, urlencoded and multipart all become the same parameters, and a body of any other type is
// ignored rather than refused (Rails answers such requests from the query string alone).
import type { FastifyInstance, FastifyRequest } from "fastify";
import {
  fromJson,
  fromPairs,
  fromQueryString,
  ParamMap,
  ParamsError,
  UploadedFile,
  type ParamValue,
} from "./params.js";

/** Sized for avatars and headers in multipart updates; nothing else sends large bodies. */
export const BODY_LIMIT = 16 * 1024 * 1024;

export function installRawBodies(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: BODY_LIMIT }, (_req, body, done) => {
    done(null, body);
  });
}

function mediaType(req: FastifyRequest): string {
  return (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

async function multipartPairs(req: FastifyRequest, body: Buffer): Promise<Array<[string, ParamValue]>> {
  // The WHATWG multipart parser keeps parts in order and handles files; only metadata is kept.
  let form: FormData;
  try {
    form = await new Response(Uint8Array.from(body), {
      headers: { "content-type": req.headers["content-type"] ?? "" },
    }).formData();
  } catch {
    throw new ParamsError("Error occurred while parsing request parameters");
  }
  const pairs: Array<[string, ParamValue]> = [];
  form.forEach((value, name) => {
    pairs.push([
      name,
      typeof value === "string" ? value : new UploadedFile(value.name, value.type, value.size),
    ]);
  });
  return pairs;
}

/** Query and body parameters merged, body winning, as in a Rails controller's `params`. */
export async function readParams(req: FastifyRequest): Promise<ParamMap> {
  const query = req.url.includes("?") ? req.url.slice(req.url.indexOf("?") + 1) : "";
  const params = fromQueryString(query);
  const body = req.body;
  if (!Buffer.isBuffer(body) || body.length === 0) return params;
  const type = mediaType(req);
  let bodyParams: ParamMap;
  if (type === "application/json" || type.endsWith("+json")) bodyParams = fromJson(body.toString("utf8"));
  else if (type === "application/x-www-form-urlencoded") bodyParams = fromQueryString(body.toString("utf8"));
  else if (type === "multipart/form-data") bodyParams = fromPairs(await multipartPairs(req, body));
  else return params;
  for (const [key, value] of bodyParams) params.set(key, value);
  return params;
}
