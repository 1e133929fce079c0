// The TypeScript SDK against a live `cog serve` (scripts/test-sdks starts it
// and passes COG_URL, COG_WRITE_TOKEN and COG_READ_TOKEN): the life of a
// tenant, a declarative document, and the failures a back office meets.
// The bodies are typed by the generated schema, so this file compiling is
// half the test; the other half checks each answer's status and shape.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { adminClient, PROBLEMS, type Problem } from "../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this suite through scripts/test-sdks`);
  return v;
}

const base = env("COG_URL");
const admin = adminClient(base, env("COG_WRITE_TOKEN"));
const reader = adminClient(base, env("COG_READ_TOKEN"));
const stranger = adminClient(base, "cogadm_not_a_token");
const uid = () => randomUUID().slice(0, 10);

/** Checks a failure is the RFC 9457 problem of `kind` with `status`. */
function problem(
  r: { error?: unknown; response: Response },
  status: number,
  kind: string,
): Problem {
  assert.equal(r.response.status, status, JSON.stringify(r.error));
  assert.equal(r.response.headers.get("content-type"), "application/problem+json");
  const p = r.error as Problem;
  assert.equal(p.status, status);
  assert.equal(p.type, PROBLEMS + kind);
  assert.equal(typeof p.title, "string");
  return p;
}

/** A request through AuthenticateLayer and RateLimitLayer (`cog serve --probe`). */
async function probe(key: string): Promise<Response> {
  const r = await fetch(`${base}/probe`, { headers: { authorization: `Bearer ${key}` } });
  await r.arrayBuffer();
  return r;
}

/** Polls until `check` holds: services see a change when their directory does. */
async function until(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function etag(r: { response: Response }): string {
  const tag = r.response.headers.get("etag");
  assert.ok(tag && /^"\d+(-[0-9a-f]{16})?"$/.test(tag), `ETag ${tag}`);
  return tag;
}

test("a tenant from plan to deletion", async () => {
  const plan = `basic-${uid()}`;
  const tenant = `acme-${uid()}`;

  let r = await admin.POST("/v1/plans", {
    body: { name: plan, plan: { limits: [{ name: "rpm", rate: 4, window: "1m", cost: 2 }] } },
  });
  assert.equal(r.response.status, 201, JSON.stringify(r.error));
  assert.equal(r.data?.plan.limits?.[0]?.rate, 4);
  assert.equal(r.data?.plan.limits?.[0]?.cost, 2);

  const t = await admin.POST("/v1/tenants", { body: { id: tenant, tenant: { plan } } });
  assert.equal(t.response.status, 201, JSON.stringify(t.error));

  const k = await admin.POST("/v1/tenants/{id}/keys", { params: { path: { id: tenant } }, body: {} });
  assert.equal(k.response.status, 201, JSON.stringify(k.error));
  const issued = k.data!;
  assert.equal(issued.tenant, tenant);
  assert.ok(issued.key.startsWith(`cog_${issued.id}_`));
  const keys = await admin.GET("/v1/keys", { params: { query: { limit: 1000 } } });
  assert.deepEqual(
    keys.data!.items.filter((i) => i.tenant === tenant).map((i) => [i.id, i.status]),
    [[issued.id, "active"]],
  );
  assert.ok(!JSON.stringify(keys.data).includes(issued.key), "a listed key never shows the secret");

  // The key authenticates through AuthenticateLayer; at two units a
  // request (the plan's cost), two a minute pass.
  await until(async () => (await probe(issued.key)).status === 200, "the new key");
  assert.equal((await probe(issued.key)).status, 200);
  const limited = await probe(issued.key);
  assert.equal(limited.status, 429);
  assert.ok(limited.headers.has("retry-after"));
  assert.equal((await probe("cog_not_a_key")).status, 401);

  const u = await admin.GET("/v1/tenants/{id}/usage", { params: { path: { id: tenant } } });
  assert.equal(u.response.status, 200, JSON.stringify(u.error));
  assert.deepEqual(
    u.data!.limits.map((l) => [l.name, l.limit, l.remaining]),
    [["rpm", 4, 0]],
  );

  // A bigger plan: the running limiter follows.
  const current = await admin.GET("/v1/plans/{name}", { params: { path: { name: plan } } });
  r = await admin.PUT("/v1/plans/{name}", {
    params: { path: { name: plan }, header: { "If-Match": etag(current) } },
    body: { limits: [{ name: "rpm", rate: 1000, window: "1m" }] },
  });
  assert.equal(r.response.status, 200, JSON.stringify(r.error));
  await until(async () => (await probe(issued.key)).status === 200, "the bigger plan");
  const after = await admin.GET("/v1/tenants/{id}/usage", { params: { path: { id: tenant } } });
  assert.equal(after.data!.limits[0]!.limit, 1000);

  // Suspend, resume, revoke.
  const s = await admin.POST("/v1/tenants/{id}/suspend", { params: { path: { id: tenant } } });
  assert.equal(s.data?.tenant.status, "suspended");
  await until(async () => (await probe(issued.key)).status === 403, "the suspension");
  await admin.POST("/v1/tenants/{id}/resume", { params: { path: { id: tenant } } });
  await until(async () => (await probe(issued.key)).status === 200, "the resumption");
  const rv = await admin.DELETE("/v1/keys/{id}", { params: { path: { id: issued.id } } });
  assert.equal(rv.response.status, 204);
  await until(async () => (await probe(issued.key)).status === 401, "the revocation");

  // Deleted.
  assert.equal(
    (await admin.DELETE("/v1/tenants/{id}", { params: { path: { id: tenant } } })).response.status,
    204,
  );
  problem(await admin.GET("/v1/tenants/{id}", { params: { path: { id: tenant } } }), 404, "not-found");
  assert.equal(
    (await admin.DELETE("/v1/plans/{name}", { params: { path: { name: plan } } })).response.status,
    204,
  );

  const audit = await admin.GET("/v1/audit", { params: { query: { limit: 1000 } } });
  const mine = audit.data!.items.filter((e) => [plan, tenant, issued.id].includes(e.target ?? ""));
  assert.deepEqual(
    mine.slice(0, 3).map((e) => e.action),
    ["plan.create", "tenant.create", "key.create"],
  );
  assert.ok(mine.every((e) => e.actor.startsWith("token:")));
});

test("a document diffed and applied", async () => {
  const plan = `doc-${uid()}`;
  const tenant = `globex-${uid()}`;
  const doc = {
    plans: { [plan]: { limits: [{ name: "rps", rate: 5, window: "1s" }] } },
    tenants: { [tenant]: { plan } },
  };
  const d = await admin.POST("/v1/diff", { body: doc });
  assert.deepEqual(
    d.data!.changes.map((c) => [c.action, c.kind, c.id]),
    [
      ["create", "plan", plan],
      ["create", "tenant", tenant],
    ],
  );
  const before = etag(await admin.GET("/v1/plans"));
  const dry = await admin.POST("/v1/apply", { params: { query: { dry_run: true } }, body: doc });
  assert.equal(dry.data!.dry_run, true);
  assert.equal(etag(await admin.GET("/v1/plans")), before);

  const a = await admin.POST("/v1/apply", { params: { header: { "If-Match": before } }, body: doc });
  assert.equal(a.response.status, 200, JSON.stringify(a.error));
  assert.equal(a.data!.dry_run, false);
  assert.deepEqual((await admin.POST("/v1/diff", { body: doc })).data!.changes, []);
  problem(
    await admin.POST("/v1/apply", { params: { header: { "If-Match": before } }, body: doc }),
    412,
    "stale",
  );
  const bad = await admin.POST("/v1/apply", {
    body: { tenants: { [`x-${uid()}`]: { plan: "no-such-plan" } } },
  });
  assert.ok(problem(bad, 422, "invalid").field);

  await admin.DELETE("/v1/tenants/{id}", { params: { path: { id: tenant } } });
  await admin.DELETE("/v1/plans/{name}", { params: { path: { name: plan } } });
});

test("a partition moved to a new deployment", async () => {
  const main = `main-${uid()}`;
  const big = `big-${uid()}`;
  for (const name of [main, big]) {
    const a = await admin.POST("/v1/placement/deployments", { body: { name } });
    assert.equal(a.response.status, 200, JSON.stringify(a.error));
  }
  problem(await admin.POST("/v1/placement/deployments", { body: { name: big } }), 409, "exists");
  const table = await reader.GET("/v1/placement");
  assert.ok(table.data!.deployments.includes(big));
  const m = await admin.PUT("/v1/placement/partitions/{partition}", {
    params: { path: { partition: 130 } },
    body: { deployment: big },
  });
  assert.equal(m.response.status, 200, JSON.stringify(m.error));
  assert.ok(m.data!.revision > table.data!.revision, JSON.stringify(m.data));
  assert.equal(m.data!.partitions?.["130"], big);
  problem(
    await admin.PUT("/v1/placement/partitions/{partition}", {
      params: { path: { partition: 1 } },
      body: { deployment: `nowhere-${uid()}` },
    }),
    404,
    "not-found",
  );
});

test("failures are problems", async () => {
  const plan = `fail-${uid()}`;
  const tenant = `initech-${uid()}`;
  const body = { name: plan, plan: {} };

  problem(await stranger.GET("/v1/plans"), 401, "unauthorized");
  problem(await reader.POST("/v1/plans", { body }), 403, "forbidden");
  problem(await reader.GET("/v1/plans/{name}", { params: { path: { name: plan } } }), 404, "not-found");

  assert.equal((await admin.POST("/v1/plans", { body })).response.status, 201);
  problem(await admin.POST("/v1/plans", { body }), 409, "exists");
  await admin.POST("/v1/tenants", { body: { id: tenant, tenant: { plan } } });
  problem(await admin.DELETE("/v1/plans/{name}", { params: { path: { name: plan } } }), 409, "in-use");

  const stale = etag(await admin.GET("/v1/plans/{name}", { params: { path: { name: plan } } }));
  await admin.PUT("/v1/plans/{name}", { params: { path: { name: plan } }, body: { cache_budget_bytes: 1024 } });
  problem(
    await admin.PUT("/v1/plans/{name}", {
      params: { path: { name: plan }, header: { "If-Match": stale } },
      body: {},
    }),
    412,
    "stale",
  );

  const invalid = await admin.POST("/v1/plans", {
    body: { name: `bad-${uid()}`, plan: { limits: [{ name: "rps", rate: 0, window: "1s" }] } },
  });
  assert.match(problem(invalid, 422, "invalid").field ?? "", /rate/);
  problem(
    await admin.POST("/v1/tenants/{id}/keys", { params: { path: { id: `nobody-${uid()}` } }, body: {} }),
    404,
    "not-found",
  );

  await admin.DELETE("/v1/tenants/{id}", { params: { path: { id: tenant } } });
  await admin.DELETE("/v1/plans/{name}", { params: { path: { name: plan } } });
});
