"""Create, details, test, edit (rotation, conflicts), delete of an API-key connection; the
list's filters; validation errors at their field; names rendered as text."""

import uuid

from conftest import CANARY, api_json, canary_key, wait_until


def _unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _create_via_api(server, name, provider="openai", **extra):
    body = {"name": name, "provider": provider, "config": {"apiKey": canary_key()}, **extra}
    status, conn, _ = api_json(server, "POST", "/v1/connections", body)
    assert status == 201, conn
    return conn


def test_create_test_edit_rotate_and_delete(console, stubs):
    page = console.goto("/console/connections/new")
    name = _unique("browser-openai")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Provider").select_option("openai")
    page.get_by_label("Description").fill("made in the browser")
    page.get_by_label("API key").fill(canary_key(tag="-v1"))
    # Capacity: the default row, edited, plus a per-IP row added with the keyboard.
    rows = page.locator("fieldset.cap-row")
    rows.nth(0).get_by_label("Requests").fill("120")
    page.get_by_role("button", name="Add limit").click()
    second = rows.nth(1)
    second.get_by_label("Period").select_option("day")
    second.get_by_label("Requests").fill("1000")
    second.get_by_label("Per source IP").check()
    page.get_by_label("Model IDs, one per line").fill("gpt-4o-mini")
    console.shot("connection-create")
    page.get_by_role("button", name="Create connection").click()

    page.wait_for_url("**/console/connections/*?created=1")
    page.get_by_role("heading", name=name).wait_for()
    conn_id = page.url.split("/connections/")[1].split("?")[0]
    config = page.get_by_role("region", name="Configuration", exact=True)
    assert "********" in config.inner_text()
    assert "120 requests" in page.inner_text("body") and "per source IP" in page.inner_text("body")
    assert CANARY not in page.content()

    # Test connection: the stub answers; the outcome and latency show.
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#test-result")
    result.wait_for()
    assert "Connection works" in result.inner_text() and " ms" in result.inner_text()

    # Edit: the secret is masked; Replace rotates it.
    page.get_by_role("link", name="Edit").click()
    page.wait_for_url(f"**/console/connections/{conn_id}/edit")
    key = page.get_by_label("API key")
    assert key.input_value() == "********"
    assert page.get_by_label("Name", exact=True).input_value() == name
    page.get_by_label("Description").fill("rotated in the browser")
    page.get_by_role("button", name="Replace").click()
    new_key = page.get_by_label("New API key")
    assert new_key.input_value() == ""
    new_key.fill(canary_key(tag="-v2"))
    console.shot("connection-edit-rotate")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/console/connections/{conn_id}")
    page.get_by_text("rotated in the browser").wait_for()
    status, stored, _ = api_json(console.server, "GET", f"/v1/connections/{conn_id}")
    assert stored["version"] == 2 and stored["config"]["apiKey"] == "********"

    # The provider now receives the new key.
    stubs.clear("openai")
    page.get_by_role("button", name="Test connection").click()
    page.locator("#test-result").filter(has_text="Connection works").wait_for()
    sent = stubs.requests("openai")
    auth = [r["headers"].get("authorization") for r in sent]
    assert f"Bearer {canary_key(tag='-v2')}" in auth, auth

    # Delete: a dialog that names the connection, operated with the keyboard.
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    assert name in dialog.inner_text()
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    assert api_json(console.server, "GET", f"/v1/connections/{conn_id}")[0] == 200
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Delete connection").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/")
    page.get_by_text(f"Deleted {name}.").wait_for()
    assert api_json(console.server, "GET", f"/v1/connections/{conn_id}")[0] == 404
    console.settle()


def test_validation_errors_show_at_their_field_and_keep_the_input(console):
    console.watch.allowed_status = {400, 409}
    page = console.goto("/console/connections/new")
    name = _unique("browser-invalid")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Provider").select_option("anthropic")
    page.get_by_label("API key").fill(canary_key("sk-ant-"))
    page.get_by_label("Description").fill("keep me")
    page.get_by_role("button", name="Add limit").click()
    second = page.locator("fieldset.cap-row").nth(1)
    second.get_by_label("Period").select_option("hour")
    # Neither requests nor tokens: the server names capacity[1].
    page.get_by_role("button", name="Create connection").click()
    err = second.locator(".field-error:not([hidden])")
    err.wait_for()
    assert "requests" in err.inner_text() and "tokens" in err.inner_text()
    assert second.get_by_label("Period").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Description").input_value() == "keep me"
    assert page.get_by_label("API key").input_value() == canary_key("sk-ant-")
    console.shot("connection-validation-error")

    # Fix it; a name that is taken is reported at the name.
    second.get_by_label("Tokens").fill("50000")
    _create_via_api(console.server, f"{name}-taken")
    page.get_by_label("Name", exact=True).fill(f"{name}-taken")
    page.get_by_role("button", name="Create connection").click()
    name_err = page.locator(".field", has=page.get_by_label("Name", exact=True)).locator(".field-error:not([hidden])")
    name_err.wait_for()
    assert page.get_by_label("Name", exact=True).get_attribute("aria-invalid") == "true"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create connection").click()
    page.wait_for_url("**/console/connections/*?created=1")
    page.get_by_role("heading", name=name).wait_for()
    console.settle()


def test_a_concurrent_edit_is_reported_not_overwritten(console):
    console.watch.allowed_status = {409}
    conn = _create_via_api(console.server, _unique("browser-conflict"), description="first")
    page = console.goto(f"/console/connections/{conn['id']}/edit")
    page.get_by_label("Description").wait_for()
    # Meanwhile a script changes it through the JSON API.
    status, _, _ = api_json(console.server, "PATCH", f"/v1/connections/{conn['id']}", {"description": "from a script"})
    assert status == 200
    page.get_by_label("Description").fill("from the browser")
    page.get_by_role("button", name="Save changes").click()
    alert = page.get_by_role("alert").filter(has_text="changed since you opened it")
    alert.wait_for()
    console.shot("connection-edit-conflict")
    assert api_json(console.server, "GET", f"/v1/connections/{conn['id']}")[1]["description"] == "from a script"
    page.get_by_role("button", name="Reload").click()
    wait_until(lambda: page.get_by_label("Description").input_value() == "from a script", what="the reloaded form")
    page.get_by_label("Description").fill("from the browser, after reload")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/console/connections/{conn['id']}")
    page.get_by_text("from the browser, after reload").wait_for()
    console.settle()


def test_a_name_with_markup_is_shown_as_text(console):
    name = "<img src=x onerror=alert(1)>"
    status, existing, _ = api_json(console.server, "GET", "/v1/connections?limit=100&q=onerror")
    conn = existing["data"][0] if existing["data"] else _create_via_api(console.server, name, description="<b>bold?</b>")
    for path in ["/console/?q=onerror", f"/console/connections/{conn['id']}", f"/console/connections/{conn['id']}/edit", "/console/api-keys"]:
        page = console.goto(path)
        console.settle()
        page.get_by_text(name).first.wait_for()
        assert page.locator("img[src=x]").count() == 0
        assert page.locator("b", has_text="bold?").count() == 0
        if path.endswith("/edit"):
            assert page.evaluate("document.title").startswith("Edit <img")
            assert page.get_by_label("Name", exact=True).input_value() == name
    # The dialog watch (conftest) fails the test if alert(1) ever ran.


def test_list_filters_searches_and_pages(console):
    tag = uuid.uuid4().hex[:6]
    for i in range(23):
        _create_via_api(console.server, f"page-{tag}-{i:02d}", provider="groq" if i % 2 else "openai")
    page = console.goto(f"/console/?q=page-{tag}")
    rows = page.locator("table tbody tr")
    wait_until(lambda: rows.count() == 20, what="a full first page")
    console.settle()
    page.get_by_role("button", name="Next page").click()
    wait_until(lambda: rows.count() == 3, what="the second page")
    assert "cursor=" in page.url
    console.settle()
    page.get_by_role("button", name="Previous page").click()
    wait_until(lambda: rows.count() == 20 and "cursor=" not in page.url, what="the first page again")
    console.settle()
    page.get_by_label("Provider").select_option("groq")
    wait_until(lambda: rows.count() == 11, what="the groq filter")
    assert all("Groq" in t for t in rows.locator("td[data-label=Provider]").all_inner_texts())
    console.settle()
    search = page.get_by_label("Search by name")
    search.fill(f"page-{tag}-07")
    wait_until(lambda: rows.count() == 1, what="the name search")
    assert "provider=groq" in page.url and f"q=page-{tag}-07" in page.url
    console.settle()
