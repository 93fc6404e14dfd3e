"""API keys: created with a connection scope and an expiry, the secret shown exactly once,
usable, then revoked."""

import datetime
import json
import urllib.error
import urllib.request
import uuid

from conftest import api_json, canary_key


def _models(base, key):
    req = urllib.request.Request(base + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, None


def test_create_show_once_and_revoke(console):
    conn_name = f"keys-target-{uuid.uuid4().hex[:6]}"
    status, conn, _ = api_json(console.server, "POST", "/v1/connections", {
        "name": conn_name, "provider": "openai", "config": {"apiKey": canary_key()},
        "allowedModels": ["gpt-4o-mini"]})
    assert status == 201
    page = console.goto("/console/api-keys")
    key_name = f"browser-key-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(key_name)
    expiry = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    page.get_by_label("Expires on (optional)").fill(expiry)
    page.get_by_label(conn_name).check()
    page.get_by_role("button", name="Create API key").click()

    secret_input = page.get_by_label("New API key")
    secret_input.wait_for()
    secret = secret_input.input_value()
    assert secret.startswith("vmx_")
    assert "shown only this once" in page.inner_text("body")
    page.get_by_role("button", name="Copy").wait_for()
    console.shot("api-key-created", full_page=False)
    row = page.locator("#api-keys tbody tr", has_text=key_name)
    row.wait_for()
    assert conn_name in row.inner_text() and "Active" in row.inner_text()

    # The key works for its connection's models.
    status, models = _models(console.base, secret)
    assert status == 200 and any(m["id"].startswith(f"{conn_name}/") for m in models["data"])

    # Dismissed, the secret is gone from the page; a reload never shows it again.
    page.get_by_role("button", name="Done, I stored it").click()
    assert secret not in page.content()
    console.reload()
    page.locator("#api-keys tbody tr", has_text=key_name).wait_for()
    assert secret not in page.content()

    # The key's own limits (set through the API) are shown in its row.
    _, listed, _ = api_json(console.server, "GET", "/v1/api-keys?limit=100")
    key_id = [k for k in listed["data"] if k.get("name") == key_name][0]["id"]
    status, _, _ = api_json(console.server, "PATCH", f"/v1/api-keys/{key_id}", {
        "capacity": [{"period": "minute", "requests": 60}]})
    assert status == 200
    console.reload()
    page.locator("#api-keys tbody tr", has_text=key_name).filter(has_text="60 req/min").wait_for()

    # Revoke through the confirmation dialog.
    page.locator("#api-keys tbody tr", has_text=key_name).get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog")
    assert key_name in dialog.inner_text()
    dialog.get_by_role("button", name="Revoke key").click()
    page.locator("#api-keys tbody tr", has_text=key_name).filter(has_text="Revoked").wait_for()
    assert _models(console.base, secret)[0] == 401
    _, listed, _ = api_json(console.server, "GET", "/v1/api-keys?limit=100")
    mine = [k for k in listed["data"] if k.get("name") == key_name][0]
    # The scope is stored as the connection's id; the console showed its name.
    assert mine["revokedAt"] and mine["connections"] == [conn["id"]]
    assert mine["expiresAt"].startswith(expiry)
    console.settle()
