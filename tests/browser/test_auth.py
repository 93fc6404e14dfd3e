"""Sign-in, sign-out, CSRF and the pages' security headers (local mode)."""

import json

from conftest import ADMIN_TOKEN

PAGES = [
    "/console/",
    "/console/?provider=openai&q=x",
    "/console/connections/new",
    "/console/quick-add",
    "/console/connections/0190a3c1-0000-7000-8000-000000000000",
    "/console/connections/0190a3c1-0000-7000-8000-000000000000/edit",
    "/console/api-keys",
    "/console/no-such-page",
]


def test_every_console_url_needs_sign_in(anon):
    page = anon.page
    for path in PAGES:
        resp = anon.context.request.get(path, max_redirects=0)
        assert resp.status == 303, (path, resp.status)
        assert resp.headers["location"].startswith("/console/sign-in?next="), resp.headers["location"]
        page.goto(path)
        page.wait_for_selector("input[name=token]")
        assert page.url.startswith(anon.base + "/console/sign-in?next=")
    # The JSON API refuses the browser without a session too.
    anon.watch.allowed_status = {401}
    status = page.evaluate("fetch('/v1/connections').then(async r => { await r.text(); return r.status; })")
    assert status == 401


def test_sign_in_page_takes_the_token_and_returns_to_the_page(anon):
    page = anon.page
    anon.watch.allowed_status = {401}
    page.goto("/console/api-keys")
    page.wait_for_selector("input[name=token]")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    err = page.locator(".field-error:not([hidden])")
    err.wait_for()
    assert "not accepted" in err.inner_text()
    assert page.get_by_label("Admin token").get_attribute("aria-invalid") == "true"
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/api-keys")
    page.get_by_role("heading", name="API keys", exact=True).wait_for()
    # The token is nowhere the page can read back.
    assert ADMIN_TOKEN not in page.content()
    assert ADMIN_TOKEN not in page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie")
    cookies = anon.context.cookies()
    session = [c for c in cookies if c["name"] == "vmx_session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"


def test_sign_out_ends_the_session(console):
    page = console.goto("/console/")
    console.settle()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/sign-in**")
    page.wait_for_selector("input[name=token]")
    console.watch.allowed_status = {401}
    assert page.evaluate("fetch('/v1/connections').then(async r => { await r.text(); return r.status; })") == 401
    page.goto("/console/")
    page.wait_for_selector("input[name=token]")
    assert "/console/sign-in" in page.url


def test_state_changes_without_the_csrf_header_are_refused(console):
    page = console.goto("/console/")
    console.settle()
    console.watch.allowed_status = {403}
    body = json.dumps({"name": "csrf-probe", "provider": "openai", "config": {"apiKey": "sk-x"}})
    result = page.evaluate(
        """async (body) => {
            const r = await fetch('/v1/connections', {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/json'}, body});
            return {status: r.status, body: await r.json()};
        }""",
        body,
    )
    assert result["status"] == 403
    assert result["body"]["error"]["code"] == "csrf_failed"
    # And nothing was created.
    names = page.evaluate("fetch('/v1/connections?q=csrf-probe').then(r => r.json()).then(b => b.data.map(c => c.name))")
    assert names == []


def test_pages_carry_the_security_headers(anon):
    for path in ["/console/sign-in", "/console/assets/app.js", "/console/assets/app.css"]:
        r = anon.context.request.get(path)
        assert r.status == 200, path
        h = r.headers
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
