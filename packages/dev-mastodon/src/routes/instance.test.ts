import { createRestAPIClient } from "masto";
import { describe, expect, it } from "vitest";
import { json, useInstances } from "../testSupport.js";

const start = useInstances();

describe("GET /api/v2/instance", () => {
  it("reports LOCAL_DOMAIN, not the host serving the API, and the profile-field limits (masto.js)", async () => {
    const m = await start({ domain: "a.test", accounts: [{ username: "alice" }] });
    const instance = await createRestAPIClient({ url: m.url }).v2.instance.fetch();
    expect(instance.domain).toBe("a.test");
    expect(new URL(m.url).hostname).toBe("127.0.0.1");
    expect(instance.version).toBe("4.6.0");
    expect(instance.usage.users.activeMonth).toBe(1);
    expect(instance.configuration.accounts).toMatchObject({
      maxFeaturedTags: 10,
      maxProfileFields: 4,
      profileFieldNameLimit: 255,
      profileFieldValueLimit: 255,
    });
    expect(instance.configuration.statuses.maxCharacters).toBe(500);
  });

  it("omits the profile-field limits when configured as a version older than 4.6", async () => {
    const m = await start({ version: "4.3.2" });
    const body = await json(await fetch(`${m.url}/api/v2/instance`));
    expect(body.version).toBe("4.3.2");
    expect(body.configuration.accounts).toEqual({ max_featured_tags: 10, max_pinned_statuses: 5 });
  });

  it("also serves the v1 form with the domain as uri", async () => {
    const m = await start({ domain: "a.test" });
    const body = await json(await fetch(`${m.url}/api/v1/instance`));
    expect([body.uri, body.registrations]).toEqual(["a.test", false]);
  });
});
