/**
 * The cog admin API from TypeScript.
 *
 * `schema.ts` is generated from `docs/openapi.json` by openapi-typescript
 * (`scripts/gen-sdks`); requests go through openapi-fetch, so every path,
 * parameter, body and answer is typed from that description.
 *
 * ```ts
 * import { adminClient } from "@cog/admin";
 * const cog = adminClient("http://127.0.0.1:8081", process.env.COG_TOKEN!);
 * const { data, error } = await cog.POST("/v1/plans", {
 *   body: { name: "pro", plan: { limits: [{ name: "rps", rate: 200, window: "1s" }] } },
 * });
 * ```
 */
import createClient, { type Client, type ClientOptions } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";

/** Every schema of the API by name: `Schemas["Plan"]`, `Schemas["Problem"]`, … */
export type Schemas = components["schemas"];

/** An RFC 9457 problem, as every failure is answered. */
export type Problem = Schemas["Problem"];

/** The base URI of cog's problem types (`${PROBLEMS}not-found`, …). */
export const PROBLEMS = "https://cog.dev/problems/";

/** A client for the admin API at `baseUrl`, authenticated by an admin token. */
export function adminClient(
  baseUrl: string,
  token: string,
  options: Omit<ClientOptions, "baseUrl"> = {},
): Client<paths> {
  const headers = new Headers(options.headers as HeadersInit | undefined);
  headers.set("authorization", `Bearer ${token}`);
  return createClient<paths>({ ...options, baseUrl, headers });
}
