"""The Python SDK against a live `cog serve`: the life of a tenant, and the
failures a back office meets (401, 403, 404, 409, 412, 422).

Every call is made with `raise_on_unexpected_status=True`, so an answer
whose status the OpenAPI description does not list fails the test, and
every body is parsed into the SDK's models, so one that does not fit the
schema fails too.
"""

import time

import httpx
from cog_admin import AuthenticatedClient
from cog_admin.api.apply import apply, diff
from cog_admin.api.audit import list_audit
from cog_admin.api.keys import create_key, list_keys, revoke_key
from cog_admin.api.placement import add_deployment, get_placement, move_partition
from cog_admin.api.plans import create_plan, delete_plan, get_plan, list_plans, replace_plan
from cog_admin.api.tenants import (
    create_tenant,
    delete_tenant,
    get_tenant,
    get_usage,
    resume_tenant,
    suspend_tenant,
)
from cog_admin.models import (
    Changes,
    IssuedKey,
    LimitSpec,
    NamedPlan,
    NamedTenant,
    NewDeployment,
    NewKeyRequest,
    PartitionMove,
    PlacementTable,
    Plan,
    Problem,
    Spec,
    SpecPlans,
    SpecTenants,
    Status,
    Tenant,
    Usage,
)

PROBLEMS = "https://cog.dev/problems/"


def problem(answer, status: int, kind: str) -> Problem:
    assert answer.status_code == status, answer.content
    assert answer.headers["content-type"] == "application/problem+json"
    p = answer.parsed
    assert isinstance(p, Problem), p
    assert p.status == status
    assert p.type_ == PROBLEMS + kind, p.type_
    return p


def etag(answer) -> str:
    tag = answer.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"'), tag
    return tag


def probe(base_url: str, key: str) -> httpx.Response:
    """A request through `AuthenticateLayer` and `RateLimitLayer`, as a
    service with cog's layers would see it (`cog serve --probe`)."""
    return httpx.get(f"{base_url}/probe", headers={"authorization": f"Bearer {key}"})


def until(check, what: str, seconds: float = 10.0):
    """Polls `check` until it answers something truthy: the services see a
    change when their directory does (pub/sub, or polling every second)."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {seconds} s")
        time.sleep(0.05)


def test_a_tenant_from_plan_to_deletion(admin: AuthenticatedClient, base_url: str, uid: str):
    plan, tenant = f"basic-{uid}", f"acme-{uid}"

    # A plan of two requests a minute.
    a = create_plan.sync_detailed(
        client=admin,
        body=NamedPlan(name=plan, plan=Plan(limits=[LimitSpec(name="rpm", rate=2, window="1m")])),
    )
    assert a.status_code == 201, a.content
    assert isinstance(a.parsed, NamedPlan) and a.parsed.plan.limits[0].rate == 2
    got = get_plan.sync_detailed(plan, client=admin)
    assert got.parsed.name == plan and got.parsed.plan.limits[0].window == "1m"

    a = create_tenant.sync_detailed(client=admin, body=NamedTenant(id=tenant, tenant=Tenant(plan=plan)))
    assert a.status_code == 201, a.content
    assert get_tenant.sync_detailed(tenant, client=admin).parsed.tenant.plan == plan

    # A key, shown once.
    a = create_key.sync_detailed(tenant, client=admin, body=NewKeyRequest())
    assert a.status_code == 201, a.content
    issued = a.parsed
    assert isinstance(issued, IssuedKey) and issued.tenant == tenant
    assert issued.key.startswith(f"cog_{issued.id}_")
    listed = list_keys.sync_detailed(client=admin).parsed
    mine = [k for k in listed.items if k.tenant == tenant]
    assert [k.id for k in mine] == [issued.id] and mine[0].status == "active"
    assert issued.key not in str(listed.to_dict()), "a listed key never shows the secret"

    # The key authenticates a request through AuthenticateLayer; the
    # plan's limit admits two a minute.
    first = until(lambda: (r := probe(base_url, issued.key)).status_code == 200 and r, "the new key")
    assert first.json() == {"tenant": tenant, "plan": plan}
    assert probe(base_url, issued.key).status_code == 200
    limited = probe(base_url, issued.key)
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    assert probe(base_url, "cog_not_a_key").status_code == 401

    # Usage as the limiter counted it.
    usage = get_usage.sync_detailed(tenant, client=admin).parsed
    assert isinstance(usage, Usage)
    assert (usage.tenant, usage.plan) == (tenant, plan)
    assert [(u.name, u.limit, u.remaining) for u in usage.limits] == [("rpm", 2, 0)]
    assert 0 < usage.limits[0].reset_after_ms <= 60_000

    # A bigger plan: the running limiter follows without a restart.
    current = get_plan.sync_detailed(plan, client=admin)
    a = replace_plan.sync_detailed(
        plan,
        client=admin,
        body=Plan(limits=[LimitSpec(name="rpm", rate=1000, window="1m")]),
        if_match=etag(current),
    )
    assert a.status_code == 200, a.content
    until(lambda: probe(base_url, issued.key).status_code == 200, "the bigger plan")
    usage = get_usage.sync_detailed(tenant, client=admin).parsed
    assert usage.limits[0].limit == 1000 and usage.limits[0].remaining > 900

    # Suspended: the same key is refused; resumed: served again.
    assert suspend_tenant.sync_detailed(tenant, client=admin).parsed.tenant.status == Status.SUSPENDED
    until(lambda: probe(base_url, issued.key).status_code == 403, "the suspension")
    assert resume_tenant.sync_detailed(tenant, client=admin).status_code == 200
    until(lambda: probe(base_url, issued.key).status_code == 200, "the resumption")

    # Revoked: refused.
    assert revoke_key.sync_detailed(issued.id, client=admin).status_code == 204
    until(lambda: probe(base_url, issued.key).status_code == 401, "the revocation")

    # Deleted: the tenant (with its keys), then its plan.
    assert delete_tenant.sync_detailed(tenant, client=admin).status_code == 204
    problem(get_tenant.sync_detailed(tenant, client=admin), 404, "not-found")
    assert delete_plan.sync_detailed(plan, client=admin).status_code == 204
    problem(get_plan.sync_detailed(plan, client=admin), 404, "not-found")

    # Every write is in the audit log, with who made it.
    audit = list_audit.sync_detailed(client=admin, limit=1000).parsed
    mine = [e.action for e in audit.items if e.target in (plan, tenant) or e.target == issued.id]
    assert mine[:3] == ["plan.create", "tenant.create", "key.create"], mine
    assert all(e.actor.startswith("token:") for e in audit.items if e.target == plan)


def test_a_document_diffed_applied_and_pruned_of_nothing(admin: AuthenticatedClient, uid: str):
    plan, tenant = f"doc-{uid}", f"globex-{uid}"
    doc = Spec(
        plans=SpecPlans.from_dict({plan: {"limits": [{"name": "rps", "rate": 5, "window": "1s"}]}}),
        tenants=SpecTenants.from_dict({tenant: {"plan": plan}}),
    )
    a = diff.sync_detailed(client=admin, body=doc)
    assert isinstance(a.parsed, Changes), a.content
    assert [(c.action, c.kind, c.id) for c in a.parsed.changes] == [
        ("create", "plan", plan),
        ("create", "tenant", tenant),
    ]
    # A dry run writes nothing.
    before = etag(list_plans.sync_detailed(client=admin))
    a = apply.sync_detailed(client=admin, body=doc, dry_run=True)
    assert a.parsed.dry_run is True and len(a.parsed.changes) == 2
    assert etag(list_plans.sync_detailed(client=admin)) == before

    a = apply.sync_detailed(client=admin, body=doc, if_match=before)
    assert a.status_code == 200, a.content
    assert a.parsed.dry_run is False
    assert get_tenant.sync_detailed(tenant, client=admin).parsed.tenant.plan == plan
    assert diff.sync_detailed(client=admin, body=doc).parsed.changes == []
    # The same precondition again is stale now.
    problem(apply.sync_detailed(client=admin, body=doc, if_match=before), 412, "stale")

    # A document that cannot apply changes nothing.
    bad = Spec(tenants=SpecTenants.from_dict({f"x-{uid}": {"plan": "no-such-plan"}}))
    p = problem(apply.sync_detailed(client=admin, body=bad), 422, "invalid")
    assert p.field
    assert delete_tenant.sync_detailed(tenant, client=admin).status_code == 204
    assert delete_plan.sync_detailed(plan, client=admin).status_code == 204


def test_a_partition_moved_to_a_new_deployment(admin: AuthenticatedClient, uid: str):
    main, big = f"main-{uid}", f"big-{uid}"
    for name in (main, big):
        a = add_deployment.sync_detailed(client=admin, body=NewDeployment(name=name))
        assert a.status_code == 200, a.content
    problem(add_deployment.sync_detailed(client=admin, body=NewDeployment(name=big)), 409, "exists")
    table = get_placement.sync_detailed(client=admin).parsed
    assert isinstance(table, PlacementTable), table
    assert big in table.deployments
    before = table.revision

    a = move_partition.sync_detailed(130, client=admin, body=PartitionMove(deployment=big))
    assert isinstance(a.parsed, PlacementTable), a.content
    assert a.parsed.revision > before
    assert a.parsed.partitions["130"] == big
    nowhere = PartitionMove(deployment=f"nowhere-{uid}")
    problem(move_partition.sync_detailed(1, client=admin, body=nowhere), 404, "not-found")


def test_failures_are_problems(
    admin: AuthenticatedClient, reader: AuthenticatedClient, anonymous: AuthenticatedClient, uid: str
):
    plan, tenant = f"fail-{uid}", f"initech-{uid}"
    body = NamedPlan(name=plan, plan=Plan())

    # 401: no token, or one the store does not know.
    problem(list_plans.sync_detailed(client=anonymous), 401, "unauthorized")
    # 403: a read token cannot write, and wrote nothing.
    problem(create_plan.sync_detailed(client=reader, body=body), 403, "forbidden")
    problem(get_plan.sync_detailed(plan, client=reader), 404, "not-found")

    assert create_plan.sync_detailed(client=admin, body=body).status_code == 201
    assert get_plan.sync_detailed(plan, client=reader).status_code == 200
    # 409: it exists; a plan a tenant is on cannot go.
    problem(create_plan.sync_detailed(client=admin, body=body), 409, "exists")
    assert create_tenant.sync_detailed(client=admin, body=NamedTenant(id=tenant, tenant=Tenant(plan=plan))).status_code == 201
    problem(delete_plan.sync_detailed(plan, client=admin), 409, "in-use")

    # 412: a write on a revision that is no longer current.
    stale = etag(get_plan.sync_detailed(plan, client=admin))
    assert replace_plan.sync_detailed(plan, client=admin, body=Plan(cache_budget_bytes=1024)).status_code == 200
    problem(replace_plan.sync_detailed(plan, client=admin, body=Plan(), if_match=stale), 412, "stale")
    assert get_plan.sync_detailed(plan, client=admin).parsed.plan.cache_budget_bytes == 1024

    # 422: what the model refuses, naming the field.
    p = problem(
        create_plan.sync_detailed(
            client=admin,
            body=NamedPlan(name=f"bad-{uid}", plan=Plan(limits=[LimitSpec(name="rps", rate=0, window="1s")])),
        ),
        422,
        "invalid",
    )
    assert p.field and "rate" in p.field
    problem(
        create_tenant.sync_detailed(client=admin, body=NamedTenant(id=f"t-{uid}", tenant=Tenant(plan="nope"))),
        422,
        "invalid",
    )
    # 404: a key for nobody, usage of nobody.
    problem(create_key.sync_detailed(f"nobody-{uid}", client=admin, body=NewKeyRequest()), 404, "not-found")
    problem(get_usage.sync_detailed(f"nobody-{uid}", client=admin), 404, "not-found")

    assert delete_tenant.sync_detailed(tenant, client=admin).status_code == 204
    assert delete_plan.sync_detailed(plan, client=admin).status_code == 204
