import type { DeviceSigner } from "@mastodon-mls/bridge";
import {
  AckResponse,
  CIPHERSUITE_ID,
  CommitRejectedResponse,
  CreateGroupResponse,
  DepartureResponse,
  InboxResponse,
  InvitationResponse,
  SubmitMessageResponse,
  toBase64url,
  type CommitRejectedBody,
} from "@mastodon-mls/protocol";
import { ServiceHttp } from "./http.js";
import type { Reach } from "./publicReach.js";

/** A delivery service: the hub of its groups and the inbox of its instance's accounts (DESIGN §6, §11). */
export class DeliveryClient {
  readonly http: ServiceHttp;

  constructor(
    baseUrl: string,
    private readonly signer: DeviceSigner,
    reach: Reach = "any",
  ) {
    this.http = new ServiceHttp("delivery service", baseUrl, reach);
  }

  get baseUrl(): string {
    return this.http.baseUrl;
  }

  private get auth() {
    return { kind: "device", signer: this.signer } as const;
  }

  createGroup(groupId: string): Promise<CreateGroupResponse> {
    return this.http.request({
      method: "POST",
      path: "/v1/groups",
      body: { group_id: groupId, ciphersuite: CIPHERSUITE_ID },
      auth: this.auth,
      response: CreateGroupResponse,
    });
  }

  /** One MLSMessage; a commit that adds members carries its Welcome. 409 `wrong_epoch` when another won. */
  submit(groupId: string, message: Uint8Array, welcome?: Uint8Array): Promise<SubmitMessageResponse> {
    return this.http.request({
      method: "POST",
      path: `/v1/groups/${groupId}/messages`,
      body: { message: toBase64url(message), ...(welcome ? { welcome: toBase64url(welcome) } : {}) },
      auth: this.auth,
      response: SubmitMessageResponse,
    });
  }

  /**
   * This member cannot process the accepted commit that ended `epoch` (DESIGN §6 forks): the hub records
   * the fork once per epoch (201, or 200 with the first report's record) and tells every member.
   */
  commitRejected(groupId: string, body: CommitRejectedBody): Promise<CommitRejectedResponse> {
    return this.http.request({
      method: "POST",
      path: `/v1/groups/${groupId}/commit-rejected`,
      body,
      auth: this.auth,
      response: CommitRejectedResponse,
    });
  }

  /**
   * This device leaves the group at the hub (docs/decisions.md D17): nothing more is delivered to it and
   * the group no longer counts against its groups there; its leaf waits for a member's Remove. Safe to
   * repeat.
   */
  depart(groupId: string): Promise<DepartureResponse> {
    return this.http.request({
      method: "POST",
      path: `/v1/groups/${groupId}/departure`,
      body: {},
      auth: this.auth,
      response: DepartureResponse,
    });
  }

  /** Posted to the invitee's home delivery service: a pointer to the hub where its Welcome waits. */
  invite(acct: string, hub: string, groupId: string): Promise<unknown> {
    return this.http.request({
      method: "POST",
      path: "/v1/invitations",
      body: { acct, hub, group_id: groupId },
      auth: this.auth,
      response: InvitationResponse,
    });
  }

  inbox(after: string | undefined): Promise<InboxResponse> {
    const query = after === undefined ? "" : `?after=${encodeURIComponent(after)}`;
    return this.http.request({
      method: "GET",
      path: `/v1/inbox${query}`,
      auth: this.auth,
      response: InboxResponse,
    });
  }

  ack(cursor: string): Promise<unknown> {
    return this.http.request({
      method: "POST",
      path: "/v1/inbox/ack",
      body: { cursor },
      auth: this.auth,
      response: AckResponse,
    });
  }
}
