import type { DeviceSigner } from "@mastodon-mls/bridge";
import {
  AccountDevices,
  CIPHERSUITE_ID,
  ClaimResponse,
  KeyPackageCount,
  PutDeviceListResponse,
  RegisterDeviceResponse,
  UploadKeyPackagesResponse,
  toBase64url,
} from "@mastodon-mls/protocol";
import { ServiceHttp } from "./http.js";
import { reachFor, type Reach } from "./publicReach.js";
import type { ServiceResolver } from "./resolver.js";
import { checkServiceUrl } from "./serviceUrl.js";

/** The key-package directory of one instance (DESIGN §5, §11). */
export class DirectoryClient {
  readonly http: ServiceHttp;

  constructor(baseUrl: string, reach: Reach = "any") {
    this.http = new ServiceHttp("directory", baseUrl, reach);
  }

  /** The directory at `url`, which `resolver` gave for another instance: reached as NET-7 says. */
  static resolvedBy(resolver: ServiceResolver, url: string): DirectoryClient {
    const base = checkServiceUrl(url);
    return new DirectoryClient(base, reachFor(resolver, base));
  }

  get baseUrl(): string {
    return this.http.baseUrl;
  }

  /** PUT /v1/devices/:deviceId — the certificate is signed by the account key; the token proves the account. */
  registerDevice(
    deviceId: string,
    certificate: Uint8Array,
    mastodonToken: string,
  ): Promise<RegisterDeviceResponse> {
    return this.http.request({
      method: "PUT",
      path: `/v1/devices/${deviceId}`,
      body: { certificate: toBase64url(certificate) },
      auth: { kind: "bearer", token: mastodonToken },
      response: RegisterDeviceResponse,
    });
  }

  uploadKeyPackages(
    deviceId: string,
    keyPackages: Uint8Array[],
    lastResort: Uint8Array | undefined,
    mastodonToken: string,
  ): Promise<UploadKeyPackagesResponse> {
    return this.http.request({
      method: "POST",
      path: `/v1/devices/${deviceId}/keypackages`,
      body: {
        key_packages: keyPackages.map(toBase64url),
        ...(lastResort ? { last_resort: toBase64url(lastResort) } : {}),
      },
      auth: { kind: "bearer", token: mastodonToken },
      response: UploadKeyPackagesResponse,
    });
  }

  keyPackageCount(deviceId: string, signer: DeviceSigner): Promise<KeyPackageCount> {
    return this.http.request({
      method: "GET",
      path: `/v1/devices/${deviceId}/keypackages/count`,
      auth: { kind: "device", signer },
      response: KeyPackageCount,
    });
  }

  /** PUT /v1/accounts/:acct/device-list — the account's signed device list (and continuity statement). */
  putDeviceList(
    acct: string,
    deviceList: Uint8Array,
    mastodonToken: string,
    keyRotation?: Uint8Array,
  ): Promise<PutDeviceListResponse> {
    return this.http.request({
      method: "PUT",
      path: `/v1/accounts/${encodeURIComponent(acct)}/device-list`,
      body: {
        device_list: toBase64url(deviceList),
        ...(keyRotation === undefined ? {} : { key_rotation: toBase64url(keyRotation) }),
      },
      auth: { kind: "bearer", token: mastodonToken },
      response: PutDeviceListResponse,
    });
  }

  accountDevices(acct: string): Promise<AccountDevices> {
    return this.http.request({
      method: "GET",
      path: `/v1/accounts/${encodeURIComponent(acct)}/devices`,
      auth: { kind: "none" },
      response: AccountDevices,
    });
  }

  /** POST /v1/claims — one KeyPackage per listed device of each account; `accounts` are `user@domain`. */
  claim(accounts: string[], signer: DeviceSigner, claimId?: string): Promise<ClaimResponse> {
    return this.http.request({
      method: "POST",
      path: "/v1/claims",
      body: {
        ciphersuite: CIPHERSUITE_ID,
        accounts,
        ...(claimId === undefined ? {} : { claim_id: claimId }),
      },
      auth: { kind: "device", signer },
      response: ClaimResponse,
    });
  }
}
