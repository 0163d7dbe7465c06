export * from "./tls.js";
export * from "./crypto.js";
export * from "./deviceCertificate.js";
export * from "./nonceStore.js";
export * from "./requestAuth.js";
export * from "./mlsProfile.js";
export * from "./keyPackage.js";
export * from "./screening.js";
