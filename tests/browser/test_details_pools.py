"""The details page with prioritization pools: under the connection-wide window, one row per
pool (used / max, min, active, allocation), the same figures as GET .../capacity. On a vmx of
its own, since the pools apply to every connection of a deployment."""

import uuid

import jsonschema
import openai
import pytest

from conftest import Console, api_json, canary_key, wait_until
from test_screens import _axe, _no_overflow


@pytest.fixture
def pools_console(browser, fresh_server, watch):
    desk = Console(browser, fresh_server, watch, bypass_csp=True)
    mob = Console(browser, fresh_server, watch, bypass_csp=True, viewport={"width": 375, "height": 812})
    for c in (desk, mob):
        c.sign_in()
    yield desk, mob
    desk.close()
    mob.close()
    watch.check()


def test_details_show_each_pools_use(pools_console, axe_source):
    c, mobile = pools_console
    server = c.server
    name = f"pools-{uuid.uuid4().hex[:6]}"
    # A day window: no roll-over between the requests and the page but at midnight.
    status, conn, _ = api_json(server, "POST", "/v1/connections", {
        "name": name, "provider": "openai", "config": {"apiKey": canary_key()},
        "capacity": [{"period": "day", "requests": 20, "tokens": 1000000}]})
    assert status == 201, conn
    keys = {}
    for pool in ("web", "batch"):
        status, key, _ = api_json(server, "POST", "/v1/api-keys", {"name": f"{name}-{pool}", "connections": [name]})
        assert status == 201, key
        keys[pool] = key
    status, body, _ = api_json(server, "PUT", "/v1/prioritization", {"pools": [
        {"name": "web", "rank": 1, "apiKeys": [keys["web"]["id"]], "minReservation": 40, "maxReservation": 100},
        {"name": "batch", "rank": 2, "apiKeys": [keys["batch"]["id"]], "minReservation": 0, "maxReservation": 30}]})
    assert status == 200, body
    for pool, n in (("web", 1), ("batch", 2)):
        client = openai.OpenAI(base_url=server.base + "/v1", api_key=keys[pool]["key"])
        for _ in range(n):
            r = client.chat.completions.create(model=f"{name}/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content

    def capacity():
        _, cap, _ = api_json(server, "GET", f"/v1/connections/{conn['id']}/capacity")
        return cap
    wait_until(lambda: capacity()["windows"][0]["requests"]["used"] == 3, what="three admitted requests")
    cap = capacity()
    pools = {p["name"]: p for p in cap["windows"][0]["pools"]}
    assert list(pools) == ["web", "batch", "default"]
    # The body is exactly what the OpenAPI document says (pool entries admit no other field).
    _, doc, _ = api_json(server, "GET", "/openapi.json")
    jsonschema.Draft202012Validator(doc["components"]["schemas"]["CapacityUsage"]).validate(cap)
    pool_schema = doc["components"]["schemas"]["CapacityUsage"]["properties"]["windows"]["items"]["properties"]["pools"]["items"]
    assert sorted(pool_schema["required"]) == sorted(pools["web"])

    page = c.goto(f"/console/connections/{conn['id']}")
    table = page.locator("#capacity-live .pool-table")
    table.wait_for()
    assert "Prioritization pools, per day" in page.locator("#capacity-live .pool-block h3").inner_text()
    rows = table.locator("tbody tr")
    assert [rows.nth(i).get_attribute("data-pool") for i in range(rows.count())] == ["web", "batch", "default"]

    def cell(pool, label):
        return table.locator(f"tr[data-pool={pool}] td[data-label='{label}']").inner_text()

    web = table.locator("tr[data-pool=web]").inner_text()
    assert "1 / 20 requests" in web and "active" in web and "rank 1" in web
    assert cell("web", "Min").startswith("8 requests"), cell("web", "Min")
    batch = table.locator("tr[data-pool=batch]").inner_text()
    assert "2 / 6 requests" in batch and "active" in batch
    assert cell("batch", "Min").startswith("0 requests"), cell("batch", "Min")
    default = table.locator("tr[data-pool=default]").inner_text()
    assert "0 / 20 requests" in default and "idle" in default and "ranked last" in default
    # The allocation column shows what the API reports (the poolAllocation of a 429).
    for pool, p in pools.items():
        row = cell(pool, "Allocation")
        assert f"{p['requests']['allocation']:,} requests" in row, (pool, row)
        assert f"{p['tokens']['allocation']:,} tokens" in row, (pool, row)
    assert table.locator("[role=meter]").count() == 6
    c.settle()
    _axe(page, axe_source)
    page.locator("#capacity-live .pool-block").scroll_into_view_if_needed()
    c.shot("details-pools")
    c.shot("details-pools-viewport", full_page=False)

    page = mobile.goto(f"/console/connections/{conn['id']}")
    page.locator("#capacity-live .pool-table").wait_for()
    mobile.settle()
    _no_overflow(page, "the details page with pools")
    page.locator("#capacity-live .pool-block").scroll_into_view_if_needed()
    mobile.shot("details-pools-375", full_page=False)
