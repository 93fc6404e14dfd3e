"""Every screen: no serious or critical axe-core violation, nothing wider than a 375 px
viewport, and a screenshot in target/console-screenshots/ (VMX_SCREENSHOT_DIR=docs/console
refreshes the copies docs/console.md shows).

axe-core is injected as a script tag, which the pages' Content-Security-Policy forbids, so
these runs use a context with bypass_csp; every other test runs under the real policy."""

import json
import uuid

import openai
import pytest

from conftest import ADMIN_TOKEN, Console, api_json, canary_key, wait_until

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def _axe(page, axe_source):
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source)
    result = page.evaluate("(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    bad = [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]
    assert not bad, json.dumps(bad, indent=1)


def _no_overflow(page, what):
    sw, cw = page.evaluate("[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")
    assert sw <= cw, f"{what} overflows 375 px: scrollWidth {sw} > clientWidth {cw}"


def _check_screen(c, mobile, axe_source, path, shot, ready, mobile_shot=False, after=None):
    for con, is_mobile in [(c, False), (mobile, True)]:
        page = con.goto(path)
        ready(page)
        con.settle()
        if after:
            after(page)
        _axe(page, axe_source)
        if is_mobile:
            _no_overflow(page, path)
            if mobile_shot:
                con.shot(f"{shot}-375")
        else:
            con.shot(shot, full_page=after is None)


@pytest.fixture
def pair(browser, fresh_server, watch):
    """Desktop and 375 px consoles on a vmx of their own (so the screenshots show only the
    connections seeded here), both signed in, both bypassing CSP for axe."""
    desk = Console(browser, fresh_server, watch, bypass_csp=True)
    mob = Console(browser, fresh_server, watch, bypass_csp=True, viewport={"width": 375, "height": 812})
    for c in (desk, mob):
        c.sign_in()
    yield desk, mob
    desk.close()
    mob.close()
    watch.check()


def _seed(server):
    name = f"prod-openai-{uuid.uuid4().hex[:4]}"
    status, conn, _ = api_json(server, "POST", "/v1/connections", {
        "name": name, "provider": "openai", "description": "Main OpenAI account",
        "config": {"apiKey": canary_key()},
        "capacity": [{"period": "minute", "requests": 100, "tokens": 100000},
                     {"period": "day", "requests": 5000, "dimension": "source-ip"}],
        "allowedModels": ["gpt-4o-mini", "gpt-4o"],
    })
    assert status == 201, conn
    for n, p in [("claude-team", "anthropic"), ("groq-batch", "groq")]:
        api_json(server, "POST", "/v1/connections", {"name": f"{n}-{uuid.uuid4().hex[:4]}", "provider": p,
                                                      "config": {"apiKey": canary_key()},
                                                      "capacity": [{"period": "hour", "requests": 1000}]})
    _, key, _ = api_json(server, "POST", "/v1/api-keys", {"name": "screens-app", "connections": [name]})
    client = openai.OpenAI(base_url=server.base + "/v1", api_key=key["key"])
    for _ in range(5):
        client.chat.completions.create(model=f"{name}/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    list(client.chat.completions.create(model=f"{name}/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                        stream=True, stream_options={"include_usage": True}))
    wait_until(lambda: sum(b["requests"] for b in api_json(server, "GET", f"/v1/connections/{conn['id']}/usage")[1]["data"]) == 6,
               what="usage")
    return conn


def test_every_screen_is_accessible_fits_375_px_and_is_captured(pair, axe_source):
    desk, mob = pair
    server = desk.server
    conn = _seed(server)
    heading = lambda text: (lambda page: page.get_by_role("heading", name=text).first.wait_for())  # noqa: E731

    _check_screen(desk, mob, axe_source, "/console/", "connections",
                  lambda p: wait_until(lambda: "req" in p.locator("table tbody").inner_text(), what="list stats"),
                  mobile_shot=True)
    _check_screen(desk, mob, axe_source, "/console/connections/new", "connection-new", heading("Create connection"))
    _check_screen(desk, mob, axe_source, "/console/connections/new?provider=aws-bedrock", "connection-new-bedrock",
                  lambda p: p.get_by_label("IAM role ARN").wait_for())
    _check_screen(desk, mob, axe_source, "/console/quick-add", "quick-add", heading("Quick add"))
    _check_screen(desk, mob, axe_source, f"/console/connections/{conn['id']}", "connection-details",
                  lambda p: (p.locator("#usage .chart").first.wait_for(), p.locator("#live-capacity").wait_for()),
                  mobile_shot=True)
    _check_screen(desk, mob, axe_source, f"/console/connections/{conn['id']}/edit", "connection-edit",
                  lambda p: p.get_by_role("button", name="Replace").wait_for())
    _check_screen(desk, mob, axe_source, f"/console/connections/{conn['id']}", "connection-delete-dialog",
                  lambda p: p.locator("#live-capacity").wait_for(),
                  after=lambda p: (p.get_by_role("button", name="Delete").click(), p.get_by_role("dialog").wait_for()))
    _check_screen(desk, mob, axe_source, "/console/api-keys", "api-keys",
                  lambda p: p.locator("#api-keys").wait_for(), mobile_shot=True)
    _check_screen(desk, mob, axe_source, "/console/nothing-here", "not-found", heading("Page not found"))


def test_sign_in_and_empty_states(browser, fresh_server, watch, axe_source):
    desk = Console(browser, fresh_server, watch, bypass_csp=True)
    mob = Console(browser, fresh_server, watch, bypass_csp=True, viewport={"width": 375, "height": 812})
    try:
        for c in (desk, mob):
            c.goto("/console/sign-in")
            _axe(c.page, axe_source)
        _no_overflow(mob.page, "sign-in")
        desk.shot("sign-in")
        for c in (desk, mob):
            c.sign_in()
        _check_screen(desk, mob, axe_source, "/console/", "connections-empty",
                      lambda p: p.get_by_role("heading", name="No connections yet").wait_for(), mobile_shot=True)
        desk.page.get_by_role("link", name="Quick add from API keys").wait_for()
        _check_screen(desk, mob, axe_source, "/console/api-keys", "api-keys-empty",
                      lambda p: p.get_by_text("No API keys yet").wait_for())
        assert ADMIN_TOKEN not in desk.page.content()
    finally:
        desk.close()
        mob.close()
    watch.check()
