export * from "./errors.js";
export * from "./constants.js";
export * from "./base64url.js";
export * from "./acct.js";
export * from "./schemas.js";
export * from "./directory.js";
export * from "./delivery.js";
export * from "./cleartext.js";
