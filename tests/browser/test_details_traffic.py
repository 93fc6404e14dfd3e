"""The details page after real traffic through the stubs: usage, capacity use (with the per-IP
window's top address) and the limits the stub's x-ratelimit headers announced."""

import uuid

import openai

from conftest import api_json, canary_key, wait_until

N = 4


def _stat(page, label):
    stat = page.locator("#usage-stats .stat", has=page.locator(".stat-label", has_text=label)).first
    return stat.locator(".stat-value").inner_text()


def test_details_show_usage_capacity_and_discovered_limits(console):
    name = f"traffic-{uuid.uuid4().hex[:6]}"
    status, conn, _ = api_json(console.server, "POST", "/v1/connections", {
        "name": name, "provider": "openai", "config": {"apiKey": canary_key()},
        # Lifetime windows: a minute or day boundary between the requests and the page
        # cannot reset what the page must show.
        "capacity": [{"period": "lifetime", "requests": 1000, "tokens": 1000000},
                     {"period": "lifetime", "requests": 500, "dimension": "source-ip"}],
    })
    assert status == 201
    status, key, _ = api_json(console.server, "POST", "/v1/api-keys", {"name": f"{name}-app", "connections": [name]})
    assert status == 201
    client = openai.OpenAI(base_url=console.base + "/v1", api_key=key["key"])
    for _ in range(N - 1):
        r = client.chat.completions.create(model=f"{name}/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
    chunks = list(client.chat.completions.create(
        model=f"{name}/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True}))
    assert chunks

    # Wait until the server reports what the page will show (usage is recorded after the
    # response, discovered limits when the headers are seen).
    def usage_total():
        _, u, _ = api_json(console.server, "GET", f"/v1/connections/{conn['id']}/usage")
        return sum(b["requests"] for b in u["data"]) == N
    wait_until(usage_total, what="usage of every request")
    wait_until(lambda: api_json(console.server, "GET", f"/v1/connections/{conn['id']}")[1]["discoveredCapacity"]["models"],
               what="discovered capacity")

    page = console.goto(f"/console/connections/{conn['id']}")
    stats = page.locator("#usage-stats")
    stats.wait_for()
    assert _stat(page, "Requests") == str(N)
    page.locator("#usage .chart").first.wait_for()
    assert page.locator("#usage svg[role=img]").count() >= 3
    live = page.locator("#live-capacity")
    live.wait_for()
    assert f"{N} / 1,000" in live.inner_text()
    ip = page.locator("#capacity-live .ip-block")
    assert "127.0.0.1" in ip.inner_text() and f"{N} / 500" in ip.inner_text()
    disc = page.locator("#discovered")
    assert "gpt-4o-mini" in disc.inner_text()
    assert "5,000 requests per minute" in disc.inner_text()
    assert "2,000,000 tokens per minute" in disc.inner_text()
    # The 7-day and 30-day views draw the same traffic.
    for label in ["7 days", "30 days"]:
        page.get_by_role("button", name=label).click()
        page.get_by_role("button", name=label).and_(page.locator("[aria-pressed=true]")).wait_for()
        wait_until(lambda: _stat(page, "Requests") == str(N), what=f"usage over {label}")
    page.get_by_role("button", name="24 hours").click()
    wait_until(lambda: page.locator("#usage .chart").count() >= 4, what="the charts")

    # The list shows the same at a glance.
    page = console.goto(f"/console/?q={name}")
    row = page.locator("table tbody tr", has_text=name)
    wait_until(lambda: f"{N} req" in row.inner_text() and f"{N} / 1,000" in row.inner_text(), what="the list's row")
    assert "5K req/min" in row.inner_text()
    console.settle()


def test_details_show_the_discovered_capacity_history(console):
    """The history table after the stub's limits were first seen: when, model, metric,
    old -> new, and where they were seen."""
    name = f"history-{uuid.uuid4().hex[:6]}"
    status, conn, _ = api_json(console.server, "POST", "/v1/connections", {
        "name": name, "provider": "openai", "config": {"apiKey": canary_key()}})
    assert status == 201
    page = console.goto(f"/console/connections/{conn['id']}")
    page.locator("#history-empty").wait_for()

    # A test of the connection sees the stub's x-ratelimit headers: two limits appear.
    status, _, _ = api_json(console.server, "POST", f"/v1/connections/{conn['id']}/test", {"model": "gpt-4o-mini"})
    assert status == 200
    wait_until(lambda: len(api_json(console.server, "GET",
                                    f"/v1/connections/{conn['id']}/discovered-capacity/history")[1]["data"]) == 2,
               what="two recorded changes")

    page = console.goto(f"/console/connections/{conn['id']}")
    table = page.locator("#discovered-history")
    table.wait_for()
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    text = table.inner_text()
    assert "gpt-4o-mini" in text
    assert "requests per minute" in text and "none → 5,000" in text
    assert "tokens per minute" in text and "none → 2,000,000" in text
    assert "response headers" in text
    assert table.locator("time[datetime]").count() == 2
    table.scroll_into_view_if_needed()
    console.shot("details-history")
